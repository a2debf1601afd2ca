//! Health follows the Redis store: with `--on-store-error deny` (or
//! `error`) gRPC health and `GET /healthcheck` go NOT_SERVING when the
//! test's own `redis-server` is killed, and back to SERVING when it is
//! restarted, without any rate-limit traffic (the store's PING probe sees
//! it). Under `allow` they stay SERVING throughout.

use crate::harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions, StoreErrorPolicy};
use floodgate::health::Health;
use floodgate::proto::Code;
use floodgate::server::{self, Listeners, Running, ServerOptions};
use floodgate::store::redis::{RedisOptions, RedisStore};
use harness::ops::{any_port, eventually, one_rule};
use harness::redis::RedisServer;
use harness::{http_get, request_one};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A server counting in `redis`, whose health requires the store when
/// `required` (as `serve` sets it for `deny`/`error`), with an admin listener.
async fn serve(redis: &RedisServer, policy: StoreErrorPolicy, required: bool) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, one_rule("h", "k", "v", 1000)).expect("write rules");
    let rules = config::load_path(&path, &LoadOptions::default()).expect("valid rules");
    let health = Health::new();
    health.set_store_required(required);
    let store = RedisStore::connect(RedisOptions {
        // Generous: a debug build on a shared machine (a timed-out call
        // would be denied and fail the test).
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(redis.url())
    })
    .await
    .expect("connect to redis-server")
    .with_health(health.clone());
    let limiter = Arc::new(RateLimiter::new(
        rules,
        store,
        Arc::new(SystemClock),
        ServiceOptions {
            on_store_error: policy,
            ..ServiceOptions::default()
        },
    ));
    let listeners = Listeners {
        grpc: any_port(),
        http: any_port(),
    };
    let options = ServerOptions {
        health,
        admin: Some(any_port()),
        ..ServerOptions::default()
    };
    server::start_with(limiter, &listeners, options)
        .await
        .expect("start the server")
}

/// gRPC health of `service`.
async fn grpc_health(grpc: SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connect for health");
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = client.check(request).await.expect("a health answer");
    ServingStatus::try_from(answer.into_inner().status).expect("a known status")
}

/// gRPC health of `""` and `ratelimit`, and the `/healthcheck` status code.
async fn health_of(grpc: SocketAddr, http: SocketAddr) -> (ServingStatus, ServingStatus, u16) {
    let (code, _) = http_get(http, "/healthcheck").await;
    (
        grpc_health(grpc, "").await,
        grpc_health(grpc, "ratelimit").await,
        code,
    )
}

async fn wait_for_health(running: &Running, serving: bool) {
    let (grpc, http) = (running.grpc_addr, running.http_addr);
    let want = if serving {
        (ServingStatus::Serving, ServingStatus::Serving, 200)
    } else {
        (ServingStatus::NotServing, ServingStatus::NotServing, 500)
    };
    eventually(&format!("health to be {want:?}"), || async move {
        health_of(grpc, http).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_deny_health_follows_redis_down_and_up() {
    let mut redis = RedisServer::start();
    let running = serve(&redis, StoreErrorPolicy::Deny, true).await;
    let (grpc, http) = (running.grpc_addr, running.http_addr);
    assert_eq!(
        health_of(grpc, http).await,
        (ServingStatus::Serving, ServingStatus::Serving, 200)
    );

    let mut client = floodgate::proto::RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let ok = harness::ops::decide(&mut client, request_one("h", &[("k", "v")])).await;
    assert_eq!(ok, Code::Ok as i32);

    redis.kill();
    // The first failing request marks the store unreachable and is denied.
    let denied = harness::ops::decide(&mut client, request_one("h", &[("k", "v")])).await;
    assert_eq!(
        denied,
        Code::OverLimit as i32,
        "deny: the outage fails closed"
    );
    wait_for_health(&running, false).await;

    // No traffic from here on: the PING probe sees Redis come back.
    redis.restart();
    wait_for_health(&running, true).await;
    let ok = harness::ops::decide(&mut client, request_one("h", &[("k", "v")])).await;
    assert_eq!(ok, Code::Ok as i32);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_allow_health_stays_serving_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let running = serve(&redis, StoreErrorPolicy::Allow, false).await;
    let (grpc, http) = (running.grpc_addr, running.http_addr);
    let mut client = floodgate::proto::RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");

    redis.kill();
    let allowed = harness::ops::decide(&mut client, request_one("h", &[("k", "v")])).await;
    assert_eq!(allowed, Code::Ok as i32, "allow: the outage fails open");
    // The store did notice (so this test would see a wrong `required`).
    assert!(!running.health().store_reachable());
    assert_eq!(
        health_of(grpc, http).await,
        (ServingStatus::Serving, ServingStatus::Serving, 200)
    );

    redis.restart();
    let health = running.health().clone();
    eventually("the probe to see Redis again", || {
        let health = health.clone();
        async move { health.store_reachable() }
    })
    .await;
    running.shutdown().await.expect("clean shutdown");
}

/// With Redis the counters live outside this instance, and floodgate does not
/// count them (see `RedisStore::held`): `/metrics` has no
/// `floodgate_counters` series and the dashboard says `null`, never a 0
/// that reads as "no counters", while the counter really is in Redis.
#[tokio::test(flavor = "multi_thread")]
async fn with_redis_the_counters_are_reported_as_not_tracked() {
    let redis = RedisServer::start();
    let running = serve(&redis, StoreErrorPolicy::Error, true).await;
    let mut client =
        floodgate::proto::RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
            .await
            .expect("connect over gRPC");
    let answer = client
        .should_rate_limit(request_one("h", &[("k", "v")]))
        .await
        .expect("a decision")
        .into_inner();
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert_eq!(
        redis.cli(&["DBSIZE"]).trim(),
        "1",
        "the counter is in Redis"
    );

    let (code, text) = http_get(running.http_addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        harness::ops::metric(&text, "floodgate_counter_evictions_total", ""),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("floodgate_counters "), "{text}");

    let admin = running.admin_addr.expect("an admin listener");
    let (code, body) = http_get(admin, "/dashboard/data").await;
    assert_eq!(code, 200, "{body}");
    let data: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(data["store"]["counters"], serde_json::Value::Null, "{body}");
    assert_eq!(data["store"]["evictions_total"], 0, "{body}");
}
