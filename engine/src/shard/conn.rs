//! A client connection on its shard: read CONNECT, move to the client's
//! home shard if this is not it, then read and handle packets until the
//! connection ends. Output is written by the connection's writer task.

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncRead};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use ringmq_protocol::{
    Connect, DecodeError, Decoder, MqttString, Packet, ProtocolVersion, ReasonCode,
};

use super::context::Shard;
use super::mesh::{Handoff, ShardMsg};
use super::writer;
use crate::core::connect::{home_shard, refusal};
use crate::core::{ConnId, Flow};

/// Counts a shard's open connections for as long as it lives.
struct Counted(Rc<Shard>);

impl Counted {
    fn new(shard: &Rc<Shard>) -> Self {
        shard.connections.set(shard.connections.get() + 1);
        Counted(Rc::clone(shard))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

type Stream = Rc<RefCell<TcpStream>>;

/// Why reading ended.
enum End {
    /// The peer closed, or the socket failed.
    Closed,
    /// The broker closes the connection (DISCONNECT, a violation, take-over).
    Closing,
}

/// Serves a connection accepted by this shard.
pub(super) async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _counted = Counted::new(&shard);
    let _ = stream.set_nodelay(true);
    let stream: Stream = Rc::new(RefCell::new(stream));
    let mut decoder = Decoder::new(shard.config.limits.packet_bytes_max as usize);
    let mut buf = BytesMut::new();
    let timeout = Duration::from_secs(u64::from(shard.config.limits.connect_timeout_secs));
    let first = future::or(
        read_connect(&shard, &stream, &mut decoder, &mut buf),
        async {
            Timer::new(timeout).await;
            Err(None)
        },
    )
    .await;
    let mut connect = match first {
        Ok(c) => c,
        Err(e) => return refuse_before_connect(&shard, &stream, e).await,
    };
    let assigned = connect.client_id.is_empty()
        && (connect.clean_start || connect.protocol == ProtocolVersion::V5);
    if assigned {
        let id = shard.broker.borrow_mut().assign_client_id();
        connect.client_id = MqttString::new(id).unwrap_or_default();
    }
    let home = home_shard(connect.client_id.as_bytes(), shard.senders.nr_consumers());
    if home != shard.index {
        return hand_off(&shard, &stream, home, connect, assigned, buf).await;
    }
    run(&shard, stream, decoder, buf, connect, assigned).await;
}

/// Serves a connection handed over by another shard.
pub(super) async fn resume(
    shard: Rc<Shard>,
    stream: TcpStream,
    connect: Box<Connect>,
    assigned: bool,
    rest: Bytes,
) {
    let _counted = Counted::new(&shard);
    let mut decoder = Decoder::new(shard.config.limits.packet_bytes_max as usize);
    decoder.set_version(connect.protocol);
    let buf = BytesMut::from(&rest[..]);
    run(
        &shard,
        Rc::new(RefCell::new(stream)),
        decoder,
        buf,
        connect,
        assigned,
    )
    .await;
}

async fn hand_off(
    shard: &Rc<Shard>,
    stream: &Stream,
    home: usize,
    connect: Box<Connect>,
    assigned: bool,
    buf: BytesMut,
) {
    let raw = stream.borrow().as_raw_fd();
    // SAFETY: dup of an open socket; the copy is owned by the handoff and
    // the original is closed when this shard drops its stream.
    let dup = unsafe { libc::dup(raw) };
    if dup < 0 {
        tracing::warn!(
            "cannot hand a connection to shard {home}: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(dup) };
    let handoff = Handoff {
        fd,
        connect,
        assigned,
        rest: buf.freeze(),
    };
    if shard
        .senders
        .send_to(home, ShardMsg::Handoff(Box::new(handoff)))
        .await
        .is_err()
    {
        tracing::warn!("cannot hand a connection to shard {home}: mesh closed");
    }
}

/// Reads until a whole first packet is decoded; it must be CONNECT.
async fn read_connect(
    shard: &Shard,
    stream: &Stream,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Box<Connect>, Option<DecodeError>> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(None),
            Ok(None) => {}
            Err(e) => return Err(Some(e)),
        }
        match read_more(shard, stream, buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

async fn refuse_before_connect(shard: &Shard, stream: &Stream, e: Option<DecodeError>) {
    shard.broker.borrow_mut().stats.connects_malformed += 1;
    match &e {
        Some(DecodeError::UnsupportedProtocolLevel(level)) => {
            // Answer in the form the client can read: 3.1.1 below 5 [MQTT-3.1.2-2].
            let version = if *level < 5 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let refused = refusal(version, ReasonCode::UnsupportedProtocolVersion);
            let _ = writer_frames(stream, &[refused.connack]).await;
            tracing::info!("CONNECT refused: unsupported protocol level {level}");
        }
        Some(e) => tracing::info!("connection closed before CONNECT: {e}"),
        None => tracing::debug!("connection closed before CONNECT"),
    }
    writer::shutdown(stream);
}

async fn writer_frames(stream: &Stream, frames: &[Bytes]) -> std::io::Result<()> {
    writer::write_all(stream, frames, None).await
}

/// Runs an accepted connection on its home shard until it ends.
async fn run(
    shard: &Rc<Shard>,
    stream: Stream,
    mut decoder: Decoder,
    mut buf: BytesMut,
    connect: Box<Connect>,
    assigned: bool,
) {
    let peer = stream.borrow().peer_addr().ok();
    let accepted = shard
        .broker
        .borrow_mut()
        .connect_from(*connect, assigned, peer, Instant::now());
    let id = match accepted {
        Ok(a) => a.id,
        Err(refused) => {
            let _ = writer_frames(&stream, &[refused.connack]).await;
            return writer::shutdown(&stream);
        }
    };
    let writer = glommio::spawn_local(writer::run(Rc::clone(shard), id, Rc::clone(&stream)));
    shard.kick();
    let end = read_loop(shard, id, &stream, &mut decoder, &mut buf).await;
    if matches!(end, End::Closing) {
        // Give the writer a moment to flush the DISCONNECT before the session lets go.
        let _ = future::or(
            async {
                writer.await;
                true
            },
            async {
                Timer::new(Duration::from_secs(1)).await;
                false
            },
        )
        .await;
    } else {
        writer.detach();
    }
    shard.broker.borrow_mut().disconnected(id, Instant::now());
    shard.kick();
    shard.wake_paused();
}

async fn read_loop(
    shard: &Rc<Shard>,
    id: ConnId,
    stream: &Stream,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> End {
    loop {
        let now = Instant::now();
        let mut published = false;
        loop {
            let packet = match decoder.decode(buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    shard
                        .broker
                        .borrow_mut()
                        .fail(id, e.reason_code(), &e.to_string());
                    return End::Closing;
                }
            };
            published |= matches!(packet, Packet::Publish(_));
            let flow = shard.broker.borrow_mut().handle(id, packet, now);
            if let Flow::Barrier(pending) = flow {
                shard.barrier().await;
                shard
                    .broker
                    .borrow_mut()
                    .finish_subscribe(pending, Instant::now());
            }
            if shard
                .broker
                .borrow()
                .session(id)
                .and_then(|s| s.link.as_ref())
                .is_none_or(|l| l.tx.is_closing())
            {
                shard.kick();
                return End::Closing;
            }
        }
        shard.commit(id).await;
        shard.kick();
        shard.wake_paused();
        if buf.is_empty() {
            // Nothing half-read: an idle connection keeps no read buffer.
            *buf = BytesMut::new();
        }
        if published {
            shard.wait_backpressure(Some(id)).await;
            // Paused by the broker, not silent.
            shard.broker.borrow_mut().touch(id, Instant::now());
        }
        // A client that does not read its replies is not read either.
        while shard.broker.borrow().output_full(id) {
            Timer::new(Duration::from_millis(5)).await;
        }
        match read_more(shard, stream, buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(_) => {}
        }
    }
}

/// Reads once from the socket into `buf`, through the shard's read buffer
/// (so an idle connection holds no buffer of its own).
async fn read_more(shard: &Shard, stream: &Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let mut scratch = shard.read_buf.borrow_mut();
        let poll = Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut scratch[..]);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            buf.reserve((*n).max(512));
            buf.extend_from_slice(&scratch[..*n]);
        }
        poll
    })
    .await
}
