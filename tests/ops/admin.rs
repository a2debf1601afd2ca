//! The admin server (`/`, `/rlconfig`, `/usage`) and health reporting over
//! gRPC `grpc.health.v1` and `GET /healthcheck`.

use crate::harness;

use std::net::SocketAddr;

use floodgate::health::Health;
use harness::ops::{Setup, decide, eventually, one_rule, start};
use harness::{http_get, http_post, request_one};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const OK: i32 = 1;
const OVER: i32 = 2;

const RULES: &str = "\
domain: adm
descriptors:
  - key: api
    value: a
    rate_limit:
      unit: minute
      requests_per_unit: 3
  - key: api
    value: free
    rate_limit:
      unlimited: true
  - key: user
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 100
";

#[tokio::test]
async fn index_and_rlconfig() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;

    let (code, index) = http_get(server.admin(), "/").await;
    assert_eq!(code, 200);
    let paths: Vec<&str> = index
        .lines()
        .filter_map(|line| line.split_once(':').map(|(path, _)| path))
        .collect();
    assert_eq!(
        paths,
        [
            "/dashboard",
            "/dashboard/data",
            "/overrides",
            "/reload",
            "/rlconfig",
            "/usage"
        ],
        "{index}"
    );

    let (code, rlconfig) = http_get(server.admin(), "/rlconfig").await;
    assert_eq!(code, 200);
    assert_eq!(
        rlconfig,
        "adm.api_a: unit=MINUTE requests_per_unit=3, shadow_mode: false\n\
         adm.api_free: unit=UNKNOWN requests_per_unit=0, shadow_mode: false\n\
         adm.user: unit=HOUR requests_per_unit=100, shadow_mode: true\n"
    );
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn usage_reports_counts_without_consuming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let admin = server.admin();
    let mut client = server.grpc().await;
    for _ in 0..2 {
        assert_eq!(
            decide(&mut client, request_one("adm", &[("api", "a")])).await,
            OK
        );
    }

    // Asked three times, two ways: always 2 used, 1 remaining, 30 s left
    // in the minute (the test clock sits 30 s into it).
    for _ in 0..2 {
        let (code, body) = http_get(admin, "/usage?domain=adm&descriptor=api=a").await;
        assert_eq!(code, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(report["matched"], true);
        assert_eq!(report["rule"], "adm.api_a");
        let limit = &report["limits"][0];
        assert_eq!(limit["used"], 2, "{body}");
        assert_eq!(limit["remaining"], 1, "{body}");
        assert_eq!(limit["requests_per_unit"], 3);
        assert_eq!(limit["unit"], "minute");
        assert_eq!(limit["reset_after_seconds"], 30.0);
    }
    let (code, body) = http_post(
        admin,
        "/usage",
        r#"{"domain":"adm","entries":[{"key":"api","value":"a"}]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"used\":2"), "{body}");

    // Nothing was consumed: exactly one more request fits.
    assert_eq!(
        decide(&mut client, request_one("adm", &[("api", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("adm", &[("api", "a")])).await,
        OVER
    );

    // A key-only default counts per value; an unseen value has used 0.
    let (_, body) = http_get(admin, "/usage?domain=adm&descriptor=user=alice").await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["rule"], "adm.user");
    assert_eq!(report["shadow_mode"], true);
    assert_eq!(report["limits"][0]["used"], 0);

    let (_, body) = http_get(admin, "/usage?domain=adm&descriptor=api=free").await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["unlimited"], true);
    assert_eq!(report["limits"], serde_json::json!([]));

    let (code, body) = http_get(admin, "/usage?domain=adm&descriptor=nothing=here").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"matched\":false"), "{body}");

    let (code, _) = http_get(admin, "/usage?domain=adm&descriptor=").await;
    assert_eq!(code, 400);
    let (code, _) = http_get(admin, "/usage?domain=adm").await;
    assert_eq!(code, 400);
    server.running.shutdown().await.expect("clean shutdown");
}

async fn grpc_health(addr: SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("a health answer")
        .into_inner();
    ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown)
}

async fn wait_for_health(addr: SocketAddr, http: SocketAddr, serving: bool) {
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let http_code = if serving { 200 } else { 500 };
    eventually("gRPC and HTTP health to agree", || async move {
        grpc_health(addr, "").await == want
            && grpc_health(addr, "ratelimit").await == want
            && http_get(http, "/healthcheck").await.0 == http_code
    })
    .await;
}

#[tokio::test]
async fn health_follows_rules_store_and_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, "domain: ''\n").expect("write");
    let health = Health::new();
    let server = start(
        &path,
        Setup {
            without_rules: true,
            health: health.clone(),
            ..Setup::default()
        },
    )
    .await;
    let grpc = server.running.grpc_addr;
    let http = server.running.http_addr;

    // No rules yet: not serving from the first answer on.
    assert_eq!(grpc_health(grpc, "").await, ServingStatus::NotServing);
    assert_eq!(
        grpc_health(grpc, "ratelimit").await,
        ServingStatus::NotServing
    );
    assert_eq!(http_get(http, "/healthcheck").await.0, 500);

    std::fs::write(&path, one_rule("h", "k", "v", 1)).expect("write");
    wait_for_health(grpc, http, true).await;

    // A store that fails open does not take the server out of rotation; one
    // whose errors deny or fail requests does.
    health.set_store_reachable(false);
    assert!(server.running.health().is_serving());
    health.set_store_required(true);
    wait_for_health(grpc, http, false).await;
    health.set_store_reachable(true);
    wait_for_health(grpc, http, true).await;

    // Shutdown's first step: report not serving while still answering.
    health.set_shutting_down();
    wait_for_health(grpc, http, false).await;
    server.running.shutdown().await.expect("clean shutdown");
}
