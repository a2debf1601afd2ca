//! Soak: many connections send a mix of valid and invalid requests over
//! loopback for a while. Valid requests always get an answer (OK or
//! OVER_LIMIT, never an error), every invalid one gets `INVALID_ARGUMENT`,
//! nothing panics, the server still answers and shuts down cleanly after, and
//! memory stays flat.
//!
//! Short by default (10 s, for CI); the long form is
//! `FLOODGATE_SOAK_SECS=300 cargo test --release --test soak -- --nocapture`.
//! The RSS check is a leak detector, not a benchmark: RSS after a warm-up and
//! at the end (client and server share this process) must stay within a
//! loose bound, which a per-request leak of even a few bytes at these rates
//! over the long form would break.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodgate::decide::ServiceOptions;
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitOverride, RateLimitRequest, RateLimitServiceClient,
};
use harness::{TestServer, rules, secs};

const CONNECTIONS: usize = 16;
const TASKS_PER_CONNECTION: usize = 8;
/// A bound on requests per task, besides the time.
const MAX_REQUESTS_PER_TASK: u64 = 2_000_000;
/// RSS growth allowed between the end of the warm-up and the end.
const RSS_GROWTH_BOUND: u64 = 64 << 20;

const YAML: &str = "domain: soak
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 50}
  - key: path
    value: export
    rate_limit: {algorithm: sliding_window, unit: second, requests_per_unit: 20}
  - key: tenant
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 100, burst: 20}
    descriptors:
      - key: plan
        rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: free
";

fn soak_duration() -> Duration {
    let seconds = std::env::var("FLOODGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds)
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A small deterministic generator (xorshift), one per task.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn descriptor(entries: &[(&str, String)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: value.clone(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// A request, and whether it is valid.
fn request(rng: &mut Rng) -> (RateLimitRequest, bool) {
    let mut descriptors = Vec::new();
    let valid = rng.below(4) != 0;
    if valid {
        for _ in 0..=rng.below(3) {
            descriptors.push(match rng.below(5) {
                0 => descriptor(&[("user", format!("u{}", rng.below(20_000)))]),
                1 => descriptor(&[("path", "export".into())]),
                2 => descriptor(&[
                    ("tenant", format!("t{}", rng.below(50))),
                    ("plan", "pro".into()),
                ]),
                3 => descriptor(&[("unknown", format!("{}", rng.next()))]),
                _ => RateLimitDescriptor {
                    limit: Some(RateLimitOverride {
                        requests_per_unit: 10,
                        unit: 1,
                    }),
                    hits_addend: Some(rng.below(3)),
                    ..descriptor(&[("free", "x".into())])
                },
            });
        }
        let request = RateLimitRequest {
            domain: if rng.below(10) == 0 { "other" } else { "soak" }.into(),
            descriptors,
            hits_addend: u32::try_from(rng.below(3)).unwrap_or(0),
        };
        return (request, true);
    }
    let user = || descriptor(&[("user", "u".into())]);
    let request = match rng.below(6) {
        0 => RateLimitRequest {
            domain: String::new(),
            descriptors: vec![user()],
            hits_addend: 0,
        },
        1 => RateLimitRequest {
            domain: "soak".into(),
            descriptors: Vec::new(),
            hits_addend: 0,
        },
        2 => RateLimitRequest {
            domain: "soak".into(),
            descriptors: vec![user(); 65],
            hits_addend: 0,
        },
        3 => RateLimitRequest {
            domain: "soak".into(),
            descriptors: vec![descriptor(&[("", "v".into())])],
            hits_addend: 0,
        },
        4 => RateLimitRequest {
            domain: "soak".into(),
            descriptors: vec![descriptor(&[("user", "v".repeat(64 * 1024 + 1))])],
            hits_addend: 0,
        },
        _ => RateLimitRequest {
            domain: "soak".into(),
            descriptors: vec![RateLimitDescriptor {
                limit: Some(RateLimitOverride {
                    requests_per_unit: 1,
                    unit: 0,
                }),
                ..user()
            }],
            hits_addend: 0,
        },
    };
    (request, false)
}

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    over_limit: AtomicU64,
    rejected: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_from_many_connections() {
    let h = TestServer::serve_at(rules(YAML), ServiceOptions::default(), secs(1_700_006_400)).await;
    let duration = soak_duration();
    let started = Instant::now();
    let deadline = started + duration;
    let counts = Arc::new(Counts::default());

    // Windows roll: the manual clock moves a second every 100 ms.
    let clock = h.clock.clone();
    let ticker = tokio::spawn(async move {
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance(secs(1));
        }
    });

    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let client = RateLimitServiceClient::connect(format!("http://{}", h.grpc_addr))
            .await
            .expect("client connects");
        for task in 0..TASKS_PER_CONNECTION {
            let mut client = client.clone();
            let counts = Arc::clone(&counts);
            let seed =
                0x9e37_79b9_7f4a_7c15 ^ ((connection * TASKS_PER_CONNECTION + task) as u64 + 1);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(seed);
                let mut sent = 0;
                while Instant::now() < deadline && sent < MAX_REQUESTS_PER_TASK {
                    sent += 1;
                    let (request, valid) = request(&mut rng);
                    match (client.should_rate_limit(request).await, valid) {
                        (Ok(response), true) => {
                            let response = response.into_inner();
                            counts.answered.fetch_add(1, Ordering::Relaxed);
                            if response.overall_code == Code::OverLimit as i32 {
                                counts.over_limit.fetch_add(1, Ordering::Relaxed);
                            } else {
                                assert_eq!(response.overall_code, Code::Ok as i32);
                            }
                        }
                        (Err(status), false) => {
                            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                            counts.rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        (Ok(response), false) => panic!("invalid request answered: {response:?}"),
                        (Err(status), true) => panic!("valid request failed: {status:?}"),
                    }
                }
            }));
        }
    }

    // Warm-up: a fifth of the run (at least a second), then the baseline.
    tokio::time::sleep((duration / 5).max(Duration::from_secs(1))).await;
    let warm = rss_bytes();
    let answered_at_warm = counts.answered.load(Ordering::Relaxed);

    for task in tasks {
        task.await.expect("no task panicked");
    }
    ticker.await.expect("ticker");
    let end = rss_bytes();

    let answered = counts.answered.load(Ordering::Relaxed);
    let rejected = counts.rejected.load(Ordering::Relaxed);
    eprintln!(
        "soak: {:.1} s, {answered} answered ({} over limit), {rejected} rejected, RSS {} -> {} KiB",
        started.elapsed().as_secs_f64(),
        counts.over_limit.load(Ordering::Relaxed),
        warm.unwrap_or(0) >> 10,
        end.unwrap_or(0) >> 10,
    );
    assert!(
        answered > answered_at_warm,
        "traffic went on after the warm-up"
    );
    assert!(rejected > 0 && counts.over_limit.load(Ordering::Relaxed) > 0);
    if let (Some(warm), Some(end)) = (warm, end) {
        assert!(
            end.saturating_sub(warm) < RSS_GROWTH_BOUND,
            "RSS grew from {} to {} MiB",
            warm >> 20,
            end >> 20
        );
    }

    // Still serving, over gRPC and HTTP, and stops cleanly.
    let mut client = h.client.clone();
    let after = client
        .should_rate_limit(harness::request("soak", &[&[("user", "after")]]))
        .await
        .expect("answers after the soak")
        .into_inner();
    assert_eq!(after.overall_code, Code::Ok as i32);
    let (status, _) = harness::http_get(h.http_addr, "/healthcheck").await;
    assert_eq!(status, 200);
    h.shutdown().await;
}
