//! A `ringmq` (or `mosquitto`) process on a free loopback port, the
//! `loadgen` binary, and a lossy proxy that drops and duplicates PUBLISH
//! packets on their way to the clients.
#![allow(dead_code, unreachable_pub)]

use loadgen::summary::Summary;
use ringmq_protocol::parse_fixed_header;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loadgen-test-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// The workspace's `ringmq` binary (built by `cargo test --workspace`), or `$RINGMQ_BIN`.
fn ringmq_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RINGMQ_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/ringmq
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ringmq");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ringmq` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A broker process, killed when dropped.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Broker {
    /// ringmq with one shard and its data in a fresh directory.
    pub fn ringmq(name: &str) -> Broker {
        Broker::ringmq_in(temp_dir(name), None)
    }

    /// ringmq with one shard, its data under `dir`, and `config` if given.
    fn ringmq_in(dir: PathBuf, config: Option<&Path>) -> Broker {
        let port = free_port();
        let mut cmd = Command::new(ringmq_bin());
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--shards", "1"])
            .args(["--admin-listen", ""]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringmq");
        Broker::ready(child, port, dir)
    }

    /// ringmq with TCP, TLS, WebSocket and WSS listeners, and a fresh CA
    /// (openssl) whose certificate is at `dir/ca.pem`; returns the broker
    /// and the TLS, WS and WSS ports.
    pub fn ringmq_all_transports(name: &str) -> (Broker, [u16; 3]) {
        let dir = temp_dir(name);
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (scripts/test installs it)")
                .status
                .success();
            assert!(ok, "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=loadgen-test-ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "srv.key",
                    "-out",
                    "srv.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let ports = [free_port(), free_port(), free_port()];
        let config_text = format!(
            "[listeners]\ntls = [\"127.0.0.1:{}\"]\nws = [\"127.0.0.1:{}\"]\nwss = [\"127.0.0.1:{}\"]\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ports[0],
            ports[1],
            ports[2],
            dir.join("srv.pem").display(),
            dir.join("srv.key").display(),
        );
        let config = dir.join("ringmq.toml");
        std::fs::write(&config, config_text).expect("ringmq.toml");
        (Broker::ringmq_in(dir, Some(&config)), ports)
    }

    /// mosquitto on its own port (scripts/test installs it).
    pub fn mosquitto(name: &str) -> Broker {
        let dir = temp_dir(name);
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
        .expect("mosquitto.conf");
        // Debian puts it in /usr/sbin, which a user's PATH may not have.
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto: install it (scripts/test does)");
        Broker::ready(child, port, dir)
    }

    fn ready(child: Child, port: u16, dir: PathBuf) -> Broker {
        let broker = Broker { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A finished `loadgen` invocation.
pub struct Run {
    pub output: Output,
    pub summary: Option<Summary>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// The summary, which every run that got as far as reporting writes.
    pub fn summary(&self) -> &Summary {
        self.summary.as_ref().unwrap_or_else(|| {
            panic!(
                "no summary.json; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&self.output.stdout),
                String::from_utf8_lossy(&self.output.stderr)
            )
        })
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// Runs `loadgen run` against `port` with short defaults, then `args`.
pub fn loadgen_run(port: u16, args: &[&str]) -> Run {
    let out = temp_dir("run");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--port",
            &port.to_string(),
            "--threads",
            "1",
            "-q",
            "--warmup",
            "0s",
            "-d",
            "1s",
            "--drain",
            "3s",
        ])
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .expect("run loadgen");
    let summary = Summary::read(&out.join("summary.json")).ok();
    Run { output, summary }
}

/// Runs `loadgen` with `args` (compare, plot).
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

/// A TCP proxy in front of a broker that passes everything through,
/// except that the PUBLISH packets it forwards to clients (counted from 1
/// over all connections) are dropped if their number is in `drop`, and
/// sent twice if it is in `duplicate`.
pub struct LossyProxy {
    pub port: u16,
}

impl LossyProxy {
    pub fn start(upstream: u16, drop: Vec<usize>, duplicate: Vec<usize>) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let rules = Arc::new((drop, duplicate, AtomicUsize::new(0)));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || copy(client, server));
                let rules = rules.clone();
                std::thread::spawn(move || filter_publishes(s2, c2, &rules));
            }
        });
        LossyProxy { port }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

type Rules = (Vec<usize>, Vec<usize>, AtomicUsize);

fn filter_publishes(mut from: TcpStream, mut to: TcpStream, rules: &Rules) {
    let (drop, duplicate, count) = rules;
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Ok(Some(h)) = parse_fixed_header(&pending) {
            let len = h.packet_len();
            if pending.len() < len {
                break;
            }
            let packet: Vec<u8> = pending.drain(..len).collect();
            let copies = if h.first >> 4 == 3 {
                let k = count.fetch_add(1, Ordering::SeqCst) + 1;
                usize::from(!drop.contains(&k)) + usize::from(duplicate.contains(&k))
            } else {
                1
            };
            for _ in 0..copies {
                out.extend_from_slice(&packet);
            }
        }
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
