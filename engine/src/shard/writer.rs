//! A connection's writer: takes everything the broker queued for it and
//! hands it to the kernel in one vectored `sendmsg` (many packets per
//! system call); when the socket is full it waits for it in the reactor.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use futures_lite::{future, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use std::time::Duration;

use super::conn::Wire;
use super::context::Shard;
use crate::core::timers::Output;
use crate::core::ConnId;

/// Seconds a closing connection's last output may take to be written.
const CLOSE_WRITE_SECS: u64 = 5;

/// Slices per `sendmsg`; Linux's IOV_MAX is 1024.
const IOV_BATCH: usize = 256;

/// Writes connection `id`'s output until the broker closes it or forgets
/// it; then shuts the socket down, which also ends the reader.
pub(super) async fn run(shard: Rc<Shard>, id: ConnId, wire: Wire) {
    let stream = &wire.stream;
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        let out = poll_fn(|cx| {
            match shard
                .broker
                .borrow_mut()
                .take_output(id, &mut frames, cx.waker())
            {
                Output::Idle => Poll::Pending,
                other => Poll::Ready(other),
            }
        })
        .await;
        shard.wake_paused();
        let close = match out {
            Output::Ready { close } => close,
            Output::Idle | Output::Gone => true,
        };
        let sealed = match close {
            true => wire.transport.borrow_mut().outbound_last(&mut frames),
            false => wire.transport.borrow_mut().outbound(&mut frames),
        };
        if let Err(e) = sealed {
            tracing::warn!("TLS output failed: {e}");
            break;
        }
        if let Err(e) = write_all(stream, &frames, Some((&shard, id))).await {
            tracing::debug!("write failed: {e}");
            frames.clear();
            break;
        }
        frames.clear();
        if close {
            break;
        }
    }
    shutdown(stream);
}

/// Shuts both directions of the socket: a blocked reader wakes with EOF.
pub(super) fn shutdown(stream: &Rc<RefCell<TcpStream>>) {
    let fd = stream.borrow().as_raw_fd();
    // SAFETY: shutdown on an open descriptor this connection owns.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Returns `CLOSE_WRITE_SECS` after connection `id` is found closing or
/// gone: a write blocked on a peer that stopped reading must not keep a
/// closed connection (and its session's Will and expiry) alive.
async fn closing_watch(shard: &Shard, id: ConnId) {
    while !shard.broker.borrow().closing(id) {
        Timer::new(Duration::from_millis(500)).await;
    }
    Timer::new(Duration::from_secs(CLOSE_WRITE_SECS)).await;
}

/// Writes every frame, in order. With `watch`, a write blocked on a full
/// socket gives up `CLOSE_WRITE_SECS` after the connection starts closing.
/// Written at once unless the socket is full; only then is the waiting
/// state made (boxed: it would otherwise sit in every writer's future).
pub(super) async fn write_all(
    stream: &Rc<RefCell<TcpStream>>,
    frames: &[Bytes],
    watch: Option<(&Shard, ConnId)>,
) -> io::Result<()> {
    let fd = stream.borrow().as_raw_fd();
    let mut at = (0, 0);
    if send_now(fd, frames, &mut at)? {
        return Ok(());
    }
    let rest = Box::pin(write_rest(stream, frames, at, watch));
    rest.await
}

/// Sends `frames` from `at` (frame, offset) until all are sent (`true`)
/// or the socket is full (`false`).
fn send_now(fd: i32, frames: &[Bytes], at: &mut (usize, usize)) -> io::Result<bool> {
    advance(frames, at, 0);
    while at.0 < frames.len() {
        match send_frames(fd, &frames[at.0..], at.1) {
            Ok(n) => advance(frames, at, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Moves `at` past `written` bytes and past any empty frames.
fn advance(frames: &[Bytes], at: &mut (usize, usize), written: usize) {
    let (i, off) = at;
    let mut left = written;
    while left > 0 && *i < frames.len() {
        let rest = frames[*i].len() - *off;
        if left >= rest {
            left -= rest;
            *i += 1;
            *off = 0;
        } else {
            *off += left;
            left = 0;
        }
    }
    while *i < frames.len() && frames[*i].len() == *off {
        *i += 1;
        *off = 0;
    }
}

/// The rest of a write once the socket was full: waits in the reactor for
/// room (writing part of the current frame), then sends on.
async fn write_rest(
    stream: &Rc<RefCell<TcpStream>>,
    frames: &[Bytes],
    mut at: (usize, usize),
    watch: Option<(&Shard, ConnId)>,
) -> io::Result<()> {
    let fd = stream.borrow().as_raw_fd();
    loop {
        let frame = &frames[at.0][at.1..];
        let wait = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, frame));
        let written = match watch {
            None => wait.await?,
            Some((shard, id)) => {
                future::or(wait, async {
                    closing_watch(shard, id).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading while closing",
                    ))
                })
                .await?
            }
        };
        advance(frames, &mut at, written);
        if send_now(fd, frames, &mut at)? {
            return Ok(());
        }
    }
}

/// One `sendmsg` of up to [`IOV_BATCH`] of `frames`, the first from
/// `off`. The slices are on this plain function's stack: an async
/// function holding them would carry them in every connection's writer
/// future (4 KiB each), not only while it writes.
fn send_frames(fd: i32, frames: &[Bytes], off: usize) -> io::Result<usize> {
    let n = frames.len().min(IOV_BATCH);
    let mut slices = [IoSlice::new(&[]); IOV_BATCH];
    slices[0] = IoSlice::new(&frames[0][off..]);
    for (slot, f) in slices[1..n].iter_mut().zip(&frames[1..n]) {
        *slot = IoSlice::new(f);
    }
    send_vectored(fd, &slices[..n])
}

/// One non-blocking `sendmsg` of `slices`; never raises SIGPIPE.
fn send_vectored(fd: i32, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (std guarantees it).
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    // SAFETY: msg points at `slices`, which outlive the call; fd is open.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
