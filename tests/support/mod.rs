//! Helpers shared by the integration tests that run a server: test
//! certificates, free ports, a running `floodgate` binary, and RLS calls.

#![allow(dead_code)] // each test crate uses a different subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, in PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A test CA that signs server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, common_name: &str) -> Pem {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Pem {
        self.sign(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            "floodgate",
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Pem {
        self.sign(&[name], ExtendedKeyUsagePurpose::ClientAuth, name)
    }
}

/// The server's TLS files written into `dir`: (cert, key, client CA).
pub fn write_server_files(dir: &Path, ca: &TestCa) -> (PathBuf, PathBuf, PathBuf) {
    let server = ca.server();
    let cert = dir.join("server.pem");
    let key = dir.join("server-key.pem");
    let client_ca = dir.join("ca.pem");
    std::fs::write(&cert, server.cert).unwrap();
    std::fs::write(&key, server.key).unwrap();
    std::fs::write(&client_ca, ca.cert_pem()).unwrap();
    (cert, key, client_ca)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A request with one descriptor.
pub fn request(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: (*key).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            ..Default::default()
        }],
        hits_addend: 0,
    }
}

/// A `floodgate` process, killed on drop if still running.
pub struct Binary {
    pub child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Binary {
    /// Starts `floodgate serve` with only `env` (plus PATH) in its
    /// environment, so the developer's variables cannot leak in.
    pub fn start(args: &[&str], env: &[(&str, String)], cwd: &Path) -> Binary {
        let grpc_port = free_port();
        let http_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_floodgate"));
        command
            .arg("serve")
            .args(args)
            .env_clear()
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let has = |name: &str| env.iter().any(|(k, _)| *k == name);
        if !has("GRPC_PORT") && !args.contains(&"--grpc-addr") {
            command.env("FLOODGATE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"));
        }
        if !has("PORT") && !args.contains(&"--http-addr") {
            command.env("FLOODGATE_HTTP_ADDR", format!("127.0.0.1:{http_port}"));
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        Binary {
            child,
            grpc_port,
            http_port,
        }
    }

    /// Sends SIGTERM (or another signal) to this process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, at most `limit` (hang detection only); returns the
    /// status and stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (status, stderr);
            }
            assert!(
                Instant::now() < deadline,
                "floodgate did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to a plaintext gRPC port, retrying until the server is up
/// (bounded: hang detection only).
pub async fn connect_plain(port: u16) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2));
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => {
                assert!(Instant::now() < deadline, "server never came up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
