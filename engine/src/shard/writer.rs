//! A connection's writer: takes everything the broker queued for it and
//! hands it to the kernel in one vectored `sendmsg` (many packets per
//! system call); when the socket is full it waits for it in the reactor.
//! It is state polled by the connection's task, not a task of its own.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

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

/// A connection's writer: polled in the connection's task, beside its
/// reader (see `conn::run`), it writes the connection's output until the
/// broker closes or forgets it; then it shuts the socket down, which also
/// ends the reader. Between writes it holds nothing but this struct.
#[derive(Default)]
pub(super) struct Writer {
    /// Frames taken from the broker, being written.
    frames: Vec<Bytes>,
    /// A write that found the socket full, finishing in the reactor
    /// (boxed: made only then); it closes the connection after if `close`.
    blocked: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
    close: bool,
    done: bool,
}

impl Writer {
    /// Writes what connection `id` has to write; `Ready` once it has ended
    /// (then it holds nothing and has shut the socket down).
    pub(super) fn poll(
        &mut self,
        shard: &Rc<Shard>,
        id: ConnId,
        wire: &Wire,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        loop {
            if let Some(rest) = self.blocked.as_mut() {
                let written = std::task::ready!(rest.as_mut().poll(cx));
                self.blocked = None;
                if let Err(e) = written {
                    tracing::debug!("write failed: {e}");
                    break;
                }
                if self.close {
                    break;
                }
            }
            let out = shard
                .broker
                .borrow_mut()
                .take_output(id, &mut self.frames, cx.waker());
            self.close = match out {
                Output::Idle => {
                    // An idle connection keeps no frame list.
                    self.frames = Vec::new();
                    return Poll::Pending;
                }
                Output::Ready { close } => close,
                Output::Gone => true,
            };
            shard.wake_paused();
            if self.send(shard, id, wire).is_err() || (self.close && self.blocked.is_none()) {
                break;
            }
        }
        self.done = true;
        self.frames = Vec::new();
        self.blocked = None;
        shutdown(&wire.stream);
        Poll::Ready(())
    }

    /// Seals and sends the frames taken; what the socket does not take at
    /// once is left to `blocked`.
    fn send(&mut self, shard: &Rc<Shard>, id: ConnId, wire: &Wire) -> io::Result<()> {
        let sealed = match self.close {
            true => wire.transport.borrow_mut().outbound_last(&mut self.frames),
            false => wire.transport.borrow_mut().outbound(&mut self.frames),
        };
        if let Err(e) = sealed {
            tracing::warn!("TLS output failed: {e}");
            return Err(e);
        }
        let fd = wire.stream.borrow().as_raw_fd();
        let mut at = (0, 0);
        match send_now(fd, &self.frames, &mut at) {
            Ok(true) => self.frames.clear(),
            Ok(false) => {
                let frames = std::mem::take(&mut self.frames);
                let (stream, shard) = (Rc::clone(&wire.stream), Rc::clone(shard));
                self.blocked = Some(Box::pin(async move {
                    write_rest(&stream, &frames, at, Some((&shard, id))).await
                }));
            }
            Err(e) => {
                tracing::debug!("write failed: {e}");
                return Err(e);
            }
        }
        Ok(())
    }
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
