//! What every request of the admin endpoint shares: the broker's handle,
//! the config, the bounds, the signature verifier and the status page's
//! last sample.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::openapi::error::ApiError;
use super::openapi::sign::Verifier;
use crate::config::Config;
use crate::core::metrics::{Histogram, Observed};
use crate::instance::Handle;
use crate::shard::NoAnswer;

/// The status page's latency percentiles cover about this much time.
const LATENCY_WINDOW: Duration = Duration::from_secs(1);
/// The shards are asked for their figures at most this often, whatever
/// the number of scrapers, viewers and health checks.
const OBSERVE_MAX_AGE: Duration = Duration::from_millis(250);
/// How long a query of the shards' figures waits.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoint's shared state.
#[derive(Debug)]
pub struct App {
    /// The broker.
    pub handle: Handle,
    /// The config in force.
    pub config: Arc<Config>,
    /// Permits for requests handled at once.
    requests: Arc<Semaphore>,
    /// When the endpoint started (uptime).
    pub started: Instant,
    verifier: Mutex<Verifier>,
    /// Recent copies of the acknowledgement latency histogram, oldest
    /// first, for the status page's "last second" percentiles.
    acks: Mutex<VecDeque<(Instant, Histogram)>>,
    /// OpenAPI requests answered.
    counts: Mutex<Counts>,
    /// The last figures asked of the shards.
    observed: Mutex<Option<Observation>>,
}

/// Every shard's figures at one moment.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When they were taken.
    pub at: Instant,
    /// The same, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Each shard's, in shard order.
    pub shards: Arc<Vec<Observed>>,
}

/// OpenAPI requests answered, by outcome.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Answered with success.
    pub ok: u64,
    /// Refused, by error code.
    pub errors: BTreeMap<String, u64>,
}

impl App {
    /// The state for `handle` and `config`.
    pub fn new(handle: Handle, config: Arc<Config>) -> App {
        let a = &config.admin;
        App {
            requests: Arc::new(Semaphore::new(a.requests_concurrent_max)),
            verifier: Mutex::new(Verifier::new(a.signature_window_secs, a.nonces_max)),
            acks: Mutex::new(VecDeque::new()),
            counts: Mutex::new(Counts::default()),
            observed: Mutex::new(None),
            started: Instant::now(),
            handle,
            config,
        }
    }

    /// A permit to handle one more request, if under
    /// `requests_concurrent_max`.
    pub fn requests_permit(self: Arc<Self>) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        Arc::clone(&self.requests).try_acquire_owned()
    }

    /// The signature verifier (held for one check: microseconds).
    pub fn verifier(&self) -> MutexGuard<'_, Verifier> {
        self.verifier.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shard's figures, at most `OBSERVE_MAX_AGE` old: the shards
    /// get one job per quarter second at most from the metrics, status
    /// and health routes together. Blocking (one query at a time): call
    /// it on the blocking pool.
    pub fn observe(&self) -> Result<Observation, NoAnswer> {
        let mut cached = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = cached.as_ref().filter(|o| o.at.elapsed() < OBSERVE_MAX_AGE) {
            return Ok(o.clone());
        }
        let shards = self
            .handle
            .controls()
            .call_all(|b, _| b.observe(), OBSERVE_TIMEOUT)?;
        let o = Observation {
            at: Instant::now(),
            time_ms: crate::instance::registrar::now_ms(),
            shards: Arc::new(shards),
        };
        *cached = Some(o.clone());
        Ok(o)
    }

    /// The acknowledgement latencies recorded over about the last second:
    /// `now` (the total taken at `at`) minus the newest copy at least a
    /// second older (or the oldest kept). However many pages poll, each
    /// sees the same window.
    pub fn ack_last_second(&self, at: Instant, now: &Histogram) -> Histogram {
        let age = |t: &Instant| at.saturating_duration_since(*t);
        let mut kept = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        while kept.len() > 1 && kept.get(1).is_some_and(|(t, _)| age(t) >= LATENCY_WINDOW) {
            kept.pop_front();
        }
        let delta = match kept.front() {
            Some((_, before)) => now.since(before),
            None => Histogram::default(),
        };
        if kept
            .back()
            .is_none_or(|(t, _)| age(t) >= LATENCY_WINDOW / 4)
        {
            kept.push_back((at, now.clone()));
        }
        delta
    }

    /// Counts one answered request of the OpenAPI (or one refused by
    /// the endpoint's bounds): a success, or the error's code.
    pub fn count(&self, error: Option<&ApiError>) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            None => c.ok += 1,
            Some(e) => *c.errors.entry(e.code.clone()).or_insert(0) += 1,
        }
    }

    /// A copy of the OpenAPI counts.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
