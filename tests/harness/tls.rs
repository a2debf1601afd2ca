//! A test CA that signs server and client certificates, and the server's
//! TLS files written to a directory.

use std::path::{Path, PathBuf};

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
        self.sign_for(names, &[usage], common_name)
    }

    fn sign_for(
        &self,
        names: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
        common_name: &str,
    ) -> Pem {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = usages.to_vec();
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

    /// A server certificate for the given names only.
    pub fn server_named(&self, names: &[&str]) -> Pem {
        self.sign(names, ExtendedKeyUsagePurpose::ServerAuth, "xds")
    }

    /// One certificate for both ends, as Envoy Gateway's `envoy-rate-limit`
    /// Secret serves floodgate's gRPC port and its xDS client alike.
    pub fn server_and_client(&self, names: &[&str]) -> Pem {
        self.sign_for(
            names,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            "envoy-ratelimit",
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
