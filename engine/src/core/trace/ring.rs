//! The records of one shard's trace store, oldest first, in a ring of
//! 32-bit words that never grows past its capacity (allocated at start,
//! its pages touched only as it fills). A record is a header and the
//! clients it concerns:
//!
//! | word | |
//! |---|---|
//! | 0 | length in words (24 bits), action (4), info (4) |
//! | 1, 2 | time, ms since the Unix epoch |
//! | 3, 4 | the message id (message events) or the channel (device events) |
//! | 5… | one client name each |
//!
//! One message's deliveries on a shard are one record, so a delivery
//! costs a word; a device event or a publish is a record of its own.

use std::collections::VecDeque;

use super::{Action, Info};

/// Words of a record's header.
pub(super) const HEADER_WORDS: usize = 5;

/// The header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Header {
    pub(super) action: Action,
    pub(super) info: Info,
    pub(super) time_ms: u64,
    /// Message id or channel.
    pub(super) id: u64,
}

/// A record read back.
#[derive(Debug)]
pub(super) struct Record<'a> {
    pub(super) header: Header,
    /// Client names (indices in the store's table); the two runs are the
    /// halves of a record that wraps around the ring.
    pub(super) names: (&'a [u32], &'a [u32]),
}

impl Record<'_> {
    /// The client names of the record.
    pub(super) fn names(&self) -> impl Iterator<Item = u32> + '_ {
        self.names.0.iter().chain(self.names.1).copied()
    }
}

/// The ring.
#[derive(Debug, Default)]
pub(super) struct Ring {
    words: VecDeque<u32>,
    /// Words held at most.
    cap: usize,
    /// Records held.
    records: usize,
}

impl Ring {
    /// A ring of `cap` words.
    pub(super) fn new(cap: usize) -> Ring {
        Ring {
            words: VecDeque::with_capacity(cap),
            cap,
            records: 0,
        }
    }

    /// Appends a record; the oldest make room. A record larger than the
    /// ring is not kept.
    pub(super) fn push(&mut self, h: Header, names: &[u32]) {
        let len = HEADER_WORDS + names.len();
        if len > self.cap || len >= 1 << 24 {
            return;
        }
        while self.words.len() + len > self.cap {
            self.pop();
        }
        let w0 = len as u32 | u32::from(h.action.index()) << 24 | u32::from(h.info.index()) << 28;
        let header = [
            w0,
            h.time_ms as u32,
            (h.time_ms >> 32) as u32,
            h.id as u32,
            (h.id >> 32) as u32,
        ];
        self.words.extend(header);
        self.words.extend(names);
        self.records += 1;
    }

    /// Drops the oldest record.
    pub(super) fn pop(&mut self) {
        let Some(&w0) = self.words.front() else {
            return;
        };
        let len = (w0 & 0xFF_FFFF) as usize;
        self.words.drain(..len.clamp(1, self.words.len()));
        self.records -= 1;
    }

    /// The header of the oldest record.
    pub(super) fn front(&self) -> Option<Header> {
        self.iter().next().map(|r| r.header)
    }

    /// Records held.
    #[cfg(test)]
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// The records, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        let (a, b) = self.words.as_slices();
        let mut at = 0;
        std::iter::from_fn(move || {
            let word = |i: usize| if i < a.len() { a[i] } else { b[i - a.len()] };
            if at + HEADER_WORDS > a.len() + b.len() {
                return None;
            }
            let w0 = word(at);
            let len = (w0 & 0xFF_FFFF) as usize;
            let header = Header {
                action: Action::from_index((w0 >> 24 & 0xF) as u8),
                info: Info::from_index((w0 >> 28) as u8),
                time_ms: u64::from(word(at + 1)) | u64::from(word(at + 2)) << 32,
                id: u64::from(word(at + 3)) | u64::from(word(at + 4)) << 32,
            };
            let (from, to) = (at + HEADER_WORDS, (at + len).min(a.len() + b.len()));
            let names = match (from < a.len(), to <= a.len()) {
                (true, true) => (&a[from..to], &b[..0]),
                (true, false) => (&a[from..], &b[..to - a.len()]),
                _ => (&b[from - a.len()..to - a.len()], &b[..0]),
            };
            at += len.max(HEADER_WORDS);
            Some(Record { header, names })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(time_ms: u64, id: u64) -> Header {
        Header {
            action: Action::Sub,
            info: Info::Message,
            time_ms,
            id,
        }
    }

    #[test]
    fn records_come_back_in_order_and_the_oldest_make_room() {
        let mut r = Ring::new(20);
        r.push(header(1, 10), &[1, 2, 3]);
        r.push(
            Header {
                action: Action::Close,
                info: Info::NoHeart,
                time_ms: 1 << 40,
                id: u64::MAX,
            },
            &[4],
        );
        let got: Vec<(Header, Vec<u32>)> =
            r.iter().map(|x| (x.header, x.names().collect())).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (header(1, 10), vec![1, 2, 3]));
        assert_eq!(got[1].0.info, Info::NoHeart);
        assert_eq!((got[1].0.time_ms, got[1].0.id), (1 << 40, u64::MAX));
        // 8 + 6 words held; 7 more: the oldest goes.
        r.push(header(3, 30), &[5, 6]);
        let ids: Vec<u64> = r.iter().map(|x| x.header.id).collect();
        assert_eq!(ids, vec![u64::MAX, 30]);
        assert_eq!(r.records(), 2);
        r.push(header(4, 40), &[0; 30]);
        assert_eq!(r.records(), 2, "a record larger than the ring is not kept");
    }

    #[test]
    fn a_record_across_the_end_of_the_ring_reads_whole() {
        let mut r = Ring::new(16);
        for i in 0..20u32 {
            r.push(header(u64::from(i), u64::from(i)), &[i, i + 1]);
            let last = r.iter().last().map(|x| x.names().collect::<Vec<_>>());
            assert_eq!(last, Some(vec![i, i + 1]));
        }
    }
}
