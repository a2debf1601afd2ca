//! Graceful shutdown of the `floodgate serve` binary with calls in flight.
//!
//! Calls are made slow deterministically, not by timing: the test's own
//! `redis-server` is paused with `CLIENT PAUSE ... WRITE`, so every
//! `EVALSHA` waits inside Redis until the test says `CLIENT UNPAUSE`; the
//! test knows the calls are in flight when Redis reports them as blocked
//! clients. Then SIGTERM:
//! - with a long grace: health goes NOT_SERVING (seen on a `Watch` stream
//!   opened before), new connections are refused, and once Redis is
//!   unpaused the in-flight calls get real answers and the process exits 0;
//! - with a grace shorter than the pause: the process still exits, with
//!   status 1 and a message saying the grace period expired;
//! - a health `Watch` stream left open (as client-side health checking and
//!   load balancers leave it) is told NOT_SERVING and ended, so it does not
//!   hold the drain: the process exits 0 and logs that the drain finished.

#![cfg(unix)]

use crate::harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floodgate::proto::{Code, RateLimitResponse, RateLimitServiceClient};
use harness::ops::{eventually, one_rule};
use harness::process::{ServeProcess, spawn_serve};
use harness::redis::RedisServer;
use harness::request_one;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connect over gRPC")
}

/// Starts floodgate counting in `redis` with the given grace, and makes
/// one call so the script is loaded before Redis is paused.
async fn serve(redis: &RedisServer, rules: &std::path::Path, grace: &str) -> ServeProcess {
    let store = redis.url();
    let process = spawn_serve(&[
        "--config",
        rules.to_str().expect("a UTF-8 path"),
        "--config-watch",
        "false",
        "--store",
        &store,
        // Longer than any pause here: calls wait for Redis, not time out.
        "--store-timeout",
        "120s",
        "--shutdown-grace",
        grace,
    ]);
    let mut client = RateLimitServiceClient::new(channel(process.grpc).await);
    let warm = client
        .should_rate_limit(request_one("drain", &[("k", "v")]))
        .await
        .expect("a first answer")
        .into_inner();
    assert_eq!(warm.overall_code, Code::Ok as i32);
    process
}

fn rules_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("drain", "k", "v", 100)).expect("write rules");
    path
}

/// `blocked_clients` of Redis's `INFO clients`.
fn blocked_clients(redis: &RedisServer) -> usize {
    redis
        .cli(&["INFO", "clients"])
        .lines()
        .find_map(|line| line.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Pauses Redis's writes and starts `n` calls, each on its own connection
/// (opened first), returning once Redis holds all of floodgate's
/// connections blocked: the calls are inside floodgate, waiting.
async fn calls_in_flight(
    redis: &RedisServer,
    grpc: SocketAddr,
    n: usize,
) -> Vec<JoinHandle<Result<RateLimitResponse, tonic::Status>>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(RateLimitServiceClient::new(channel(grpc).await));
    }
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "600000", "WRITE"]), "OK");
    let calls: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                client
                    .should_rate_limit(request_one("drain", &[("k", "v")]))
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    // floodgate spreads calls over its 2 Redis connections round-robin:
    // with 2 calls after the warm-up, both connections are blocked.
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocked_clients(redis) < n.min(2) {
        assert!(
            Instant::now() < deadline,
            "the calls never reached Redis ({} blocked clients; this test assumes \
             floodgate's 2 Redis connections, RedisOptions::connections)",
            blocked_clients(redis)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    calls
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_calls_and_exits_0() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut process = serve(&redis, &rules_file(&dir), "60s").await;
    let (grpc, http) = (process.grpc, process.http);

    let mut health = HealthClient::new(channel(grpc).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "ratelimit".to_owned(),
        })
        .await
        .expect("a health watch")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let calls = calls_in_flight(&redis, grpc, 2).await;
    process.signal("TERM");

    // Load balancers are told first...
    let next = watch.message().await.expect("a status").expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // (the server ends the watch stream itself; see the test below)
    drop(watch);
    drop(health);
    // ...and new connections are refused on both ports.
    eventually("new gRPC connections to be refused", || async move {
        tokio::net::TcpStream::connect(grpc).await.is_err()
    })
    .await;
    eventually("new HTTP connections to be refused", || async move {
        tokio::net::TcpStream::connect(http).await.is_err()
    })
    .await;
    assert!(
        process.child.try_wait().expect("wait").is_none(),
        "floodgate must wait for its in-flight calls"
    );

    // Redis answers: the calls that were in flight get real decisions.
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]), "OK");
    let mut remaining = Vec::new();
    for call in calls {
        let answer = call
            .await
            .expect("the call task")
            .expect("an answer, not an error");
        assert_eq!(answer.overall_code, Code::Ok as i32);
        let status = &answer.statuses[0];
        assert_eq!(
            status.current_limit.as_ref().map(|l| l.requests_per_unit),
            Some(100)
        );
        remaining.push(status.limit_remaining);
    }
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        [97, 98],
        "both hits were counted after the warm-up"
    );

    let status = process.exit_status(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_grace_expires_the_process_still_exits_with_1() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut process = serve(&redis, &rules_file(&dir), "1s").await;

    let calls = calls_in_flight(&redis, process.grpc, 2).await;
    process.signal("TERM");
    // Redis stays paused: the calls outlive the grace period.
    let status = process.exit_status(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(1), "{status:?}");
    let stderr = process.stderr.lock().expect("stderr lock").join("\n");
    assert!(
        stderr.contains("did not finish within the 1s grace period"),
        "{stderr}"
    );
    // The cut-off calls fail; none is answered as if it had been decided.
    for call in calls {
        let outcome = call.await.expect("the call task");
        assert!(outcome.is_err(), "{outcome:?}");
    }
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]), "OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_health_watch_is_ended_and_does_not_hold_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = rules_file(&dir);
    // A stream that held the drain would make the process wait out this
    // grace and exit 1, cutting the stream off with an error.
    let mut process = spawn_serve(&[
        "--config",
        rules.to_str().expect("a UTF-8 path"),
        "--config-watch",
        "false",
        "--shutdown-grace",
        "30s",
    ]);
    let mut health = HealthClient::new(channel(process.grpc).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health watch")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    process.signal("TERM");
    let next = watch.message().await.expect("a status").expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // The server ends the stream; the client still holds its end open.
    assert!(
        watch.message().await.expect("a clean end").is_none(),
        "the watch stream must end at shutdown"
    );
    let status = process.exit_status(Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(health);

    // The last log line says the drain finished, after "shutting down".
    let lines = process.stdout.lock().expect("stdout lock").clone();
    let messages: Vec<String> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|log| log["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    let shutting = messages
        .iter()
        .position(|m| m.starts_with("shutting down"))
        .unwrap_or_else(|| panic!("no 'shutting down' line in {messages:?}"));
    assert!(
        messages[shutting + 1..]
            .last()
            .is_some_and(|m| m.contains("shutdown complete")),
        "{messages:?}"
    );
}
