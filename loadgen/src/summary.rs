//! The JSON summary of one run (`summary.json` in `--out DIR`): the whole
//! configuration, where it ran, and every figure measured. `compare` and
//! `plot` read nothing else, so a run can be compared long after it ended.

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One run, as written to `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The loadgen that produced it.
    pub loadgen_version: String,
    /// A short name for the run in tables and plots (`--label`).
    pub label: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_secs: u64,
    /// The resolved configuration (every knob, defaults included).
    pub config: serde_json::Value,
    /// The broker driven.
    pub broker: BrokerInfo,
    /// The machine loadgen ran on.
    pub machine: Machine,
    /// The commit of the checkout loadgen ran from, if it is a git checkout.
    pub commit: Option<String>,
    /// The figures.
    pub results: Results,
}

/// The broker a run drove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Host and port connected to.
    pub address: String,
    /// `--broker-version`, or what the broker published on `$SYS/broker/version`.
    pub version: Option<String>,
    /// `--broker-pid`, used for the broker's RSS.
    pub pid: Option<u32>,
}

/// Where a run happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Online cores.
    pub cores: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Host name.
    pub hostname: String,
}

/// Every figure of a run. Rates are per second over the measured window
/// (after warm-up); counts cover the whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Length of the measured window, seconds.
    pub measured_secs: f64,
    /// Connections opened successfully.
    pub connections: u64,
    /// Connection attempts refused or failed.
    pub connect_failures: u64,
    /// `connections`: connections per second while connecting; `churn`:
    /// connects per second in the measured window.
    pub connect_rate: Option<f64>,
    /// Messages published in the measured window.
    pub published: u64,
    /// Messages delivered to subscribers in the measured window.
    pub delivered: u64,
    /// Published messages per second.
    pub publish_rate: f64,
    /// Deliveries per second (the throughput).
    pub delivery_rate: f64,
    /// `offline`: deliveries per second while reconnected sessions drain.
    pub drain_rate: Option<f64>,
    /// `connections`: growth of the broker's RSS per connection held, bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// The broker's RSS at the end of the run (`connections`: while the
    /// connections are held), bytes.
    pub broker_rss_bytes: Option<u64>,
    /// The broker's peak RSS (VmHWM) at the end of the run, bytes.
    pub broker_peak_rss_bytes: Option<u64>,
    /// End-to-end latency, from the intended send time (open loop) or the
    /// send time (closed loop) to arrival at the subscriber.
    pub latency: Option<Latency>,
    /// PUBLISH to PUBACK (QoS 1) or PUBCOMP (QoS 2).
    pub ack_latency: Option<Latency>,
    /// TCP connect to CONNACK.
    pub connect_latency: Option<Latency>,
    /// What the subscribers checked.
    pub checks: Checks,
    /// The first errors seen (connection failures, refused subscriptions…).
    pub errors: Vec<String>,
}

/// Loss, duplicate and ordering checks, totalled over subscribers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checks {
    /// The effective QoS (the lower of publish and subscribe QoS).
    pub qos: u8,
    /// Messages the subscribers should have received (the whole run).
    pub expected: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Expected messages never received.
    pub lost: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages received after a later one from the same publisher.
    pub out_of_order: u64,
    /// Subscribers with any anomaly (at most 100 listed).
    pub subscribers: Vec<SubscriberCheck>,
}

/// One subscriber's anomalies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriberCheck {
    /// Its client id (for `shared`: the group).
    pub client_id: String,
    /// Messages it should have received and did not.
    pub lost: u64,
    /// Messages it received twice or more.
    pub duplicated: u64,
    /// Messages it received out of order.
    pub out_of_order: u64,
}

/// A latency distribution in microseconds, with the histogram it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest, µs.
    pub min: f64,
    /// Mean, µs.
    pub mean: f64,
    /// Median, µs.
    pub p50: f64,
    /// 90th percentile, µs.
    pub p90: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// 99.9th percentile, µs.
    pub p999: f64,
    /// 99.99th percentile, µs.
    pub p9999: f64,
    /// Largest, µs.
    pub max: f64,
    /// The HdrHistogram of nanosecond values, V2 + DEFLATE, base64.
    pub histogram: String,
}

/// Histograms record nanoseconds; summaries speak microseconds.
const NANOS_PER_MICRO: f64 = 1_000.0;

impl Latency {
    /// Summarizes a histogram of nanosecond values; `None` if it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Result<Option<Latency>> {
        if h.is_empty() {
            return Ok(None);
        }
        let us = |v: u64| v as f64 / NANOS_PER_MICRO;
        let q = |q: f64| us(h.value_at_quantile(q));
        Ok(Some(Latency {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / NANOS_PER_MICRO,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: us(h.max()),
            histogram: encode_histogram(h)?,
        }))
    }

    /// The histogram of nanosecond values this summary was made from.
    pub fn histogram(&self) -> Result<Histogram<u64>> {
        decode_histogram(&self.histogram)
    }
}

/// A histogram as V2 + DEFLATE, base64 (what HdrHistogram's tools read).
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String> {
    let mut raw = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut raw)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// The inverse of [`encode_histogram`].
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(|e| anyhow::anyhow!("reading a histogram: {e:?}"))
}

impl Summary {
    /// Reads a `summary.json`, or the `summary.json` inside a directory.
    pub fn read(path: &Path) -> Result<Summary> {
        let file = if path.is_dir() {
            path.join("summary.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
    }

    /// Reads every run named on a command line.
    pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Summary>> {
        paths.iter().map(|p| Summary::read(p)).collect()
    }

    /// Writes it as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
