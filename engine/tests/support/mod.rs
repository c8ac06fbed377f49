//! A real `ringmq` process on a free loopback port, for end-to-end tests.
#![allow(dead_code, unreachable_pub)]

pub mod aliyun;
pub mod client;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_protocol::properties::ConnectProperties;
use ringmq_protocol::{Connect, Decoder, MqttString, Packet, ProtocolVersion};

/// A broker process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Broker {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A fresh directory under the target dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-test-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

impl Broker {
    /// Starts `ringmq` with two shards and `extra` flags; waits until it accepts.
    pub fn start(name: &str, extra: &[&str]) -> Broker {
        let dir = temp_dir(name);
        Self::start_in(dir, free_port(), extra)
    }

    /// Starts `ringmq` on `port` with data in `dir`.
    pub fn start_in(dir: PathBuf, port: u16, extra: &[&str]) -> Broker {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log = std::fs::File::create(dir.join("broker.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args([
                "--listen",
                &addr.to_string(),
                "--shards",
                "2",
                "--log-level",
                "debug",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(admin_off(extra))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ringmq");
        let broker = Broker {
            child: Some(child),
            addr,
            dir,
        };
        broker.wait_ready();
        broker
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A port in the ephemeral range can connect to itself when
            // nothing listens (TCP simultaneous open): that is not ready.
            if let Ok(s) = TcpStream::connect(self.addr) {
                if s.local_addr().ok() != s.peer_addr().ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "ringmq did not listen on {} within 10 s; log:\n{}",
            self.addr,
            self.log()
        );
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill on the pid of a child this test owns.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ringmq did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL; returns once its port is free (a
    /// killed process's io_uring instances let go of its listening sockets
    /// a moment after it is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(self.addr).is_err() {
            assert!(Instant::now() < deadline, "port {} still taken", self.addr);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw MQTT connection for malformed-input tests.
pub struct Raw {
    pub stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            decoder: Decoder::with_version(version, 1 << 20),
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes CONNECT/CONNACK with `client_id`.
    pub fn session(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Raw {
        let mut raw = Raw::connect(addr, version);
        raw.send(
            &Packet::Connect(Box::new(connect(version, client_id))),
            version,
        );
        match raw.recv() {
            Some(Packet::ConnAck(a)) => {
                assert!(!a.reason_code.is_error(), "CONNACK {:?}", a.reason_code)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    pub fn send(&mut self, p: &Packet, v: ProtocolVersion) {
        let mut buf = BytesMut::new();
        p.encode(v, &mut buf).expect("encode");
        self.stream.write_all(&buf).expect("write");
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        // The broker may already have closed: a failed write is fine.
        let _ = self.stream.write_all(bytes);
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self
                .decoder
                .decode(&mut self.buf)
                .expect("broker sends valid packets")
            {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads until the broker closes; returns what came before.
    pub fn until_closed(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = self.recv() {
            out.push(p);
        }
        out
    }
}

pub fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        v31: false,
        clean_start: true,
        keep_alive: 30,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id.to_owned()).expect("id"),
        will: None,
        username: None,
        password: None,
    }
}

/// A client id whose home is shard `shard` of 2.
pub fn id_on_shard(prefix: &str, shard: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| ringmq_engine::core::connect::home_shard(id.as_bytes(), 2) == shard)
        .expect("some id hashes to every shard")
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// `--admin-listen ""` unless `extra` sets the admin address: test brokers
/// run side by side and must not all bind the default admin port.
fn admin_off(extra: &[&str]) -> Vec<&'static str> {
    match extra.contains(&"--admin-listen") {
        true => Vec::new(),
        false => vec!["--admin-listen", ""],
    }
}
