//! A client connection on its shard: finish the TLS handshake (TLS
//! listeners), read CONNECT, move to the client's home shard if this is
//! not it, then read and handle packets until the connection ends. Output
//! is written by the connection's writer, polled in the same task.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::{pin, Pin};
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
use super::transport::{Layers, Transport};
use super::writer::{self, Writer};
use crate::core::connect::{home_shard, refusal, Checked};
use crate::core::{ConnId, Flow};

/// Counts a shard's open connections for as long as it lives; a
/// connection's task holds one, and reaches its shard through it.
struct Counted(Rc<Shard>);

impl Counted {
    fn new(shard: &Rc<Shard>) -> Self {
        shard.connections.set(shard.connections.get() + 1);
        Counted(Rc::clone(shard))
    }

    fn shard(&self) -> &Rc<Shard> {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

type Stream = Rc<RefCell<TcpStream>>;

/// A connection's socket and transport, shared by its reader and writer.
#[derive(Clone)]
pub(super) struct Wire {
    pub(super) stream: Stream,
    pub(super) transport: Rc<RefCell<Transport>>,
}

impl Wire {
    fn new(stream: TcpStream, transport: Transport) -> Wire {
        Wire {
            stream: Rc::new(RefCell::new(stream)),
            transport: Rc::new(RefCell::new(transport)),
        }
    }
}

/// Why reading ended.
enum End {
    /// The peer closed, or the socket failed.
    Closed,
    /// The broker closes the connection (DISCONNECT, a violation, take-over).
    Closing,
}

/// Serves a connection accepted by this shard; `layers` says what its
/// listener speaks (TLS, WebSocket).
pub(super) async fn serve(shard: Rc<Shard>, stream: TcpStream, layers: Layers) {
    let counted = Counted::new(&shard);
    let _ = stream.set_nodelay(true);
    set_buffers(&stream, &shard.config.listeners);
    let transport = match Transport::new(&layers) {
        Ok(t) => t,
        Err(e) => return tracing::warn!("cannot start a TLS session: {e}"),
    };
    let wire = Wire::new(stream, transport);
    let mut decoder = Decoder::new(shard.config.limits.packet_bytes_max as usize);
    let mut buf = BytesMut::new();
    let timeout = Duration::from_secs(u64::from(shard.config.limits.connect_timeout_secs));
    // Boxed, as are the other steps a connection takes once: what an
    // async fn holds across an await is in its future for as long as the
    // connection lives, so only the read loop's state stays inline.
    let first = Box::pin(future::or(
        async {
            handshake(&shard, &wire, &mut buf).await?;
            read_connect(&shard, &wire, &mut decoder, &mut buf).await
        },
        async {
            Timer::new(timeout).await;
            Err(Before::Silent)
        },
    ));
    let first = first.await;
    let mut connect = match first {
        Ok(c) => c,
        Err(e) => {
            let refuse = Box::pin(refuse_before_connect(&shard, &wire, e));
            return refuse.await;
        }
    };
    if shard.config.tls.cert_cn_as_username {
        if let Some(cn) = wire.transport.borrow().peer_common_name() {
            connect.username = MqttString::new(cn).ok();
        }
    }
    // MQTT 3.1 has no assigned identifiers: its clients must send one.
    let assigned = connect.client_id.is_empty()
        && !connect.v31
        && (connect.clean_start || connect.protocol == ProtocolVersion::V5);
    if assigned {
        let id = shard.broker.borrow_mut().assign_client_id();
        connect.client_id = MqttString::new(id).unwrap_or_default();
    }
    let home = home_shard(connect.client_id.as_bytes(), shard.senders.nr_consumers());
    if home != shard.index {
        let moving = Box::pin(hand_off(&shard, wire, home, connect, assigned, buf));
        return moving.await;
    }
    // A task of its own: this one's state (the stream it was given, the
    // listener's layers) would otherwise stay beside it while it runs.
    glommio::spawn_local(run(counted, wire, decoder, buf, connect, assigned)).detach();
}

/// Sets the socket's kernel buffers where the config bounds them.
fn set_buffers(stream: &TcpStream, listeners: &crate::config::Listeners) {
    let fd = stream.as_raw_fd();
    for (option, bytes) in [
        (libc::SO_RCVBUF, listeners.socket_receive_bytes),
        (libc::SO_SNDBUF, listeners.socket_send_bytes),
    ] {
        let Ok(value) = libc::c_int::try_from(bytes) else {
            continue;
        };
        if value == 0 {
            continue;
        }
        // SAFETY: setsockopt on an open socket, reading a local c_int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(
                "cannot set a socket buffer: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Serves a connection handed over by another shard (spawns its task).
pub(super) fn resume(
    shard: Rc<Shard>,
    stream: TcpStream,
    transport: Transport,
    connect: Box<Connect>,
    assigned: bool,
    rest: Bytes,
) {
    let counted = Counted::new(&shard);
    let mut decoder = Decoder::new(shard.config.limits.packet_bytes_max as usize);
    decoder.set_version(connect.protocol);
    let buf = BytesMut::from(&rest[..]);
    let wire = Wire::new(stream, transport);
    glommio::spawn_local(run(counted, wire, decoder, buf, connect, assigned)).detach();
}

/// Sends the connection to shard `home`: a duplicate of its socket, its
/// transport (a TLS session moves whole), its CONNECT and what was read
/// after it.
async fn hand_off(
    shard: &Rc<Shard>,
    wire: Wire,
    home: usize,
    connect: Box<Connect>,
    assigned: bool,
    buf: BytesMut,
) {
    let raw = wire.stream.borrow().as_raw_fd();
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
    let transport = std::mem::replace(&mut *wire.transport.borrow_mut(), Transport::plain());
    let handoff = Handoff {
        fd,
        connect,
        assigned,
        rest: buf.freeze(),
        transport,
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

/// Why a connection ended before its CONNECT.
enum Before {
    /// Closed, timed out, or not CONNECT first.
    Silent,
    /// The TLS handshake or WebSocket upgrade failed, or a record or
    /// frame was bad.
    Transport(std::io::Error),
    /// The first packet did not decode.
    Decode(DecodeError),
}

/// Drives the TLS handshake and WebSocket upgrade to their end (nothing
/// to do on TCP); MQTT bytes the client sends right after land in `buf`.
async fn handshake(shard: &Shard, wire: &Wire, buf: &mut BytesMut) -> Result<(), Before> {
    loop {
        let pending = wire
            .transport
            .borrow_mut()
            .pending()
            .map_err(Before::Transport)?;
        if let Some(records) = pending {
            let sent = writer::write_all(&wire.stream, &[records], None).await;
            sent.map_err(|_| Before::Silent)?;
        }
        if !wire.transport.borrow().is_handshaking() {
            return Ok(());
        }
        let tls = wire.transport.borrow().is_tls();
        let read = match tls {
            true => handshake_step(shard, wire, buf).await,
            false => read_more(shard, wire, buf).await,
        };
        read_before_connect(read)?;
    }
}

/// A read before CONNECT: closed or failed ends the connection quietly,
/// bad input of a layer (`InvalidData`) as a transport error.
fn read_before_connect(read: std::io::Result<usize>) -> Result<(), Before> {
    match read {
        Ok(0) => Err(Before::Silent),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Before::Transport(e)),
        Err(_) => Err(Before::Silent),
    }
}

/// One read of a TLS handshake. Its crypto (the server's signature, key
/// agreement) runs on the executor's blocking thread, not on the reactor:
/// an RSA signature takes a millisecond or more, which the shard's other
/// connections would otherwise wait for.
async fn handshake_step(shard: &Shard, wire: &Wire, buf: &mut BytesMut) -> std::io::Result<usize> {
    let raw = poll_fn(|cx| {
        let mut scratch = shard.read_buf.borrow_mut();
        let poll = Pin::new(&mut *wire.stream.borrow_mut()).poll_read(cx, &mut scratch[..]);
        poll.map(|r| r.map(|n| scratch[..n].to_vec()))
    })
    .await?;
    if raw.is_empty() {
        return Ok(0);
    }
    let n = raw.len();
    let mut transport = std::mem::replace(&mut *wire.transport.borrow_mut(), Transport::plain());
    let (transport, plain, result) = glommio::executor()
        .spawn_blocking(move || {
            let mut plain = BytesMut::new();
            let result = transport.inbound(&raw, &mut plain);
            (transport, plain, result)
        })
        .await;
    *wire.transport.borrow_mut() = transport;
    result?;
    buf.extend_from_slice(&plain);
    Ok(n)
}

/// Reads until a whole first packet is decoded; it must be CONNECT.
async fn read_connect(
    shard: &Shard,
    wire: &Wire,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Box<Connect>, Before> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(Before::Silent),
            Ok(None) => {}
            Err(e) => return Err(Before::Decode(e)),
        }
        read_before_connect(read_more(shard, wire, buf).await)?;
    }
}

async fn refuse_before_connect(shard: &Shard, wire: &Wire, e: Before) {
    let e = match e {
        Before::Transport(e) => {
            shard.broker.borrow_mut().stats.transport_errors += 1;
            tracing::info!("connection closed before CONNECT: {e}");
            return writer::shutdown(&wire.stream);
        }
        Before::Decode(e) => Some(e),
        Before::Silent => None,
    };
    shard.broker.borrow_mut().stats.connects_malformed += 1;
    match &e {
        Some(DecodeError::UnsupportedProtocolLevel(level)) => {
            // 3.1.1's CONNACK 0x01 [MQTT-3.1.2-2]: four bytes every
            // version can read (a level it does not know is not v5).
            let refused = refusal(
                ProtocolVersion::V311,
                ReasonCode::UnsupportedProtocolVersion,
            );
            let _ = writer_frames(wire, vec![refused.connack]).await;
            tracing::info!("CONNECT refused: unsupported protocol level {level}");
        }
        Some(e) => tracing::info!("connection closed before CONNECT: {e}"),
        None => tracing::debug!("connection closed before CONNECT"),
    }
    writer::shutdown(&wire.stream);
}

/// Writes `frames` through the transport, then closes it (a refusal).
async fn writer_frames(wire: &Wire, mut frames: Vec<Bytes>) -> std::io::Result<()> {
    wire.transport.borrow_mut().outbound_last(&mut frames)?;
    writer::write_all(&wire.stream, &frames, None).await
}

/// Runs an accepted connection on its home shard until it ends; the
/// connection's own task, its shard reached through `counted`. The task
/// reads, and writes beside it: one task per connection, not two. (A
/// plain function returning an `async move` block: its captures live in
/// the future once, where an async fn's arguments would take two slots.)
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn run(
    counted: Counted,
    wire: Wire,
    mut decoder: Decoder,
    mut buf: BytesMut,
    connect: Box<Connect>,
    assigned: bool,
) -> impl Future<Output = ()> {
    async move {
        let shard = counted.shard();
        let checked = shard
            .broker
            .borrow()
            .check_connect(&connect, assigned, Instant::now());
        if checked.is_ok() && !connect.clean_start {
            let fetched = Box::pin(fetch_session(shard, &connect.client_id));
            fetched.await;
        }
        let id = match open_session(shard, &wire, connect, assigned, checked) {
            Ok(id) => id,
            Err(connack) => {
                let refusal = Box::pin(writer_frames(&wire, vec![connack]));
                let _ = refusal.await;
                return writer::shutdown(&wire.stream);
            }
        };
        let mut writer = Writer::default();
        let mut reading = pin!(read_loop(shard, id, &wire, &mut decoder, &mut buf));
        shard.kick();
        // The reader first, so that what it answers (PUBACK, SUBACK) is
        // written in the same turn.
        let end = poll_fn(|cx| {
            let end = reading.as_mut().poll(cx);
            if end.is_pending() {
                let _ = writer.poll(shard, id, &wire, cx);
            }
            end
        })
        .await;
        if matches!(end, End::Closing) {
            // Give the writer a moment to flush the DISCONNECT before the
            // session lets go.
            let flushed = Box::pin(future::or(
                poll_fn(|cx| writer.poll(shard, id, &wire, cx)),
                async {
                    Timer::new(Duration::from_secs(1)).await;
                },
            ));
            flushed.await;
        }
        let unconfirmed = shard.broker.borrow_mut().take_confirms(id);
        shard.confirms.forget(&unconfirmed);
        shard.broker.borrow_mut().disconnected(id, Instant::now());
        shard.kick();
        shard.wake_paused();
        // The broker has let go: the writer writes what is left, if the
        // socket takes it, and shuts the socket down.
        poll_fn(|cx| writer.poll(shard, id, &wire, cx)).await;
    }
}

/// Hands the CONNECT to the broker: the connection's id, or the CONNACK
/// that refuses it. A plain function, so that the CONNECT it unboxes is
/// on its stack and not in the connection's future.
fn open_session(
    shard: &Shard,
    wire: &Wire,
    connect: Box<Connect>,
    assigned: bool,
    checked: Checked,
) -> Result<ConnId, Bytes> {
    let peer = wire.stream.borrow().peer_addr().ok();
    let accepted = shard.broker.borrow_mut().connect_checked(
        *connect,
        assigned,
        peer,
        checked,
        Instant::now(),
    );
    accepted.map(|a| a.id).map_err(|refused| refused.connack)
}

/// In a cluster, the persistent session of a client connecting without
/// Clean Start comes here first if another node holds it (see
/// `crate::bridge::registry`).
async fn fetch_session(shard: &Shard, client_id: &MqttString) {
    let Some(bridge) = &shard.bridge else {
        return;
    };
    let Some(moved) = bridge.fetch_session(client_id.as_str()).await else {
        return;
    };
    let now = Instant::now();
    shard
        .broker
        .borrow_mut()
        .import_session(client_id, moved, now);
}

/// Reads and handles packets until the connection ends. (A plain function
/// returning an `async move` block, so that its arguments take one slot in
/// the connection's future, not two.)
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn read_loop<'a>(
    shard: &'a Rc<Shard>,
    id: ConnId,
    wire: &'a Wire,
    decoder: &'a mut Decoder,
    buf: &'a mut BytesMut,
) -> impl Future<Output = End> + 'a {
    async move {
        loop {
            // A SUBSCRIBE another shard read before these bytes arrived
            // must be routed before a PUBLISH among them is.
            if shard.routes.behind() {
                let caught_up = Box::pin(shard.catch_up_routes());
                caught_up.await;
            }
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
                    let subscribed = Box::pin(async move {
                        shard.barrier().await;
                        shard
                            .broker
                            .borrow_mut()
                            .finish_subscribe(pending, Instant::now());
                    });
                    subscribed.await;
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
            if shard.broker.borrow().holds_acks(id) {
                let committed = Box::pin(shard.commit(id));
                if !committed.await {
                    shard.kick();
                    return End::Closing;
                }
            }
            shard.kick();
            shard.wake_paused();
            if buf.is_empty() {
                // Nothing half-read: an idle connection keeps no read buffer.
                *buf = BytesMut::new();
            }
            if published {
                if shard.must_queue(Some(id)) {
                    let waited = Box::pin(shard.wait_turn(Some(id)));
                    waited.await;
                }
                // Paused by the broker, not silent.
                shard.broker.borrow_mut().touch(id, Instant::now());
            }
            // A client that does not read its replies is not read either.
            while shard.broker.borrow().output_full(id) {
                Timer::new(Duration::from_millis(5)).await;
            }
            match read_more(shard, wire, buf).await {
                Ok(0) => return End::Closed,
                Ok(_) => {}
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        shard.broker.borrow_mut().stats.transport_errors += 1;
                        tracing::info!("connection closed: {e}");
                    }
                    return End::Closed;
                }
            }
        }
    }
}

/// Reads once from the socket, through the shard's read buffer (so an
/// idle connection holds no buffer of its own), and appends the plaintext
/// to `buf`. Returns the bytes read from the socket (0: closed); a TLS
/// error is `InvalidData`.
async fn read_more(shard: &Shard, wire: &Wire, buf: &mut BytesMut) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let mut scratch = shard.read_buf.borrow_mut();
        let poll = Pin::new(&mut *wire.stream.borrow_mut()).poll_read(cx, &mut scratch[..]);
        match poll {
            std::task::Poll::Ready(Ok(n)) => {
                let inbound = wire.transport.borrow_mut().inbound(&scratch[..n], buf);
                std::task::Poll::Ready(inbound.map(|()| n))
            }
            other => other,
        }
    })
    .await
}
