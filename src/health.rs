//! Whether this server should receive traffic, from the few facts that decide
//! it: rules are loaded (unless the operator says none are needed), the server is not shutting down, and the counter
//! store is reachable (when the store's failure policy makes it matter).
//!
//! One [`Health`] is shared (by cloning) between the transports, which
//! report it (gRPC `grpc.health.v1` for the overall service `""` and for
//! `ratelimit`, and HTTP `GET /healthcheck`), the config reloader, which
//! marks rules loaded, and a store, which marks itself reachable or not.
//! Every change is also published on a [`watch`] channel so the gRPC health
//! reporter can follow it without polling.
//!
//! This module imports nothing from the crate, so any layer may hold a
//! [`Health`] without importing upwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The shared health state; clones share it.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rules_loaded: AtomicBool,
    /// Loaded rules are needed to serve: the reference's
    /// `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`. False for a server fed
    /// by an xDS server under Envoy Gateway, which must pass its readiness
    /// probe before the first config arrives.
    rules_required: AtomicBool,
    shutting_down: AtomicBool,
    store_reachable: AtomicBool,
    /// An unreachable store makes the server not serving: true under
    /// `--on-store-error deny|error`, where a store outage would fail every
    /// request; false under fail-open, where the server still answers.
    store_required: AtomicBool,
    serving: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Health {
        Health::new()
    }
}

impl Health {
    /// A state with no rules loaded yet (so not serving), a reachable store
    /// and a store whose outage does not affect serving.
    pub fn new() -> Health {
        let (serving, _) = watch::channel(false);
        Health {
            inner: Arc::new(Inner {
                rules_loaded: AtomicBool::new(false),
                rules_required: AtomicBool::new(true),
                shutting_down: AtomicBool::new(false),
                store_reachable: AtomicBool::new(true),
                store_required: AtomicBool::new(false),
                serving,
            }),
        }
    }

    /// Rules are loaded (or were lost). Set by the server at start when it
    /// is given rules, and by the reloader after each successful load.
    pub fn set_rules_loaded(&self, loaded: bool) {
        self.inner.rules_loaded.store(loaded, Ordering::Release);
        self.publish();
    }

    /// Whether serving needs rules loaded at least once (true unless set):
    /// the reference's `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`.
    pub fn set_rules_required(&self, required: bool) {
        self.inner.rules_required.store(required, Ordering::Release);
        self.publish();
    }

    /// The server is shutting down: load balancers should drain it. There
    /// is no way back.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.publish();
    }

    /// The hook for a counter store: whether it can currently answer.
    pub fn set_store_reachable(&self, reachable: bool) {
        self.inner
            .store_reachable
            .store(reachable, Ordering::Release);
        self.publish();
    }

    /// Whether an unreachable store makes the server not serving (true when
    /// store errors deny or fail requests, false when they fail open).
    pub fn set_store_required(&self, required: bool) {
        self.inner.store_required.store(required, Ordering::Release);
        self.publish();
    }

    /// Rules are loaded.
    pub fn rules_loaded(&self) -> bool {
        self.inner.rules_loaded.load(Ordering::Acquire)
    }

    /// The store last said it is reachable.
    pub fn store_reachable(&self) -> bool {
        self.inner.store_reachable.load(Ordering::Acquire)
    }

    /// The server is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Whether the server should receive traffic now.
    pub fn is_serving(&self) -> bool {
        let inner = &self.inner;
        (inner.rules_loaded.load(Ordering::Acquire)
            || !inner.rules_required.load(Ordering::Acquire))
            && !inner.shutting_down.load(Ordering::Acquire)
            && (inner.store_reachable.load(Ordering::Acquire)
                || !inner.store_required.load(Ordering::Acquire))
    }

    /// A receiver of [`Health::is_serving`], updated on every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.serving.subscribe()
    }

    fn publish(&self) {
        let serving = self.is_serving();
        // `send_if_modified` so receivers wake only on real transitions.
        self.inner.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_needs_rules_and_no_shutdown() {
        let health = Health::new();
        assert!(!health.is_serving());
        health.set_rules_loaded(true);
        assert!(health.is_serving());
        health.set_shutting_down();
        assert!(!health.is_serving());
    }

    #[test]
    fn rules_matter_only_when_required() {
        let health = Health::new();
        health.set_rules_required(false);
        assert!(health.is_serving(), "no config yet, and none needed");
        health.set_shutting_down();
        assert!(!health.is_serving());
    }

    #[test]
    fn an_unreachable_store_matters_only_when_required() {
        let health = Health::new();
        health.set_rules_loaded(true);
        health.set_store_reachable(false);
        assert!(health.is_serving(), "fail-open: still serving");
        health.set_store_required(true);
        assert!(!health.is_serving());
        health.set_store_reachable(true);
        assert!(health.is_serving());
    }

    #[test]
    fn subscribers_see_transitions() {
        let health = Health::new();
        let mut rx = health.subscribe();
        assert!(!*rx.borrow_and_update());
        health.set_rules_loaded(true);
        assert!(rx.has_changed().unwrap_or(false));
        assert!(*rx.borrow_and_update());
        // Not a transition: no wake-up.
        health.set_store_reachable(true);
        assert!(!rx.has_changed().unwrap_or(true));
    }
}
