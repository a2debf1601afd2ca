//! Key floods: a caller sending ever new descriptor values must not grow the
//! server's memory without bound. The memory store holds at most
//! `--max-counters` slots, evicting the least recently used counter beyond
//! that (and counting it), and a long key takes more slots.
//!
//! The RSS checks are leak detectors, not benchmarks: the bounds are loose
//! (tens of MB) so that allocator noise never fails them, while a store that
//! kept every flooded key (hundreds of MB here) always would.

use crate::harness;

use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::proto::{Code, Entry, RateLimitDescriptor, RateLimitRequest};
use floodgate::store::CounterStore;
use floodgate::store::memory::MemoryStore;
use harness::{TestServer, rules, secs};

const START: u64 = secs(1_700_006_400);
const MAX_COUNTERS: u64 = 10_000;

/// Every `user` value gets its own counter.
const YAML: &str = "domain: d\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 100}\n";

/// The resident set size of this process in bytes, from /proc (Linux);
/// `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn user(value: String) -> RateLimitRequest {
    RateLimitRequest {
        domain: "d".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value,
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    }
}

fn limiter() -> RateLimiter<MemoryStore> {
    RateLimiter::new(
        rules(YAML),
        MemoryStore::new(MAX_COUNTERS),
        Arc::new(ManualClock::new(START)),
        ServiceOptions::default(),
    )
}

#[tokio::test]
async fn a_flood_of_distinct_keys_stays_within_max_counters() {
    let limiter = limiter();
    let before = rss_bytes();
    for n in 0..200_000u32 {
        let decision = limiter
            .decide(&user(format!("flood-{n}")))
            .await
            .expect("decided");
        assert!(!decision.over_limit);
    }
    let store = limiter.store();
    // `len` settles moka's pending work before counting.
    let held = store.len();
    assert!(held <= MAX_COUNTERS, "{held} counters held");
    assert!(held > MAX_COUNTERS / 2, "{held} counters held");
    assert!(
        store.evictions() >= 190_000,
        "{} evictions",
        store.evictions()
    );
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        let growth = after.saturating_sub(before);
        eprintln!("RSS growth: {} KiB", growth >> 10);
        assert!(growth < 100 << 20, "RSS grew by {} MiB", growth >> 20);
    }
    // Hot keys survive a flood (LRU): a key used between flood waves keeps
    // its count.
    let hot = || user("hot".into());
    for _ in 0..100 {
        assert!(!limiter.decide(&hot()).await.expect("decided").over_limit);
    }
    for n in 0..30_000u32 {
        limiter
            .decide(&user(format!("wave-{n}")))
            .await
            .expect("decided");
        if n % 1_000 == 0 {
            // Touched often enough to stay among the most recently used.
            let peeked = limiter
                .peek("d", &hot().descriptors[0].entries)
                .await
                .expect("peeked")
                .expect("a rule");
            assert_eq!(peeked.limits[0].outcome.used, 100, "hot key evicted at {n}");
        }
    }
    assert!(limiter.decide(&hot()).await.expect("decided").over_limit);
}

#[tokio::test]
async fn long_keys_cannot_multiply_memory() {
    // 3 000 keys with 64 KiB values would hold 190 MiB if a counter's size
    // did not matter (all fit in 10 000 counters); each takes 257 slots
    // instead, so about 40 are held.
    let limiter = limiter();
    let before = rss_bytes();
    let padding = "p".repeat(64 * 1024 - 16);
    for n in 0..3_000u32 {
        limiter
            .decide(&user(format!("{n:>16}{padding}")))
            .await
            .expect("decided");
    }
    let held = limiter.store().len();
    assert!(held <= MAX_COUNTERS / 256, "{held} counters held");
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        let growth = after.saturating_sub(before);
        eprintln!("RSS growth: {} KiB", growth >> 10);
        assert!(growth < 100 << 20, "RSS grew by {} MiB", growth >> 20);
    }
}

#[tokio::test]
async fn a_flood_over_grpc_is_bounded_and_counted() {
    // The harness's store holds 10 000 counters.
    let h = TestServer::serve_at(rules(YAML), ServiceOptions::default(), START).await;
    let mut tasks = Vec::new();
    for task in 0..4u32 {
        let mut client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..3_000u32 {
                let answer = client
                    .should_rate_limit(user(format!("grpc-{task}-{n}")))
                    .await
                    .expect("answered")
                    .into_inner();
                assert_eq!(answer.overall_code, Code::Ok as i32);
            }
        }));
    }
    for task in tasks {
        task.await.expect("flood task");
    }
    let (status, text) = harness::http_get(h.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    let held = harness::ops::metric(&text, "floodgate_counters", "").expect("counters gauge");
    let evicted = harness::ops::metric(&text, "floodgate_counter_evictions_total", "")
        .expect("evictions counter");
    assert!(held <= MAX_COUNTERS as f64, "{held}");
    assert!(evicted >= 2_000.0, "{evicted}");
    h.shutdown().await;
}
