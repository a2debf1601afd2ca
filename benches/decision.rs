//! The decision path in-process: [`RateLimiter::decide`] with a
//! [`MemoryStore`] and the system clock, i.e. validation, rule matching,
//! counter-key building, the algorithm and the memory store, without gRPC.
//!
//! For each algorithm (fixed window, sliding window, token bucket), requests
//! of 1 and 4 descriptors are decided on one hot key per descriptor, and on
//! 1M distinct live counters (pre-populated, then cycled so every decision
//! hits a live counter that is unlikely to be in the CPU cache). Limits are
//! high, so every answer is OK and every decision writes its counter: the
//! common, more expensive path.
//!
//! Run with `cargo bench --bench decision`; pass a filter to run a subset,
//! e.g. `cargo bench --bench decision -- 'fixed_window/1desc/hot'`. Sample
//! sizes are kept small so the whole suite takes a few minutes.
//!
//! # Instruction counts
//!
//! Wall-clock figures are noisy on a shared machine; instruction counts are
//! not. With `FLOODGATE_DECIDE_LOOP=<case>:<n>` (`case`: `hot`, `hot4` or
//! `1M`, fixed window) the binary skips criterion, sets the case up, then
//! makes `n` decisions inside [`measured_loop`], which callgrind can count
//! alone:
//!
//! ```text
//! cargo bench --bench decision --no-run
//! FLOODGATE_DECIDE_LOOP=hot:100000 valgrind --tool=callgrind \
//!     --toggle-collect='*measured_loop*' target/release/deps/decision-<hash>
//! ```
//!
//! The total instruction count divided by `n` is the cost of one decision.

use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::limit::Algorithm;
use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use floodgate::respond;
use floodgate::store::memory::MemoryStore;

/// Distinct counters in the "many keys" cases.
const MANY_KEYS: usize = 1_000_000;

/// Key-only rules: every distinct value has its own counter. Windows are an
/// hour long so that pre-populated counters stay live during the run, and
/// limits are high so every answer is OK. A token bucket's counter lives only
/// until the bucket is full again, so the 1M-key case (`*_live`) refills
/// slowly (10 per hour: each hit keeps its counter for 6 minutes) from a huge
/// burst, while the hot key refills fast enough never to run out.
const RULES: &str = "
domain: bench
descriptors:
  - key: fixed_window
    rate_limit: {unit: hour, requests_per_unit: 4000000000}
  - key: fixed_window_live
    rate_limit: {unit: hour, requests_per_unit: 4000000000}
  - key: sliding_window
    rate_limit: {algorithm: sliding_window, unit: hour, requests_per_unit: 4000000000}
  - key: sliding_window_live
    rate_limit: {algorithm: sliding_window, unit: hour, requests_per_unit: 4000000000}
  - key: token_bucket
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 1000000000}
  - key: token_bucket_live
    rate_limit: {algorithm: token_bucket, unit: hour, requests_per_unit: 10, burst: 4000000000}
";

fn limiter(max_counters: u64) -> RateLimiter<MemoryStore> {
    let rules = config::load_sources(
        &[(PathBuf::from("bench.yaml"), RULES.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|errors| panic!("bench rules are valid: {errors}"));
    RateLimiter::new(
        rules,
        MemoryStore::new(max_counters),
        Arc::new(SystemClock),
        ServiceOptions::default(),
    )
}

/// A request of `descriptors` descriptors, each `[(key, hot-<i>)]`.
fn request(key: &str, descriptors: usize) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bench".to_owned(),
        descriptors: (0..descriptors)
            .map(|i| RateLimitDescriptor {
                entries: vec![Entry {
                    key: key.to_owned(),
                    value: format!("hot-{i}"),
                }],
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend: 1,
    }
}

/// Runs a future that never waits (the memory store is synchronous inside)
/// to completion, without a runtime in the measurement.
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

fn decide(limiter: &RateLimiter<MemoryStore>, request: &RateLimitRequest) -> bool {
    match ready(limiter.decide(request)) {
        Ok(decision) => decision.over_limit,
        Err(e) => panic!("bench request is valid: {e}"),
    }
}

/// Puts `values[first..first + n]` into the request's descriptors (by swap,
/// so no allocation), decides, and swaps them back.
fn decide_with(
    limiter: &RateLimiter<MemoryStore>,
    request: &mut RateLimitRequest,
    values: &mut [String],
    first: usize,
) -> bool {
    let n = request.descriptors.len();
    for (d, descriptor) in request.descriptors.iter_mut().enumerate() {
        std::mem::swap(&mut descriptor.entries[0].value, &mut values[first + d]);
    }
    let over = decide(limiter, request);
    for (d, descriptor) in request.descriptors.iter_mut().enumerate().take(n) {
        std::mem::swap(&mut descriptor.entries[0].value, &mut values[first + d]);
    }
    over
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // Per-request throughput: the time shown is per decide() call.
    group.throughput(Throughput::Elements(1));

    for algorithm in Algorithm::ALL {
        for descriptors in [1usize, 4] {
            // One hot key per descriptor.
            let hot = limiter(2 * MANY_KEYS as u64);
            let hot_request = request(algorithm.as_str(), descriptors);
            group.bench_function(
                BenchmarkId::new(algorithm.as_str(), format!("{descriptors}desc/hot")),
                |b| b.iter(|| decide(&hot, black_box(&hot_request))),
            );
            drop(hot);

            // 1M live counters, cycled in order; 4-descriptor requests take
            // 4 consecutive ones, so the request count per cycle is 1M / 4.
            let many = limiter(2 * MANY_KEYS as u64);
            let mut values: Vec<String> = (0..MANY_KEYS).map(|i| format!("key-{i}")).collect();
            let mut many_request = request(&format!("{}_live", algorithm.as_str()), descriptors);
            let per_cycle = MANY_KEYS / descriptors;
            for r in 0..per_cycle {
                decide_with(&many, &mut many_request, &mut values, r * descriptors);
            }
            let mut next = 0usize;
            group.bench_function(
                BenchmarkId::new(algorithm.as_str(), format!("{descriptors}desc/1M-keys")),
                |b| {
                    b.iter(|| {
                        let first = next * descriptors;
                        next = (next + 1) % per_cycle;
                        decide_with(&many, black_box(&mut many_request), &mut values, first)
                    })
                },
            );
            drop(many);
        }
    }

    // The same hot decision plus building the protobuf response, to show
    // what `respond` adds on top of `decide`.
    let hot = limiter(1_000);
    let hot_request = request("fixed_window", 1);
    let options = respond::ResponseOptions::default();
    group.bench_function("fixed_window/1desc/hot+respond", |b| {
        b.iter(|| match ready(hot.decide(black_box(&hot_request))) {
            Ok(decision) => respond::to_response(&decision, &options),
            Err(e) => panic!("bench request is valid: {e}"),
        })
    });
    group.finish();
}

/// Makes `n` decisions of `request` (with fresh values from `values` when
/// given, as in the 1M-key case); kept out of line so that callgrind can
/// count it alone (`--toggle-collect='*measured_loop*'`).
#[inline(never)]
fn measured_loop(
    limiter: &RateLimiter<MemoryStore>,
    request: &mut RateLimitRequest,
    mut values: Option<&mut [String]>,
    n: usize,
) -> usize {
    let mut over = 0;
    let descriptors = request.descriptors.len();
    for i in 0..n {
        let denied = match values.as_deref_mut() {
            Some(values) => {
                let per_cycle = values.len() / descriptors;
                decide_with(limiter, request, values, (i % per_cycle) * descriptors)
            }
            None => decide(limiter, black_box(request)),
        };
        over += usize::from(denied);
    }
    over
}

/// This process's resident set size (Linux; `None` elsewhere).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `FLOODGATE_DECIDE_LOOP=<case>:<n>` mode (see the module doc).
fn decide_loop(spec: &str) {
    let Some((case, n)) = spec.split_once(':') else {
        panic!("FLOODGATE_DECIDE_LOOP is <case>:<n>, not {spec:?}");
    };
    let n: usize = n
        .parse()
        .unwrap_or_else(|e| panic!("FLOODGATE_DECIDE_LOOP count {n:?}: {e}"));
    let limiter = limiter(2 * MANY_KEYS as u64);
    let over = match case {
        "hot" | "hot4" => {
            let mut request = request("fixed_window", if case == "hot" { 1 } else { 4 });
            // Warm: the counter exists, as in the criterion case.
            measured_loop(&limiter, &mut request, None, 1);
            measured_loop(&limiter, &mut request, None, n)
        }
        "1M" => {
            let mut values: Vec<String> = (0..MANY_KEYS).map(|i| format!("key-{i}")).collect();
            let mut request = request("fixed_window_live", 1);
            let before = rss_kib();
            for first in 0..MANY_KEYS {
                decide_with(&limiter, &mut request, &mut values, first);
            }
            if let (Some(before), Some(after)) = (before, rss_kib()) {
                println!(
                    "RSS {before} KiB -> {after} KiB after {MANY_KEYS} counters: {} B per counter",
                    (after - before) * 1024 / MANY_KEYS as u64
                );
            }
            measured_loop(&limiter, &mut request, Some(&mut values), n)
        }
        other => panic!("FLOODGATE_DECIDE_LOOP case is hot, hot4 or 1M, not {other:?}"),
    };
    println!("{n} decisions of {case}, {over} over the limit");
}

criterion_group!(benches, decision);

// The floodgate binary's allocator, so the figures are the shipped ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Ok(spec) = std::env::var("FLOODGATE_DECIDE_LOOP") {
        decide_loop(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
