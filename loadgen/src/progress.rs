//! The live line on stderr: set-up progress, then current rates. Hidden
//! with `--quiet` or when stderr is not a terminal.

use crate::ctx::Ctx;
use crate::format::format_rate as rate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Rates are recomputed at most this often, so the figures are readable.
const REFRESH: Duration = Duration::from_millis(500);

/// The progress line.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    last: Cell<(Instant, u64, u64)>,
}

impl Progress {
    /// A spinner with a message, or nothing if quiet.
    pub fn new(ctx: &Ctx) -> Progress {
        let bar = if ctx.args.quiet {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new_spinner()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            last: Cell::new((Instant::now(), 0, 0)),
        }
    }

    /// While connecting.
    pub fn setup(&self, ready: u64, clients: usize, failures: u64) {
        let failed = if failures > 0 {
            format!(", {failures} failed")
        } else {
            String::new()
        };
        self.bar
            .set_message(format!("connecting {ready}/{clients}{failed}"));
    }

    /// While running: publish and delivery rates since the last refresh.
    pub fn tick(&self, published: u64, delivered: u64) {
        let (at, p0, d0) = self.last.get();
        let secs = at.elapsed().as_secs_f64();
        if secs < REFRESH.as_secs_f64() {
            return;
        }
        let pubs = published.saturating_sub(p0) as f64 / secs;
        let dels = delivered.saturating_sub(d0) as f64 / secs;
        self.bar.set_message(format!(
            "publishing {}   delivering {}   ({published} sent, {delivered} received)",
            rate(pubs),
            rate(dels)
        ));
        self.last.set((Instant::now(), published, delivered));
    }

    /// Clears the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
