//! The binary as Envoy Gateway runs the reference's image: `/bin/ratelimit`
//! without arguments, Envoy Gateway's exact environment (rules over xDS
//! with mutual TLS from `/certs`, gRPC TLS, a forced start), against a test
//! management server.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floodgate::proto::RateLimitServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::harness::process::free_port;
use crate::harness::tls::TestCa;
use crate::harness::xds::{XdsServer, per_day, resource};
use crate::harness::{http_get, request_one};

#[tokio::test]
async fn serves_pushed_rules_under_envoy_gateways_environment() {
    let ca = TestCa::new("envoy-gateway CA");
    // The Secret `envoy-rate-limit`, mounted at /certs.
    let certs = tempfile::tempdir().expect("temp dir");
    let ours = ca.server_and_client(&["localhost"]);
    for (name, text) in [
        ("tls.crt", ours.cert.as_str()),
        ("tls.key", ours.key.as_str()),
        ("ca.crt", ca.cert_pem().as_str()),
    ] {
        std::fs::write(certs.path().join(name), text).expect("write a cert file");
    }
    let cert_path = |name: &str| certs.path().join(name).display().to_string();

    let gateway = ca.server();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&gateway.cert, &gateway.key))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(false);
    let xds = XdsServer::start_at("127.0.0.1:0".parse().expect("addr"), Some(tls)).await;

    let (grpc_port, http_port, debug_port) = (free_port(), free_port(), free_port());
    let environment: Vec<(&str, String)> = vec![
        // Envoy Gateway's (internal/infrastructure/kubernetes/ratelimit).
        ("RUNTIME_ROOT", "/data".into()),
        ("RUNTIME_SUBDIRECTORY", "ratelimit".into()),
        ("RUNTIME_IGNOREDOTFILES", "true".into()),
        ("RUNTIME_WATCH_ROOT", "false".into()),
        ("LOG_LEVEL", "info".into()),
        ("USE_STATSD", "false".into()),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW".into()),
        // `envoy-gateway:18001` in a cluster.
        (
            "CONFIG_GRPC_XDS_SERVER_URL",
            format!("localhost:{}", xds.addr.port()),
        ),
        ("CONFIG_GRPC_XDS_NODE_ID", "envoy-ratelimit".into()),
        ("GRPC_SERVER_USE_TLS", "true".into()),
        ("GRPC_SERVER_TLS_CERT", cert_path("tls.crt")),
        ("GRPC_SERVER_TLS_KEY", cert_path("tls.key")),
        ("GRPC_SERVER_TLS_CA_CERT", cert_path("ca.crt")),
        ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true".into()),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", cert_path("tls.crt")),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", cert_path("tls.key")),
        ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", cert_path("ca.crt")),
        ("FORCE_START_WITHOUT_INITIAL_CONFIG", "true".into()),
        // Free ports instead of 8081/8080/6070, on loopback.
        ("GRPC_HOST", "127.0.0.1".into()),
        ("GRPC_PORT", grpc_port.to_string()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", http_port.to_string()),
        ("DEBUG_HOST", "127.0.0.1".into()),
        ("DEBUG_PORT", debug_port.to_string()),
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate"));
    command
        .arg0("/bin/ratelimit")
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(command.spawn().expect("start floodgate as /bin/ratelimit"));

    // The readiness probe passes before any config (a bounded wait for the
    // process to come up, not a speed assertion).
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("floodgate exited: {status}");
        }
        let listening = tokio::net::TcpStream::connect(http).await.is_ok();
        if listening && http_get(http, "/healthcheck").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/healthcheck never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscription = xds.request_where("a subscription", |_| true).await;
    assert_eq!(
        subscription.request.node.map(|node| node.id),
        Some("envoy-ratelimit".to_owned())
    );

    xds.push(
        "1",
        vec![resource(
            "default/eg/http",
            vec![per_day("x-user-id", "one", 1)],
        )],
    );
    xds.ack_of("1").await;

    // Envoy's side: TLS with a client certificate from the same CA.
    let envoy = ca.client("envoy");
    let endpoint = Endpoint::from_shared(format!("https://localhost:{grpc_port}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.cert_pem()))
                .identity(Identity::from_pem(&envoy.cert, &envoy.key))
                .domain_name("localhost"),
        )
        .expect("client TLS");
    let mut client =
        RateLimitServiceClient::new(endpoint.connect().await.expect("connect over mTLS"));
    let codes: Vec<i32> = {
        let mut codes = Vec::new();
        for _ in 0..2 {
            let answer = client
                .should_rate_limit(request_one("default/eg/http", &[("x-user-id", "one")]))
                .await
                .expect("a decision")
                .into_inner();
            codes.push(answer.overall_code);
        }
        codes
    };
    assert_eq!(codes, [1, 2], "OK, then OVER_LIMIT");

    // The admin port shows the pushed rules, as `egctl config ratelimit` reads them.
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], debug_port).into();
    let (_, rules) = http_get(admin, "/rlconfig").await;
    assert!(rules.contains("default/eg/http.x-user-id_one"), "{rules}");
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
