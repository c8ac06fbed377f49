//! `loadgen run`: starts the workers, moves the run through its phases,
//! samples the counters at the edges of the measured window, and turns
//! what the workers report into a [`Summary`].

use crate::checks;
use crate::cli::{MqttVersion, RunArgs, Scenario};
use crate::ctx::{histogram, Ctx, Interval, Phase, SharedCtx, Window};
use crate::identity::Identity;
use crate::mqtt::Target;
use crate::plan::{self, Plan};
use crate::progress::Progress;
use crate::report;
use crate::summary::{Latency, Results, Summary};
use crate::system;
use crate::worker::{self, Role, WorkerReport};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ringmq_protocol::ProtocolVersion;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long clients may take to connect and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Deliveries have stopped once the count holds still this long.
const QUIET: Duration = Duration::from_millis(300);
/// The longest wait for a broker still delivering after the last publish.
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// How often the main thread looks at the counters.
const TICK: Duration = Duration::from_millis(50);
/// Ports one source address gives on loopback, with room to spare.
const CONNECTIONS_PER_SOURCE: usize = 25_000;

/// Runs a scenario and reports it; the exit code fails a run whose QoS ≥ 1
/// subscribers lost messages, or whose clients could not be set up.
/// `--find-max` runs it at one rate after another (see [`crate::findmax`]).
pub fn run(args: RunArgs) -> Result<ExitCode> {
    if args.find_max {
        return crate::findmax::run(args);
    }
    let summary = run_once(args)?;
    Ok(exit_code(&summary))
}

/// One run: prints its report, writes it to `--out`, returns its summary.
pub fn run_once(args: RunArgs) -> Result<Summary> {
    let run_id = system::run_id();
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("loadgen/{run_id}"));
    let plan = plan::build(&args, &Identity::new(&args, &run_id), &prefix)?;
    let addr = resolve(&args.host, args.port)?;
    let version = match args.mqtt_version {
        MqttVersion::V311 => ProtocolVersion::V311,
        MqttVersion::V5 => ProtocolVersion::V5,
    };
    let clients = plan.publishers.len() + plan.subscribers.len() + plan.connectors.len();
    let fds = system::raise_fd_limit();
    // A few descriptors per thread (runtime, timers) besides one per client.
    if clients as u64 + 64 > fds {
        bail!("{clients} clients need more open files than the limit of {fds} (ulimit -n)");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, clients.max(1));
    crate::transport::init(args.transport, args.ca_file.as_deref())?;
    let target = Target {
        addr,
        source: None,
        version,
        transport: args.transport,
        send_buffer_bytes: args.socket_send_bytes,
        receive_buffer_bytes: args.socket_receive_bytes,
    };
    let broker_version = args
        .broker_version
        .clone()
        .or_else(|| system::broker_version(&target));
    let rss_before = args.broker_pid.and_then(system::rss_bytes);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (interval_tx, interval_rx) = mpsc::channel();
    let ctx = Arc::new(Ctx {
        sources: sources(&args, addr, clients)?,
        clock: crate::stamp::Clock::start(),
        target,
        phase: phase_rx,
        counters: (0..threads).map(|_| Default::default()).collect(),
        ready: Default::default(),
        publishers_done: Default::default(),
        errors: Mutex::new(Vec::new()),
        intervals: Mutex::new(interval_tx),
        args,
    });
    let started_unix_secs = system::unix_secs();
    let workers = start_workers(&ctx, &plan, threads)?;
    let progress = Progress::new(&ctx);
    let driver = Driver {
        ctx: &ctx,
        phase: &phase_tx,
        progress: &progress,
        plan: &plan,
        rss_before,
    };
    let driven = driver.drive(clients);
    let _ = phase_tx.send(Phase::Stop);
    let reports: Vec<WorkerReport> = workers.into_iter().filter_map(|w| w.join().ok()).collect();
    progress.finish();
    let mut results = driven?;
    let intervals: Vec<Interval> = interval_rx.try_iter().collect();
    fill_results(&ctx, &plan, &reports, &intervals, &mut results)?;
    if let Some(pid) = ctx.args.broker_pid {
        results.broker_rss_bytes = results.broker_rss_bytes.or_else(|| system::rss_bytes(pid));
        results.broker_peak_rss_bytes = system::peak_rss_bytes(pid);
    }
    let summary = Summary {
        loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
        label: ctx
            .args
            .label
            .clone()
            .unwrap_or_else(|| default_label(&ctx.args)),
        started_unix_secs,
        config: serde_json::to_value(&ctx.args)?,
        broker: crate::summary::BrokerInfo {
            address: addr.to_string(),
            version: broker_version,
            pid: ctx.args.broker_pid,
        },
        machine: system::machine(),
        commit: system::commit(),
        results,
    };
    report::print(&summary);
    if let Some(dir) = &ctx.args.out {
        report::write(dir, &summary, &intervals)?;
    }
    Ok(summary)
}

fn exit_code(s: &Summary) -> ExitCode {
    let r = &s.results;
    if r.checks.qos >= 1 && r.checks.lost > 0 {
        eprintln!(
            "loadgen: {} messages lost at QoS {}",
            r.checks.lost, r.checks.qos
        );
        return ExitCode::FAILURE;
    }
    if r.connect_failures > 0 {
        eprintln!("loadgen: {} clients failed to connect", r.connect_failures);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn default_label(args: &RunArgs) -> String {
    let scenario = serde_json::to_value(args.scenario)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{scenario} qos{}", args.qos())
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// 127.0.0.1..=N for a loopback IPv4 target with more clients than one
/// source address has ports for; nothing (the kernel picks) otherwise.
fn sources(args: &RunArgs, addr: SocketAddr, clients: usize) -> Result<Vec<IpAddr>> {
    let needed = clients.div_ceil(CONNECTIONS_PER_SOURCE);
    let n = args.source_ips.map_or(needed, usize::from);
    let loopback = matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
    if n <= 1 {
        return Ok(Vec::new());
    }
    if !loopback {
        bail!("--source-ips needs a 127.0.0.x target; {} connections from one address may run out of ports", clients);
    }
    Ok((1..=n.min(254))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect())
}

/// Deals the clients out to the threads, subscribers first so that each
/// thread has some of every role.
fn start_workers(
    ctx: &SharedCtx,
    plan: &Plan,
    threads: usize,
) -> Result<Vec<std::thread::JoinHandle<WorkerReport>>> {
    let mut roles: Vec<Vec<(usize, Role)>> = (0..threads).map(|_| Vec::new()).collect();
    let all = plan
        .subscribers
        .iter()
        .cloned()
        .map(Role::Subscriber)
        .chain(plan.publishers.iter().cloned().map(Role::Publisher))
        .chain(plan.connectors.iter().cloned().map(Role::Connector));
    for (n, role) in all.enumerate() {
        roles[n % threads].push((n, role));
    }
    let cores = if ctx.args.no_pin {
        None
    } else {
        core_affinity::get_core_ids()
    };
    roles
        .into_iter()
        .enumerate()
        .map(|(i, roles)| {
            let core = cores
                .as_ref()
                .and_then(|c| c.get(i % c.len().max(1)).copied());
            worker::spawn(i, ctx.clone(), roles, core)
        })
        .collect()
}

/// Sums over worker threads.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    published: u64,
    delivered: u64,
    connected: u64,
    failures: u64,
    last_delivery: u64,
}

fn totals(ctx: &Ctx) -> Totals {
    ctx.counters.iter().fold(Totals::default(), |t, c| Totals {
        published: t.published + c.published.load(Relaxed),
        delivered: t.delivered + c.delivered.load(Relaxed),
        connected: t.connected + c.connected.load(Relaxed),
        failures: t.failures + c.connect_failures.load(Relaxed),
        last_delivery: t.last_delivery.max(c.last_delivery.load(Relaxed)),
    })
}

/// The main thread's part of a run.
struct Driver<'a> {
    ctx: &'a SharedCtx,
    phase: &'a watch::Sender<Phase>,
    progress: &'a Progress,
    plan: &'a Plan,
    rss_before: Option<u64>,
}

impl Driver<'_> {
    fn drive(&self, clients: usize) -> Result<Results> {
        let mut results = Results::default();
        let began = Instant::now();
        self.set_up(clients)?;
        let setup = totals(self.ctx);
        results.connections = setup.connected;
        let scenario = self.ctx.args.scenario;
        if scenario == Scenario::Connections {
            results.connect_rate =
                Some(setup.connected as f64 / began.elapsed().as_secs_f64().max(1e-9));
        }
        if setup.failures > 0 && scenario != Scenario::Connections {
            bail!(
                "{} of {clients} clients could not connect or subscribe: {}",
                setup.failures,
                self.first_error()
            );
        }
        if scenario == Scenario::Connections {
            self.connections(&mut results);
            return Ok(results);
        }
        let start = self.ctx.clock.nanos();
        let _ = self.phase.send(Phase::Run { start });
        match scenario {
            Scenario::Offline => self.offline(start, &mut results),
            _ => self.timed(start, &mut results),
        }
        Ok(results)
    }

    fn first_error(&self) -> String {
        self.ctx
            .errors
            .lock()
            .ok()
            .and_then(|e| e.first().cloned())
            .unwrap_or_default()
    }

    fn set_up(&self, clients: usize) -> Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while (self.ctx.ready.load(Relaxed) as usize) < clients {
            if Instant::now() > deadline {
                bail!(
                    "clients still connecting after {SETUP_TIMEOUT:?}: {}",
                    self.first_error()
                );
            }
            self.progress.setup(
                self.ctx.ready.load(Relaxed),
                clients,
                totals(self.ctx).failures,
            );
            std::thread::sleep(TICK);
        }
        Ok(())
    }

    /// `connections`: holds them for `--duration`; the broker's RSS is read
    /// after one second of settling.
    fn connections(&self, results: &mut Results) {
        let settle = Duration::from_secs(1);
        let duration = self.ctx.args.duration;
        self.hold(settle.min(duration));
        if let (Some(pid), Some(before)) = (self.ctx.args.broker_pid, self.rss_before) {
            let after = system::rss_bytes(pid);
            results.broker_rss_bytes = after;
            if let Some(after) = after.filter(|_| results.connections > 0) {
                let grown = after as f64 - before as f64;
                results.rss_bytes_per_connection = Some(grown / results.connections as f64);
            }
        }
        self.hold(duration.saturating_sub(settle));
        results.measured_secs = duration.as_secs_f64();
    }

    fn hold(&self, length: Duration) {
        let until = Instant::now() + length;
        while Instant::now() < until {
            self.progress
                .tick(totals(self.ctx).published, totals(self.ctx).delivered);
            std::thread::sleep(TICK);
        }
    }

    fn sleep_until_nanos(&self, t: u64) {
        while self.ctx.clock.nanos() < t {
            let t0 = totals(self.ctx);
            self.progress.tick(t0.published, t0.delivered);
            let left = Duration::from_nanos(t.saturating_sub(self.ctx.clock.nanos()));
            std::thread::sleep(left.min(TICK));
        }
    }

    /// Fixed-length scenarios: counters sampled at the window's edges.
    fn timed(&self, start: u64, results: &mut Results) {
        let window = Window::new(start, self.ctx.args.warmup, self.ctx.args.duration);
        self.sleep_until_nanos(window.measure_from);
        let (t0, c0) = (self.ctx.clock.nanos(), totals(self.ctx));
        self.sleep_until_nanos(window.end);
        let (t1, c1) = (self.ctx.clock.nanos(), totals(self.ctx));
        let secs = (t1 - t0) as f64 / 1e9;
        results.measured_secs = secs;
        results.published = c1.published - c0.published;
        results.delivered = c1.delivered - c0.delivered;
        results.publish_rate = results.published as f64 / secs;
        results.delivery_rate = results.delivered as f64 / secs;
        if self.ctx.args.scenario == Scenario::Churn {
            results.connections = c1.connected;
            results.connect_rate = Some((c1.connected - c0.connected) as f64 / secs);
        }
        self.drain();
    }

    /// After the last publish: waits until the publishers have their acks
    /// and deliveries have stopped. A broker still delivering its backlog
    /// is waited for (up to [`DRAIN_MAX`]), so that late is not counted as
    /// lost; one that delivers nothing for `--drain` is done.
    fn drain(&self) {
        let began = Instant::now();
        let publishers = self.plan.publishers.len() as u64;
        let mut last = totals(self.ctx).delivered;
        let mut still_since = Instant::now();
        while began.elapsed() < DRAIN_MAX.max(self.ctx.args.drain) {
            std::thread::sleep(TICK);
            let t = totals(self.ctx);
            self.progress.tick(t.published, t.delivered);
            if t.delivered != last {
                (last, still_since) = (t.delivered, Instant::now());
            }
            let done = self.ctx.publishers_done.load(Relaxed) >= publishers;
            if (done && still_since.elapsed() >= QUIET)
                || still_since.elapsed() >= self.ctx.args.drain
            {
                return;
            }
        }
    }

    /// `offline`: publish everything, then bring the subscribers back and
    /// time how fast their sessions drain.
    fn offline(&self, start: u64, results: &mut Results) {
        let publishers = self.plan.publishers.len() as u64;
        while self.ctx.publishers_done.load(Relaxed) < publishers {
            let t = totals(self.ctx);
            self.progress.tick(t.published, t.delivered);
            std::thread::sleep(TICK);
        }
        let published = totals(self.ctx);
        let publish_secs = (self.ctx.clock.nanos() - start) as f64 / 1e9;
        results.published = published.published;
        results.publish_rate = published.published as f64 / publish_secs;
        let back = self.ctx.clock.nanos();
        let _ = self.phase.send(Phase::Reconnect);
        let expected = published.published * self.plan.subscribers.len() as u64;
        let mut last = (published.delivered, Instant::now());
        while Instant::now().duration_since(last.1) < self.ctx.args.drain {
            let t = totals(self.ctx);
            self.progress.tick(t.published, t.delivered);
            if t.delivered >= expected {
                break;
            }
            if t.delivered != last.0 {
                last = (t.delivered, Instant::now());
            }
            std::thread::sleep(TICK);
        }
        let t = totals(self.ctx);
        let secs = (t.last_delivery.max(back + 1) - back) as f64 / 1e9;
        results.delivered = t.delivered - published.delivered;
        results.measured_secs = secs;
        results.delivery_rate = results.delivered as f64 / secs;
        results.drain_rate = Some(results.delivery_rate);
    }
}

/// Adds what only the workers' reports tell: latencies and checks.
fn fill_results(
    ctx: &Ctx,
    plan: &Plan,
    reports: &[WorkerReport],
    intervals: &[Interval],
    results: &mut Results,
) -> Result<()> {
    let mut e2e = histogram();
    for i in intervals {
        e2e.add(&i.histogram).ok();
    }
    let merged = |pick: fn(&WorkerReport) -> Option<&Histogram<u64>>| {
        let mut h = histogram();
        for r in reports {
            if let Some(x) = pick(r) {
                h.add(x).ok();
            }
        }
        h
    };
    results.latency = Latency::from_histogram(&e2e)?;
    results.ack_latency = Latency::from_histogram(&merged(|r| r.ack.as_ref()))?;
    results.connect_latency = Latency::from_histogram(&merged(|r| r.connect.as_ref()))?;
    let t = totals(ctx);
    results.connect_failures = t.failures;
    if ctx.args.scenario != Scenario::Churn {
        results.connections = results.connections.max(t.connected.min(plan_clients(plan)));
    }
    let qos = ctx.args.qos().min(ctx.args.sub_qos());
    results.checks = checks::check(plan, reports, qos);
    results.errors = ctx.errors.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(())
}

fn plan_clients(plan: &Plan) -> u64 {
    (plan.publishers.len() + plan.subscribers.len() + plan.connectors.len()) as u64
}
