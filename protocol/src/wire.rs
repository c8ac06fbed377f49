//! The data representations of MQTT §1.5: integers, Variable Byte Integers,
//! strings and binary data, read from a shared `Bytes` without copying and
//! written into a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::types::{MqttString, STRING_BYTES_MAX};

/// The largest value of a Variable Byte Integer (§1.5.5).
pub const VARINT_MAX: u32 = 268_435_455;

/// A cursor over the body of one packet. Everything it returns shares the
/// packet's bytes.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        let b = &self.buf[self.pos..self.pos + 4];
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf[self.pos..])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated(what)),
        }
    }

    /// `n` bytes, shared.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Everything left. Hands over the reader's own handle (no reference
    /// count traffic); the reader is empty afterwards.
    pub(crate) fn rest(&mut self) -> Bytes {
        let mut b = std::mem::take(&mut self.buf);
        b.advance(self.pos);
        self.pos = 0;
        b
    }

    /// Binary Data: a two-byte length and that many bytes (§1.5.6).
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u16(what)?;
        self.take(n as usize, what)
    }

    /// A UTF-8 Encoded String (§1.5.4).
    pub(crate) fn string(&mut self, what: &'static str) -> Result<MqttString, DecodeError> {
        MqttString::from_bytes(self.binary(what)?)
    }

    /// A reader over the next `n` bytes; this one moves past them.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n, what)?))
    }
}

/// Parses a Variable Byte Integer at the start of `buf`: `Ok(None)` if `buf`
/// ends inside it, else its value and length. Rejects a fifth byte and
/// non-minimal encodings [MQTT-1.5.5-1].
#[inline]
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::VarIntTooLong);
    }
    Ok(None)
}

/// Bytes taken by `v` as a Variable Byte Integer.
#[inline]
pub(crate) const fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `v` (at most [`VARINT_MAX`]) as a Variable Byte Integer.
#[inline]
pub(crate) fn put_varint(out: &mut BytesMut, v: u32) {
    debug_assert!(v <= VARINT_MAX);
    let mut buf = [0u8; 4];
    let n = encode_varint(v, &mut buf);
    out.put_slice(&buf[..n]);
}

/// Encodes `v` into `buf`, returning the length used.
#[inline]
pub(crate) fn encode_varint(mut v: u32, buf: &mut [u8; 4]) -> usize {
    let mut n = 0;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        buf[n] = b;
        n += 1;
        if v == 0 || n == 4 {
            return n;
        }
    }
}

/// Writes a string with its two-byte length; its type bounds the length.
#[inline]
pub(crate) fn put_string(out: &mut BytesMut, s: &MqttString) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// Writes binary data with its two-byte length.
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    if b.len() > STRING_BYTES_MAX {
        return Err(EncodeError::BinaryTooLong);
    }
    out.put_u16(b.len() as u16);
    out.put_slice(b);
    Ok(())
}

/// `n` as a Variable Byte Integer value, or `PacketTooLarge` past [`VARINT_MAX`].
pub(crate) fn check_remaining(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= VARINT_MAX)
        .ok_or(EncodeError::PacketTooLarge {
            size: n,
            max: VARINT_MAX as usize,
        })
}
