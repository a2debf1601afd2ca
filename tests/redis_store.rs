//! The Redis store against a real `redis-server` started by each test: the
//! same request streams give the same outcomes as the memory store; a fleet
//! of servers sharing one Redis admits exactly the limit; Redis dying and
//! coming back; key prefixes; NOSCRIPT recovery; the over-limit cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodgate::clock::{Clock, SystemClock};
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions, StoreErrorPolicy};
use floodgate::limit::calendar::Calendar;
use floodgate::limit::{Algorithm, Limit, NANOS_PER_SECOND, Nanos, Outcome, Unit};
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient,
};
use floodgate::rules::RuleSet;
use floodgate::server::{self, Listeners, Running};
use floodgate::store::memory::MemoryStore;
use floodgate::store::redis::{RedisOptions, RedisStore, TimeSource};
use floodgate::store::{Check, CounterStore, Outcomes};
use proptest::prelude::*;

mod harness;
use harness::redis::RedisServer;

#[path = "redis_store/batching.rs"]
mod batching;
#[path = "redis_store/overrides.rs"]
mod overrides;

async fn redis_store(server: &RedisServer, prefix: &str, cache: u64) -> RedisStore {
    RedisStore::connect(RedisOptions {
        key_prefix: prefix.to_owned(),
        time_source: TimeSource::Caller,
        over_limit_cache: cache,
        // Generous: a debug build on a shared machine; hangs are what we catch.
        timeout: Duration::from_millis(500),
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("connects to redis-server")
}

/// A store counting with Redis's clock.
async fn redis_time_store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(RedisOptions {
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(500),
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("connects")
}

const T0: Nanos = 1_700_000_000 * NANOS_PER_SECOND;

fn limit(algorithm: Algorithm, rpu: u64, unit: Unit, multiplier: u64, burst: u64) -> Limit {
    Limit {
        requests_per_unit: rpu,
        unit,
        unit_multiplier: multiplier,
        algorithm,
        burst,
        calendar: None,
    }
}

/// A check of `key`. Checks borrow their key; the streams below are built
/// once per test case and live as long as it, so the key is leaked.
fn check(
    key: &str,
    limit: Limit,
    hits: u64,
    group: u32,
    count_when_denied: bool,
) -> Check<'static> {
    Check {
        key: Box::leak(key.as_bytes().into()),
        limit,
        hits,
        group,
        count_when_denied,
    }
}

/// One call of a stream: checks at an instant.
type Step = (Nanos, Vec<Check<'static>>);

/// Runs `steps` against `store`, returning every outcome.
async fn run(store: &impl CounterStore, steps: &[Step]) -> Vec<Vec<Outcome>> {
    let mut all = Vec::with_capacity(steps.len());
    for (now, checks) in steps {
        let mut out = Outcomes::new();
        store
            .apply(checks, *now, &mut out)
            .await
            .expect("store answers");
        all.push(out.to_vec());
    }
    all
}

/// The same stream on a fresh memory store and on Redis: identical outcomes.
async fn same_outcomes(server: &RedisServer, prefix: &str, steps: &[Step]) {
    let memory = MemoryStore::new(10_000);
    let redis = redis_store(server, prefix, 0).await;
    let expected = run(&memory, steps).await;
    let got = run(&redis, steps).await;
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(e, g, "step {i} at {}: {:?}", steps[i].0, steps[i].1);
    }
}

/// Hand-written streams: each algorithm across window boundaries, odd
/// nanosecond instants, limits of 0, hits of 0, over-size requests, groups,
/// count_when_denied and duplicate keys.
fn scripted_streams() -> Vec<Vec<Step>> {
    let mut streams = Vec::new();
    let limits = [
        limit(Algorithm::FixedWindow, 5, Unit::Second, 1, 5),
        limit(Algorithm::FixedWindow, 3, Unit::Minute, 10, 3),
        limit(Algorithm::SlidingWindow, 5, Unit::Second, 1, 5),
        limit(Algorithm::SlidingWindow, 7, Unit::Hour, 1, 7),
        limit(Algorithm::TokenBucket, 7, Unit::Second, 1, 3),
        limit(Algorithm::TokenBucket, 3, Unit::Minute, 1, 5),
        limit(Algorithm::TokenBucket, 0, Unit::Second, 1, 5),
        limit(Algorithm::SlidingWindow, 0, Unit::Second, 1, 0),
        limit(Algorithm::FixedWindow, 2, Unit::Day, 45, 2),
    ];
    for (n, l) in limits.iter().enumerate() {
        let window = l.window();
        let key = format!("single-{n}");
        let mut steps = Vec::new();
        let mut now = T0 + 123_456_789;
        for i in 0..40u64 {
            let hits = [1, 1, 2, 0, 1, 9, 1][usize::try_from(i % 7).unwrap_or(0)];
            steps.push((now, vec![check(&key, *l, hits, 0, i % 3 == 0)]));
            now += match i % 5 {
                0 => window / 7 + 13,
                1 => 1,
                2 => window / 3,
                3 => 0,
                _ => window + window / 2 + 7,
            };
        }
        streams.push(steps);
    }
    // Groups: all-or-nothing, count_when_denied, duplicates.
    let fixed = limit(Algorithm::FixedWindow, 3, Unit::Minute, 1, 3);
    let sliding = limit(Algorithm::SlidingWindow, 4, Unit::Minute, 1, 4);
    let bucket = limit(Algorithm::TokenBucket, 2, Unit::Minute, 1, 2);
    let mut steps = Vec::new();
    let mut now = T0 + 5;
    for i in 0..30u64 {
        steps.push((
            now,
            vec![
                check("g-fixed", fixed, 1, 0, true),
                check("g-sliding", sliding, 1, 0, false),
                check("g-bucket", bucket, 1, 1, false),
                check("g-fixed", fixed, i % 2, 1, true),
                check("g-sliding", sliding, 2, 2, false),
                check("g-fixed", fixed, 0, 3, false),
            ],
        ));
        now += [1, 7 * NANOS_PER_SECOND, 29 * NANOS_PER_SECOND + 3]
            [usize::try_from(i % 3).unwrap_or(0)];
    }
    streams.push(steps);
    streams
}

/// Calendar windows: a New York day across the 2026 spring and autumn
/// changes (23- and 25-hour days), a Kolkata month, an ISO week and a UTC
/// year, with count_when_denied, duplicates and a group.
fn calendar_streams() -> Vec<Vec<Step>> {
    let zoned = |zone: &str, unit: Unit, rpu: u64| Limit {
        calendar: Some(Calendar::named(zone).expect("zone")),
        ..Limit::fixed(rpu, unit)
    };
    let day = zoned("America/New_York", Unit::Day, 3);
    let month = zoned("Asia/Kolkata", Unit::Month, 4);
    let week = zoned("Europe/Berlin", Unit::Week, 2);
    let year = zoned("UTC", Unit::Year, 5);
    let mut streams = Vec::new();
    // 2026-03-07 and 2026-10-31, 12:00 UTC.
    for start in [1_772_884_800, 1_793_448_000] {
        let mut steps = Vec::new();
        let mut now = start * NANOS_PER_SECOND + 987_654_321;
        for i in 0..60u64 {
            let hits = [1, 2, 0, 1, 5][usize::try_from(i % 5).unwrap_or(0)];
            steps.push((
                now,
                vec![
                    check("cal-day", day, hits, 0, i % 2 == 0),
                    check("cal-week", week, 1, 0, false),
                    check("cal-day", day, 1, 1, true),
                    check("cal-month", month, hits, 2, i % 3 == 0),
                    check("cal-year", year, 1, 3, false),
                ],
            ));
            now += [1, 3_600, 7 * 3_600, 0, 26 * 3_600, 5 * 86_400]
                [usize::try_from(i % 6).unwrap_or(0)]
                * NANOS_PER_SECOND
                + 17;
        }
        streams.push(steps);
    }
    streams
}

#[tokio::test]
async fn calendar_streams_match_the_memory_store() {
    let server = RedisServer::start();
    for (i, steps) in calendar_streams().iter().enumerate() {
        same_outcomes(&server, &format!("calendar{i}:"), steps).await;
    }
}

#[tokio::test]
async fn redis_time_counts_calendar_windows_in_its_own_window() {
    let server = RedisServer::start();
    let store = redis_time_store(&server, "rtc:").await;
    let day = Limit {
        calendar: Some(Calendar::utc()),
        ..Limit::fixed(2, Unit::Day)
    };
    // Boundaries come from the caller's now; Redis's TIME picks among the
    // previous, current and next windows, so a caller an hour off still
    // counts in Redis's day.
    let real = SystemClock.now();
    let hour = 3_600 * NANOS_PER_SECOND;
    let steps = vec![
        (real - hour, vec![check("d", day, 1, 0, false)]),
        (real + hour, vec![check("d", day, 1, 0, false)]),
        (real, vec![check("d", day, 1, 0, false)]),
    ];
    let out = run(&store, &steps).await;
    assert!(out[0][0].admitted && out[1][0].admitted);
    // Unless the test straddled UTC midnight, the third request is over.
    let today = Calendar::utc().window(Unit::Day, real);
    if today.start + hour <= real && real + 2 * hour < today.end {
        assert!(!out[2][0].admitted);
        let reset = out[2][0].reset_after;
        assert!(reset <= today.end - real + NANOS_PER_SECOND);
    }
}

#[tokio::test]
async fn scripted_streams_match_the_memory_store() {
    let server = RedisServer::start();
    for (i, steps) in scripted_streams().iter().enumerate() {
        same_outcomes(&server, &format!("scripted{i}:"), steps).await;
    }
}

fn arb_limit() -> impl Strategy<Value = Limit> {
    (
        prop::sample::select(Algorithm::ALL.to_vec()),
        0u64..12,
        prop::sample::select(vec![Unit::Second, Unit::Minute, Unit::Hour, Unit::Day]),
        1u64..4,
        0u64..12,
    )
        .prop_map(|(algorithm, rpu, unit, multiplier, burst)| {
            limit(algorithm, rpu, unit, multiplier, burst)
        })
}

fn arb_calendar_limit() -> impl Strategy<Value = Limit> {
    (
        prop::sample::select(vec![
            "UTC",
            "America/New_York",
            "Asia/Kolkata",
            "Australia/Lord_Howe",
            "America/Santiago",
        ]),
        prop::sample::select(vec![Unit::Day, Unit::Week, Unit::Month, Unit::Year]),
        0u64..6,
    )
        .prop_map(|(zone, unit, rpu)| Limit {
            calendar: Calendar::named(zone).ok(),
            ..Limit::fixed(rpu, unit)
        })
}

/// Streams over calendar limits from 2026-03-07: steps of up to two days,
/// across daylight-saving changes and month ends.
fn arb_calendar_stream() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(arb_calendar_limit(), 3).prop_flat_map(|limits| {
        let step = (
            0u64..2 * 86_400 * NANOS_PER_SECOND,
            prop::collection::vec((0usize..3, 0u64..4, 0u32..2, any::<bool>()), 1..5),
        );
        prop::collection::vec(step, 1..25).prop_map(move |raw| {
            let mut now = 1_772_884_800 * NANOS_PER_SECOND;
            raw.into_iter()
                .map(|(advance, checks)| {
                    now += advance;
                    let checks = checks
                        .into_iter()
                        .map(|(k, hits, group, cwd)| {
                            check(&format!("c{k}"), limits[k], hits, group, cwd)
                        })
                        .collect();
                    (now, checks)
                })
                .collect()
        })
    })
}

fn arb_stream() -> impl Strategy<Value = Vec<Step>> {
    let limits = prop::collection::vec(arb_limit(), 3);
    limits.prop_flat_map(|limits| {
        let step = (
            0u64..3 * 86_400 * NANOS_PER_SECOND / 100,
            prop::collection::vec((0usize..3, 0u64..4, 0u32..2, any::<bool>()), 1..5),
        );
        prop::collection::vec(step, 1..25).prop_map(move |raw| {
            let mut now = T0;
            raw.into_iter()
                .map(|(advance, checks)| {
                    // Mostly small steps, sometimes across many windows.
                    now += if advance % 5 == 0 {
                        advance * 40
                    } else {
                        advance / 1000
                    };
                    let checks = checks
                        .into_iter()
                        .map(|(k, hits, group, cwd)| {
                            check(&format!("p{k}"), limits[k], hits, group, cwd)
                        })
                        .collect();
                    (now, checks)
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_streams_match_the_memory_store(steps in arb_stream()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let server = RedisServer::start();
        runtime.block_on(same_outcomes(&server, "prop:", &steps));
    }

    #[test]
    fn random_calendar_streams_match_the_memory_store(steps in arb_calendar_stream()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let server = RedisServer::start();
        runtime.block_on(same_outcomes(&server, "propc:", &steps));
    }
}

#[tokio::test]
async fn key_prefixes_isolate_deployments() {
    let server = RedisServer::start();
    let a = redis_store(&server, "a:", 0).await;
    let b = redis_store(&server, "b:", 0).await;
    let l = limit(Algorithm::FixedWindow, 2, Unit::Hour, 1, 2);
    let step = vec![(T0, vec![check("k", l, 2, 0, false)])];
    assert!(run(&a, &step).await[0][0].admitted);
    assert!(run(&b, &step).await[0][0].admitted, "b has its own counter");
    assert!(!run(&a, &step).await[0][0].admitted);
    let keys = server.cli(&["--scan"]);
    assert!(
        keys.lines()
            .all(|k| k.starts_with("a:{") || k.starts_with("b:{")),
        "{keys}"
    );
    assert!(
        server
            .cli(&["pttl", keys.lines().next().unwrap_or("")])
            .parse::<i64>()
            .unwrap_or(-1)
            > 0
    );
}

#[tokio::test]
async fn script_flush_is_recovered_from() {
    let server = RedisServer::start();
    let store = redis_store(&server, "ns:", 0).await;
    let l = limit(Algorithm::TokenBucket, 3, Unit::Minute, 1, 3);
    let step = vec![(T0, vec![check("k", l, 1, 0, false)])];
    assert_eq!(run(&store, &step).await[0][0].remaining, 2);
    assert_eq!(server.cli(&["script", "flush"]), "OK");
    assert_eq!(run(&store, &step).await[0][0].remaining, 1);
}

#[tokio::test]
async fn redis_time_counts_with_one_clock() {
    let server = RedisServer::start();
    let store = redis_time_store(&server, "rt:").await;
    let l = limit(Algorithm::FixedWindow, 3, Unit::Hour, 1, 3);
    // The caller's "now" is ignored: Redis's TIME decides the window.
    let steps = vec![
        (0, vec![check("k", l, 2, 0, false)]),
        (u64::MAX / 2, vec![check("k", l, 1, 0, false)]),
        (7, vec![check("k", l, 1, 0, false)]),
    ];
    let out = run(&store, &steps).await;
    assert_eq!(out[1][0].remaining, 0);
    assert!(!out[2][0].admitted);
    assert!(out[2][0].reset_after <= 3_600 * NANOS_PER_SECOND);
}

#[tokio::test]
async fn over_limit_cache_answers_locally_and_stays_exact() {
    // The start of a minute.
    const M0: Nanos = 1_699_999_980 * NANOS_PER_SECOND;
    let server = RedisServer::start();
    let store = redis_store(&server, "cache:", 1_000).await;
    let fixed = limit(Algorithm::FixedWindow, 2, Unit::Minute, 1, 2);
    let other = limit(Algorithm::FixedWindow, 10, Unit::Minute, 1, 10);
    // Two admitted, then a counted denial puts the key over (count 3 > 2).
    let fill = vec![(M0, vec![check("hot", fixed, 1, 0, true)]); 3];
    let out = run(&store, &fill).await;
    assert!(out[0][0].admitted && out[1][0].admitted && !out[2][0].admitted);
    // Redis down: the over-limit key is still answered (locally), including hits=0.
    let mut server = server;
    server.kill();
    let probe = vec![(M0 + 1, vec![check("hot", fixed, 0, 0, true)])];
    let local = run(&store, &probe).await;
    assert!(!local[0][0].admitted);
    assert_eq!(local[0][0].reset_after, 60 * NANOS_PER_SECOND - 1);
    server.restart();
    // A group with the hot key: denied locally, its other check is still
    // evaluated by Redis and, the group being denied, not committed.
    let group = vec![(
        M0 + 2,
        vec![
            check("hot", fixed, 1, 7, true),
            check("cold", other, 1, 7, false),
        ],
    )];
    let out = run(&store, &group).await;
    assert!(!out[0][0].admitted);
    assert!(out[0][1].admitted);
    assert_eq!(out[0][1].remaining, 9);
    let cold = vec![(M0 + 3, vec![check("cold", other, 0, 0, false)])];
    assert_eq!(
        run(&store, &cold).await[0][0].used,
        0,
        "denied group committed nothing"
    );
    // After the window, the key is admitted again (Redis decides).
    let next = vec![(
        M0 + 60 * NANOS_PER_SECOND,
        vec![check("hot", fixed, 1, 0, true)],
    )];
    assert!(run(&store, &next).await[0][0].admitted);
}

// --- A fleet of servers over gRPC --------------------------------------

const FLEET_YAML: &str = "domain: fleet
descriptors:
  - key: fixed
    rate_limit: {unit: hour, requests_per_unit: 40}
  - key: sliding
    rate_limit: {algorithm: sliding_window, unit: hour, requests_per_unit: 40}
  - key: bucket
    rate_limit: {algorithm: token_bucket, unit: hour, requests_per_unit: 40, burst: 40}
";

fn rules(yaml: &str) -> RuleSet {
    config::load_sources(
        &[(std::path::PathBuf::from("fleet.yaml"), yaml.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|errors| panic!("config should load:\n{errors}"))
}

fn request(key: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "fleet".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: key.into(),
                value: String::new(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    }
}

struct Instance {
    limiter: Arc<RateLimiter<RedisStore>>,
    running: Running,
    addr: SocketAddr,
}

async fn instance(server: &RedisServer, policy: StoreErrorPolicy, timeout: Duration) -> Instance {
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "fleet:".into(),
        timeout,
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("connects");
    let limiter = Arc::new(RateLimiter::new(
        rules(FLEET_YAML),
        store,
        Arc::new(SystemClock),
        ServiceOptions {
            on_store_error: policy,
            ..ServiceOptions::default()
        },
    ));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let running = server::start(
        Arc::clone(&limiter),
        &Listeners {
            grpc: any,
            http: any,
        },
    )
    .await
    .expect("server starts");
    let addr = running.grpc_addr;
    Instance {
        limiter,
        running,
        addr,
    }
}

async fn client(addr: SocketAddr) -> RateLimitServiceClient<tonic::transport::Channel> {
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_redis_admits_exactly_the_limit() {
    let server = RedisServer::start();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(instance(&server, StoreErrorPolicy::Error, Duration::from_secs(2)).await);
    }
    for key in ["fixed", "sliding", "bucket"] {
        let admitted = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..12usize {
            let addr = fleet[c % 3].addr;
            let admitted = Arc::clone(&admitted);
            tasks.push(tokio::spawn(async move {
                let mut client = client(addr).await;
                for _ in 0..10 {
                    let answer = client
                        .should_rate_limit(request(key))
                        .await
                        .expect("an answer")
                        .into_inner();
                    if answer.overall_code == Code::Ok as i32 {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
        assert_eq!(
            admitted.load(Ordering::Relaxed),
            40,
            "{key}: 120 asked, limit 40"
        );
    }
    // Every request reached Redis in a batch; /metrics says how many
    // batches carried them.
    let (mut batches, mut requests) = (0.0, 0.0);
    for instance in &fleet {
        let (status, text) = harness::http_get(instance.running.http_addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        batches += harness::ops::metric(&text, "floodgate_redis_batches_total", "")
            .expect("batches are counted");
        requests += harness::ops::metric(&text, "floodgate_redis_batched_requests_total", "")
            .expect("batched requests are counted");
    }
    // 360 requests; the fixed window's denied ones may be answered by the
    // local over-limit cache instead, the others all went to Redis.
    assert!(
        (240.0..=360.0).contains(&requests),
        "{requests} requests reached Redis"
    );
    assert!(
        (1.0..=requests).contains(&batches),
        "{batches} batches for {requests} requests"
    );
    for instance in fleet {
        assert_eq!(instance.limiter.store_errors(), 0);
        instance.running.shutdown().await.expect("clean shutdown");
    }
}

/// Calls `key` once with a hang detector; `None` for a gRPC error.
async fn ask_bounded(
    client: &mut RateLimitServiceClient<tonic::transport::Channel>,
    key: &str,
) -> Option<Code> {
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        client.should_rate_limit(request(key)),
    )
    .await
    .expect("no call hangs (2 s bound)");
    answer.ok().map(|a| {
        if a.into_inner().overall_code == Code::Ok as i32 {
            Code::Ok
        } else {
            Code::OverLimit
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_applies_the_policy_and_service_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let allow = instance(&server, StoreErrorPolicy::Allow, timeout).await;
    let deny = instance(&server, StoreErrorPolicy::Deny, timeout).await;
    let error = instance(&server, StoreErrorPolicy::Error, timeout).await;
    let mut clients = [
        client(allow.addr).await,
        client(deny.addr).await,
        client(error.addr).await,
    ];
    // Traffic flows, then Redis dies mid-traffic.
    for c in clients.iter_mut() {
        assert_eq!(ask_bounded(c, "sliding").await, Some(Code::Ok));
    }
    server.kill();
    for _ in 0..5 {
        assert_eq!(
            ask_bounded(&mut clients[0], "sliding").await,
            Some(Code::Ok),
            "allow"
        );
        assert_eq!(
            ask_bounded(&mut clients[1], "sliding").await,
            Some(Code::OverLimit),
            "deny"
        );
        assert_eq!(ask_bounded(&mut clients[2], "sliding").await, None, "error");
    }
    assert!(allow.limiter.store_errors() >= 5);
    assert!(deny.limiter.store_errors() >= 5);
    assert!(error.limiter.store_errors() >= 5);
    // Back on the same port: every instance recovers on its own. Each
    // instance has two Redis connections, used in turn, which reconnect
    // independently: recovered means two requests in a row (one on each)
    // answered by Redis.
    server.restart();
    let instances = [&allow, &deny, &error];
    for (c, instance) in clients.iter_mut().zip(instances) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let errors = instance.limiter.store_errors();
            let bucket = ask_bounded(c, "bucket").await;
            let fixed = ask_bounded(c, "fixed").await;
            if instance.limiter.store_errors() == errors {
                assert_eq!(bucket, Some(Code::Ok));
                assert_eq!(fixed, Some(Code::Ok));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "an instance did not recover after Redis came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for instance in [allow, deny, error] {
        instance.running.shutdown().await.expect("clean shutdown");
    }
}

/// Pods start in any order: a Redis that is not there yet must not stop
/// floodgate from starting (the reference's #1143). The store connects in
/// the background; until then calls fail (the store-error policy answers)
/// and health says the store is unreachable; once Redis is up, it counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_arrives_after_the_start_is_connected_to() {
    let mut server = RedisServer::start();
    server.kill();
    let health = floodgate::health::Health::new();
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "late:".into(),
        time_source: TimeSource::Caller,
        timeout: Duration::from_millis(500),
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("starts without Redis")
    .with_health(health.clone());
    assert!(!health.store_reachable());
    let l = limit(Algorithm::FixedWindow, 2, Unit::Minute, 1, 2);
    let checks = [check("k", l, 1, 0, false)];
    let mut out = Outcomes::new();
    assert!(store.apply(&checks, T0, &mut out).await.is_err());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.apply(&checks, T0, &mut out).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never connected to the late Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.store_reachable(), "health follows the connect");
    // Counting from here: the one admitted call above, then this one, then over.
    store.apply(&checks, T0, &mut out).await.expect("answers");
    assert_eq!((out[0].admitted, out[0].used), (true, 2));
    store.apply(&checks, T0, &mut out).await.expect("answers");
    assert!(!out[0].admitted);
}

/// Redis over TLS with a private CA and a client certificate (the
/// reference's `REDIS_TLS_CACERT`, `REDIS_TLS_CLIENT_CERT`,
/// `REDIS_TLS_CLIENT_KEY`), against a `redis-server` that requires client
/// certificates; without the CA or without the certificate, nothing counts.
#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    use floodgate::store::redis::RedisTlsFiles;
    let ca = harness::tls::TestCa::new("redis test CA");
    let server = RedisServer::start_tls(&ca, true);
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let client = ca.client("floodgate");
    let full = RedisTlsFiles {
        ca: Some(write("ca.pem", &ca.cert_pem())),
        client_cert: Some(write("client.pem", &client.cert)),
        client_key: Some(write("client-key.pem", &client.key)),
    };
    let url = format!(
        "rediss://127.0.0.1:{}",
        server.tls_port.expect("a TLS port")
    );
    let connect = |url: String, tls: Option<RedisTlsFiles>| {
        RedisStore::connect(RedisOptions {
            key_prefix: "tls:".into(),
            time_source: TimeSource::Caller,
            timeout: Duration::from_secs(2),
            tls,
            ..RedisOptions::new(url)
        })
    };
    let l = limit(Algorithm::FixedWindow, 5, Unit::Minute, 1, 5);
    let checks = [check("k", l, 1, 0, false)];
    let mut out = Outcomes::new();

    let store = connect(url.clone(), Some(full.clone()))
        .await
        .expect("connects over TLS");
    store.apply(&checks, T0, &mut out).await.expect("counts");
    store.apply(&checks, T0, &mut out).await.expect("counts");
    assert_eq!((out[0].admitted, out[0].used), (true, 2));
    assert_eq!(
        server.cli(&["GET", "nothing"]),
        "",
        "the plain port still answers"
    );

    // The CA but no client certificate: the server refuses the handshake.
    let no_client = RedisTlsFiles {
        client_cert: None,
        client_key: None,
        ..full.clone()
    };
    let store = connect(url.clone(), Some(no_client)).await.expect("starts");
    assert!(store.apply(&checks, T0, &mut out).await.is_err());
    // The public roots do not trust the private CA.
    let store = connect(url.clone(), None).await.expect("starts");
    assert!(store.apply(&checks, T0, &mut out).await.is_err());

    // Options that cannot work are refused at start, with the reason.
    let half = RedisTlsFiles {
        client_key: None,
        ..full.clone()
    };
    let error = connect(url.clone(), Some(half)).await.expect_err("refused");
    assert!(
        error.to_string().contains("REDIS_TLS_CLIENT_KEY"),
        "{error}"
    );
    let plain = format!("redis://127.0.0.1:{}", server.port);
    let error = connect(plain, Some(full)).await.expect_err("refused");
    assert!(error.to_string().contains("rediss://"), "{error}");
}

/// Redis behind Sentinel (`redis+sentinel://`, the reference's
/// `REDIS_TYPE=sentinel`): the store asks the sentinel for the master,
/// counts there, and after the master dies and the sentinel promotes its
/// replica, counts on the new master, from the replicated count.
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_names_the_master_and_the_store_follows_a_failover() {
    use harness::redis::SentinelServer;
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let sentinel = SentinelServer::start("mymaster", &master);
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "sentinel:".into(),
        time_source: TimeSource::Caller,
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(format!(
            "redis+sentinel://127.0.0.1:{}/mymaster",
            sentinel.port
        ))
    })
    .await
    .expect("connects through the sentinel");
    let l = limit(Algorithm::FixedWindow, 10, Unit::Hour, 1, 10);
    let checks = [check("k", l, 1, 0, false)];
    let mut out = Outcomes::new();
    for _ in 0..2 {
        store.apply(&checks, T0, &mut out).await.expect("counts");
    }
    assert_eq!(out[0].used, 2);
    // The count is on the replica before the master goes.
    assert_eq!(master.cli(&["WAIT", "1", "5000"]), "1");
    master.kill();

    let deadline = Instant::now() + Duration::from_secs(90);
    while sentinel.master_port("mymaster") != Some(replica.port) {
        assert!(Instant::now() < deadline, "the sentinel never failed over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while store.apply(&checks, T0, &mut out).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the store never followed the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(out[0].used, 3, "counting goes on from the replicated count");
    assert_eq!(
        replica
            .cli(&["INFO", "replication"])
            .lines()
            .find(|l| l.starts_with("role:")),
        Some("role:master")
    );
}

/// A real Redis Cluster (three masters, one replica each): counters spread
/// over every master; a master dies and its replica takes over with the
/// counts; then every slot of a master migrates to another (MOVED and ASK
/// on the way) and the counts go on.
#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_counts_through_a_failover_and_a_slot_migration() {
    use harness::redis::RedisCluster;
    let mut cluster = RedisCluster::start();
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "cluster:".into(),
        time_source: TimeSource::Caller,
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(cluster.url())
    })
    .await
    .expect("connects to the cluster");
    let l = limit(Algorithm::FixedWindow, 100, Unit::Hour, 1, 100);
    // Counter keys as the service writes them, so that their hash tags (the
    // descriptor part's hash) spread them over the slots.
    let keys: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            let mut key = floodgate::store::key::KeyBuffer::new();
            let value = format!("user-{i}");
            let entries = [("user", value.as_str())];
            let shared: &[(usize, &str)] = &[];
            floodgate::store::key::write_counter_key(&mut key, "d", &entries, shared, &l, 0, false);
            key.to_vec()
        })
        .collect();
    // Each key once more, retrying (a bounded wait) while the cluster moves.
    let round = |expected: u64| {
        let store = &store;
        let keys = &keys;
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            for key in keys {
                let checks = [Check {
                    key,
                    limit: l,
                    hits: 1,
                    group: 0,
                    count_when_denied: false,
                }];
                let mut out = Outcomes::new();
                while store.apply(&checks, T0, &mut out).await.is_err() {
                    assert!(Instant::now() < deadline, "a counter never answered");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert_eq!(out[0].used, expected);
            }
        }
    };
    round(1).await;
    // Concurrent requests of one descriptor share script calls in a cluster
    // too (one call per hash tag), and count exactly.
    let hot_limit = limit(Algorithm::FixedWindow, 50, Unit::Hour, 1, 50);
    let (batches, requests) = store.batch_stats();
    let hot_key = {
        let mut key = floodgate::store::key::KeyBuffer::new();
        let entries = [("user", "hot")];
        let shared: &[(usize, &str)] = &[];
        floodgate::store::key::write_counter_key(
            &mut key, "d", &entries, shared, &hot_limit, 0, false,
        );
        key.to_vec()
    };
    let hot_checks = [Check {
        key: &hot_key,
        limit: hot_limit,
        hits: 1,
        group: 0,
        count_when_denied: false,
    }];
    // With them, requests of 30 other tags: 16 lanes, so lanes hold
    // several tags at once and must split their calls by tag (a call
    // mixing slots would fail with CROSSSLOT).
    let others: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            let mut key = floodgate::store::key::KeyBuffer::new();
            let value = format!("other-{i}");
            let entries = [("user", value.as_str())];
            let shared: &[(usize, &str)] = &[];
            floodgate::store::key::write_counter_key(
                &mut key, "d", &entries, shared, &hot_limit, 0, false,
            );
            key.to_vec()
        })
        .collect();
    let other_answers = futures_util::future::join_all(others.iter().cycle().take(60).map(|key| {
        let store = &store;
        async move {
            let checks = [Check {
                key,
                limit: hot_limit,
                hits: 1,
                group: 0,
                count_when_denied: false,
            }];
            let mut out = Outcomes::new();
            store
                .apply(&checks, T0, &mut out)
                .await
                .map(|()| out[0].used)
        }
    }));
    let hot_answers = futures_util::future::join_all((0..100).map(|_| {
        let store = &store;
        let checks = &hot_checks;
        async move {
            let mut out = Outcomes::new();
            store.apply(checks, T0, &mut out).await.expect("answers");
            out[0].admitted
        }
    }));
    let (answers, other_answers) = tokio::join!(hot_answers, other_answers);
    assert_eq!(answers.iter().filter(|&&admitted| admitted).count(), 50);
    let mut used: Vec<u64> = other_answers
        .into_iter()
        .map(|answer| answer.expect("every tag's request answers"))
        .collect();
    used.sort_unstable();
    assert_eq!(
        used,
        [[1; 30], [2; 30]].concat(),
        "each other key counted twice"
    );
    let (after_batches, after_requests) = store.batch_stats();
    assert_eq!(after_requests - requests, 160);
    // The other keys take at most 60 calls; the hot tag's 100 requests
    // shared theirs.
    assert!(
        after_batches - batches < 80,
        "160 concurrent requests took {} calls",
        after_batches - batches
    );
    for master in cluster.masters() {
        let keys: u64 = cluster.nodes[master].cli(&["DBSIZE"]).parse().unwrap_or(0);
        assert!(keys > 0, "every master holds some counters");
    }

    let victim = cluster.masters()[0];
    assert_eq!(cluster.nodes[victim].cli(&["WAIT", "1", "5000"]), "1");
    cluster.nodes[victim].kill();
    round(2).await;
    assert_eq!(cluster.masters().len(), 3, "a replica took over");
    cluster.wait_until_ok();

    let masters = cluster.masters();
    let (from, to) = (masters[0], masters[1]);
    cluster.move_all_slots(from, to);
    assert_eq!(cluster.slots_of(from), 0);
    round(3).await;
}

async fn leased_store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(RedisOptions {
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_secs(2),
        mode: floodgate::store::redis::StoreMode::Leased,
        ..RedisOptions::new(server.url())
    })
    .await
    .expect("connects")
}

/// Leased mode's promise, with three instances hammering one key
/// concurrently: never more than the limit fleet-wide, and, since the
/// demand (3× the limit) reaches every instance, the whole limit.
#[tokio::test(flavor = "multi_thread")]
async fn leased_instances_never_admit_more_than_the_limit() {
    let server = RedisServer::start();
    let limit_value = 1_000;
    let l = limit(
        Algorithm::FixedWindow,
        limit_value,
        Unit::Day,
        1,
        limit_value,
    );
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = Arc::new(leased_store(&server, "leased:").await);
        for _ in 0..4 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let checks = [check("hot", l, 1, 0, false)];
                let mut out = Outcomes::new();
                let mut admitted = 0u64;
                for _ in 0..250 {
                    store.apply(&checks, T0, &mut out).await.expect("answers");
                    admitted += u64::from(out[0].admitted);
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("task");
    }
    assert!(
        admitted <= limit_value,
        "admitted {admitted} > {limit_value}"
    );
    assert_eq!(
        admitted, limit_value,
        "demand above the limit everywhere uses every block"
    );
    // Redis holds the claimed count: exactly the limit, never more.
    let raw = server.cli(&["--no-raw", "KEYS", "leased:*"]);
    assert!(!raw.is_empty(), "the counter is in Redis");
}

/// One leased instance decides a sequential stream exactly as the memory
/// store does (hits of 0 to 3 against one fixed window): blocks change how
/// often Redis is asked, never whether a request fits.
#[tokio::test(flavor = "multi_thread")]
async fn a_leased_instance_admits_as_the_memory_store_does() {
    let server = RedisServer::start();
    let store = leased_store(&server, "stream:").await;
    let memory = MemoryStore::new(1000);
    let l = limit(Algorithm::FixedWindow, 40, Unit::Day, 1, 40);
    let mut out = Outcomes::new();
    let mut expected = Outcomes::new();
    for i in 0..200u64 {
        let hits = (i * 7 + 3) % 4;
        let checks = [check("k", l, hits, 0, false)];
        store.apply(&checks, T0, &mut out).await.expect("answers");
        memory
            .apply(&checks, T0, &mut expected)
            .await
            .expect("answers");
        assert_eq!(
            out[0].admitted, expected[0].admitted,
            "request {i} ({hits} hits)"
        );
    }
}

/// A group is all-or-nothing in leased mode too: a descriptor whose second
/// limit is exhausted takes nothing from its first.
#[tokio::test(flavor = "multi_thread")]
async fn leased_groups_are_all_or_nothing() {
    let server = RedisServer::start();
    let store = leased_store(&server, "group:").await;
    let wide = limit(Algorithm::FixedWindow, 100, Unit::Day, 1, 100);
    let narrow = limit(Algorithm::FixedWindow, 2, Unit::Day, 1, 2);
    let mut out = Outcomes::new();
    let both = [
        check("wide", wide, 1, 0, false),
        check("narrow", narrow, 1, 0, false),
    ];
    for _ in 0..2 {
        store.apply(&both, T0, &mut out).await.expect("answers");
        assert!(out.iter().all(|o| o.admitted));
    }
    for _ in 0..5 {
        store.apply(&both, T0, &mut out).await.expect("answers");
        assert!(!out[0].admitted && !out[1].admitted, "{out:?}");
    }
    // `wide` gave 2 hits only: 98 more fit.
    let alone = [check("wide", wide, 98, 0, false)];
    store.apply(&alone, T0, &mut out).await.expect("answers");
    assert!(out[0].admitted);
    let alone = [check("wide", wide, 1, 0, false)];
    store.apply(&alone, T0, &mut out).await.expect("answers");
    assert!(!out[0].admitted, "100 of 100 used");
}

/// A token bucket of capacity `burst` refilled with `rpu` tokens per
/// `unit`.
fn bucket(rpu: u64, unit: Unit, burst: u64) -> Limit {
    limit(Algorithm::TokenBucket, rpu, unit, 1, burst)
}

/// Three leased instances (several tasks each) hammer one bucket for
/// `run_for` at least, with more demand than it can give: admitted hits
/// and the wall time from before the first request to after the last.
async fn hammer_bucket(
    server: &RedisServer,
    prefix: &str,
    l: Limit,
    run_for: Duration,
) -> (u64, Duration) {
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(leased_store(server, prefix).await));
    }
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..4 {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let checks = [check("hot-bucket", l, 1, 0, false)];
                let mut out = Outcomes::new();
                let mut admitted = 0u64;
                let mut asked = 0u64;
                while asked < 200 || begin.elapsed() < run_for {
                    store.apply(&checks, T0, &mut out).await.expect("answers");
                    admitted += u64::from(out[0].admitted);
                    asked += 1;
                    if asked.is_multiple_of(16) {
                        tokio::task::yield_now().await;
                    }
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("task");
    }
    (admitted, begin.elapsed())
}

/// The bucket's bound, B + r·L, for L = `elapsed` (rounded up: a longer
/// interval only loosens the bound).
fn bucket_bound(l: &Limit, elapsed: Duration) -> u64 {
    let window = u128::from(l.window());
    let refill = (elapsed.as_nanos() * u128::from(l.requests_per_unit)).div_ceil(window);
    l.burst + u64::try_from(refill).expect("small")
}

/// Asserts that `admitted` hits over `elapsed` stay within the bucket
/// `l`'s bound B + r·L (`name` says which bucket); returns the bound.
fn assert_within_bucket(name: &str, l: &Limit, admitted: u64, elapsed: Duration) -> u64 {
    let bound = bucket_bound(l, elapsed);
    assert!(
        admitted <= bound,
        "{name}: admitted {admitted} > B + r·L = {bound} ({elapsed:?})"
    );
    bound
}

/// Leased buckets keep the bucket's promise fleet-wide: over the whole run
/// at most B + r·L hits, and, since the demand exceeds it on every
/// instance, nearly all of B (the run is short; refill adds little).
#[tokio::test(flavor = "multi_thread")]
async fn leased_instances_never_overdraw_a_bucket() {
    let server = RedisServer::start();
    let l = bucket(10, Unit::Second, 1_000);
    let (admitted, elapsed) = hammer_bucket(&server, "lb:", l, Duration::ZERO).await;
    assert_within_bucket("the bucket", &l, admitted, elapsed);
    assert!(
        admitted >= 900,
        "admitted {admitted} < 90% of B ({elapsed:?})"
    );
}

/// The same with a bucket that refills many times during the run (B = 50,
/// 200 tokens a second, 1.2 s of hammering): the refill cap at B − O is
/// what keeps the fleet under B + r·L while leases are held (the claim
/// script's test shows the cap itself); and, demand exceeding the rate
/// everywhere, at least 90% of it is admitted. What is lost is the tail:
/// tokens refilled during the last claims' round trips, so the run is long
/// enough that a slow machine's round trips stay a small part of it.
#[tokio::test(flavor = "multi_thread")]
async fn leased_instances_never_overdraw_a_fast_bucket() {
    let server = RedisServer::start();
    let l = bucket(200, Unit::Second, 50);
    let (admitted, elapsed) = hammer_bucket(&server, "lbf:", l, Duration::from_millis(1200)).await;
    let bound = assert_within_bucket("the bucket", &l, admitted, elapsed);
    assert!(
        admitted * 10 >= bound * 9,
        "admitted {admitted} < 90% of B + r·L = {bound} ({elapsed:?})"
    );
}

/// One leased instance decides a sequential stream of a bucket exactly as
/// the memory store does: it reports at every claim, so it admits iff the
/// central level plus its held tokens cover the hits. The bucket refills
/// one token a day, so Redis's clock (leased mode always uses it) and the
/// stream's fixed `T0` cannot differ by a token during the test; with a
/// measurable refill the leased instance may admit less than the memory
/// store (up to its last block while the bucket is full; see the
/// `store::redis::lease` module).
#[tokio::test(flavor = "multi_thread")]
async fn a_leased_instance_admits_a_bucket_as_the_memory_store_does() {
    let server = RedisServer::start();
    let store = leased_store(&server, "bstream:").await;
    let memory = MemoryStore::new(1000);
    let l = bucket(1, Unit::Day, 40);
    let mut out = Outcomes::new();
    let mut expected = Outcomes::new();
    let mut admitted = 0;
    for i in 0..200u64 {
        // 0 to 3 hits, and now and then more than the burst.
        let hits = if i % 37 == 5 { 41 } else { (i * 7 + 3) % 4 };
        let checks = [check("k", l, hits, 0, false)];
        store.apply(&checks, T0, &mut out).await.expect("answers");
        memory
            .apply(&checks, T0, &mut expected)
            .await
            .expect("answers");
        assert_eq!(
            out[0].admitted, expected[0].admitted,
            "request {i} ({hits} hits)"
        );
        if out[0].admitted {
            admitted += hits;
        }
    }
    assert!(admitted >= 39, "the stream drains the bucket: {admitted}");
}

/// Groups stay all-or-nothing with a bucket and a fixed window in one
/// call, whichever of them runs out.
#[tokio::test(flavor = "multi_thread")]
async fn leased_groups_with_a_bucket_are_all_or_nothing() {
    let server = RedisServer::start();
    let store = leased_store(&server, "bgroup:").await;
    let mut out = Outcomes::new();
    let wide_window = limit(Algorithm::FixedWindow, 100, Unit::Day, 1, 100);
    let narrow_bucket = bucket(1, Unit::Day, 2);
    let wide_bucket = bucket(1, Unit::Day, 100);
    let narrow_window = limit(Algorithm::FixedWindow, 2, Unit::Day, 1, 2);
    for (wide, narrow, wide_key) in [
        (wide_window, narrow_bucket, "wide-window"),
        (wide_bucket, narrow_window, "wide-bucket"),
    ] {
        let narrow_key = format!("narrow-of-{wide_key}");
        let both = [
            check(wide_key, wide, 1, 0, false),
            check(&narrow_key, narrow, 1, 0, false),
        ];
        for _ in 0..2 {
            store.apply(&both, T0, &mut out).await.expect("answers");
            assert!(out.iter().all(|o| o.admitted), "{wide_key}: {out:?}");
        }
        for _ in 0..5 {
            store.apply(&both, T0, &mut out).await.expect("answers");
            assert!(!out[0].admitted && !out[1].admitted, "{wide_key}: {out:?}");
        }
        // The wide limit gave 2 hits only: 98 more fit, then none.
        let alone = [check(wide_key, wide, 98, 0, false)];
        store.apply(&alone, T0, &mut out).await.expect("answers");
        assert!(out[0].admitted, "{wide_key}: {out:?}");
        let alone = [check(wide_key, wide, 1, 0, false)];
        store.apply(&alone, T0, &mut out).await.expect("answers");
        assert!(!out[0].admitted, "{wide_key}: 100 of 100 used");
    }
}

/// An instance that stops while holding a lease does not shrink the
/// bucket for good: while its lease lasts the others can get at most
/// B − (its lease) at once, and once the lease's TTL (here 1 s: the bucket
/// refills its 40 tokens in 1 s) has passed, the whole burst again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_instance_gives_its_lease_back_after_the_ttl() {
    let server = RedisServer::start();
    let l = bucket(40, Unit::Second, 40);
    let claimed = Instant::now();
    {
        let gone = leased_store(&server, "bstop:").await;
        let mut out = Outcomes::new();
        let one = [check("k", l, 1, 0, false)];
        gone.apply(&one, T0, &mut out).await.expect("answers");
        assert!(out[0].admitted);
        // Dropped holding the rest of its block.
    }
    let other = leased_store(&server, "bstop:").await;
    let all = [check("k", l, 40, 0, false)];
    let mut out = Outcomes::new();
    other.apply(&all, T0, &mut out).await.expect("answers");
    if claimed.elapsed() < Duration::from_millis(900) {
        assert!(
            !out[0].admitted,
            "the stopped instance's lease still counts"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        other.apply(&all, T0, &mut out).await.expect("answers");
        if out[0].admitted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the whole burst never came back: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        claimed.elapsed() >= Duration::from_secs(1),
        "the burst came back before the lease's TTL"
    );
}

/// The claim script itself, on states written by the test (timestamps from
/// Redis's TIME, so nothing depends on how fast the test runs).
#[test]
fn the_bucket_claim_script_caps_refill_at_burst_minus_the_leases() {
    let server = RedisServer::start();
    let script = include_str!("../src/store/redis/lease/lease.lua");
    let now = || -> u64 {
        let time = server.cli(&["TIME"]);
        let mut parts = time
            .split_whitespace()
            .map(|p| p.parse::<u64>().expect("TIME"));
        let (s, us) = (parts.next().expect("s"), parts.next().expect("us"));
        s * 1_000_000 + us
    };
    // B = 100, 1 token a second, lease TTL 1 s: claim `need` for `id`.
    let claim =
        |key: &str, id: &str, seq: u64, retire: u64, unspent: u64, need: u64| -> (u64, u64) {
            let args = [
                "b".to_owned(),
                id.to_owned(),
                seq.to_string(),
                retire.to_string(),
                unspent.to_string(),
                need.to_string(),
                u64::MAX.to_string(),
                "100".into(),
                "1".into(),
                "1".into(),
                "1000000".into(),
                "16".into(),
            ];
            let mut all = vec!["EVAL", script, "1", key];
            all.extend(args.iter().map(String::as_str));
            let answer = server.cli(&all);
            let values: Vec<u64> = answer
                .trim()
                .trim_matches('"')
                .split(' ')
                .map(|v| v.parse().expect("a number"))
                .collect();
            (values[0], values[1])
        };

    // Instance aaaa holds 7 tokens for 100 s more; the level was 93 ten
    // seconds ago: a free refill would be back at 100, but the cap is 93.
    let t = now();
    let state = format!("b:93:{} aaaa:1:7:{}", t - 10_000_000, t + 100_000_000);
    server.cli(&["SET", "cap", &state]);
    assert_eq!(claim("cap", "bbbb", 1, 0, 0, 94), (0, 93), "over B − O");
    assert_eq!(claim("cap", "bbbb", 2, 0, 0, 93), (93, 0), "B − O exactly");

    // The lease of 50 expired 10 s ago; 100 s ago the level was 0: capped
    // at 50 until the expiry, then refilled 10 more (not 100: the refill
    // steps from expiry to expiry as the continuous process does).
    let t = now();
    let state = format!("b:0:{} aaaa:1:50:{}", t - 100_000_000, t - 10_000_000);
    server.cli(&["SET", "expiry", &state]);
    assert_eq!(claim("expiry", "bbbb", 1, 0, 0, 61), (0, 60));
    assert_eq!(claim("expiry", "bbbb", 2, 0, 0, 60).0, 60);

    // A report gives back the unspent tokens of the lease it names, once;
    // the rest of that lease is spent.
    let t = now();
    let state = format!("b:90:{} aaaa:1:10:{}", t, t + 100_000_000);
    server.cli(&["SET", "report", &state]);
    // aaaa spent 6 of 10: 4 come back, 94 in all; blocks are level / 16.
    assert_eq!(claim("report", "aaaa", 2, 1, 4, 1), (6, 88));
    // The same claim again (a retry after a lost answer): the same grant,
    // nothing given back twice.
    assert_eq!(claim("report", "aaaa", 2, 1, 4, 1), (6, 88));
    // An older claim arriving late: nothing.
    assert_eq!(claim("report", "aaaa", 1, 0, 4, 1).0, 0);
    // A report naming a lease Redis does not hold (expired, or its answer
    // lost) gives nothing back; the lease Redis holds counts as spent.
    assert_eq!(claim("report", "aaaa", 3, 1, 6, 88), (88, 0));
}

/// Calls naming two buckets and a fixed window in one group, the buckets
/// in either order, from two instances of many tasks each: no call waits
/// on another for good (a bucket's claims are one at a time per instance),
/// and each admitted call takes one hit from each limit, so the admitted
/// calls stay within each bucket's bound and the window's limit.
#[tokio::test(flavor = "multi_thread")]
async fn leased_calls_of_several_buckets_neither_hang_nor_overdraw() {
    let server = RedisServer::start();
    let first = bucket(100, Unit::Second, 30);
    let second = bucket(50, Unit::Second, 60);
    let window = limit(Algorithm::FixedWindow, 400, Unit::Day, 1, 400);
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let store = Arc::new(leased_store(&server, "multi:").await);
        for task in 0..8u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let forward = [
                    check("first", first, 1, 0, false),
                    check("second", second, 1, 0, false),
                    check("window", window, 1, 0, false),
                ];
                let backward = [
                    check("window", window, 1, 0, false),
                    check("second", second, 1, 0, false),
                    check("first", first, 1, 0, false),
                ];
                let mut out = Outcomes::new();
                let mut admitted = 0u64;
                for i in 0..150u64 {
                    let checks = if (i + task) % 2 == 0 {
                        &forward
                    } else {
                        &backward
                    };
                    store.apply(checks, T0, &mut out).await.expect("answers");
                    assert!(
                        out.iter().all(|o| o.admitted) || out.iter().all(|o| !o.admitted),
                        "one group: {out:?}"
                    );
                    admitted += u64::from(out[0].admitted);
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("no call hangs")
            .expect("task");
    }
    let elapsed = begin.elapsed();
    for (name, l) in [("first", first), ("second", second)] {
        assert_within_bucket(name, &l, admitted, elapsed);
    }
    assert!(admitted <= 400, "window: admitted {admitted} > 400");
    assert!(
        admitted >= 27,
        "the first bucket's burst at least: {admitted}"
    );
}

/// In Redis Cluster a leased call claims each key with a call of its own
/// (a call's keys must share a slot): a call naming buckets and a window of
/// several descriptors, spread over the masters, is admitted exactly while
/// the narrowest limit lasts.
#[tokio::test(flavor = "multi_thread")]
async fn leased_buckets_in_a_cluster_are_claimed_key_by_key() {
    use harness::redis::RedisCluster;
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(RedisOptions {
        key_prefix: "lcluster:".into(),
        timeout: Duration::from_secs(2),
        mode: floodgate::store::redis::StoreMode::Leased,
        ..RedisOptions::new(cluster.url())
    })
    .await
    .expect("connects to the cluster");
    let narrow = bucket(1, Unit::Day, 20);
    let wide = bucket(1, Unit::Day, 1000);
    let window = limit(Algorithm::FixedWindow, 1000, Unit::Day, 1, 1000);
    let limits = [narrow, wide, window, wide, wide, window];
    let keys: Vec<Vec<u8>> = limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut key = floodgate::store::key::KeyBuffer::new();
            let value = format!("user-{i}");
            let entries = [("user", value.as_str())];
            let shared: &[(usize, &str)] = &[];
            floodgate::store::key::write_counter_key(&mut key, "d", &entries, shared, l, 0, false);
            key.to_vec()
        })
        .collect();
    let checks: Vec<Check<'_>> = keys
        .iter()
        .zip(limits)
        .map(|(key, limit)| Check {
            key,
            limit,
            hits: 1,
            group: 0,
            count_when_denied: false,
        })
        .collect();
    let mut out = Outcomes::new();
    for i in 0..20 {
        store.apply(&checks, T0, &mut out).await.expect("answers");
        assert!(out.iter().all(|o| o.admitted), "call {i}: {out:?}");
    }
    store.apply(&checks, T0, &mut out).await.expect("answers");
    assert!(
        out.iter().all(|o| !o.admitted),
        "the narrow bucket is empty: {out:?}"
    );
    let mut masters_with_keys = 0;
    for master in cluster.masters() {
        let keys: u64 = cluster.nodes[master].cli(&["DBSIZE"]).parse().unwrap_or(0);
        masters_with_keys += usize::from(keys > 0);
    }
    assert!(masters_with_keys >= 2, "the keys spread over the masters");
}
