//! Connecting, and the two scenarios that are only about connections:
//! `connections` opens and holds idle clients, `churn` connects and
//! disconnects in a loop.

use crate::ctx::{bump, record, Local, Phase, SharedCtx};
use crate::mqtt::{ClientSpec, Conn, Target, IDLE_READ_CHUNK_BYTES};
use crate::pacer::Pacer;
use anyhow::Result;
use ringmq_protocol::Packet;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One connection attempt of client `n` (which picks its source address),
/// counted and (if `measured`) timed; to `port` of the broker's host if
/// given.
pub async fn connect(
    ctx: &SharedCtx,
    local: &Local,
    spec: &ClientSpec,
    n: usize,
    read_chunk: usize,
    measured: bool,
) -> Result<Conn> {
    connect_to(ctx, local, spec, (n, None), read_chunk, measured).await
}

/// [`connect`] to `port` (client `n`, the broker's port if `None`).
pub async fn connect_to(
    ctx: &SharedCtx,
    local: &Local,
    spec: &ClientSpec,
    (n, port): (usize, Option<u16>),
    read_chunk: usize,
    measured: bool,
) -> Result<Conn> {
    let counters = &ctx.counters[local.thread];
    let mut target = Target {
        source: ctx.source(n),
        ..ctx.target
    };
    if let Some(port) = port {
        target.addr.set_port(port);
    }
    let began = Instant::now();
    match Conn::open(&target, spec, read_chunk).await {
        Ok(conn) => {
            if measured {
                record(&local.connect, began.elapsed().as_nanos() as u64);
            }
            bump(&counters.connected, 1);
            Ok(conn)
        }
        Err(e) => {
            bump(&counters.connect_failures, 1);
            Err(e)
        }
    }
}

/// `connections`: opens this thread's clients at `rate` per second
/// (0: no pacing), at most `concurrency` at a time, and holds them.
pub async fn hold_all(
    ctx: SharedCtx,
    local: Rc<Local>,
    clients: Vec<(usize, ClientSpec)>,
    rate: f64,
    concurrency: u32,
) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1) as usize));
    let mut pacer = Pacer::new().ok();
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for (k, (n, spec)) in clients.into_iter().enumerate() {
        if rate > 0.0 {
            let at = began + Duration::from_secs_f64(k as f64 / rate);
            if let Some(p) = pacer.as_mut() {
                let _ = p.sleep_until(at).await;
            }
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (ctx, local) = (ctx.clone(), local.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let conn = connect(&ctx, &local, &spec, n, IDLE_READ_CHUNK_BYTES, true).await;
            ctx.ready.fetch_add(1, Relaxed);
            drop(permit);
            match conn {
                Ok(conn) => hold(&ctx, conn, spec.keep_alive_secs).await,
                Err(e) => ctx.error(format!("{}: {e:#}", spec.client_id)),
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Keeps a connection alive until the run stops, then disconnects.
async fn hold(ctx: &SharedCtx, mut conn: Conn, keep_alive_secs: u16) {
    let ping_every = Duration::from_secs(u64::from(keep_alive_secs.max(1)));
    let stop = ctx.wait_for(|p| p == Phase::Stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            read = conn.reader.fill() => {
                if read.is_err() {
                    return ctx.error("a held connection was closed by the broker");
                }
                while let Ok(Some(_)) = conn.reader.next_packet() {}
            }
            () = tokio::time::sleep(ping_every) => {
                if conn.send(&Packet::PingReq).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.disconnect(false).await;
}

/// `churn`: connects, disconnects and starts again until the run ends; with
/// `--connect-rate R`, each of the `-n` loops starts a connection every
/// `n / R` seconds (R together), else as fast as the broker answers.
pub async fn churn(ctx: SharedCtx, local: Rc<Local>, n: usize, spec: ClientSpec) {
    ctx.ready.fetch_add(1, Relaxed);
    let Some(window) = ctx.started().await else {
        return;
    };
    let every = (ctx.args.connect_rate > 0).then(|| {
        Duration::from_secs_f64(f64::from(ctx.args.connections) / f64::from(ctx.args.connect_rate))
    });
    let began = Instant::now();
    let mut k = 0u32;
    while ctx.clock.nanos() < window.end {
        if let Some(every) = every {
            // Loops start spread over one interval, not all at once.
            let offset = every.mul_f64(n as f64 / f64::from(ctx.args.connections.max(1)));
            tokio::time::sleep_until((began + offset + every * k).into()).await;
            k += 1;
        }
        let measured = window.measures(ctx.clock.nanos());
        match connect(&ctx, &local, &spec, n, IDLE_READ_CHUNK_BYTES, measured).await {
            Ok(conn) => {
                let _ = conn.disconnect(false).await;
            }
            Err(e) => {
                ctx.error(format!("{}: {e:#}", spec.client_id));
                // A refused broker is not hammered in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
