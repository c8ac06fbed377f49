//! The TLS listeners' server config, from the PEM files of `[tls]`, and
//! its reload (SIGHUP): new connections get the new certificate, those
//! already open keep the session they have.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsConfig;

/// The TLS listeners' server config: the certificate chain and key of
/// `[tls]`, TLS 1.2 and 1.3, and client certificates checked against
/// `ca_file` when it is set.
pub(crate) fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Err("tls.cert_file and tls.key_file are needed".into());
    };
    let certs = certificates(cert_file)?;
    let key = private_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match &tls.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(ca_file)? {
                roots
                    .add(ca)
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = match tls.require_client_cert {
                true => verifier.build(),
                false => verifier.allow_unauthenticated().build(),
            };
            let verifier = verifier.map_err(|e| format!("{}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_reader_iter(BufReader::new(file)).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_reader(BufReader::new(file))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The server config in force, shared by every shard's TLS listeners.
#[derive(Debug)]
pub struct Certificates {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads the files of `tls`.
    pub(crate) fn load(tls: &TlsConfig) -> Result<Certificates, String> {
        Ok(Certificates {
            current: RwLock::new(server_config(tls)?),
            files: tls.clone(),
        })
    }

    /// The config for a new connection.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the files again; on an error the config in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}
