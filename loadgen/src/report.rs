//! The end of a run: the table on stdout and the files in `--out DIR`
//! (summary.json, percentile distributions `.hgrm`, the interval log).

use crate::ctx::{histogram, Interval};
use crate::format::{format_bytes, format_micros, format_rate};
use crate::summary::{Latency, Summary};
use anyhow::{anyhow, Context, Result};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Nanoseconds (recorded) per microsecond (shown).
const NANOS_PER_MICRO: f64 = 1_000.0;

/// Prints the final table.
pub fn print(s: &Summary) {
    print!("{}", table(s));
}

/// The final table as text.
pub fn table(s: &Summary) -> String {
    let r = &s.results;
    let c = &r.checks;
    let mut t = String::new();
    let version = s.broker.version.as_deref().unwrap_or("version unknown");
    let _ = writeln!(t, "{} → {} ({version})", s.label, s.broker.address);
    let _ = writeln!(
        t,
        "  measured      {:.1} s, {} connections ({} failed)",
        r.measured_secs, r.connections, r.connect_failures
    );
    if r.published > 0 || r.delivered > 0 {
        let _ = writeln!(
            t,
            "  published     {:>10}  ({} messages)",
            format_rate(r.publish_rate),
            r.published
        );
        let _ = writeln!(
            t,
            "  delivered     {:>10}  ({} messages)",
            format_rate(r.delivery_rate),
            r.delivered
        );
    }
    if let Some(d) = r.drain_rate {
        let _ = writeln!(t, "  drain         {:>10}", format_rate(d));
    }
    if let Some(c) = r.connect_rate {
        let _ = writeln!(t, "  connects      {:>10}", format_rate(c));
    }
    if let Some(b) = r.rss_bytes_per_connection {
        let _ = writeln!(t, "  broker RSS    {} per connection", format_bytes(b));
    }
    if let (Some(b), Some(peak)) = (r.broker_rss_bytes, r.broker_peak_rss_bytes) {
        let (now, peak) = (format_bytes(b as f64), format_bytes(peak as f64));
        let _ = writeln!(t, "  broker RSS    {now}, peak {peak}");
    }
    let _ = writeln!(
        t,
        "  {:<12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max", "samples"
    );
    for (name, l) in [
        ("end-to-end", &r.latency),
        ("ack", &r.ack_latency),
        ("connect", &r.connect_latency),
    ] {
        if let Some(l) = l {
            let _ = writeln!(t, "  {name:<12}{}", latency_row(l));
        }
    }
    if c.expected > 0 || c.received > 0 {
        let _ = writeln!(
            t,
            "  checks        QoS {}: {} expected, {} received, {} lost, {} duplicated, {} out of order",
            c.qos, c.expected, c.received, c.lost, c.duplicated, c.out_of_order
        );
    }
    for sub in c.subscribers.iter().take(10) {
        let _ = writeln!(
            t,
            "    {}: {} lost, {} duplicated, {} out of order",
            sub.client_id, sub.lost, sub.duplicated, sub.out_of_order
        );
    }
    for e in r.errors.iter().take(5) {
        let _ = writeln!(t, "  error: {e}");
    }
    t
}

fn latency_row(l: &Latency) -> String {
    let cells = [l.p50, l.p90, l.p99, l.p999, l.p9999, l.max];
    let mut row: String = cells
        .iter()
        .map(|v| format!("{:>10}", format_micros(*v)))
        .collect();
    let _ = write!(row, "{:>10}", l.count);
    row
}

/// Writes summary.json, the `.hgrm` files and `latency.hlog` into `dir`.
pub fn write(dir: &Path, s: &Summary, intervals: &[Interval]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    s.write(&dir.join("summary.json"))?;
    let r = &s.results;
    for (name, l) in [
        ("latency", &r.latency),
        ("ack", &r.ack_latency),
        ("connect", &r.connect_latency),
    ] {
        if let Some(l) = l {
            let path = dir.join(format!("{name}.hgrm"));
            std::fs::write(&path, percentiles(&l.histogram()?))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if !intervals.is_empty() {
        interval_log(&dir.join("latency.hlog"), s.started_unix_secs, intervals)?;
    }
    Ok(())
}

/// A percentile distribution as HdrHistogram's tools print it, in µs.
pub fn percentiles(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut count = 0;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / NANOS_PER_MICRO;
        count += v.count_since_last_iteration();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:14.12} {count:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {q:14.12} {count:10}");
        }
    }
    let us = |v: f64| v / NANOS_PER_MICRO;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        us(h.mean()),
        us(h.stdev())
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        us(h.max() as f64),
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// The workers' one-second intervals, merged across threads, as an
/// HdrHistogram interval log (values in nanoseconds, max column in µs).
fn interval_log(path: &Path, started_unix_secs: u64, intervals: &[Interval]) -> Result<()> {
    let first = intervals.iter().map(|i| i.start).min().unwrap_or(0);
    let second = Duration::from_secs(1).as_nanos() as u64;
    let mut merged: BTreeMap<u64, (u64, u64, Histogram<u64>)> = BTreeMap::new();
    for i in intervals {
        let slot = (i.start - first + second / 2) / second;
        let entry = merged
            .entry(slot)
            .or_insert_with(|| (i.start, 0, histogram()));
        entry.0 = entry.0.min(i.start);
        entry.1 = entry.1.max(i.length);
        entry.2.add(&i.histogram).ok();
    }
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(started_unix_secs);
    let mut file = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("loadgen end-to-end latency, values in nanoseconds")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(NANOS_PER_MICRO)
            .begin_log_with(&mut file, &mut serializer)?;
        for (from, length, h) in merged.values() {
            let at = Duration::from_nanos(from - first);
            log.write_histogram(h, at, Duration::from_nanos(*length), None)
                .map_err(|e| anyhow!("writing the interval log: {e:?}"))?;
        }
    }
    std::fs::write(path, file).with_context(|| format!("writing {}", path.display()))
}
