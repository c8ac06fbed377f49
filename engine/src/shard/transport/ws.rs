//! MQTT over WebSocket (tungstenite, driven without I/O of its own: it
//! reads from and writes to in-memory buffers the transport fills from and
//! drains to the socket). The HTTP upgrade must ask for the configured
//! path; the `mqtt` subprotocol (or the older `mqttv3.1`) is answered when
//! offered. MQTT packets travel in binary frames, split across frames or
//! packed in one as the client likes; ping is answered with pong, close
//! with close.

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Largest binary frame the broker sends: what it writes at once is
/// packed into frames of this size (one frame per packet would cost a
/// header and a copy each).
const FRAME_PACK_BYTES: usize = 64 << 10;
/// tungstenite's read buffer per connection (grown as frames need).
const READ_BUFFER_BYTES: usize = 4096;

/// Subprotocols of MQTT over WebSocket, the one to answer first.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The buffers tungstenite reads from and writes to.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    input: BytesMut,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.advance(n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the upgrade request: the path, and the subprotocol to answer.
#[derive(Debug, Clone)]
pub(super) struct Upgrade {
    path: String,
}

impl Callback for Upgrade {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if request.uri().path() != self.path {
            let mut refused =
                ErrorResponse::new(Some(format!("no WebSocket at {}", request.uri().path())));
            *refused.status_mut() = StatusCode::NOT_FOUND;
            return Err(refused);
        }
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(str::trim))
            .collect::<Vec<_>>();
        if offered.is_empty() {
            return Ok(response);
        }
        match SUBPROTOCOLS.iter().find(|p| offered.contains(p)) {
            Some(p) => {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(p));
                Ok(response)
            }
            None => {
                let mut refused = ErrorResponse::new(Some("the mqtt subprotocol is needed".into()));
                *refused.status_mut() = StatusCode::BAD_REQUEST;
                Err(refused)
            }
        }
    }
}

/// A WebSocket, during its upgrade or open.
#[derive(Debug)]
pub(super) enum Ws {
    /// The upgrade is under way (or has not started: nothing read yet).
    Upgrading(
        Option<Box<MidHandshake<ServerHandshake<Pipe, Upgrade>>>>,
        Upgrade,
        WebSocketConfig,
    ),
    /// Open.
    Open(Box<WebSocket<Pipe>>),
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Ws {
    /// A WebSocket waiting for its upgrade request on `path`, with frames
    /// and messages bounded by `bytes_max`.
    pub(super) fn new(path: &str, bytes_max: usize) -> Ws {
        // Small buffers: an idle WebSocket must cost little (tungstenite's
        // default read buffer is 128 KiB); they grow for large frames.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(bytes_max))
            .max_frame_size(Some(bytes_max));
        Ws::Upgrading(
            None,
            Upgrade {
                path: path.to_owned(),
            },
            config,
        )
    }

    /// Whether the upgrade is still under way.
    pub(super) fn is_upgrading(&self) -> bool {
        matches!(self, Ws::Upgrading(..))
    }

    fn pipe(&mut self) -> Option<&mut Pipe> {
        match self {
            Ws::Upgrading(Some(mid), ..) => Some(mid.get_mut().get_mut()),
            Ws::Upgrading(None, ..) => None,
            Ws::Open(ws) => Some(ws.get_mut()),
        }
    }

    /// Takes `input` (bytes from the socket, after TLS) and appends the
    /// MQTT bytes of its binary frames to `out`. A bad upgrade request or
    /// frame, or a close, is an error: the connection ends.
    pub(super) fn inbound(&mut self, input: &[u8], out: &mut BytesMut) -> io::Result<()> {
        if let Ws::Upgrading(mid, upgrade, config) = self {
            let pipe = match mid.take() {
                Some(mut m) => {
                    m.get_mut().get_mut().input.extend_from_slice(input);
                    (*m).handshake()
                }
                None => {
                    let mut pipe = Pipe::default();
                    pipe.input.extend_from_slice(input);
                    tungstenite::accept_hdr_with_config(pipe, upgrade.clone(), Some(*config))
                }
            };
            match pipe {
                Ok(ws) => *self = Ws::Open(Box::new(ws)),
                Err(HandshakeError::Interrupted(m)) => {
                    *mid = Some(Box::new(m));
                    return Ok(());
                }
                Err(HandshakeError::Failure(e)) => {
                    return Err(invalid(format!("WebSocket upgrade: {e}")))
                }
            }
            // Frames may have come right behind the upgrade request.
            return self.read_frames(out);
        }
        if let Some(pipe) = self.pipe() {
            pipe.input.extend_from_slice(input);
        }
        self.read_frames(out)
    }

    fn read_frames(&mut self, out: &mut BytesMut) -> io::Result<()> {
        let Ws::Open(ws) = self else {
            return Ok(());
        };
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => out.extend_from_slice(&b),
                Ok(Message::Text(_)) => {
                    return Err(invalid("a text frame: MQTT travels in binary frames"))
                }
                Ok(Message::Close(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "WebSocket closed",
                    ))
                }
                Ok(_) => {} // ping (answered with the next output), pong
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(())
                }
                Err(e) => return Err(invalid(format!("WebSocket: {e}"))),
            }
        }
    }

    /// Packs `frames` (MQTT packets) into binary WebSocket frames of up to
    /// [`FRAME_PACK_BYTES`] (packets may straddle frames, as MQTT over
    /// WebSocket allows), then returns everything waiting (with the
    /// upgrade answer, pongs).
    pub(super) fn outbound(&mut self, frames: &mut Vec<Bytes>) -> io::Result<()> {
        if let Ws::Open(ws) = self {
            let mut packed = BytesMut::new();
            for f in frames.drain(..) {
                packed.extend_from_slice(&f);
                while packed.len() >= FRAME_PACK_BYTES {
                    let frame = packed.split_to(FRAME_PACK_BYTES).freeze();
                    ws.write(Message::Binary(frame)).map_err(invalid)?;
                }
            }
            if !packed.is_empty() {
                ws.write(Message::Binary(packed.freeze()))
                    .map_err(invalid)?;
            }
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(invalid(e)),
            }
        }
        frames.clear();
        if let Some(bytes) = self.take_output() {
            frames.push(bytes);
        }
        Ok(())
    }

    /// A close frame after the last output.
    pub(super) fn close(&mut self) {
        if let Ws::Open(ws) = self {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
    }

    /// Bytes waiting to be sent (the upgrade's answer), if any.
    pub(super) fn take_output(&mut self) -> Option<Bytes> {
        let pipe = self.pipe()?;
        (!pipe.output.is_empty()).then(|| Bytes::from(std::mem::take(&mut pipe.output)))
    }
}
