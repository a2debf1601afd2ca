//! Replacing envoyproxy/ratelimit in Istio's sample Deployment by swapping
//! the image only: the binary, run as `/bin/ratelimit` without arguments
//! and with *only* the sample's environment (plus `PORT`, `GRPC_PORT` and
//! `DEBUG_PORT`, reference variables too, set to 0 so parallel tests get
//! free ports, read back from the log; and `REDIS_TIMEOUT=5s`, since
//! floodgate's 10 ms default is too short for a debug build on a loaded
//! machine), serves the rules of `$RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/config/`
//! (a ConfigMap-style directory, with a dot file that must be ignored),
//! answers `/healthcheck`, counts in the Redis of `REDIS_URL` (a second
//! instance sees the same counts), reloads when the ConfigMap's `..data`
//! symlink is swapped (`RUNTIME_WATCH_ROOT=false` watches that directory),
//! warns about nothing, and exits 0 on SIGTERM.

#![cfg(unix)]

use crate::harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodgate::proto::{Code, RateLimitResponse, RateLimitServiceClient};
use harness::ops::{any_port, eventually};
use harness::redis::RedisServer;
use harness::{http_get, request_one};

/// Kills the child if a test fails before it stops.
struct Instance {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    admin: SocketAddr,
    /// The reference's Prometheus listener, when `USE_PROMETHEUS=true`.
    prometheus: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rules` as a ConfigMap volume: a timestamped directory, `..data`
/// pointing at it, and the file as a symlink through `..data`.
fn write_configmap_version(config: &Path, version: &str, rules: &str) {
    let data = config.join(format!("..{version}"));
    std::fs::create_dir_all(&data).expect("create the data dir");
    std::fs::write(data.join("rules.yaml"), rules).expect("write rules");
    let link = config.join("..data");
    if link.exists() {
        // Kubernetes' update: a new symlink renamed over `..data`.
        let temp = config.join("..data_tmp");
        symlink(format!("..{version}"), &temp).expect("symlink ..data_tmp");
        std::fs::rename(&temp, &link).expect("rename over ..data");
    } else {
        symlink(format!("..{version}"), &link).expect("symlink ..data");
        symlink("..data/rules.yaml", config.join("rules.yaml")).expect("symlink rules.yaml");
    }
}

const RULES_V1: &str = "\
domain: istio
descriptors:
  - key: remote_address
    rate_limit: {unit: day, requests_per_unit: 3}
";

const RULES_V2: &str = "\
domain: istio
descriptors:
  - key: remote_address
    rate_limit: {unit: day, requests_per_unit: 9}
";

/// Starts the binary as Istio's Deployment does: `/bin/ratelimit`, no
/// arguments, only the sample's variables.
fn start(bin_dir: &Path, runtime_root: &Path, redis: &RedisServer) -> Instance {
    start_with(bin_dir, runtime_root, redis, &[])
}

/// [`start`] with more reference variables.
fn start_with(
    bin_dir: &Path,
    runtime_root: &Path,
    redis: &RedisServer,
    more: &[(&str, &str)],
) -> Instance {
    let mut child = Command::new(bin_dir.join("ratelimit"))
        .env_clear()
        .env("RUNTIME_ROOT", runtime_root)
        .env("RUNTIME_SUBDIRECTORY", "ratelimit")
        .env("RUNTIME_IGNOREDOTFILES", "true")
        .env("RUNTIME_WATCH_ROOT", "false")
        .env("REDIS_SOCKET_TYPE", "tcp")
        .env("REDIS_URL", format!("127.0.0.1:{}", redis.port))
        .env("USE_STATSD", "false")
        .env("LOG_LEVEL", "debug")
        // Port 0: the system picks free ports (no race between parallel
        // tests); the addresses bound are read from the log.
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .env("DEBUG_PORT", "0")
        // floodgate waits 10 ms for Redis by default (the reference 10 s):
        // too little for a debug build on a loaded machine, where a call
        // that times out is answered OK without limits (fail open).
        .env("REDIS_TIMEOUT", "5s")
        .envs(more.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start floodgate as /bin/ratelimit");
    let log = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().expect("log lock").push(line);
            }
        });
    }
    Instance {
        child,
        http: any_port(),
        grpc: any_port(),
        admin: any_port(),
        prometheus: None,
        log,
    }
}

/// The address `name=` of the "floodgate serving" line (text format, maybe
/// with colours), on loopback.
fn bound(line: &str, name: &str) -> Option<SocketAddr> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI colour sequence: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let value = plain
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))?;
    let addr: SocketAddr = value.trim_matches('"').parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], addr.port())))
}

impl Instance {
    /// Waits (bounded) for the "floodgate serving" line, takes the bound
    /// addresses from it, then waits until `/healthcheck` answers 200.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("floodgate exited with {status}: {:#?}", self.log.lock());
            }
            let serving = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|line| line.contains("floodgate serving"))
                .cloned();
            if let Some(line) = serving {
                let addr =
                    |name| bound(&line, name).unwrap_or_else(|| panic!("no {name}= in {line}"));
                (self.http, self.grpc, self.admin) = (addr("http"), addr("grpc"), addr("admin"));
                self.prometheus = bound(&line, "prometheus");
                if http_get(self.http, "/healthcheck").await.0 == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never healthy: {:#?}",
                self.log.lock()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ask(&self) -> RateLimitResponse {
        let mut client = RateLimitServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect over gRPC");
        client
            .should_rate_limit(request_one("istio", &[("remote_address", "10.0.0.7")]))
            .await
            .expect("a decision")
            .into_inner()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Under `dir`: the runtime root, its (created) `ratelimit/config`
/// directory, and a `bin` directory holding `ratelimit`, a link to the
/// binary, as the image has `/bin/ratelimit`.
fn layout(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let runtime_root = dir.join("data");
    let config = runtime_root.join("ratelimit").join("config");
    std::fs::create_dir_all(&config).expect("create the config dir");
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("create bin dir");
    symlink(env!("CARGO_BIN_EXE_floodgate"), bin_dir.join("ratelimit")).expect("symlink");
    (runtime_root, config, bin_dir)
}

fn remaining(response: &RateLimitResponse) -> (i32, u32) {
    (response.overall_code, response.statuses[0].limit_remaining)
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_sample_environment_alone_serves_counts_in_redis_and_reloads() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime_root, config, bin_dir) = layout(dir.path());
    write_configmap_version(&config, "2026_01_01_00_00_00.1", RULES_V1);
    // Loaded, this would fail the start: RUNTIME_IGNOREDOTFILES=true.
    std::fs::write(config.join(".editor-backup.yaml"), "domain: [not valid\n")
        .expect("write the dot file");

    let mut first = start(&bin_dir, &runtime_root, &redis);
    first.ready().await;
    let (status, rlconfig) = http_get(first.admin, "/rlconfig").await;
    assert_eq!(status, 200);
    assert_eq!(
        rlconfig,
        "istio.remote_address: unit=DAY requests_per_unit=3, shadow_mode: false\n"
    );
    let answer = first.ask().await;
    assert_eq!(
        remaining(&answer),
        (Code::Ok as i32, 2),
        "{answer:?}; keys in Redis: {}",
        redis.cli(&["--scan"])
    );

    // The counter is in the test's Redis, under floodgate's prefix.
    let keys = redis.cli(&["--scan", "--pattern", "floodgate:*"]);
    assert_eq!(
        keys.lines().count(),
        1,
        "one counter key in Redis: {keys:?}"
    );

    // A second instance with the same environment shares the count.
    let mut second = start(&bin_dir, &runtime_root, &redis);
    second.ready().await;
    assert_eq!(remaining(&second.ask().await), (Code::Ok as i32, 1));
    assert_eq!(remaining(&first.ask().await), (Code::Ok as i32, 0));
    assert_eq!(second.ask().await.overall_code, Code::OverLimit as i32);
    assert_eq!(second.terminate().await.code(), Some(0));

    // The ConfigMap is updated: Kubernetes swaps `..data`.
    write_configmap_version(&config, "2026_01_01_00_01_00.2", RULES_V2);
    let admin = first.admin;
    eventually("the ConfigMap swap to be reloaded", || async move {
        http_get(admin, "/rlconfig")
            .await
            .1
            .contains("requests_per_unit=9")
    })
    .await;
    // Same descriptor, same window: 4 used of the new 9.
    let after = first.ask().await;
    assert_eq!(remaining(&after), (Code::Ok as i32, 4), "{after:?}");

    let log = Arc::clone(&first.log);
    assert_eq!(first.terminate().await.code(), Some(0));
    let log = log.lock().expect("log lock");
    let warnings: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("floodgate::cli::reference_env"))
        .collect();
    assert!(
        warnings.is_empty(),
        "Istio's variables are all honoured, nothing to warn about: {warnings:#?}"
    );
    assert!(
        log.iter().any(|line| line.contains("DEBUG")),
        "LOG_LEVEL=debug took effect"
    );
}

/// The reference variables floodgate maps onto its own flags take effect:
/// `CACHE_KEY_PREFIX` prefixes the Redis keys (and every instance here sets
/// `REDIS_TIMEOUT=5s`), `RESPONSE_DYNAMIC_METADATA=false` drops the metadata,
/// and `NEAR_LIMIT_RATIO` moves the near-limit threshold in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn reference_variables_mapped_to_flags_take_effect() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime_root, config, bin_dir) = layout(dir.path());
    std::fs::write(config.join("rules.yaml"), RULES_V1).expect("write rules");

    let mut instance = start_with(
        &bin_dir,
        &runtime_root,
        &redis,
        &[
            ("CACHE_KEY_PREFIX", "rl_"),
            ("RESPONSE_DYNAMIC_METADATA", "false"),
            ("NEAR_LIMIT_RATIO", "0.1"),
        ],
    );
    instance.ready().await;
    let answer = instance.ask().await;
    assert_eq!(remaining(&answer), (Code::Ok as i32, 2));
    assert!(answer.dynamic_metadata.is_none(), "{answer:?}");
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    assert!(
        !keys.is_empty() && keys.lines().all(|key| key.starts_with("rl_")),
        "every key under CACHE_KEY_PREFIX: {keys:?}"
    );
    // 1 of 3 used: above floor(3 x 0.1) = 0, so near the limit.
    let (_, metrics) = http_get(instance.http, "/metrics").await;
    let near = harness::ops::metric(
        &metrics,
        "floodgate_rule_near_limit_total",
        r#"domain="istio",rule="istio.remote_address""#,
    );
    assert_eq!(near, Some(1.0), "{metrics}");
    assert_eq!(instance.terminate().await.code(), Some(0));
}

/// Envoy Gateway's metrics and tracing environment: `USE_PROMETHEUS=true`
/// on `PROMETHEUS_ADDR` (port 0 here, read from the log) with
/// `USE_STATSD=false` and its mapping file path, whose optional ConfigMap is
/// absent here (the default mapping serves, with a warning); the
/// reference-named series count the traffic; `TRACING_*` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` send the spans to the test's collector,
/// flushed at SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_gateway_metrics_and_tracing_environment_is_honoured() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime_root, config, bin_dir) = layout(dir.path());
    std::fs::write(config.join("rules.yaml"), RULES_V1).expect("write rules");
    let (collector, mut exports) = crate::traces::collector().await;
    let missing = dir.path().join("statsd-exporter").join("conf.yaml");
    let endpoint = format!("http://{collector}");
    let mut instance = start_with(
        &bin_dir,
        &runtime_root,
        &redis,
        &[
            ("USE_PROMETHEUS", "true"),
            ("PROMETHEUS_ADDR", ":0"),
            (
                "PROMETHEUS_MAPPER_YAML",
                missing.to_str().expect("a UTF-8 path"),
            ),
            ("TRACING_ENABLED", "true"),
            ("TRACING_SERVICE_NAME", "envoy-ratelimit"),
            ("TRACING_SERVICE_NAMESPACE", "envoy-gateway-system"),
            ("TRACING_SERVICE_INSTANCE_ID", "envoy-ratelimit-0"),
            ("TRACING_SAMPLING_RATE", "1.0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ],
    );
    instance.ready().await;
    assert_eq!(instance.ask().await.overall_code, Code::Ok as i32);
    let prometheus = instance
        .prometheus
        .expect("the serving line names the Prometheus listener");
    let (status, text) = http_get(prometheus, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let series = |name: &str, labels: &str| harness::ops::metric(&text, name, labels);
    assert_eq!(
        series(
            "ratelimit_service_rate_limit_total_hits",
            r#"domain="istio",key1="remote_address""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series("ratelimit_service_config_load_success", ""),
        Some(1.0)
    );
    // floodgate's own series stay on the HTTP port, and only there.
    let (_, own) = http_get(instance.http, "/metrics").await;
    assert!(own.contains("floodgate_rule_hits_total"), "{own}");
    assert!(!own.contains("ratelimit_service_"), "{own}");

    let log = Arc::clone(&instance.log);
    assert_eq!(instance.terminate().await.code(), Some(0));
    assert!(
        log.lock()
            .expect("log lock")
            .iter()
            .any(|line| line.contains("PROMETHEUS_MAPPER_YAML does not exist")),
        "a missing mapping file is warned about"
    );
    let mut names = Vec::new();
    while let Ok(export) = exports.try_recv() {
        for spans in export.resource_spans {
            let attributes = spans.resource.map(|r| r.attributes).unwrap_or_default();
            names.push(crate::traces::text_attribute(&attributes, "service.name"));
        }
    }
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.as_deref() == Some("envoy-ratelimit")),
        "spans exported at shutdown, as envoy-ratelimit: {names:?}"
    );
}
