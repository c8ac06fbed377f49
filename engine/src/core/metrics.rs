//! What a shard measures besides its counters: latency histograms and the
//! gauges the shard layer reports (log size, syncs). Plain integers owned
//! by the shard; the admin endpoint reads a copy ([`Observed`]) through the
//! control plane and adds the shards up.

use std::time::Duration;

use ringmq_protocol::QoS;

use super::broker::Broker;
use super::stats::Stats;

/// Upper bound of bucket 0, in microseconds; bucket `i` holds values up
/// to `BUCKET0_MICROS << i`.
const BUCKET0_MICROS: u64 = 16;
/// Finite buckets: 16 µs … 8.4 s; one more counts everything above.
pub const BUCKETS: usize = 20;

/// A latency histogram with power-of-two buckets (16 µs to 8.4 s): one
/// add per sample, mergeable across shards, exportable as a Prometheus
/// histogram. Percentiles read from it are interpolated within a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket; the last is above every bound.
    pub counts: [u64; BUCKETS + 1],
    /// Sum of all samples, in microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Upper bound of bucket `i`, in seconds.
    pub fn bound_secs(i: usize) -> f64 {
        (BUCKET0_MICROS << i) as f64 / 1e6
    }

    /// Counts one sample of `d`.
    pub fn record(&mut self, d: Duration) {
        self.record_n(d, 1);
    }

    /// Counts `n` samples of `d`.
    pub fn record_n(&mut self, d: Duration, n: u64) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let over = micros.saturating_sub(1) / BUCKET0_MICROS;
        let i = (64 - over.leading_zeros()) as usize;
        self.counts[i.min(BUCKETS)] += n;
        self.sum_micros = self.sum_micros.saturating_add(micros.saturating_mul(n));
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// The samples of `self` not in `earlier` (a later copy minus an
    /// earlier one of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut h = self.clone();
        for (a, b) in h.counts.iter_mut().zip(earlier.counts) {
            *a = a.saturating_sub(b);
        }
        h.sum_micros = h.sum_micros.saturating_sub(earlier.sum_micros);
        h
    }

    /// The `q`-quantile (0–1) in seconds, interpolated linearly within its
    /// bucket; `None` without samples. Above the last bound it reports
    /// that bound.
    pub fn quantile_secs(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 || ((seen + n) as f64) < rank {
                seen += n;
                continue;
            }
            if i == BUCKETS {
                return Some(Self::bound_secs(BUCKETS - 1));
            }
            let low = if i == 0 { 0.0 } else { Self::bound_secs(i - 1) };
            let within = (rank - seen as f64) / n as f64;
            return Some(low + (Self::bound_secs(i) - low) * within);
        }
        Some(Self::bound_secs(BUCKETS - 1))
    }
}

/// Latencies and the storage gauges of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// From handling a QoS 1/2 PUBLISH to writing its PUBACK/PUBREC: near
    /// zero unless the acknowledgement waits for other shards or a sync.
    pub ack_latency: Histogram,
    /// Duration of each sync of the logs to disk (msync).
    pub sync_latency: Histogram,
    /// Bytes of the shard's logs on disk (state and offline).
    pub log_bytes: u64,
    /// Sync failures and other write errors of the logs.
    pub log_errors: u64,
}

/// Messages and payload bytes per QoS level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerQos {
    /// Messages at QoS 0, 1, 2.
    pub messages: [u64; 3],
    /// Their payload bytes.
    pub bytes: [u64; 3],
}

impl PerQos {
    /// Counts one message of `len` payload bytes at `qos`.
    pub fn add(&mut self, qos: QoS, len: usize) {
        let i = qos as usize;
        self.messages[i] += 1;
        self.bytes[i] += len as u64;
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: &PerQos) {
        for i in 0..3 {
            self.messages[i] += other.messages[i];
            self.bytes[i] += other.bytes[i];
        }
    }

    /// Messages at every level.
    pub fn total_messages(&self) -> u64 {
        self.messages.iter().sum()
    }

    /// Bytes at every level.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

/// Counts per reason code, few distinct codes: a short sorted list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeCounts(pub Vec<(u8, u64)>);

impl CodeCounts {
    /// Counts one `code`.
    pub fn add(&mut self, code: u8) {
        self.add_n(code, 1);
    }

    fn add_n(&mut self, code: u8, n: u64) {
        match self.0.binary_search_by_key(&code, |&(c, _)| c) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (code, n)),
        }
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: &CodeCounts) {
        for &(code, n) in &other.0 {
            self.add_n(code, n);
        }
    }
}

/// One shard as the admin endpoint sees it at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The shard's index.
    pub shard: usize,
    /// Its counters.
    pub stats: Stats,
    /// Its latencies and storage gauges.
    pub metrics: Metrics,
    /// Connected clients.
    pub connections: u64,
    /// Sessions, connected or not.
    pub sessions: u64,
    /// Topics with a retained message.
    pub retained: u64,
    /// Copies held for persistent sessions on this shard.
    pub offline_messages: u64,
    /// Messages waiting in this shard's outboxes to other shards.
    pub mesh_backlog_messages: u64,
    /// Their bytes.
    pub mesh_backlog_bytes: u64,
}

impl Observed {
    /// The sum over `shards` (retained topics: the largest, since every
    /// shard holds them all).
    pub fn total(shards: &[Observed]) -> Observed {
        let mut t = Observed::default();
        for o in shards {
            t.stats.merge(&o.stats);
            t.metrics.ack_latency.merge(&o.metrics.ack_latency);
            t.metrics.sync_latency.merge(&o.metrics.sync_latency);
            t.metrics.log_bytes += o.metrics.log_bytes;
            t.metrics.log_errors += o.metrics.log_errors;
            t.connections += o.connections;
            t.sessions += o.sessions;
            t.retained = t.retained.max(o.retained);
            t.offline_messages += o.offline_messages;
            t.mesh_backlog_messages += o.mesh_backlog_messages;
            t.mesh_backlog_bytes += o.mesh_backlog_bytes;
        }
        t
    }
}

impl Broker {
    /// A copy of what this shard measures now.
    pub fn observe(&self) -> Observed {
        let offline_messages = self
            .offline_counts
            .as_ref()
            .and_then(|c| c.get(self.shard))
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
        Observed {
            shard: self.shard,
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            connections: self.connection_count() as u64,
            sessions: self.session_count() as u64,
            retained: self.retained_count() as u64,
            offline_messages,
            mesh_backlog_messages: self.outbox.iter().map(|o| o.len() as u64).sum(),
            mesh_backlog_bytes: self.outbox_bytes.iter().map(|&b| b as u64).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        let mut h = Histogram::default();
        for micros in [0, 16, 17, 32, 33, 1_000_000, 100_000_000] {
            h.record(Duration::from_micros(micros));
        }
        assert_eq!(h.counts[0], 2, "0 and 16 µs");
        assert_eq!(h.counts[1], 2, "17 and 32 µs");
        assert_eq!(h.counts[2], 1, "33 µs");
        assert_eq!(h.counts[16], 1, "1 s ≤ 16 µs << 16");
        assert_eq!(h.counts[BUCKETS], 1, "100 s is above every bound");
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let mut h = Histogram::default();
        h.record_n(Duration::from_micros(100), 99);
        h.record(Duration::from_millis(50));
        let p50 = h.quantile_secs(0.5).expect("samples");
        assert!((64e-6..=128e-6).contains(&p50), "p50 {p50}");
        let max = h.quantile_secs(1.0).expect("samples");
        assert!((32.768e-3..=65.536e-3).contains(&max), "max {max}");
        assert_eq!(Histogram::default().quantile_secs(0.5), None);
    }

    #[test]
    fn since_leaves_the_new_samples() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(10));
        let before = h.clone();
        h.record(Duration::from_millis(3));
        let d = h.since(&before);
        assert_eq!(d.count(), 1);
        assert_eq!(d.sum_micros, 3000);
    }
}
