//! TLS and mutual TLS on the gRPC port, with certificates made at test
//! time: a handshake and a call work; with a client CA, only clients with a
//! certificate from that CA get through.

use crate::harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use floodgate::clock::SystemClock;
use floodgate::config::LoadOptions;
use floodgate::config::{EMBEDDED_CONFIG, Source};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::proto::{Code, RateLimitServiceClient};
use floodgate::server::{self, Listeners, Running, ServerOptions, TlsFiles};
use floodgate::store::memory::MemoryStore;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use harness::process::Binary;
use harness::request_one;
use harness::tls::{Pem, TestCa, write_server_files};

/// Calls must not hang; this bounds every network step.
const LIMIT: Duration = Duration::from_secs(20);

async fn start(tls: TlsFiles) -> Running {
    let rules = Source::BuiltIn.load(&LoadOptions::default()).unwrap().rules;
    let limiter = Arc::new(RateLimiter::new(
        rules,
        MemoryStore::new(1000),
        Arc::new(SystemClock),
        ServiceOptions::default(),
    ));
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners {
        grpc: localhost,
        http: localhost,
    };
    let options = ServerOptions {
        tls: Some(tls.load().unwrap()),
        ..ServerOptions::default()
    };
    server::start_with(limiter, &listeners, options)
        .await
        .unwrap()
}

/// Connects over TLS trusting `ca`, presenting `identity` if given, and
/// makes one call.
async fn call(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&Pem>,
    domain_name: Option<&str>,
) -> Result<i32, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(name) = domain_name {
        tls = tls.domain_name(name);
    }
    if let Some(pem) = identity {
        tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
    }
    let attempt = async {
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = RateLimitServiceClient::new(channel);
        let response = client
            .should_rate_limit(request_one("exotel", &[("account", "acme")]))
            .await
            .map_err(|status| format!("call: {status:?}"))?;
        Ok(response.into_inner().overall_code)
    };
    tokio::time::timeout(LIMIT, attempt)
        .await
        .unwrap_or_else(|_| panic!("TLS call hung for {LIMIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_and_call() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key, _) = write_server_files(dir.path(), &ca);
    let running = start(TlsFiles {
        cert,
        key,
        client_ca: None,
    })
    .await;
    let addr = running.grpc_addr;
    // By name, and by the IP address in the certificate's SAN.
    assert_eq!(
        call(addr, &ca.cert_pem(), None, Some("localhost")).await,
        Ok(Code::Ok as i32)
    );
    assert_eq!(
        call(addr, &ca.cert_pem(), None, None).await,
        Ok(Code::Ok as i32)
    );
    // A client that does not trust the server's CA refuses it.
    let stranger = TestCa::new("other CA");
    assert!(
        call(addr, &stranger.cert_pem(), None, Some("localhost"))
            .await
            .is_err()
    );
    // Plaintext on the TLS port does not get an answer.
    let plain = async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", addr.port()))
            .unwrap()
            .connect()
            .await?;
        let result = RateLimitServiceClient::new(channel)
            .should_rate_limit(request_one("exotel", &[("account", "acme")]))
            .await;
        Ok::<_, tonic::transport::Error>(result.is_ok())
    };
    let plain = tokio::time::timeout(LIMIT, plain)
        .await
        .expect("plaintext call hung");
    assert!(
        !matches!(plain, Ok(true)),
        "plaintext call on the TLS port succeeded"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_of_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key, client_ca) = write_server_files(dir.path(), &ca);
    let running = start(TlsFiles {
        cert,
        key,
        client_ca: Some(client_ca),
    })
    .await;
    let addr = running.grpc_addr;
    let trusted = ca.client("envoy");
    assert_eq!(
        call(addr, &ca.cert_pem(), Some(&trusted), Some("localhost")).await,
        Ok(Code::Ok as i32)
    );
    let no_cert = call(addr, &ca.cert_pem(), None, Some("localhost")).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate got through"
    );
    let other_ca = TestCa::new("other CA");
    let foreign = other_ca.client("intruder");
    let foreign = call(addr, &ca.cert_pem(), Some(&foreign), Some("localhost")).await;
    assert!(
        foreign.is_err(),
        "a client certificate of another CA got through"
    );
    // The trusted client still works after the rejections.
    assert_eq!(
        call(addr, &ca.cert_pem(), Some(&trusted), Some("localhost")).await,
        Ok(Code::Ok as i32)
    );
    running.shutdown().await.unwrap();
}

#[test]
fn a_bad_certificate_path_stops_serve_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (_, key, _) = write_server_files(dir.path(), &ca);
    let missing = dir.path().join("missing-cert.pem");
    let mut binary = Binary::start(
        &[
            "--config",
            EMBEDDED_CONFIG,
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    let (status, stderr) = binary.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot read TLS certificate") && stderr.contains("missing-cert.pem"),
        "stderr: {stderr}"
    );
}

#[test]
fn reference_tls_variables_need_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, _, _) = write_server_files(dir.path(), &ca);
    let mut binary = Binary::start(
        &["--config", EMBEDDED_CONFIG],
        &[
            ("GRPC_SERVER_USE_TLS", "true".to_owned()),
            ("GRPC_SERVER_TLS_CERT", cert.display().to_string()),
        ],
        dir.path(),
    );
    let (status, stderr) = binary.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("--tls-cert needs --tls-key"),
        "stderr: {stderr}"
    );
}
