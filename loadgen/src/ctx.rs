//! What the worker threads share with the main thread: the run's phase,
//! its clock and target, and per-thread counters; and what each worker
//! keeps to itself: its histograms.

use crate::cli::{RunArgs, Scenario};
use crate::mqtt::Target;
use crate::stamp::Clock;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Where the run is. Only the main thread moves it forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Clients connect and subscribe.
    Setup,
    /// Publishing started at `start` (nanoseconds on the run's clock).
    Run {
        /// Start of the run, clock nanoseconds.
        start: u64,
    },
    /// `offline`: the subscribers come back.
    Reconnect,
    /// Everyone disconnects and reports.
    Stop,
}

/// The run's timeline, from the start that `Phase::Run` announces.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Publishing starts.
    pub start: u64,
    /// Warm-up ends: latency counts for messages sent from here.
    pub measure_from: u64,
    /// Publishing stops.
    pub end: u64,
}

impl Window {
    /// The window of a run started at `start`.
    pub fn new(start: u64, warmup: Duration, duration: Duration) -> Window {
        let measure_from = start + warmup.as_nanos() as u64;
        Window {
            start,
            measure_from,
            end: measure_from + duration.as_nanos() as u64,
        }
    }

    /// Whether a message sent at `sent` is measured.
    pub fn measures(&self, sent: u64) -> bool {
        sent >= self.measure_from && sent < self.end
    }
}

/// Counters of one worker thread. Only that thread writes them (a load
/// and a store, no locked instruction); the main thread reads them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// PUBLISH packets written.
    pub published: AtomicU64,
    /// PUBLISH packets received by subscribers.
    pub delivered: AtomicU64,
    /// Connections that got a CONNACK.
    pub connected: AtomicU64,
    /// Connections that failed or were refused.
    pub connect_failures: AtomicU64,
    /// Clock nanoseconds of the latest delivery.
    pub last_delivery: AtomicU64,
}

/// Adds `n` to a counter that only the calling thread writes.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed) + n, Relaxed);
}

/// One second (or the remainder) of end-to-end latency from one thread.
#[derive(Debug)]
pub struct Interval {
    /// Start of the interval, clock nanoseconds.
    pub start: u64,
    /// Its length, nanoseconds.
    pub length: u64,
    /// The latencies, nanoseconds.
    pub histogram: Histogram<u64>,
}

/// Shared by every thread of a run.
#[derive(Debug)]
pub struct Ctx {
    /// The command line.
    pub args: RunArgs,
    /// The run's clock.
    pub clock: Clock,
    /// The broker.
    pub target: Target,
    /// Source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
    /// The phase, announced by the main thread.
    pub phase: watch::Receiver<Phase>,
    /// One set of counters per worker thread.
    pub counters: Vec<Counters>,
    /// Clients connected (and subscribed) during set-up.
    pub ready: AtomicU64,
    /// Publishers that have sent their last message and seen its ack.
    pub publishers_done: AtomicU64,
    /// The first errors, for the report.
    pub errors: Mutex<Vec<String>>,
    /// Where the workers send their latency intervals.
    pub intervals: Mutex<mpsc::Sender<Interval>>,
}

/// Errors kept for the report; the rest are only counted.
const ERRORS_KEPT: usize = 20;

impl Ctx {
    /// Keeps an error for the report.
    pub fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < ERRORS_KEPT {
                errors.push(e.to_string());
            }
        }
    }

    /// The source address for connection `n`.
    pub fn source(&self, n: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[n % self.sources.len()])
    }

    /// The port subscriber `n` connects to, if `--subscriber-ports` names
    /// any (else the broker's).
    pub fn subscriber_port(&self, n: usize) -> Option<u16> {
        let ports = &self.args.subscriber_ports;
        (!ports.is_empty()).then(|| ports[n % ports.len()])
    }

    /// Waits for a phase that `pred` accepts; `None` if the run was torn down.
    pub async fn wait_for(&self, pred: impl Fn(Phase) -> bool) -> Option<Phase> {
        let mut rx = self.phase.clone();
        let phase = *rx.wait_for(|p| pred(*p)).await.ok()?;
        Some(phase)
    }

    /// Waits for the run to start and returns its window.
    pub async fn started(&self) -> Option<Window> {
        let phase = self.wait_for(|p| !matches!(p, Phase::Setup)).await?;
        match phase {
            // Offline publishers send a count, not for a time: all of it is measured.
            Phase::Run { start } if self.args.scenario == Scenario::Offline => Some(Window {
                start,
                measure_from: start,
                end: u64::MAX,
            }),
            Phase::Run { start } => Some(Window::new(start, self.args.warmup, self.args.duration)),
            _ => None,
        }
    }
}

/// Latency histograms recorded in nanoseconds, 1 ns to one hour, three
/// significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant bounds: low 1, high ≥ 2 × low, 3 significant digits")
}

/// What one worker thread records, shared by its tasks.
#[derive(Debug)]
pub struct Local {
    /// Index of the thread.
    pub thread: usize,
    /// End-to-end latency of the current interval.
    pub e2e: RefCell<Histogram<u64>>,
    /// Publish-to-ack latency.
    pub ack: RefCell<Histogram<u64>>,
    /// Connect-to-CONNACK latency.
    pub connect: RefCell<Histogram<u64>>,
}

impl Local {
    /// Empty histograms for thread `thread`.
    pub fn new(thread: usize) -> Local {
        Local {
            thread,
            e2e: RefCell::new(histogram()),
            ack: RefCell::new(histogram()),
            connect: RefCell::new(histogram()),
        }
    }
}

/// Records `value` (nanoseconds), saturating at the histogram's bound.
pub fn record(h: &RefCell<Histogram<u64>>, value: u64) {
    h.borrow_mut().saturating_record(value.max(1));
}

/// The context, shared.
pub type SharedCtx = Arc<Ctx>;
