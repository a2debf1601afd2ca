//! Rules from an xDS management server: a test ADS server
//! (harness/xds.rs) drives a real floodgate over gRPC. Subscription, ACK,
//! update, NACK keeping the old rules, state-of-the-world removal,
//! reconnects, mutual TLS, the message-size limit, bad input, and the same
//! decisions as the same rules from YAML.

use floodgate::proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitReplace, RateLimitUnit,
};
use floodgate::proto::{RateLimitRequest, RateLimitServiceClient};
use tonic::transport::Channel;

use crate::harness::ops::{self, Setup, decide, eventually, metric};
use crate::harness::xds::{XdsServer, any, per_day, resource, settings, start_floodgate};
use crate::harness::{http_get, request, request_one};

const OK: i32 = 1;
const OVER: i32 = 2;

async fn reload_status(admin: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(admin, "/reload").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("the status is JSON")
}

/// A call's result: the overall code, or the gRPC error.
async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> Result<i32, tonic::Status> {
    client
        .should_rate_limit(request)
        .await
        .map(|response| response.into_inner().overall_code)
}

#[tokio::test]
async fn subscribes_as_its_node_applies_and_acks() {
    let xds = XdsServer::start().await;
    let mut settings = settings(xds.addr);
    settings.node_metadata = vec![("zone".into(), "eu-1".into())];
    settings.headers = vec![("x-tenant".into(), "blue".into())];
    let server = start_floodgate(settings, false).await;
    let (http, admin) = (server.running.http_addr, server.admin());

    let first = xds.request_where("a subscription", |_| true).await;
    let node = first
        .request
        .node
        .clone()
        .expect("the request names its node");
    assert_eq!(node.id, "envoy-ratelimit");
    let metadata = node
        .metadata
        .expect("node metadata")
        .to_struct()
        .expect("a Struct");
    assert_eq!(
        metadata.fields["zone"].kind,
        Some(prost_types::value::Kind::StringValue("eu-1".into()))
    );
    assert_eq!(first.header("x-tenant"), Some("blue"));
    assert_eq!(
        first.request.type_url,
        "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig"
    );
    assert_eq!(
        (
            first.request.version_info.as_str(),
            first.request.response_nonce.as_str()
        ),
        ("", "")
    );

    // Healthy before any config (Envoy Gateway's readiness probe), and
    // answering what the reference answers with no config.
    assert_eq!(http_get(http, "/healthcheck").await.0, 200);
    let mut client = server.grpc().await;
    let refused = call(&mut client, request_one("edge", &[("user", "a")])).await;
    let status = refused.expect_err("no config yet");
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert_eq!(status.message(), "no rate limit configuration loaded");

    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);
    let ack = xds.ack_of("v1").await;
    assert_eq!(Some(ack.request.response_nonce.clone()), xds.nonce_of("v1"));
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OVER
    );

    let status = reload_status(admin).await;
    assert_eq!(status["path"], format!("xds://{}", xds.addr));
    assert_eq!(status["last_outcome"], "success");
    assert_eq!(status["last_trigger"], "xDS");
    assert_eq!(status["xds"]["accepted_version"], "v1");
    assert_eq!(status["xds"]["acks"], 1);
    assert_eq!(status["xds"]["connected"], true);
    assert_eq!(status["xds"]["node_id"], "envoy-ratelimit");
    let text = server.metrics().await;
    assert_eq!(
        metric(
            &text,
            "floodgate_config_reloads_total",
            r#"outcome="success""#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "floodgate_config_xds_connected", ""),
        Some(1.0)
    );
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert!(
        rules.contains("edge.user_a: unit=DAY requests_per_unit=1"),
        "{rules}"
    );
    // The dashboard's config badge reads the same status.
    let (code, data) = http_get(admin, "/dashboard/data").await;
    assert_eq!(code, 200, "{data}");
    let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
    assert_eq!(data["config"]["xds"]["accepted_version"], "v1");
    assert_eq!(data["config"]["rules"], 1);
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn each_response_is_the_whole_rule_set() {
    let xds = XdsServer::start().await;
    let server = start_floodgate(settings(xds.addr), false).await;
    let admin = server.admin();
    xds.push(
        "v1",
        vec![
            resource("a", vec![per_day("k", "v", 1)]),
            resource("b", vec![per_day("k", "v", 1)]),
        ],
    );
    xds.ack_of("v1").await;
    let mut client = server.grpc().await;
    assert_eq!(
        decide(&mut client, request_one("b", &[("k", "v")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("b", &[("k", "v")])).await,
        OVER
    );

    // v2 raises a's limit and leaves b out: b is gone.
    xds.push("v2", vec![resource("a", vec![per_day("k", "v", 5)])]);
    xds.ack_of("v2").await;
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert!(
        rules.contains("a.k_v: unit=DAY requests_per_unit=5"),
        "{rules}"
    );
    assert!(!rules.contains("b.k_v"), "{rules}");
    assert_eq!(
        decide(&mut client, request_one("b", &[("k", "v")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("b", &[("k", "v")])).await,
        OK
    );
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_invalid_response_is_nacked_and_the_last_good_rules_serve() {
    let xds = XdsServer::start().await;
    let server = start_floodgate(settings(xds.addr), false).await;
    let admin = server.admin();
    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);
    xds.ack_of("v1").await;

    // An empty domain: the YAML files' error, naming the resource.
    let nameless = RateLimitConfig {
        name: "nameless".into(),
        domain: String::new(),
        descriptors: vec![per_day("user", "a", 9)],
    };
    xds.push("v2", vec![any(&nameless)]);
    let nack = xds.nack_of("v2").await;
    assert_eq!(
        nack.request.version_info, "v1",
        "a NACK carries the accepted version"
    );
    let detail = nack.nack().unwrap_or_default().to_owned();
    assert!(detail.contains("xds:nameless"), "{detail}");
    assert!(detail.contains("empty domain"), "{detail}");

    // A duplicate descriptor, a bad unit, a resource of another type, a
    // truncated one, a response of another type: each NACKed.
    let mut bad_unit = per_day("user", "b", 1);
    if let Some(policy) = bad_unit.rate_limit.as_mut() {
        policy.unit = 42;
    }
    let mut truncated = resource("edge", vec![per_day("user", "a", 9)]);
    truncated.value.truncate(5);
    let other_type = prost_types::Any {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        value: Vec::new(),
    };
    let cases: Vec<(&str, Vec<prost_types::Any>, &str)> = vec![
        (
            "v3",
            vec![resource(
                "edge",
                vec![per_day("user", "a", 2), per_day("user", "a", 3)],
            )],
            "duplicate",
        ),
        (
            "v4",
            vec![resource("edge", vec![bad_unit])],
            "invalid rate limit unit '42'",
        ),
        ("v5", vec![other_type], "not a RateLimitConfig"),
        ("v6", vec![truncated], "does not decode"),
    ];
    for (version, resources, reason) in cases {
        xds.push(version, resources);
        let nack = xds.nack_of(version).await;
        let detail = nack.nack().unwrap_or_default();
        assert!(detail.contains(reason), "{version}: {detail}");
        assert_eq!(nack.request.version_info, "v1");
    }
    xds.push_typed(
        "v7",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        vec![],
    );
    let nack = xds.nack_of("v7").await;
    assert!(nack.nack().unwrap_or_default().contains("Listener"));

    // v1 serves on, nothing was swapped in.
    let mut client = server.grpc().await;
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OVER
    );
    let status = reload_status(admin).await;
    assert_eq!(status["last_outcome"], "failure");
    assert_eq!(status["xds"]["accepted_version"], "v1");
    assert_eq!(status["xds"]["rejected_version"], "v7");
    assert_eq!(status["xds"]["nacks"], 6);
    assert!(status["xds"]["last_nack_error"].is_string());
    let text = server.metrics().await;
    assert_eq!(
        metric(
            &text,
            "floodgate_config_reloads_total",
            r#"outcome="failure""#
        ),
        Some(6.0)
    );

    // A good response is taken again, and clears the NACK's error.
    xds.push("v8", vec![resource("edge", vec![per_day("user", "a", 5)])]);
    xds.ack_of("v8").await;
    let status = reload_status(admin).await;
    assert_eq!(status["xds"]["accepted_version"], "v8");
    assert!(status["xds"]["last_nack_error"].is_null());
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn reconnects_after_a_restart_and_resumes_from_the_accepted_version() {
    let xds = XdsServer::start().await;
    let server = start_floodgate(settings(xds.addr), false).await;
    let admin = server.admin();
    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);
    xds.ack_of("v1").await;

    // The server closes the stream: floodgate opens another, resuming.
    xds.close_streams();
    let resumed = xds
        .request_where("a resumed subscription", |r| {
            r.stream == 1 && r.request.response_nonce.is_empty()
        })
        .await;
    assert_eq!(resumed.request.version_info, "v1");

    // The server restarts: the same.
    let xds = xds.restart().await;
    let resumed = xds
        .request_where("a subscription after the restart", |r| {
            r.stream >= 2 && r.request.response_nonce.is_empty()
        })
        .await;
    assert_eq!(resumed.request.version_info, "v1");
    // The rules served on all along.
    let mut client = server.grpc().await;
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OVER
    );

    xds.push("v2", vec![resource("edge", vec![per_day("user", "a", 3)])]);
    xds.ack_of("v2").await;
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    let status = reload_status(admin).await;
    assert!(
        status["xds"]["stream_failures"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    let text = server.metrics().await;
    let failures = metric(&text, "floodgate_config_xds_stream_failures_total", "");
    assert!(failures.unwrap_or(0.0) >= 2.0, "{failures:?}");
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mutual_tls_with_a_server_name_override() {
    use crate::harness::tls::TestCa;
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let ca = TestCa::new("xds test CA");
    // The certificate names the host Envoy Gateway's does, not 127.0.0.1.
    let server_pem = ca.server_named(&["envoy-gateway"]);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_pem.cert, &server_pem.key))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(false);
    let xds = XdsServer::start_at(ops::any_port(), Some(tls)).await;
    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);

    let dir = tempfile::tempdir().expect("temp dir");
    let client = ca.client("envoy-ratelimit");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (cert, key, ca_file) = (
        write("tls.crt", &client.cert),
        write("tls.key", &client.key),
        write("ca.crt", &ca.cert_pem()),
    );
    let tls_settings = |identity: bool| {
        let mut settings = settings(xds.addr);
        settings.tls = Some(floodgate::config::xds::XdsTls {
            ca: Some(ca_file.clone()),
            identity: identity.then(|| (cert.clone(), key.clone())),
            server_name: Some("envoy-gateway".into()),
        });
        settings
    };

    // Without a client certificate: no stream, counted, no rules.
    let refused = start_floodgate(tls_settings(false), false).await;
    let admin = refused.admin();
    eventually("a failed TLS connection to be counted", || async move {
        reload_status(admin).await["xds"]["stream_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    assert!(xds.requests().is_empty(), "{:?}", xds.requests());
    refused.running.shutdown().await.expect("clean shutdown");

    let server = start_floodgate(tls_settings(true), false).await;
    xds.ack_of("v1").await;
    let mut client = server.grpc().await;
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OVER
    );
    server.running.shutdown().await.expect("clean shutdown");
}

/// A rule set of about `bytes` bytes on the wire.
fn big_rule_set(bytes: usize) -> Vec<prost_types::Any> {
    let count = bytes / 40;
    let descriptors = (0..count)
        .map(|i| per_day("user", &format!("user-number-{i:08}"), 5))
        .collect();
    vec![resource("big", descriptors)]
}

#[tokio::test]
async fn responses_over_the_size_limit_are_refused_and_the_limit_is_settable() {
    let xds = XdsServer::start().await;
    let mut small = settings(xds.addr);
    small.max_message_bytes = 64 * 1024;
    let limited = start_floodgate(small, false).await;
    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);
    xds.ack_of("v1").await;

    xds.push("v2", big_rule_set(200 * 1024));
    let admin = limited.admin();
    eventually(
        "the oversized response to break the stream",
        || async move {
            let status = reload_status(admin).await;
            status["xds"]["last_stream_error"]
                .as_str()
                .is_some_and(|e| {
                    e.contains("message length too large") || e.contains("larger than")
                })
        },
    )
    .await;
    let mut client = limited.grpc().await;
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OK
    );
    assert_eq!(
        decide(&mut client, request_one("edge", &[("user", "a")])).await,
        OVER
    );

    // A floodgate allowed 8 MiB takes it.
    let mut large = settings(xds.addr);
    large.max_message_bytes = 8 * 1024 * 1024;
    let roomy = start_floodgate(large, false).await;
    let (_, rules) = {
        let admin = roomy.admin();
        eventually("the big rule set to load", || async move {
            reload_status(admin).await["xds"]["accepted_version"] == "v2"
        })
        .await;
        http_get(admin, "/rlconfig").await
    };
    assert!(
        rules.contains("big.user_user-number-00000001"),
        "{}",
        &rules[..200.min(rules.len())]
    );
    // The limited one never took v2: it serves v1.
    assert_eq!(reload_status(admin).await["xds"]["accepted_version"], "v1");
    limited.running.shutdown().await.expect("clean shutdown");
    roomy.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn garbage_and_silence_are_survived() {
    // A "server" that answers every connection with garbage bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let garbage_addr = listener.local_addr().expect("addr");
    let garbage = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(&[0x17; 512]).await;
            let _ = socket.shutdown().await;
        }
    });
    let server = start_floodgate(settings(garbage_addr), false).await;
    let (http, admin) = (server.running.http_addr, server.admin());
    eventually("reconnects after garbage", || async move {
        reload_status(admin).await["xds"]["stream_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert_eq!(http_get(http, "/healthcheck").await.0, 200);
    let mut client = server.grpc().await;
    let status = call(&mut client, request_one("edge", &[("user", "a")])).await;
    assert_eq!(status.map_err(|s| s.code()), Err(tonic::Code::Unknown));
    server.running.shutdown().await.expect("clean shutdown");
    garbage.abort();

    // A server with nothing to send (Envoy Gateway before any policy):
    // floodgate waits on the open stream, healthy, and a required config
    // keeps it NOT_SERVING.
    let xds = XdsServer::start().await;
    let server = start_floodgate(settings(xds.addr), true).await;
    let admin = server.admin();
    xds.request_where("a subscription", |_| true).await;
    eventually("the stream to be open", || async move {
        reload_status(admin).await["xds"]["connected"] == true
    })
    .await;
    assert_eq!(
        http_get(server.running.http_addr, "/healthcheck").await.0,
        500
    );
    assert_eq!(xds.streams(), 1);
    xds.push("v1", vec![resource("edge", vec![per_day("user", "a", 1)])]);
    xds.ack_of("v1").await;
    let http = server.running.http_addr;
    eventually("healthy once rules loaded", || async move {
        http_get(http, "/healthcheck").await.0 == 200
    })
    .await;
    server.running.shutdown().await.expect("clean shutdown");
}

const SAME_RULES_YAML: &str = "\
domain: shop
descriptors:
  - key: remote_address
    rate_limit:
      unit: minute
      requests_per_unit: 3
  - key: user
    value: vip
    rate_limit:
      unit: hour
      requests_per_unit: 4
      name: vip
      replaces:
        - name: everyone
  - key: user
    rate_limit:
      unit: hour
      requests_per_unit: 2
      name: everyone
  - key: path
    value: /healthz
    rate_limit:
      unlimited: true
  - key: tenant
    shadow_mode: true
    rate_limit:
      unit: second
      requests_per_unit: 1
    descriptors:
      - key: api
        value: chat
        rate_limit:
          unit: week
          requests_per_unit: 2
";

fn same_rules_proto() -> RateLimitConfig {
    let policy = |unit: RateLimitUnit, n: u32| RateLimitPolicy {
        unit: unit as i32,
        requests_per_unit: n,
        ..RateLimitPolicy::default()
    };
    let descriptor =
        |key: &str, value: &str, rate_limit: Option<RateLimitPolicy>| RateLimitDescriptor {
            key: key.into(),
            value: value.into(),
            rate_limit,
            ..RateLimitDescriptor::default()
        };
    RateLimitConfig {
        name: "shop".into(),
        domain: "shop".into(),
        descriptors: vec![
            descriptor("remote_address", "", Some(policy(RateLimitUnit::Minute, 3))),
            descriptor(
                "user",
                "vip",
                Some(RateLimitPolicy {
                    name: "vip".into(),
                    replaces: vec![RateLimitReplace {
                        name: "everyone".into(),
                    }],
                    ..policy(RateLimitUnit::Hour, 4)
                }),
            ),
            descriptor(
                "user",
                "",
                Some(RateLimitPolicy {
                    name: "everyone".into(),
                    ..policy(RateLimitUnit::Hour, 2)
                }),
            ),
            descriptor(
                "path",
                "/healthz",
                Some(RateLimitPolicy {
                    unlimited: true,
                    ..RateLimitPolicy::default()
                }),
            ),
            RateLimitDescriptor {
                shadow_mode: true,
                descriptors: vec![descriptor(
                    "api",
                    "chat",
                    Some(policy(RateLimitUnit::Week, 2)),
                )],
                ..descriptor("tenant", "", Some(policy(RateLimitUnit::Second, 1)))
            },
        ],
    }
}

/// The same rules from a YAML file and from xDS: the same answers, field
/// for field, over a sequence that crosses every limit.
#[tokio::test]
async fn the_same_rules_from_yaml_and_from_xds_decide_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shop.yaml");
    std::fs::write(&path, SAME_RULES_YAML).expect("write");
    let from_yaml = ops::start(
        &path,
        Setup {
            watch: false,
            ..Setup::default()
        },
    )
    .await;
    let xds = XdsServer::start().await;
    xds.push("v1", vec![any(&same_rules_proto())]);
    let from_xds = start_floodgate(settings(xds.addr), false).await;
    xds.ack_of("v1").await;

    let (_, yaml_rules) = http_get(from_yaml.admin(), "/rlconfig").await;
    let (_, xds_rules) = http_get(from_xds.admin(), "/rlconfig").await;
    assert_eq!(xds_rules, yaml_rules);

    let requests: Vec<RateLimitRequest> = vec![
        request_one("shop", &[("remote_address", "10.0.0.1")]),
        request_one("shop", &[("user", "vip")]),
        request_one("shop", &[("user", "joe")]),
        request("shop", &[&[("user", "vip")], &[("user", "joe")]]),
        request_one("shop", &[("path", "/healthz")]),
        request_one("shop", &[("tenant", "t1")]),
        request_one("shop", &[("tenant", "t1"), ("api", "chat")]),
        request_one("other", &[("user", "joe")]),
    ];
    let mut yaml_client = from_yaml.grpc().await;
    let mut xds_client = from_xds.grpc().await;
    for round in 0..5 {
        for request in &requests {
            let a = yaml_client
                .should_rate_limit(request.clone())
                .await
                .expect("YAML server answers")
                .into_inner();
            let b = xds_client
                .should_rate_limit(request.clone())
                .await
                .expect("xDS server answers")
                .into_inner();
            assert_eq!(a, b, "round {round}, {request:?}");
        }
    }
    from_yaml.running.shutdown().await.expect("clean shutdown");
    from_xds.running.shutdown().await.expect("clean shutdown");
}
