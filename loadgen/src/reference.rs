//! `loadgen reference`: what this host's loopback and scheduler cost on
//! their own, without a broker. One paced writer sends 64-byte frames to an
//! echo thread over loopback TCP; a reader takes them back and records the
//! round trip from the intended send time (open loop, as `run` measures).
//! Two hops through the kernel, three threads on the cores: the same kind
//! of work as a publisher → broker → subscriber path, so a host whose
//! wake-ups are slow shows it here too. The latency gate runs it next to
//! the broker's scenario to scale its thresholds to the host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::summary::Latency;
use crate::summary::Machine;

/// Arguments of `loadgen reference`.
#[derive(Debug, clap::Args)]
pub struct ReferenceArgs {
    /// Frames per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u32,
    /// How long to measure (after a 1 s warm-up).
    #[arg(long, short = 'd', default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    /// Write reference.json here (a directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What `loadgen reference` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// Frames per second asked for.
    pub rate: u32,
    /// Round trips measured.
    pub frames: u64,
    /// The round trip, µs.
    pub latency: Latency,
    /// The host it ran on.
    pub machine: Machine,
}

const FRAME_BYTES: usize = 64;

/// Runs the reference and prints (and writes) what it measured.
pub fn run(args: &ReferenceArgs) -> Result<()> {
    let reference = measure(args.rate, args.duration)?;
    let l = &reference.latency;
    println!(
        "reference: {} round trips at {}/s over loopback: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        reference.frames, reference.rate, l.p50, l.p99, l.max
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("reference.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&reference)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Reads a reference.json written by `run`.
pub fn read(path: &std::path::Path) -> Result<Reference> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

/// The measurement: echo thread, paced writer, recording reader.
pub fn measure(rate: u32, duration: Duration) -> Result<Reference> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind the echo socket")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        }
    });
    let stream = TcpStream::connect(addr).context("connect to the echo socket")?;
    stream.set_nodelay(true)?;
    let reader = stream.try_clone()?;
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    let total = warmup + duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let frames = (total.as_secs_f64() * f64::from(rate)) as u64;
    let recorder = std::thread::spawn(move || record(reader, start, warmup, frames));
    write_paced(stream, start, interval, frames)?;
    let histogram = recorder
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let _ = echo.join();
    let latency = Latency::from_histogram(&histogram)?.context("no round trip measured")?;
    Ok(Reference {
        rate,
        frames: histogram.len(),
        latency,
        machine: crate::system::machine(),
    })
}

/// Sends frame `i` at `start + i × interval`, stamped with that time.
fn write_paced(mut s: TcpStream, start: Instant, interval: Duration, frames: u64) -> Result<()> {
    let mut frame = [0u8; FRAME_BYTES];
    for i in 0..frames {
        let due = interval.mul_f64(i as f64);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        frame[..8].copy_from_slice(&(due.as_nanos() as u64).to_le_bytes());
        s.write_all(&frame).context("write to the echo socket")?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(())
}

/// Reads `frames` echoes; records those intended after `warmup`.
fn record(
    mut s: TcpStream,
    start: Instant,
    warmup: Duration,
    frames: u64,
) -> Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let mut frame = [0u8; FRAME_BYTES];
    let warmup = warmup.as_nanos() as u64;
    for _ in 0..frames {
        s.read_exact(&mut frame)
            .context("read from the echo socket")?;
        let mut due = [0u8; 8];
        due.copy_from_slice(&frame[..8]);
        let due = u64::from_le_bytes(due);
        let now = start.elapsed().as_nanos() as u64;
        if due >= warmup {
            h.saturating_record(now.saturating_sub(due).max(1_000));
        }
    }
    Ok(h)
}
