//! `loadgen run --find-max`: the highest rate a broker sustains for a
//! scenario. A run is sustained when nothing was lost, its end-to-end p99
//! stayed within `--p99-max`, and the publishers kept up with the rate
//! (a broker that cannot take the messages slows an open-loop publisher).
//! From `--rate`, the rate doubles while runs are sustained, then the gap
//! between the highest sustained rate and the lowest that was not is
//! halved `--find-max-steps` times.

use crate::cli::RunArgs;
use crate::run;
use crate::summary::Summary;
use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;

/// A run's publish rate below this share of the asked rate: not kept up.
const KEPT_UP: f64 = 0.95;
/// Doublings at most before a rate that is not sustained is found.
const DOUBLINGS_MAX: usize = 12;

/// One run of the search.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The rate asked for, messages/s in.
    pub rate: f64,
    /// What the publishers achieved, messages/s.
    pub publish_rate: f64,
    /// Deliveries per second.
    pub delivery_rate: f64,
    /// End-to-end p99, µs.
    pub p99_us: Option<f64>,
    /// Messages lost.
    pub lost: u64,
    /// Whether the run was sustained.
    pub sustained: bool,
    /// Why not, if not.
    pub why: Option<String>,
}

/// The outcome, written to `find-max.json` in `--out`.
#[derive(Debug, Serialize)]
pub struct FindMax {
    /// The highest sustained rate, messages/s in (none: not even the first).
    pub sustained_rate: Option<f64>,
    /// Deliveries/s of that run.
    pub sustained_delivery_rate: Option<f64>,
    /// The p99 bound, µs.
    pub p99_max_us: f64,
    /// Every run, in order.
    pub steps: Vec<Step>,
}

fn judge(s: &Summary, rate: f64, p99_max_us: f64) -> Step {
    let r = &s.results;
    let p99 = r.latency.as_ref().map(|l| l.p99);
    let why = if r.checks.lost > 0 {
        Some(format!("{} lost", r.checks.lost))
    } else if p99.is_none_or(|p| p > p99_max_us) {
        Some(format!("p99 {:.1} ms", p99.unwrap_or(f64::NAN) / 1e3))
    } else if r.publish_rate < rate * KEPT_UP {
        Some(format!("published {:.0}/s", r.publish_rate))
    } else {
        None
    };
    Step {
        rate,
        publish_rate: r.publish_rate,
        delivery_rate: r.delivery_rate,
        p99_us: p99,
        lost: r.checks.lost,
        sustained: why.is_none(),
        why,
    }
}

fn failed(rate: f64, e: &anyhow::Error) -> Step {
    Step {
        rate,
        publish_rate: 0.0,
        delivery_rate: 0.0,
        p99_us: None,
        lost: 0,
        sustained: false,
        why: Some(format!("run failed: {e:#}")),
    }
}

/// The next rate to try, or none when the search is done.
fn next_rate(good: Option<f64>, bad: Option<f64>, halvings: u32, steps: u32) -> Option<f64> {
    match (good, bad) {
        (Some(g), None) => Some(g * 2.0),
        (g, Some(b)) if halvings < steps => Some((g.unwrap_or(0.0) + b) / 2.0),
        _ => None,
    }
}

/// `rate`, no higher than `max` (0: no limit).
fn limit(rate: f64, max: f64) -> f64 {
    match max > 0.0 {
        true => rate.min(max),
        false => rate,
    }
}

/// Runs at `rate`, again up to `--find-max-retries` times while it is not
/// sustained; every run goes into `steps`. Returns the last run's verdict.
fn try_rate(
    args: &RunArgs,
    rate: f64,
    n: usize,
    p99_max_us: f64,
    steps: &mut Vec<Step>,
) -> Result<Step> {
    let mut attempt = 0;
    loop {
        let mut one = args.clone();
        one.find_max = false;
        one.rate = Some(rate);
        one.out = args
            .out
            .as_ref()
            .map(|d| d.join(format!("step-{n}-{attempt}")));
        one.label = Some(format!(
            "{} at {rate:.0}/s",
            args.label.as_deref().unwrap_or("run")
        ));
        // A run that could not even start (the broker refused its clients,
        // or is gone) is a rate not sustained, not the end of the search.
        let step = match run::run_once(one) {
            Ok(summary) => judge(&summary, rate, p99_max_us),
            Err(e) => failed(rate, &e),
        };
        eprintln!(
            "find-max: {rate:.0}/s: {}",
            step.why.as_deref().unwrap_or("sustained")
        );
        steps.push(step.clone());
        if step.sustained || attempt >= args.find_max_retries {
            return Ok(step);
        }
        attempt += 1;
    }
}

/// Runs the search and prints what it found.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let mut rate = args.rate.unwrap_or(1_000.0);
    let p99_max_us = args.p99_max.as_secs_f64() * 1e6;
    let (mut good, mut bad) = (None::<f64>, None::<f64>);
    let (mut steps, mut halvings) = (Vec::new(), 0);
    let mut best_delivery = None;
    for n in 0.. {
        let step = try_rate(&args, rate, n, p99_max_us, &mut steps)?;
        if bad.is_some() {
            halvings += 1;
        }
        if step.sustained {
            good = Some(rate);
            best_delivery = Some(step.delivery_rate);
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
        }
        let doubled_enough = bad.is_none() && n >= DOUBLINGS_MAX;
        let at_max = args.rate_max > 0.0 && good.is_some_and(|g| g >= args.rate_max);
        match next_rate(good, bad, halvings, args.find_max_steps) {
            Some(next) if !doubled_enough && !at_max => rate = limit(next, args.rate_max),
            _ => break,
        }
    }
    let found = FindMax {
        sustained_rate: good,
        sustained_delivery_rate: best_delivery,
        p99_max_us,
        steps,
    };
    print(&found);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("find-max.json"),
            serde_json::to_vec_pretty(&found)?,
        )?;
    }
    Ok(match found.sustained_rate {
        Some(_) => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    })
}

fn print(f: &FindMax) {
    println!(
        "find-max (p99 within {:.1} ms, nothing lost):",
        f.p99_max_us / 1e3
    );
    println!(
        "  {:>12} {:>12} {:>12} {:>10} {:>8}  verdict",
        "rate", "published", "delivered", "p99", "lost"
    );
    for s in &f.steps {
        let p99 = s
            .p99_us
            .map_or("-".into(), |p| format!("{:.2} ms", p / 1e3));
        println!(
            "  {:>10.0}/s {:>10.0}/s {:>10.0}/s {:>10} {:>8}  {}",
            s.rate,
            s.publish_rate,
            s.delivery_rate,
            p99,
            s.lost,
            s.why.as_deref().unwrap_or("sustained")
        );
    }
    match (f.sustained_rate, f.sustained_delivery_rate) {
        (Some(r), Some(d)) => println!("  sustained: {r:.0} msgs/s in, {d:.0} deliveries/s"),
        _ => println!("  sustained: none (not even the first rate)"),
    }
}

#[cfg(test)]
mod tests {
    use super::next_rate;

    #[test]
    fn doubles_then_halves_the_gap() {
        assert_eq!(next_rate(Some(1000.0), None, 0, 4), Some(2000.0));
        assert_eq!(next_rate(Some(2000.0), Some(4000.0), 0, 4), Some(3000.0));
        assert_eq!(next_rate(None, Some(1000.0), 1, 4), Some(500.0));
        assert_eq!(next_rate(Some(3000.0), Some(3500.0), 4, 4), None);
    }
}
