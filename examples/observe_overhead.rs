//! What tracing off and the reference's stats add to one decision, in
//! instructions (callgrind), in-process as `benches/decision.rs` measures:
//!
//! - `bare`: `RateLimiter::decide` on a `MemoryStore`;
//! - `traced_off`: the same store wrapped in `TracedStore` without a tracer,
//!   which is what `serve` builds when `TRACING_ENABLED` is false;
//! - `observed`: `decide` and `Metrics::observe`, without the reference's
//!   stats (`DISABLE_STATS`, or neither statsd nor Prometheus);
//! - `observed_reference`: the same with them (statsd's default).
//!
//! ```text
//! cargo build --example observe_overhead
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/debug/examples/observe_overhead traced_off 20000
//! ```
//!
//! The total instruction count divided by the count is the cost of one
//! request; compare the cases with each other.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::observe::mapper::Mapper;
use floodgate::observe::metrics::{Metrics, Transport};
use floodgate::observe::reference::ReferenceStats;
use floodgate::observe::traces::TracedStore;
use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use floodgate::store::CounterStore;
use floodgate::store::memory::MemoryStore;

const RULES: &str = "
domain: d
descriptors:
  - key: k
    value: v
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
";

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

fn limiter<S: CounterStore>(store: S) -> RateLimiter<S> {
    let rules = config::load_sources(
        &[("d.yaml".into(), RULES.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    RateLimiter::new(
        rules,
        store,
        Arc::new(SystemClock),
        ServiceOptions::default(),
    )
}

/// `n` decisions (and, with `metrics`, their recording); out of line so
/// that callgrind counts it alone (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured<S: CounterStore>(
    limiter: &RateLimiter<S>,
    metrics: Option<&Metrics>,
    request: &RateLimitRequest,
    n: usize,
) -> usize {
    let mut over = 0;
    for _ in 0..n {
        let result = ready(limiter.decide(black_box(request)));
        if let Some(metrics) = metrics {
            metrics.observe(Transport::Grpc, request, &result, Duration::from_micros(5));
        }
        over += usize::from(result.is_ok_and(|d| d.over_limit));
    }
    over
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("bare", String::as_str);
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let request = RateLimitRequest {
        domain: "d".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "k".into(),
                value: "v".into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };
    let over = match case {
        "bare" => {
            let limiter = limiter(MemoryStore::new(1_000));
            measured(&limiter, None, &request, 1);
            measured(&limiter, None, &request, n)
        }
        "traced_off" => {
            let limiter = limiter(TracedStore::new(MemoryStore::new(1_000), None));
            measured(&limiter, None, &request, 1);
            measured(&limiter, None, &request, n)
        }
        "observed" | "observed_reference" => {
            let limiter = limiter(MemoryStore::new(1_000));
            let mut metrics = Metrics::new(0.8);
            if case == "observed_reference" {
                let stats = ReferenceStats::new(Some(Mapper::reference_default(false)), 1000);
                metrics = metrics.with_reference(Arc::new(stats));
            }
            metrics.set_rules(&limiter.rules());
            measured(&limiter, Some(&metrics), &request, 1);
            measured(&limiter, Some(&metrics), &request, n)
        }
        other => panic!("case is bare, traced_off, observed or observed_reference, not {other}"),
    };
    println!("{n} requests of {case}, {over} over the limit");
}
