//! The reference server's metrics contract, from outside: its Prometheus
//! series on their own listener (named and labelled by the default mapping,
//! counted as a scripted sequence of decisions says, and accepted by
//! `promtool check metrics` next to floodgate's own `/metrics`), its statsd
//! lines received on a UDP socket of the test, store failures counted under
//! every `--on-store-error` policy, and series bounded under 100,000
//! distinct limit overrides.

use crate::harness;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions, Source};
use floodgate::decide::{RateLimiter, ServiceOptions, StoreErrorPolicy};
use floodgate::observe::mapper::Mapper;
use floodgate::observe::metrics::{Metrics, Transport};
use floodgate::observe::reference::{DEFAULT_MAX_DYNAMIC_KEYS, ReferenceStats};
use floodgate::observe::statsd::StatsdOptions;
use floodgate::proto::RateLimitServiceClient;
use floodgate::server::{self, ConfigSource, Listeners, ReferenceSinks, Running, ServerOptions};
use floodgate::store::CounterStore;
use floodgate::store::memory::MemoryStore;
use floodgate::store::redis::{RedisOptions, RedisStore};
use harness::ops::{any_port, decide, metric};
use harness::redis::RedisServer;
use harness::{descriptor_with_override, http_get, request_of, request_one};

const RULES: &str = "\
domain: rl
descriptors:
  - key: api
    value: three
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: remote_address
    rate_limit: {unit: day, requests_per_unit: 100}
  - key: route
    value: a
    descriptors:
      - key: masked_remote_address
        value: 0.0.0.0/0
        rate_limit: {unit: day, requests_per_unit: 1}
  - key: client
    detailed_metric: true
    rate_limit: {unit: day, requests_per_unit: 100}
";

const OK: i32 = 1;
const OVER: i32 = 2;
const DAY: i32 = 4;

/// Starts `limiter` loading `path`, with `reference` sinks and an admin
/// listener.
async fn serve<S: CounterStore>(
    limiter: RateLimiter<S>,
    path: &Path,
    reference: ReferenceSinks,
) -> Running {
    let options = ServerOptions {
        admin: Some(any_port()),
        config: Some(ConfigSource {
            source: Source::Path(path.to_path_buf()),
            refuse_empty: false,
            load_options: LoadOptions::default(),
            watch: false,
            reload_on_sighup: false,
            watch_root: None,
        }),
        reference: Some(reference),
        ..ServerOptions::default()
    };
    let listeners = Listeners {
        grpc: any_port(),
        http: any_port(),
    };
    server::start_with(Arc::new(limiter), &listeners, options)
        .await
        .expect("start the server")
}

fn rules_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write rules");
    path
}

fn memory_limiter(path: &Path) -> RateLimiter<MemoryStore> {
    let rules = config::load_path(path, &LoadOptions::default()).expect("valid rules");
    RateLimiter::new(
        rules,
        MemoryStore::new(200_000),
        Arc::new(SystemClock),
        ServiceOptions::default(),
    )
}

fn prometheus_only() -> ReferenceSinks {
    ReferenceSinks {
        stats: Arc::new(ReferenceStats::new(
            Some(Mapper::reference_default(false)),
            DEFAULT_MAX_DYNAMIC_KEYS,
        )),
        prometheus: Some((any_port(), "/metrics".to_owned())),
        statsd: None,
    }
}

async fn client(running: &Running) -> RateLimitServiceClient<tonic::transport::Channel> {
    RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect over gRPC")
}

async fn scrape(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `promtool check metrics` on `text`: no error, and no lint problem but
/// those `allowed` says are expected.
fn promtool_check(text: &str, allowed: impl Fn(&str) -> bool) {
    let binary = harness::tools::required("promtool");
    let mut child = Command::new(&binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("promtool's stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let output = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // 0: clean; 3: lint problems only; anything else: the text is broken.
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "promtool failed:\n{said}\n{text}"
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(allowed(line), "promtool: {line}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_series_count_a_scripted_sequence_and_pass_promtool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rules_file(&dir);
    let running = serve(memory_limiter(&path), &path, prometheus_only()).await;
    let mut client = client(&running).await;

    // api=three, limit 3 (near = 2): 3 within (the 3rd also near), 2 over.
    for expected in [OK, OK, OK, OVER, OVER] {
        assert_eq!(
            decide(&mut client, request_one("rl", &[("api", "three")])).await,
            expected
        );
    }
    // A rule without a value: its key leaves the value out.
    for _ in 0..2 {
        let request = request_one("rl", &[("remote_address", "10.1.2.3")]);
        assert_eq!(decide(&mut client, request).await, OK);
    }
    // Two levels, an IPv4-shaped value: key1 and key2, dots sanitised.
    let nested = [("route", "a"), ("masked_remote_address", "0.0.0.0/0")];
    for expected in [OK, OVER] {
        assert_eq!(
            decide(&mut client, request_one("rl", &nested)).await,
            expected
        );
    }
    // detailed_metric: keyed by the request's value.
    assert_eq!(
        decide(&mut client, request_one("rl", &[("client", "c1")])).await,
        OK
    );
    // A limit override: keyed by the request's values.
    let overriding = request_of(
        "rl",
        vec![descriptor_with_override(&[("tenant", "t1")], 5, DAY)],
        0,
    );
    assert_eq!(decide(&mut client, overriding).await, OK);
    // Malformed: a service error.
    let invalid = client
        .should_rate_limit(request_one("", &[("a", "b")]))
        .await;
    assert!(invalid.is_err());

    let prometheus = running.prometheus_addr.expect("a Prometheus listener");
    let text = scrape(prometheus, "/metrics").await;
    let rl = |stat: &str, labels: &str| {
        metric(
            &text,
            &format!("ratelimit_service_rate_limit_{stat}"),
            labels,
        )
    };
    let api = r#"domain="rl",key1="api_three""#;
    assert_eq!(rl("total_hits", api), Some(5.0), "{text}");
    assert_eq!(rl("within_limit", api), Some(3.0), "{text}");
    assert_eq!(rl("near_limit", api), Some(1.0), "{text}");
    assert_eq!(rl("over_limit", api), Some(2.0), "{text}");
    assert_eq!(rl("shadow_mode", api), None, "nothing counted, no series");
    let remote = r#"domain="rl",key1="remote_address""#;
    assert_eq!(rl("total_hits", remote), Some(2.0), "{text}");
    let route = r#"domain="rl",key1="route_a",key2="masked_remote_address_0_0_0_0/0""#;
    assert_eq!(rl("total_hits", route), Some(2.0), "{text}");
    assert_eq!(rl("over_limit", route), Some(1.0), "{text}");
    let client_key = r#"domain="rl",key1="client_c1""#;
    assert_eq!(rl("total_hits", client_key), Some(1.0), "{text}");
    let tenant = r#"domain="rl",key1="tenant_t1""#;
    assert_eq!(rl("within_limit", tenant), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "ratelimit_service_total_requests",
            r#"grpc_method="ShouldRateLimit""#
        ),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ratelimit_service_should_rate_limit_error",
            r#"err_type="service_error""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "ratelimit_service_config_load_success", ""),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "ratelimit_service_response_time_seconds_count",
            r#"grpc_method="ShouldRateLimit""#
        ),
        Some(12.0),
        "{text}"
    );

    // floodgate's own series, on the HTTP port, agree.
    let own = scrape(running.http_addr, "/metrics").await;
    assert_eq!(
        metric(
            &own,
            "floodgate_rule_hits_total",
            r#"domain="rl",rule="rl.api_three""#
        ),
        Some(5.0)
    );
    assert!(!own.contains("ratelimit_service"), "{own}");
    assert!(!text.contains("floodgate_"), "{text}");

    // One lint of floodgate's own names, which stay as they are: the
    // counter of evicted counters names the word "counter".
    promtool_check(&own, |line| {
        line.starts_with("floodgate_counter_evictions_total ")
            && line.ends_with("should not include type 'counter'")
    });
    // The reference's counter names carry no `_total`: that is the contract.
    promtool_check(&text, |line| {
        line.starts_with("ratelimit_service_") && line.contains("\"_total\" suffix")
    });
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn statsd_lines_reach_a_udp_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rules_file(&dir);
    for dogstatsd in [false, true] {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a UDP socket");
        let sinks = ReferenceSinks {
            stats: Arc::new(ReferenceStats::new(None, DEFAULT_MAX_DYNAMIC_KEYS)),
            prometheus: None,
            statsd: Some(StatsdOptions {
                target: socket.local_addr().expect("its address").to_string(),
                interval: Duration::from_millis(20),
                tags: vec![("env".to_owned(), "test".to_owned())],
                dogstatsd,
            }),
        };
        let running = serve(memory_limiter(&path), &path, sinks).await;
        let mut client = client(&running).await;
        for _ in 0..4 {
            decide(&mut client, request_one("rl", &[("api", "three")])).await;
        }
        let (name, tags) = if dogstatsd {
            (
                "ratelimit.service.rate_limit.rl.api_three.total_hits",
                "|#env:test",
            )
        } else {
            (
                "ratelimit.service.rate_limit.rl.api_three.total_hits.__env=test",
                "",
            )
        };
        // Deltas: however the flushes fell, they add up to the 4 hits.
        let mut hits = 0;
        let mut buffer = vec![0; 2048];
        while hits < 4 {
            let received = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buffer))
                .await
                .expect("statsd lines within 30 s")
                .expect("a datagram");
            let datagram = String::from_utf8_lossy(&buffer[..received]).into_owned();
            assert!(datagram.len() <= 1432, "{datagram}");
            for line in datagram.lines() {
                assert!(line.contains("|c"), "a counter line: {line}");
                if let Some(rest) = line.strip_prefix(&format!("{name}:")) {
                    let value = rest
                        .strip_suffix(&format!("|c{tags}"))
                        .unwrap_or_else(|| panic!("tags as asked: {line}"));
                    hits += value.parse::<u64>().expect("a count");
                }
            }
        }
        assert_eq!(hits, 4);
        running.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_redis_is_counted_under_every_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rules_file(&dir);
    for (policy, code) in [
        (StoreErrorPolicy::Allow, Some(OK)),
        (StoreErrorPolicy::Deny, Some(OVER)),
        (StoreErrorPolicy::Error, None),
    ] {
        let mut redis = RedisServer::start();
        let store = RedisStore::connect(RedisOptions {
            timeout: Duration::from_secs(2),
            ..RedisOptions::new(redis.url())
        })
        .await
        .expect("connect to redis-server");
        let rules = config::load_path(&path, &LoadOptions::default()).expect("valid rules");
        let limiter = RateLimiter::new(
            rules,
            store,
            Arc::new(SystemClock),
            ServiceOptions {
                on_store_error: policy,
                ..ServiceOptions::default()
            },
        );
        let running = serve(limiter, &path, prometheus_only()).await;
        let mut client = client(&running).await;
        assert_eq!(
            decide(&mut client, request_one("rl", &[("api", "three")])).await,
            OK
        );
        redis.kill();
        let answer = client
            .should_rate_limit(request_one("rl", &[("api", "three")]))
            .await
            .map(|response| response.into_inner().overall_code);
        assert_eq!(
            answer.as_ref().ok().copied(),
            code,
            "{policy:?}: {answer:?}"
        );

        let own = scrape(running.http_addr, "/metrics").await;
        assert_eq!(
            metric(&own, "floodgate_store_errors_total", ""),
            Some(1.0),
            "{policy:?}: {own}"
        );
        let prometheus = running.prometheus_addr.expect("a Prometheus listener");
        let text = scrape(prometheus, "/metrics").await;
        assert_eq!(
            metric(
                &text,
                "ratelimit_service_should_rate_limit_error",
                r#"err_type="redis_error""#
            ),
            Some(1.0),
            "{policy:?}: {text}"
        );
        // The dashboard's store-errors tile reads the same count.
        let admin = running.admin_addr.expect("an admin listener");
        let (status, data) = http_get(admin, "/dashboard/data").await;
        assert_eq!(status, 200, "{data}");
        let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
        assert_eq!(data["store"]["errors_total"], 1, "{policy:?}: {data}");
        running.shutdown().await.expect("clean shutdown");
    }
}

/// The reference keeps a stats entry per override value for ever (its
/// #275, #1132); floodgate keeps at most `DEFAULT_MAX_DYNAMIC_KEYS`.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_override_values_make_bounded_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rules_file(&dir);
    let limiter = memory_limiter(&path);
    let stats = Arc::new(ReferenceStats::new(
        Some(Mapper::reference_default(false)),
        DEFAULT_MAX_DYNAMIC_KEYS,
    ));
    let metrics = Metrics::new(0.8).with_reference(Arc::clone(&stats));
    metrics.set_rules(&limiter.rules());
    const VALUES: usize = 100_000;
    for value in 0..VALUES {
        let tenant = format!("t{value}");
        let request = request_of(
            "rl",
            vec![descriptor_with_override(&[("tenant", &tenant)], 1, DAY)],
            0,
        );
        // The same two calls the transports make.
        let result = limiter.decide(&request).await;
        assert!(result.is_ok());
        metrics.observe(Transport::Grpc, &request, &result, Duration::ZERO);
    }
    assert_eq!(stats.dynamic_keys(), DEFAULT_MAX_DYNAMIC_KEYS);
    let text = stats.render();
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    // Five stats per key at most, the rules' own keys, and the service's.
    let bound = 5 * (DEFAULT_MAX_DYNAMIC_KEYS + 5) + 20;
    assert!(series <= bound, "{series} series");
    // Values past the bound count under the override's own key.
    let overflow = VALUES - DEFAULT_MAX_DYNAMIC_KEYS;
    assert_eq!(
        metric(
            &text,
            "ratelimit_service_rate_limit_total_hits",
            r#"domain="rl",key1="(override)""#
        ),
        Some(overflow as f64)
    );
    // floodgate's own series never name a request value.
    let own = metrics.render(None, 0);
    assert!(!own.contains("t99999"));
    assert!(own.lines().count() < 200, "{} lines", own.lines().count());
}
