//! Worker threads: one per core, pinned, each a single-threaded tokio
//! runtime driving its share of the clients. Workers share nothing with
//! each other; they report to the main thread through counters, the
//! interval channel and what their thread returns.

use crate::ctx::{histogram, Interval, Local, Phase, SharedCtx};
use crate::mqtt::ClientSpec;
use crate::plan::{PubSpec, SubSpec};
use crate::publisher::{self, PubReport};
use crate::subscriber::{self, SubReport};
use crate::{cli::Scenario, connector};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::task::JoinHandle as TaskHandle;

/// A client and what it does.
#[derive(Debug)]
pub enum Role {
    /// Publishes.
    Publisher(PubSpec),
    /// Subscribes and checks.
    Subscriber(SubSpec),
    /// Connects and holds (`connections`) or loops (`churn`).
    Connector(ClientSpec),
}

/// What a worker thread returns.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Its publishers' reports.
    pub publishers: Vec<PubReport>,
    /// Its subscribers' reports.
    pub subscribers: Vec<SubReport>,
    /// Publish-to-ack latency, nanoseconds.
    pub ack: Option<Histogram<u64>>,
    /// Connect-to-CONNACK latency, nanoseconds.
    pub connect: Option<Histogram<u64>>,
}

/// Starts worker `index` with its clients, each paired with its number in
/// the run (which picks its source address); pinned to `core` if given.
pub fn spawn(
    index: usize,
    ctx: SharedCtx,
    roles: Vec<(usize, Role)>,
    core: Option<core_affinity::CoreId>,
) -> Result<JoinHandle<WorkerReport>> {
    std::thread::Builder::new()
        .name(format!("loadgen-{index}"))
        .spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            work(index, ctx, roles)
        })
        .context("starting a worker thread")
}

fn work(index: usize, ctx: SharedCtx, roles: Vec<(usize, Role)>) -> WorkerReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            ctx.error(format!("worker {index}: no runtime: {e}"));
            return WorkerReport::default();
        }
    };
    let tasks = tokio::task::LocalSet::new();
    tasks.block_on(&runtime, drive(index, ctx, roles))
}

async fn drive(index: usize, ctx: SharedCtx, roles: Vec<(usize, Role)>) -> WorkerReport {
    let local = Rc::new(Local::new(index));
    let ticker = tokio::task::spawn_local(send_intervals(ctx.clone(), local.clone()));
    let mut pubs: Vec<TaskHandle<PubReport>> = Vec::new();
    let mut subs: Vec<TaskHandle<SubReport>> = Vec::new();
    let mut others: Vec<TaskHandle<()>> = Vec::new();
    let mut held = Vec::new();
    for (n, role) in roles {
        let (ctx, local) = (ctx.clone(), local.clone());
        match role {
            Role::Publisher(spec) => pubs.push(tokio::task::spawn_local(publisher::run(
                ctx, local, spec, n,
            ))),
            Role::Subscriber(spec) => subs.push(tokio::task::spawn_local(subscriber::run(
                ctx, local, spec, n,
            ))),
            Role::Connector(spec) if ctx.args.scenario == Scenario::Churn => {
                others.push(tokio::task::spawn_local(connector::churn(
                    ctx, local, n, spec,
                )));
            }
            Role::Connector(spec) => held.push((n, spec)),
        }
    }
    if !held.is_empty() {
        let threads = ctx.counters.len() as f64;
        let rate = f64::from(ctx.args.connect_rate) / threads;
        let concurrency = ctx.args.connect_concurrency;
        let hold = connector::hold_all(ctx.clone(), local.clone(), held, rate, concurrency);
        others.push(tokio::task::spawn_local(hold));
    }
    let mut report = WorkerReport::default();
    for task in pubs {
        report.publishers.extend(task.await.ok());
    }
    for task in subs {
        report.subscribers.extend(task.await.ok());
    }
    for task in others {
        let _ = task.await;
    }
    let _ = ticker.await;
    report.ack = Some(local.ack.replace(histogram()));
    report.connect = Some(local.connect.replace(histogram()));
    report
}

/// Every second from the start, sends this thread's end-to-end latency
/// histogram of that second to the main thread; the last part at Stop.
async fn send_intervals(ctx: SharedCtx, local: Rc<Local>) {
    let Some(window) = ctx.started().await else {
        return;
    };
    let second = Duration::from_secs(1).as_nanos() as u64;
    let stop = ctx.wait_for(|p| p == Phase::Stop);
    tokio::pin!(stop);
    let mut from = window.start;
    loop {
        let next = ctx.clock.instant(from + second);
        let stopping = tokio::select! {
            _ = &mut stop => true,
            () = tokio::time::sleep_until(next.into()) => false,
        };
        let now = ctx.clock.nanos();
        let histogram = local.e2e.replace(histogram());
        if !histogram.is_empty() {
            let interval = Interval {
                start: from,
                length: now.saturating_sub(from),
                histogram,
            };
            if let Ok(tx) = ctx.intervals.lock() {
                let _ = tx.send(interval);
            }
        }
        from = now;
        if stopping {
            return;
        }
    }
}
