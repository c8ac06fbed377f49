//! A connection's output: packets waiting to be written, in order. Small
//! packets are encoded back to back into one buffer; large payloads and
//! QoS 0 copies shared by many subscribers travel as their own `Bytes`, so
//! the writer hands the kernel one vectored write of many packets.

use std::task::Waker;

use bytes::{Bytes, BytesMut};

/// Initial capacity of a connection's encode buffer; it grows on demand.
const SCRATCH_BYTES: usize = 4 << 10;

/// Output of one connection.
#[derive(Debug, Default)]
pub struct Tx {
    frames: Vec<Bytes>,
    scratch: BytesMut,
    bytes: usize,
    /// Bytes the writer took and is writing.
    writing: usize,
    waker: Option<Waker>,
    close: bool,
}

impl Tx {
    /// Bytes waiting to be taken by the writer.
    pub fn pending_bytes(&self) -> usize {
        self.bytes + self.scratch.len()
    }

    /// Bytes not yet written: waiting, and held by the writer.
    pub fn backlog_bytes(&self) -> usize {
        self.pending_bytes() + self.writing
    }

    /// Appends one packet encoded by `encode` into the shared buffer.
    pub fn encode<E>(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.scratch.capacity() - self.scratch.len() < 256 {
            self.scratch.reserve(SCRATCH_BYTES);
        }
        let before = self.scratch.len();
        let result = encode(&mut self.scratch);
        if result.is_err() {
            self.scratch.truncate(before);
        }
        self.wake();
        result
    }

    /// Appends bytes shared with other connections (a QoS 0 copy, a large
    /// payload) without copying them.
    pub fn push_shared(&mut self, frame: Bytes) {
        self.seal();
        self.bytes += frame.len();
        self.frames.push(frame);
        self.wake();
    }

    /// Asks the writer to close the connection once everything before this
    /// call is written.
    pub fn close(&mut self) {
        self.close = true;
        self.wake();
    }

    /// Whether a close was asked for.
    pub fn is_closing(&self) -> bool {
        self.close
    }

    /// Moves everything waiting into `out` (which must be empty), for the
    /// writer. Returns whether the connection is to be closed after it.
    pub fn take(&mut self, out: &mut Vec<Bytes>) -> bool {
        self.seal();
        std::mem::swap(&mut self.frames, out);
        self.writing = self.bytes;
        self.bytes = 0;
        self.close
    }

    /// Registers the writer's waker, called when output arrives; the
    /// connection is idle, so its encode buffer and frame list are given
    /// back (an idle connection holds neither).
    pub fn set_waker(&mut self, waker: &Waker) {
        self.writing = 0;
        if self.scratch.is_empty() && self.scratch.capacity() > 0 {
            self.scratch = BytesMut::new();
        }
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = Vec::new();
        }
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }

    /// Whether anything is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.scratch.is_empty()
    }

    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            let frame = self.scratch.split().freeze();
            self.bytes += frame.len();
            self.frames.push(frame);
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}
