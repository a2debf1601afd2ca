//! The cost of recording one decision: [`Metrics::observe`] as the
//! transports call it after every request (latency histogram, request
//! counter, per-rule counters, and the dashboard's live tallies and top-K of
//! descriptors closest to their limits).
//!
//! Cases, each on a request of one descriptor:
//! - `low_usage`: a descriptor far below its limit while the top-K is full
//!   of closer ones, the common case (the top-K is skipped after one
//!   threshold check);
//! - `in_top`: the same descriptor always closest to its limit, so every
//!   call takes the top-K's lock and updates its entry (the worst case);
//! - `unmatched`: a descriptor no rule matches (latency and request counter
//!   only).
//!
//! Run with `cargo bench --bench observe`.

use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{DecideError, Decision, RateLimiter, ServiceOptions};
use floodgate::observe::metrics::{DEFAULT_NEAR_LIMIT_RATIO, Metrics, Transport};
use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use floodgate::store::memory::MemoryStore;

const RULES: &str = "
domain: bench
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000}
";

fn request(key: &str, value: &str, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bench".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: key.to_owned(),
                value: value.to_owned(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: hits,
    }
}

/// Runs a future that never waits (the memory store is synchronous inside).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory store's apply never waits"),
    }
}

fn observe(c: &mut Criterion) {
    let rules = config::load_sources(
        &[(PathBuf::from("bench.yaml"), RULES.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|errors| panic!("bench rules are valid: {errors}"));
    let limiter = RateLimiter::new(
        rules,
        MemoryStore::new(100_000),
        Arc::new(SystemClock),
        ServiceOptions::default(),
    );
    let metrics = Metrics::new(DEFAULT_NEAR_LIMIT_RATIO);
    metrics.set_rules(&limiter.rules());
    let decide = |request: &RateLimitRequest| -> Result<Decision, DecideError> {
        ready(limiter.decide(request))
    };

    // Fill the top-K with descriptors at 90% of their limit.
    for i in 0..64 {
        let req = request("user", &format!("heavy-{i}"), 900);
        let result = decide(&req);
        metrics.observe(Transport::Grpc, &req, &result, Duration::from_micros(20));
    }
    let low = request("user", "light", 1);
    let low_result = decide(&low);
    let top = request("user", "hottest", 990);
    let top_result = decide(&top);
    let unmatched = request("nobody", "x", 1);
    let unmatched_result = decide(&unmatched);

    let mut group = c.benchmark_group("observe");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    let elapsed = Duration::from_micros(20);
    for (name, req, result) in [
        ("low_usage", &low, &low_result),
        ("in_top", &top, &top_result),
        ("unmatched", &unmatched, &unmatched_result),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| metrics.observe(Transport::Grpc, black_box(req), black_box(result), elapsed))
        });
    }
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
