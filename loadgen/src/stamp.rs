//! The first bytes of every payload: which publisher sent it, its sequence
//! number, and when it was (meant to be) sent. The rest is filler.
//!
//! Times are nanoseconds since the run's [`Clock`] epoch, shared by every
//! thread of the process, so a subscriber subtracts a publisher's stamp
//! from its own clock reading without any synchronisation.

use std::time::{Duration, Instant};

/// Bytes of the stamp at the head of each payload.
pub const STAMP_BYTES: usize = 20;

/// What a payload's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher in the run.
    pub publisher: u32,
    /// The publisher's message counter, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the epoch.
    pub sent_nanos: u64,
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_BYTES`] of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.publisher.to_le_bytes());
        out[4..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..20].copy_from_slice(&self.sent_nanos.to_le_bytes());
    }

    /// Reads a stamp; `None` if the payload is too short to carry one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let head = payload.get(..STAMP_BYTES)?;
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Some(Stamp {
            publisher: u32::from_le_bytes([head[0], head[1], head[2], head[3]]),
            seq: u64_at(4),
            sent_nanos: u64_at(12),
        })
    }
}

/// The run's time base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    /// Nanoseconds from the epoch to `t`.
    pub fn nanos_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The instant `nanos` after the epoch.
    pub fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_a_payload() {
        let s = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_nanos: 123_456_789,
        };
        let mut payload = vec![0xAA; 64];
        s.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(s));
        assert_eq!(Stamp::read(&payload[..19]), None);
    }
}
