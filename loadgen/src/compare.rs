//! `loadgen compare`: runs side by side, each against the first (the
//! baseline), and `--fail-if` thresholds that turn the comparison into a CI
//! gate.

use crate::format::{format_bytes, format_micros, format_rate, sig3};
use crate::summary::{Latency, Summary};
use anyhow::Result;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `loadgen compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// summary.json files (or --out directories holding one); the first is the baseline
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// e.g. 'p99>1.5x' (fail if a run's p99 exceeds 1.5 × the baseline's), 'throughput<0.8x', or absolute 'lost>0'; repeatable
    #[arg(long = "fail-if")]
    pub fail_if: Vec<String>,
    /// print a markdown table instead of aligned text
    #[arg(long)]
    pub markdown: bool,
}

/// Prints the comparison and checks the thresholds; `FAILURE` if any failed.
pub fn run(args: &CompareArgs) -> Result<ExitCode> {
    // Parse the thresholds first: a typo should not cost reading every run.
    let thresholds = args
        .fail_if
        .iter()
        .map(|expr| Threshold::parse(expr))
        .collect::<Result<Vec<_>>>()?;
    let runs = Summary::read_all(&args.runs)?;
    print!("{}", render_table(&runs, args.markdown));
    println!();
    print!("{}", render_provenance(&runs, args.markdown));
    if thresholds.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    let verdicts = evaluate(&thresholds, &runs);
    for verdict in &verdicts {
        println!("{verdict}");
    }
    Ok(if verdicts.iter().any(|v| v.failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------------------
// Metrics

/// How a metric's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Per second.
    Rate,
    /// Microseconds.
    Micros,
    /// A plain count.
    Count,
    /// Bytes.
    Bytes,
}

/// A figure of a run: its `--fail-if` name, its row in the table, and how to
/// find it in a summary.
#[derive(Debug)]
struct Metric {
    name: &'static str,
    /// `None`: usable in thresholds but not shown as a row.
    row: Option<&'static str>,
    unit: Unit,
    get: fn(&Summary) -> Option<f64>,
}

impl Metric {
    fn value(&self, run: &Summary) -> Option<f64> {
        (self.get)(run)
    }

    fn format(&self, value: f64) -> String {
        format_value(self.unit, value)
    }
}

/// Whether the run's scenario publishes (not `connections` or `churn`),
/// so that its message rates mean something.
fn moves_messages(run: &Summary) -> bool {
    let scenario = run.config.get("scenario").and_then(|v| v.as_str());
    !matches!(scenario, Some("connections" | "churn"))
}

fn e2e(run: &Summary) -> Option<&Latency> {
    run.results.latency.as_ref()
}

fn ack(run: &Summary) -> Option<&Latency> {
    run.results.ack_latency.as_ref()
}

fn connect(run: &Summary) -> Option<&Latency> {
    run.results.connect_latency.as_ref()
}

/// Every metric, in table order.
const METRICS: &[Metric] = &[
    Metric {
        name: "throughput",
        row: Some("throughput"),
        unit: Unit::Rate,
        get: |r| moves_messages(r).then_some(r.results.delivery_rate),
    },
    Metric {
        name: "publish_rate",
        row: Some("publish rate"),
        unit: Unit::Rate,
        get: |r| moves_messages(r).then_some(r.results.publish_rate),
    },
    Metric {
        name: "connect_rate",
        row: Some("connect rate"),
        unit: Unit::Rate,
        get: |r| r.results.connect_rate,
    },
    Metric {
        name: "drain_rate",
        row: Some("drain rate"),
        unit: Unit::Rate,
        get: |r| r.results.drain_rate,
    },
    Metric {
        name: "p50",
        row: Some("e2e p50"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.p50),
    },
    Metric {
        name: "p90",
        row: Some("e2e p90"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.p90),
    },
    Metric {
        name: "p99",
        row: Some("e2e p99"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.p99),
    },
    Metric {
        name: "p999",
        row: Some("e2e p99.9"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.p999),
    },
    Metric {
        name: "p9999",
        row: Some("e2e p99.99"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.p9999),
    },
    Metric {
        name: "max",
        row: Some("e2e max"),
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.max),
    },
    Metric {
        name: "mean",
        row: None,
        unit: Unit::Micros,
        get: |r| e2e(r).map(|l| l.mean),
    },
    Metric {
        name: "ack_p50",
        row: Some("ack p50"),
        unit: Unit::Micros,
        get: |r| ack(r).map(|l| l.p50),
    },
    Metric {
        name: "ack_p99",
        row: Some("ack p99"),
        unit: Unit::Micros,
        get: |r| ack(r).map(|l| l.p99),
    },
    Metric {
        name: "connect_p50",
        row: Some("connect p50"),
        unit: Unit::Micros,
        get: |r| connect(r).map(|l| l.p50),
    },
    Metric {
        name: "connect_p99",
        row: Some("connect p99"),
        unit: Unit::Micros,
        get: |r| connect(r).map(|l| l.p99),
    },
    Metric {
        name: "lost",
        row: Some("lost"),
        unit: Unit::Count,
        get: |r| Some(r.results.checks.lost as f64),
    },
    Metric {
        name: "duplicated",
        row: Some("duplicated"),
        unit: Unit::Count,
        get: |r| Some(r.results.checks.duplicated as f64),
    },
    Metric {
        name: "out_of_order",
        row: Some("out of order"),
        unit: Unit::Count,
        get: |r| Some(r.results.checks.out_of_order as f64),
    },
    Metric {
        name: "broker_rss",
        row: Some("broker RSS"),
        unit: Unit::Bytes,
        get: |r| r.results.broker_rss_bytes.map(|b| b as f64),
    },
    Metric {
        name: "rss_per_connection",
        row: Some("RSS per connection"),
        unit: Unit::Bytes,
        get: |r| r.results.rss_bytes_per_connection,
    },
];

fn metric_names() -> String {
    METRICS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Rate => format_rate(v),
        Unit::Micros => format_micros(v),
        Unit::Count => format!("{v:.0}"),
        Unit::Bytes => format_bytes(v),
    }
}

/// `value / baseline` as `1.32x`; `None` when it means nothing (no
/// baseline, or a zero one).
fn ratio(value: f64, baseline: Option<f64>) -> Option<String> {
    match baseline {
        Some(base) if base != 0.0 => Some(format!("{:.2}x", value / base)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The table

/// One table cell per run: the value, and after the baseline its ratio to it.
fn row_cells(metric: &Metric, runs: &[Summary]) -> Vec<String> {
    let baseline = runs.first().and_then(|r| metric.value(r));
    runs.iter()
        .enumerate()
        .map(|(i, run)| match metric.value(run) {
            None => "-".to_string(),
            Some(v) => match ratio(v, baseline).filter(|_| i > 0) {
                Some(r) => format!("{} ({r})", metric.format(v)),
                None => metric.format(v),
            },
        })
        .collect()
}

/// Header and rows (first cell the row name), skipping rows no run has.
fn table_rows(runs: &[Summary]) -> Vec<Vec<String>> {
    let header = std::iter::once("metric".to_string())
        .chain(runs.iter().map(|r| r.label.clone()))
        .collect();
    let rows = METRICS.iter().filter_map(|m| {
        let name = m.row?;
        if runs.iter().all(|r| m.value(r).is_none()) {
            return None;
        }
        Some(
            std::iter::once(name.to_string())
                .chain(row_cells(m, runs))
                .collect(),
        )
    });
    std::iter::once(header).chain(rows).collect()
}

/// The comparison table, as aligned text or markdown.
fn render_table(runs: &[Summary], markdown: bool) -> String {
    let rows = table_rows(runs);
    if markdown {
        render_markdown(&rows)
    } else {
        render_aligned(&rows)
    }
}

fn render_markdown(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let _ = writeln!(out, "| {} |", row.join(" | "));
        if i == 0 {
            let rule: Vec<&str> = (0..row.len())
                .map(|c| if c == 0 { "---" } else { "---:" })
                .collect();
            let _ = writeln!(out, "|{}|", rule.join("|"));
        }
    }
    out
}

fn render_aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            // Names read left to right, numbers line up on the right.
            let pad = " ".repeat(widths[c].saturating_sub(cell.chars().count()));
            if c == 0 {
                let _ = write!(line, "{cell}{pad}");
            } else {
                let _ = write!(line, "  {pad}{cell}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// A line per run: where it ran, from which commit, against which broker.
fn render_provenance(runs: &[Summary], markdown: bool) -> String {
    let mut out = String::new();
    for run in runs {
        let m = &run.machine;
        let commit = run.commit.as_deref().unwrap_or("unknown commit");
        let version = run.broker.version.as_deref().unwrap_or("version unknown");
        let bullet = if markdown { "- " } else { "" };
        let _ = writeln!(
            out,
            "{bullet}{}: {} cores, {}, kernel {}; commit {commit}; broker {} ({version})",
            run.label, m.cores, m.cpu, m.kernel, run.broker.address
        );
    }
    out
}

// ---------------------------------------------------------------------------
// Thresholds

/// The comparison of a `--fail-if` expression: the run fails when
/// `value OP bound` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::Gt => value > bound,
            Op::Ge => value >= bound,
            Op::Lt => value < bound,
            Op::Le => value <= bound,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// The operator that holds when this one does not (for `ok` lines).
    fn negated(self) -> Op {
        match self {
            Op::Gt => Op::Le,
            Op::Ge => Op::Lt,
            Op::Lt => Op::Ge,
            Op::Le => Op::Gt,
        }
    }
}

/// What a metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    /// A multiple of the baseline's value (`1.5x`).
    Factor(f64),
    /// A value in the metric's own unit (µs, per second, bytes, count).
    Absolute(f64),
}

/// One parsed `--fail-if` expression.
#[derive(Debug)]
struct Threshold {
    expr: String,
    metric: &'static Metric,
    op: Op,
    bound: Bound,
}

impl Threshold {
    /// Parses `METRIC OP VALUE[x]`, e.g. `p99>1.5x` or `lost > 0`.
    fn parse(expr: &str) -> Result<Threshold> {
        let invalid = |why: &str| {
            anyhow::anyhow!(
                "--fail-if '{expr}': {why}; expected METRIC>VALUE or METRIC<VALUE \
                 (also >=, <=), VALUE a number or a factor of the baseline like 1.5x; \
                 metrics: {}",
                metric_names()
            )
        };
        let Some(at) = expr.find(['<', '>']) else {
            return Err(invalid("no comparison operator"));
        };
        let (name, rest) = (expr[..at].trim(), &expr[at..]);
        let metric = METRICS
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| invalid(&format!("unknown metric '{name}'")))?;
        let (op, value) = split_op(rest);
        let bound = parse_bound(value.trim())
            .ok_or_else(|| invalid(&format!("'{}' is not a number", value.trim())))?;
        Ok(Threshold {
            expr: expr.to_string(),
            metric,
            op,
            bound,
        })
    }
}

/// The operator at the start of `s` (which starts with `<` or `>`) and the rest.
fn split_op(s: &str) -> (Op, &str) {
    let greater = s.starts_with('>');
    match (greater, s.get(1..2) == Some("=")) {
        (true, true) => (Op::Ge, &s[2..]),
        (true, false) => (Op::Gt, &s[1..]),
        (false, true) => (Op::Le, &s[2..]),
        (false, false) => (Op::Lt, &s[1..]),
    }
}

fn parse_bound(text: &str) -> Option<Bound> {
    let number = |t: &str| t.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    match text.strip_suffix(['x', 'X']) {
        Some(factor) => number(factor).map(Bound::Factor),
        None => number(text).map(Bound::Absolute),
    }
}

/// The outcome of one threshold on one run.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    failed: bool,
    message: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = if self.failed { "FAIL" } else { "ok  " };
        write!(f, "{tag} {}", self.message)
    }
}

/// Every threshold against every run after the baseline (or against the
/// only run, for absolute thresholds).
fn evaluate(thresholds: &[Threshold], runs: &[Summary]) -> Vec<Verdict> {
    let Some((baseline, others)) = runs.split_first() else {
        return Vec::new();
    };
    let mut verdicts = Vec::new();
    for t in thresholds {
        if others.is_empty() {
            verdicts.push(check_alone(t, baseline));
        } else {
            verdicts.extend(others.iter().map(|run| check(t, baseline, run)));
        }
    }
    verdicts
}

/// A threshold when only one run was given: absolute ones apply to it;
/// relative ones have nothing to compare and fail rather than pass vacuously.
fn check_alone(t: &Threshold, run: &Summary) -> Verdict {
    match t.bound {
        Bound::Absolute(_) => check(t, run, run),
        Bound::Factor(_) => Verdict {
            failed: true,
            message: format!(
                "{} [{}]: relative to a baseline, but only one run was given",
                t.expr, run.label
            ),
        },
    }
}

/// One threshold on one run.
fn check(t: &Threshold, baseline: &Summary, run: &Summary) -> Verdict {
    let m = t.metric;
    let missing = |place: String| Verdict {
        failed: true,
        message: format!("{} [{}]: no {} value in {place}", m.name, run.label, m.name),
    };
    let Some(value) = m.value(run) else {
        return missing("this run".to_string());
    };
    let (bound, described) = match t.bound {
        Bound::Absolute(limit) => (limit, m.format(limit)),
        Bound::Factor(factor) => {
            let Some(base) = m.value(baseline) else {
                return missing(format!("the baseline ({})", baseline.label));
            };
            let text = format!("{} × {} (baseline)", sig3(factor), m.format(base));
            (factor * base, text)
        }
    };
    let failed = t.op.holds(value, bound);
    let op = if failed { t.op } else { t.op.negated() };
    Verdict {
        failed,
        message: format!(
            "{} [{}]: {} {} {described}",
            m.name,
            run.label,
            m.format(value),
            op.symbol()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{BrokerInfo, Machine, Results};

    fn latency(p50: f64, p99: f64) -> Latency {
        Latency {
            count: 1000,
            min: p50 / 2.0,
            mean: p50,
            p50,
            p90: p50 * 1.5,
            p99,
            p999: p99 * 2.0,
            p9999: p99 * 3.0,
            max: p99 * 4.0,
            histogram: String::new(),
        }
    }

    /// A run with the given throughput, e2e p50/p99 (µs) and losses.
    fn summary(label: &str, throughput: f64, e2e: Option<(f64, f64)>, lost: u64) -> Summary {
        let mut results = Results {
            delivery_rate: throughput,
            publish_rate: throughput / 2.0,
            connect_rate: Some(5000.0),
            latency: e2e.map(|(p50, p99)| latency(p50, p99)),
            ..Results::default()
        };
        results.checks.lost = lost;
        Summary {
            loadgen_version: "0.1.0".into(),
            label: label.into(),
            started_unix_secs: 0,
            config: serde_json::json!({}),
            broker: BrokerInfo {
                address: "127.0.0.1:1883".into(),
                version: Some("ringmq 0.1.0".into()),
                pid: None,
            },
            machine: Machine {
                cores: 2,
                cpu: "Test CPU".into(),
                kernel: "6.8.0".into(),
                hostname: "host".into(),
            },
            commit: Some("abc1234".into()),
            results,
        }
    }

    fn parse(expr: &str) -> Threshold {
        Threshold::parse(expr).expect("valid threshold")
    }

    #[test]
    fn parses_relative_and_absolute_thresholds() {
        let t = parse("p99>1.5x");
        assert_eq!(
            (t.metric.name, t.op, t.bound),
            ("p99", Op::Gt, Bound::Factor(1.5))
        );
        let t = parse(" throughput < 0.8X ");
        assert_eq!(
            (t.metric.name, t.op, t.bound),
            ("throughput", Op::Lt, Bound::Factor(0.8))
        );
        let t = parse("lost>0");
        assert_eq!((t.op, t.bound), (Op::Gt, Bound::Absolute(0.0)));
        assert_eq!(parse("ack_p99>=500").op, Op::Ge);
        assert_eq!(parse("connect_rate<=1e3").bound, Bound::Absolute(1000.0));
    }

    #[test]
    fn parse_errors_name_the_expression_and_the_metrics() {
        for bad in [
            "p98>1.5x",
            "p99",
            "p99>",
            "p99>fast",
            "p99>>1",
            "p99>1.5xx",
            ">1",
        ] {
            let err = Threshold::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{err}");
            assert!(err.contains("rss_per_connection"), "{err}");
        }
    }

    #[test]
    fn relative_thresholds_compare_with_the_baseline() {
        let runs = [
            summary("base", 1e6, Some((50.0, 120.0)), 0),
            summary("new", 1e6, Some((50.0, 412.0)), 0),
            summary("newer", 1e6, Some((50.0, 100.0)), 0),
        ];
        let v = evaluate(&[parse("p99>1.5x")], &runs);
        assert_eq!(v.len(), 2);
        assert!(v[0].failed);
        assert_eq!(
            v[0].to_string(),
            "FAIL p99 [new]: 412 µs > 1.5 × 120 µs (baseline)"
        );
        assert!(!v[1].failed);
        assert_eq!(
            v[1].to_string(),
            "ok   p99 [newer]: 100 µs <= 1.5 × 120 µs (baseline)"
        );
    }

    #[test]
    fn lower_bounds_and_absolute_thresholds() {
        let runs = [
            summary("base", 2e6, None, 0),
            summary("slow", 1.5e6, None, 3),
        ];
        let v = evaluate(&[parse("throughput<0.8x"), parse("lost>0")], &runs);
        assert!(v[0].failed, "{}", v[0]);
        assert_eq!(
            v[0].message,
            "throughput [slow]: 1.5M/s < 0.8 × 2M/s (baseline)"
        );
        assert!(v[1].failed);
        assert_eq!(v[1].message, "lost [slow]: 3 > 0");
    }

    #[test]
    fn a_single_run_gets_absolute_thresholds_only() {
        let runs = [summary("only", 1e6, Some((50.0, 120.0)), 2)];
        let v = evaluate(
            &[parse("lost>0"), parse("p99<=200"), parse("p99>1.5x")],
            &runs,
        );
        assert_eq!(v.len(), 3);
        assert!(v[0].failed);
        assert!(v[1].failed, "{}", v[1]);
        assert!(
            v[2].failed && v[2].message.contains("only one run"),
            "{}",
            v[2]
        );
    }

    #[test]
    fn a_missing_metric_fails() {
        let runs = [
            summary("base", 1e6, Some((50.0, 120.0)), 0),
            summary("new", 1e6, None, 0),
        ];
        let v = evaluate(&[parse("p99>1.5x"), parse("drain_rate<1000")], &runs);
        assert!(v.iter().all(|v| v.failed));
        assert_eq!(v[0].message, "p99 [new]: no p99 value in this run");
        let runs = [runs[1].clone(), runs[0].clone()];
        let v = evaluate(&[parse("p99>1.5x")], &runs);
        assert_eq!(
            v[0].message,
            "p99 [base]: no p99 value in the baseline (new)"
        );
    }

    #[test]
    fn formats_human_units() {
        assert_eq!(format_micros(45.64), "45.6 µs");
        assert_eq!(format_micros(412.0), "412 µs");
        assert_eq!(format_micros(999.99), "1 ms");
        assert_eq!(format_micros(3100.0), "3.1 ms");
        assert_eq!(format_micros(2_500_000.0), "2.5 s");
        assert_eq!(format_micros(0.5), "0.5 µs");
        assert_eq!(format_rate(2_410_000.0), "2.41M/s");
        assert_eq!(format_rate(45_600.0), "45.6k/s");
        assert_eq!(format_rate(812.0), "812/s");
        assert_eq!(format_rate(0.0), "0/s");
        assert_eq!(format_bytes(35_200_000.0), "35.2 MB");
        assert_eq!(format_bytes(2_345.0), "2.35 kB");
        assert_eq!(format_value(Unit::Count, 12345.0), "12345");
        assert_eq!(ratio(2.41, Some(1.825)), Some("1.32x".to_string()));
        assert_eq!(ratio(1.0, Some(0.0)), None);
        assert_eq!(ratio(1.0, None), None);
    }

    #[test]
    fn table_shows_ratios_and_skips_empty_rows() {
        let runs = [
            summary("base", 1_830_000.0, Some((50.0, 120.0)), 0),
            summary("new", 2_410_000.0, None, 0),
        ];
        let text = render_table(&runs, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("metric") && lines[0].ends_with("new"),
            "{text}"
        );
        assert!(
            lines[1].contains("1.83M/s") && lines[1].ends_with("2.41M/s (1.32x)"),
            "{text}"
        );
        assert!(
            text.contains("e2e p99") && text.contains("120 µs"),
            "{text}"
        );
        assert!(
            !text.contains("drain rate") && !text.contains("ack p50"),
            "{text}"
        );
        assert!(!text.contains("mean"));
        let md = render_table(&runs, true);
        assert!(
            md.starts_with("| metric | base | new |\n|---|---:|---:|\n"),
            "{md}"
        );
        let prov = render_provenance(&runs, false);
        assert!(prov.contains("new: 2 cores, Test CPU, kernel 6.8.0; commit abc1234"));
        assert!(
            prov.contains("broker 127.0.0.1:1883 (ringmq 0.1.0)"),
            "{prov}"
        );
    }
}
