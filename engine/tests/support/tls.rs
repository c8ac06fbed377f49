//! A throw-away CA and a server certificate for 127.0.0.1, made with the
//! `openssl` command (scripts/test installs it), and a rustls client
//! configuration that trusts that CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Files of a test PKI under one directory.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ECDSA P-256 CA and a server certificate for IP 127.0.0.1 signed by it.
pub fn test_pki(dir: &Path) -> TestPki {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let ca = format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=ringmq-test-ca");
    let csr = format!("req {ec} -keyout srv.key -out srv.csr -subj /CN=localhost");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
    let sign = "x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out srv.pem -days 2 -extfile san.ext";
    for line in [ca.as_str(), csr.as_str(), sign] {
        openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
    }
    TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("srv.pem"),
        key: dir.join("srv.key"),
    }
}

/// A rustls client configuration (ring) trusting only `ca`.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca.pem") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A broker with a TCP listener and a TLS one (the test PKI's server
/// certificate); returns it, the TLS port and the CA file.
pub fn broker_with_tls(name: &str) -> (super::Broker, u16, PathBuf) {
    let dir = super::temp_dir(name);
    let pki = test_pki(&dir);
    let tls_port = super::free_port();
    let config = dir.join("ringmq.toml");
    let text = format!(
        "[listeners]\ntls = [\"127.0.0.1:{tls_port}\"]\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    );
    std::fs::write(&config, text).expect("ringmq.toml");
    let config = config.to_string_lossy().into_owned();
    let broker = super::Broker::start_in(dir, super::free_port(), &["-c", &config]);
    (broker, tls_port, pki.ca)
}
