//! What lies between a connection's socket and its MQTT bytes: nothing
//! (TCP), a TLS session (rustls; no crypto of ours), a WebSocket
//! (tungstenite), or a WebSocket inside a TLS session. The reader feeds it
//! what the socket gave and gets MQTT bytes; the writer gives it frames
//! and gets what goes on the socket. Only the writer (or, before the
//! connection runs, the handshake) writes to the socket, so records and
//! frames keep their order. A transport moves with its connection to the
//! client's home shard.

mod tls;
mod ws;

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::ServerConnection;

pub use tls::Certificates;
use ws::Ws;

/// A connection's transport: its layers, outermost first.
#[derive(Debug, Default)]
pub struct Transport {
    tls: Option<Box<ServerConnection>>,
    ws: Option<Box<Ws>>,
}

/// What a listener's connections speak.
#[derive(Debug, Clone)]
pub(super) struct Layers {
    /// TLS with the certificate in force.
    pub(super) tls: Option<Arc<Certificates>>,
    /// A WebSocket upgrade on this path, frames up to this many bytes.
    pub(super) ws: Option<(Arc<str>, usize)>,
}

impl Transport {
    /// Plain TCP.
    pub(super) fn plain() -> Transport {
        Transport::default()
    }

    /// A transport about to start its handshakes.
    pub(super) fn new(layers: &Layers) -> io::Result<Transport> {
        let tls = match &layers.tls {
            Some(certs) => {
                let mut c = ServerConnection::new(certs.current()).map_err(io::Error::other)?;
                // The broker bounds each connection's output; rustls need not.
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        let ws = layers
            .ws
            .as_ref()
            .map(|(path, max)| Box::new(Ws::new(path, *max)));
        Ok(Transport { tls, ws })
    }

    /// Whether there is a TLS layer.
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a TLS handshake or WebSocket upgrade is still going on.
    pub(super) fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.is_handshaking())
            || self.ws.as_ref().is_some_and(|w| w.is_upgrading())
    }

    /// Appends to `out` the MQTT bytes carried by `input` (bytes read from
    /// the socket). Bad input of a layer (a TLS record or alert, an
    /// upgrade request, a frame) is an `InvalidData` error, a close frame
    /// `ConnectionAborted`: the connection ends.
    pub(super) fn inbound(&mut self, input: &[u8], out: &mut BytesMut) -> io::Result<()> {
        match (&mut self.tls, &mut self.ws) {
            (None, None) => {
                out.reserve(input.len().max(512));
                out.extend_from_slice(input);
                Ok(())
            }
            (Some(c), None) => decrypt(c, input, out),
            (None, Some(w)) => w.inbound(input, out),
            (Some(c), Some(w)) => {
                let mut plain = BytesMut::new();
                decrypt(c, input, &mut plain)?;
                w.inbound(&plain, out)
            }
        }
    }

    /// Turns `frames` into what goes on the socket: the same frames (TCP),
    /// or WebSocket frames and TLS records carrying them, with anything
    /// else the layers have to send.
    pub(super) fn outbound(&mut self, frames: &mut Vec<Bytes>) -> io::Result<()> {
        if let Some(w) = &mut self.ws {
            w.outbound(frames)?;
        }
        if let Some(c) = &mut self.tls {
            seal(c, frames)?;
            if let Some(records) = pending(c)? {
                frames.push(records);
            }
        }
        Ok(())
    }

    /// Like [`Transport::outbound`], then the layers' closing words: a
    /// WebSocket close frame, a TLS close_notify.
    pub(super) fn outbound_last(&mut self, frames: &mut Vec<Bytes>) -> io::Result<()> {
        if let Some(w) = &mut self.ws {
            w.outbound(frames)?;
            w.close();
            if let Some(close) = w.take_output() {
                frames.push(close);
            }
        }
        if let Some(c) = &mut self.tls {
            seal(c, frames)?;
            c.send_close_notify();
            if let Some(records) = pending(c)? {
                frames.push(records);
            }
        }
        Ok(())
    }

    /// The subject CN of the client's certificate, if it sent one (the
    /// verifier checked it during the handshake).
    pub(super) fn peer_common_name(&self) -> Option<String> {
        let der = self.tls.as_ref()?.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }

    /// What the handshakes have to send now, if anything.
    pub(super) fn pending(&mut self) -> io::Result<Option<Bytes>> {
        let mut frames = Vec::new();
        if let Some(answer) = self.ws.as_mut().and_then(|w| w.take_output()) {
            frames.push(answer);
        }
        if let Some(c) = &mut self.tls {
            seal(c, &mut frames)?;
            if let Some(records) = pending(c)? {
                frames.push(records);
            }
        }
        Ok(frames.pop())
    }
}

/// Hands `frames` to the TLS session as one write, so that many small
/// packets share records (a record per packet would multiply the
/// overhead and the encryptions).
fn seal(c: &mut ServerConnection, frames: &mut Vec<Bytes>) -> io::Result<()> {
    match frames.len() {
        0 => {}
        1 => c.writer().write_all(&frames[0])?,
        _ => {
            let joined: Vec<u8> = frames.concat();
            c.writer().write_all(&joined)?;
        }
    }
    frames.clear();
    Ok(())
}

fn decrypt(c: &mut ServerConnection, mut input: &[u8], out: &mut BytesMut) -> io::Result<()> {
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

fn pending(c: &mut ServerConnection) -> io::Result<Option<Bytes>> {
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out)?;
    }
    Ok((!out.is_empty()).then(|| Bytes::from(out)))
}
