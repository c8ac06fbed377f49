//! How a client's bytes reach the broker: TCP, TLS (rustls), WebSocket
//! (tungstenite, path `/mqtt`, subprotocol `mqtt`) or WebSocket over TLS.
//! Every kind ends as a reading and a writing half of bytes, so the rest of
//! loadgen does not know which it drives.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::io::StreamReader;

/// A connection's reading half, whatever the transport.
pub struct ReadHalf(Pin<Box<dyn AsyncRead>>);
/// A connection's writing half, whatever the transport.
pub struct WriteHalf(Pin<Box<dyn AsyncWrite>>);

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadHalf")
    }
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHalf")
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

/// What every client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

/// The TLS client config of this process (`--ca-file`).
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Sets up TLS for `transport`: the broker's certificate must chain to
/// `ca_file`.
pub fn init(transport: Transport, ca_file: Option<&Path>) -> Result<()> {
    if !matches!(transport, Transport::Tls | Transport::Wss) {
        return Ok(());
    }
    let ca_file = ca_file.ok_or_else(|| anyhow!("--transport tls/wss needs --ca-file"))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert.with_context(|| format!("reading {}", ca_file.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = TLS.set(Arc::new(config));
    Ok(())
}

/// Opens `transport` over a connected TCP stream.
pub async fn open(transport: Transport, tcp: TcpStream) -> Result<(ReadHalf, WriteHalf)> {
    let addr = tcp.peer_addr()?;
    match transport {
        Transport::Tcp => {
            let (r, w) = tcp.into_split();
            Ok((ReadHalf(Box::pin(r)), WriteHalf(Box::pin(w))))
        }
        Transport::Tls => {
            let tls = tls(tcp).await?;
            let (r, w) = tokio::io::split(tls);
            Ok((ReadHalf(Box::pin(r)), WriteHalf(Box::pin(w))))
        }
        Transport::Ws => websocket(tcp, "ws", addr).await,
        Transport::Wss => websocket(tls(tcp).await?, "wss", addr).await,
    }
}

async fn tls(tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = TLS
        .get()
        .ok_or_else(|| anyhow!("TLS is not set up (--ca-file)"))?;
    let name = rustls::pki_types::ServerName::IpAddress(tcp.peer_addr()?.ip().into());
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    Ok(connector.connect(name, tcp).await?)
}

/// A WebSocket on `/mqtt` with the `mqtt` subprotocol; every write goes
/// out at once as one binary frame.
async fn websocket<S>(
    stream: S,
    scheme: &str,
    addr: std::net::SocketAddr,
) -> Result<(ReadHalf, WriteHalf)>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut request = format!("{scheme}://{addr}/mqtt").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse()?);
    let config = WebSocketConfig::default().write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    let (sink, stream) = ws.split();
    let frames = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Binary(b)) => Some(Ok::<Bytes, io::Error>(b)),
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    let reader = StreamReader::new(Box::pin(frames));
    let writer = FrameWriter {
        sink,
        accepted: None,
    };
    Ok((ReadHalf(Box::pin(reader)), WriteHalf(Box::pin(writer))))
}

/// Writes each `poll_write` as one binary frame and flushes it before
/// saying it is written (a load generator's messages must not wait in a
/// buffer). A write that waits for its flush is remembered, so the
/// caller's retry with the same bytes does not send them twice.
struct FrameWriter<S> {
    sink: S,
    accepted: Option<usize>,
}

impl<S> AsyncWrite for FrameWriter<S>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.accepted.is_none() {
            futures_util::ready!(self.sink.poll_ready_unpin(cx)).map_err(io::Error::other)?;
            let frame = Message::Binary(Bytes::copy_from_slice(buf));
            self.sink
                .start_send_unpin(frame)
                .map_err(io::Error::other)?;
            self.accepted = Some(buf.len());
        }
        futures_util::ready!(self.sink.poll_flush_unpin(cx)).map_err(io::Error::other)?;
        Poll::Ready(Ok(self.accepted.take().unwrap_or(0)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.sink.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.sink.poll_close_unpin(cx).map_err(io::Error::other)
    }
}
