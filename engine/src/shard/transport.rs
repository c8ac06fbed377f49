//! What lies between a connection's socket and its MQTT bytes: nothing
//! (TCP) or a TLS session (rustls; no crypto of ours). The reader feeds
//! it what the socket gave and gets plaintext; the writer gives it frames
//! and gets what goes on the socket. Only the writer (or, before the
//! connection runs, the handshake) writes to the socket, so records keep
//! their order. A transport moves with its connection to the client's home
//! shard.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsConfig;

/// A connection's transport.
#[derive(Debug)]
pub enum Transport {
    /// MQTT straight over TCP.
    Plain,
    /// MQTT over a TLS session.
    Tls(Box<rustls::ServerConnection>),
}

impl Transport {
    /// A TLS session about to start its handshake.
    pub(super) fn tls(config: &Arc<ServerConfig>) -> io::Result<Transport> {
        let mut c = rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        // The broker bounds each connection's output; rustls need not.
        c.set_buffer_limit(None);
        Ok(Transport::Tls(Box::new(c)))
    }

    /// Whether the TLS handshake is still going on.
    pub(super) fn is_handshaking(&self) -> bool {
        matches!(self, Transport::Tls(c) if c.is_handshaking())
    }

    /// Appends to `out` the plaintext carried by `input` (bytes read from
    /// the socket). A TLS error (a bad record, an alert) is an
    /// `InvalidData` error: the connection ends.
    pub(super) fn inbound(&mut self, mut input: &[u8], out: &mut BytesMut) -> io::Result<()> {
        let c = match self {
            Transport::Plain => {
                out.reserve(input.len().max(512));
                out.extend_from_slice(input);
                return Ok(());
            }
            Transport::Tls(c) => c,
        };
        while !input.is_empty() {
            c.read_tls(&mut input)?;
            let state = c
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.len();
                out.resize(start + n, 0);
                c.reader().read_exact(&mut out[start..])?;
            }
        }
        Ok(())
    }

    /// Turns `frames` into what goes on the socket: the same frames (TCP),
    /// or TLS records carrying them and anything else the session has to
    /// send.
    pub(super) fn outbound(&mut self, frames: &mut Vec<Bytes>) -> io::Result<()> {
        let Transport::Tls(c) = self else {
            return Ok(());
        };
        for f in frames.drain(..) {
            c.writer().write_all(&f)?;
        }
        if let Some(records) = pending(c)? {
            frames.push(records);
        }
        Ok(())
    }

    /// TLS records waiting to be sent (the handshake's), if any.
    pub(super) fn pending(&mut self) -> io::Result<Option<Bytes>> {
        match self {
            Transport::Plain => Ok(None),
            Transport::Tls(c) => pending(c),
        }
    }

    /// Like [`Transport::outbound`], then, for TLS, the close_notify
    /// alert after the last frame.
    pub(super) fn outbound_last(&mut self, frames: &mut Vec<Bytes>) -> io::Result<()> {
        self.outbound(frames)?;
        if let Transport::Tls(c) = self {
            c.send_close_notify();
            if let Some(alert) = pending(c)? {
                frames.push(alert);
            }
        }
        Ok(())
    }
}

fn pending(c: &mut rustls::ServerConnection) -> io::Result<Option<Bytes>> {
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out)?;
    }
    Ok((!out.is_empty()).then(|| Bytes::from(out)))
}

/// The TLS listeners' server config: the certificate chain and key of
/// `[tls]`, TLS 1.2 and 1.3, no client certificates.
pub(super) fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Err("tls.cert_file and tls.key_file are needed".into());
    };
    let certs = certificates(cert_file)?;
    let key = private_key(key_file)?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
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
