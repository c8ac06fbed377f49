//! Which sequence numbers of one publisher have arrived: a sorted list of
//! disjoint half-open ranges. In-order arrival extends the last range in
//! O(1); a loss adds one range; a late arrival is a binary search. Memory
//! grows with the number of gaps, never with the number of messages.

use std::cmp::Ordering;

/// A set of `u64`s stored as sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

/// What an insertion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New, and after every number seen so far.
    InOrder,
    /// New, but a larger number arrived before it.
    Late,
    /// Already there.
    Duplicate,
}

impl SeqSet {
    /// Adds `n` and says how it relates to what came before.
    pub fn insert(&mut self, n: u64) -> Arrival {
        match self.ranges.last_mut() {
            None => {
                self.ranges.push((n, n + 1));
                return Arrival::InOrder;
            }
            Some(last) if n == last.1 => {
                last.1 += 1;
                return Arrival::InOrder;
            }
            Some(last) if n > last.1 => {
                self.ranges.push((n, n + 1));
                return Arrival::InOrder;
            }
            Some(_) => {}
        }
        self.insert_before_end(n)
    }

    fn insert_before_end(&mut self, n: u64) -> Arrival {
        let found = self.ranges.binary_search_by(|&(start, end)| {
            if end <= n {
                Ordering::Less
            } else if start > n {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        let i = match found {
            Ok(_) => return Arrival::Duplicate,
            Err(i) => i,
        };
        let joins_left = i > 0 && self.ranges[i - 1].1 == n;
        let joins_right = i < self.ranges.len() && self.ranges[i].0 == n + 1;
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = n + 1,
            (false, true) => self.ranges[i].0 = n,
            (false, false) => self.ranges.insert(i, (n, n + 1)),
        }
        Arrival::Late
    }

    /// Adds every number of `other`; returns how many were already here.
    pub fn merge(&mut self, other: &SeqSet) -> u64 {
        let overlap = self.count_common(other);
        let mut all: Vec<(u64, u64)> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
        overlap
    }

    /// How many numbers are in both sets.
    pub fn count_common(&self, other: &SeqSet) -> u64 {
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let (start, end) = (a.0.max(b.0), a.1.min(b.1));
            if start < end {
                common += end - start;
            }
            if a.1 <= b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        common
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(start, end)| end - start).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The numbers `0..n`.
    pub fn first(n: u64) -> SeqSet {
        SeqSet {
            ranges: if n == 0 { Vec::new() } else { vec![(0, n)] },
        }
    }

    /// How many of `expected` are missing here.
    pub fn missing_of(&self, expected: &SeqSet) -> u64 {
        expected.len() - expected.count_common(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_arrivals_stay_one_range() {
        let mut s = SeqSet::default();
        for n in 0..1000 {
            assert_eq!(s.insert(n), Arrival::InOrder);
        }
        assert_eq!(s.ranges, vec![(0, 1000)]);
        assert_eq!(s.missing_of(&SeqSet::first(1000)), 0);
    }

    #[test]
    fn gaps_are_losses_until_filled() {
        let mut s = SeqSet::default();
        for n in [0, 1, 2, 5, 6, 9] {
            assert_eq!(s.insert(n), Arrival::InOrder);
        }
        assert_eq!(s.missing_of(&SeqSet::first(10)), 4); // 3, 4, 7, 8
        assert_eq!(s.insert(4), Arrival::Late);
        assert_eq!(s.insert(3), Arrival::Late);
        assert_eq!(s.ranges, vec![(0, 7), (9, 10)]);
        assert_eq!(s.insert(8), Arrival::Late);
        assert_eq!(s.insert(7), Arrival::Late);
        assert_eq!(s.ranges, vec![(0, 10)]);
    }

    #[test]
    fn duplicates_are_found_anywhere() {
        let mut s = SeqSet::default();
        for n in [0, 1, 2, 10, 11] {
            s.insert(n);
        }
        assert_eq!(s.insert(1), Arrival::Duplicate);
        assert_eq!(s.insert(11), Arrival::Duplicate);
        assert_eq!(s.insert(10), Arrival::Duplicate);
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn merging_counts_the_overlap() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for n in (0..100).filter(|n| n % 2 == 0) {
            a.insert(n);
        }
        for n in (0..100).filter(|n| n % 2 == 1 || *n == 50) {
            b.insert(n);
        }
        assert_eq!(a.merge(&b), 1);
        assert_eq!(a.ranges, vec![(0, 100)]);
    }

    #[test]
    fn matches_a_naive_set_on_random_input() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut s = SeqSet::default();
        let mut naive = std::collections::BTreeSet::new();
        let mut max = None;
        for _ in 0..5000 {
            let n = next() % 600;
            let expected = if naive.contains(&n) {
                Arrival::Duplicate
            } else if max.is_some_and(|m| n < m) {
                Arrival::Late
            } else {
                Arrival::InOrder
            };
            naive.insert(n);
            max = max.max(Some(n));
            assert_eq!(s.insert(n), expected, "inserting {n}");
        }
        assert_eq!(s.len(), naive.len() as u64);
        assert_eq!(s.missing_of(&SeqSet::first(600)), 600 - naive.len() as u64);
    }
}
