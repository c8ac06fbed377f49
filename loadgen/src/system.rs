//! Facts about the machine, the checkout and the broker for the summary.

use crate::mqtt::{ClientSpec, Conn, Target, IDLE_READ_CHUNK_BYTES};
use crate::summary::Machine;
use ringmq_protocol::{Packet, QoS};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a broker has to publish its version before it is left unknown.
const VERSION_WAIT: Duration = Duration::from_millis(500);

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Six hex digits naming this run's topics and client ids.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    format!("{:06x}", mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Cores, CPU model, kernel and host name.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_owned();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
    }
}

/// `git rev-parse --short HEAD` of the working directory, if it is a checkout.
pub fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// Resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident set size (VmHWM) of process `pid`, bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What the broker publishes on `$SYS/broker/version` (Mosquitto does),
/// if it does so within half a second.
pub fn broker_version(target: &Target) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(VERSION_WAIT, ask_version(target))
            .await
            .ok()
            .flatten()
    })
}

async fn ask_version(target: &Target) -> Option<String> {
    let spec = ClientSpec {
        client_id: format!("lg{}v", run_id()),
        clean: true,
        keep_alive_secs: 10,
        session_expiry_secs: None,
        username: None,
        password: None,
    };
    let mut conn = Conn::open(target, &spec, IDLE_READ_CHUNK_BYTES)
        .await
        .ok()?;
    conn.subscribe("$SYS/broker/version", QoS::AtMostOnce)
        .await
        .ok()?;
    loop {
        match conn.reader.next_packet().ok()? {
            Some(Packet::Publish(p)) => {
                let version = String::from_utf8_lossy(&p.payload).into_owned();
                let _ = conn.disconnect(false).await;
                return Some(version);
            }
            Some(_) => continue,
            None => conn.reader.fill().await.ok()?,
        }
    }
}

/// Raises the open-file soft limit to the hard limit and returns it: each
/// connection is a descriptor.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}
