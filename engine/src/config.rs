//! Configuration: a TOML file (every key optional; see `ringmq.toml` at the
//! repository root for an annotated example), overridden by flags. With
//! neither, the broker listens on 127.0.0.1:1883 with data under `./data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::aliyun::AliyunConfig;
use crate::core::trace::TraceConfig;
use crate::core::Limits;

/// Which rules the broker follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Plain MQTT 3.1.1 / 5.0: any standard client works.
    #[default]
    Standard,
    /// Alibaba Cloud MQTT: its names, limits, sign-in modes, P2P topics,
    /// notifications and traces (see the `[aliyun]` table).
    Aliyun,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `standard` or `aliyun`.
    pub profile: Profile,
    /// Shards (executors, one per core); 0 means one per available core.
    pub shards: usize,
    /// Where persistent state lives; also locked so that one broker owns it.
    pub data_dir: PathBuf,
    /// Log filter, as for `RUST_LOG` (`info`, `ringmq=debug`, …).
    pub log_level: String,
    /// Addresses to accept MQTT over TCP on.
    pub listeners: Listeners,
    /// Who may connect and what they may do.
    pub auth: AuthConfig,
    /// Protocol and resource limits.
    pub limits: Limits,
    /// Executor and queue sizing.
    pub runtime: Runtime,
    /// The logs that keep persistent sessions and retained messages.
    pub storage: Storage,
    /// The admin HTTP endpoint.
    pub admin: Admin,
    /// The TLS listeners' certificate and key.
    pub tls: TlsConfig,
    /// The Alibaba Cloud MQTT profile's instance and limits.
    pub aliyun: AliyunConfig,
    /// The message and device trace store.
    pub trace: TraceConfig,
    /// The NATS servers the bridge connects to.
    pub nats: crate::bridge::NatsConfig,
    /// What the bridge sends to NATS (`[[rules]]`).
    pub rules: Vec<crate::bridge::Rule>,
    /// This node's place in a cluster of ringmq nodes on one NATS.
    pub cluster: crate::bridge::ClusterConfig,
}

/// The admin HTTP endpoint (the OpenAPI, metrics, health, status page)
/// and the `$SYS` topics. Every bound keeps a slow or hostile HTTP client
/// away from the shards: the endpoint has its own thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Address to serve on; empty: no endpoint.
    pub listen: String,
    /// Largest request body accepted (413 above).
    pub body_bytes_max: usize,
    /// Largest request head (request line and headers) accepted.
    pub header_bytes_max: usize,
    /// Requests handled at once; more get 400 `Throttling` at once.
    pub requests_concurrent_max: usize,
    /// Open HTTP connections; more wait in the listen backlog.
    pub connections_max: usize,
    /// Time for a request once its head is read: body and answer (504
    /// after; the work may still complete).
    pub request_timeout_secs: u64,
    /// Time an idle keep-alive connection is kept, and a request head may
    /// take to arrive.
    pub idle_timeout_secs: u64,
    /// OpenAPI signatures: accepted timestamps lie within this of the
    /// server's clock (the product's 15 minutes).
    pub signature_window_secs: u64,
    /// Nonces remembered for the replay check (about 40 bytes each);
    /// when full, signed requests get 503 `Throttling`.
    pub nonces_max: usize,
    /// `$SYS/broker/…` topics are published (retained) this often; 0:
    /// never.
    pub sys_interval_secs: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:18083".into(),
            body_bytes_max: 64 << 10,
            header_bytes_max: 16 << 10,
            requests_concurrent_max: 64,
            connections_max: 256,
            request_timeout_secs: 10,
            idle_timeout_secs: 30,
            signature_window_secs: 900,
            nonces_max: 1_000_000,
            sys_interval_secs: 10,
        }
    }
}

/// When the logs are synced to disk (msync). Every policy survives a
/// crash of the process (the log is in the kernel's page cache before a
/// publisher is acknowledged); they differ on a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    /// Never: the kernel writes the pages back when it likes (≈30 s).
    Never,
    /// Every `flush_interval_millis`.
    Interval,
    /// Before every acknowledgement of a publish (group commit).
    Always,
}

/// Persistence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Whether persistent sessions and retained messages are kept on disk.
    pub enabled: bool,
    /// When the logs are synced.
    pub flush: Flush,
    /// Period of `flush = interval`, in milliseconds.
    pub flush_interval_millis: u64,
    /// Size of one offline-log segment file, in bytes (a larger message
    /// gets a segment of its own).
    pub segment_bytes: usize,
    /// Size of one state-log segment file, in bytes; the state log is
    /// compacted into a snapshot when its older segments pass this size
    /// times 4 plus twice the last snapshot.
    pub state_segment_bytes: usize,
    /// Bytes of offline-log segment files per instance, split over the
    /// shards; 0: as much as the disk holds. When a shard's log can grow
    /// no more (this cap, or the disk is full), QoS 1/2 publishes on it
    /// are refused until acknowledgements free a segment.
    pub disk_bytes_max: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            enabled: true,
            flush: Flush::Interval,
            flush_interval_millis: 10,
            segment_bytes: 8 << 20,
            state_segment_bytes: 1 << 20,
            disk_bytes_max: 0,
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// MQTT over TCP.
    pub tcp: Vec<SocketAddr>,
    /// MQTT over TLS (needs `[tls]`).
    pub tls: Vec<SocketAddr>,
    /// MQTT over WebSocket.
    pub ws: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS (needs `[tls]`).
    pub wss: Vec<SocketAddr>,
    /// The path of the WebSocket upgrade (`ws://host:port/mqtt`).
    pub ws_path: String,
    /// Kernel receive buffer of each client socket (`SO_RCVBUF`; the
    /// kernel doubles it); 0 leaves it to the kernel's autotuning, which
    /// can grow it to `net.ipv4.tcp_rmem`'s maximum. Bounds what a paused
    /// publisher's socket holds unread: see tuning.md.
    pub socket_receive_bytes: u32,
    /// Kernel send buffer of each client socket (`SO_SNDBUF`; the kernel
    /// doubles it); 0 leaves it to the kernel's autotuning. Bounds what is
    /// written but not yet taken by a subscriber, out of the broker's
    /// backlog accounting.
    pub socket_send_bytes: u32,
}

impl Listeners {
    /// Every address, of every kind.
    pub fn all(&self) -> impl Iterator<Item = &SocketAddr> + Clone {
        self.tcp
            .iter()
            .chain(&self.tls)
            .chain(&self.ws)
            .chain(&self.wss)
    }
}

/// The server's certificate and key, for the TLS listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's own first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; set,
    /// the TLS listeners ask clients for a certificate.
    pub ca_file: Option<PathBuf>,
    /// With `ca_file`: a client without a valid certificate is refused
    /// (else it may connect without one; a bad one is refused anyway).
    pub require_client_cert: bool,
    /// With `ca_file`: the client certificate's subject CN stands as the
    /// MQTT user name (for the ACL file and the password file), whatever
    /// the client sent.
    pub cert_cn_as_username: bool,
}

/// Authentication and authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Users and argon2 password hashes (`ringmq passwd` writes it).
    pub password_file: Option<PathBuf>,
    /// Per-user topic rules; without it every client may do everything.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without a user name may connect.
    pub allow_anonymous: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: true,
        }
    }
}

/// Sizing of the shards' runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Memory each executor registers with io_uring, in bytes. It is locked
    /// in RAM and counts against `ulimit -l`.
    pub io_memory_bytes: usize,
    /// Submission entries of each of a shard's io_uring rings. The kernel
    /// sizes its table of pending polls (one per open connection) by the
    /// ring: 64 chains at 1,024 entries, 8 at glommio's default of 128, and
    /// cancelling a poll (a connection handed to another shard) walks one.
    pub io_ring_entries: usize,
    /// Capacity of each queue between two shards, in batches; a full queue
    /// makes the publishing connection wait.
    pub mesh_queue_batches_max: usize,
    /// Messages waiting in one shard's outbox for another shard past which
    /// publishers on the shard wait for the mesh to catch up.
    pub mesh_backlog_pause_messages: usize,
    /// Bytes of messages waiting in one shard's outbox for another shard
    /// past which publishers on the shard wait for the mesh to catch up.
    pub mesh_backlog_pause_bytes: usize,
    /// Longest a connection waits, before it reads on, for route changes
    /// another shard has already sent (a SUBSCRIBE read there just before),
    /// in microseconds; 0: never waits. Normally they are applied within
    /// tens of microseconds.
    pub route_catch_up_micros: u64,
    /// Period of the clock that runs keep-alive, Will delay and session
    /// expiry, in milliseconds.
    pub tick_millis: u64,
    /// Bytes a connection reads per system call at most.
    pub read_bytes_max: usize,
    /// Time given to connections to flush on shutdown, in milliseconds.
    pub shutdown_grace_millis: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: Profile::Standard,
            shards: 0,
            data_dir: PathBuf::from("data"),
            log_level: "info".into(),
            listeners: Listeners::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            runtime: Runtime::default(),
            storage: Storage::default(),
            admin: Admin::default(),
            tls: TlsConfig::default(),
            aliyun: AliyunConfig::default(),
            trace: TraceConfig::default(),
            nats: Default::default(),
            rules: Vec::new(),
            cluster: Default::default(),
        }
    }
}

/// Smallest socket buffer `listeners.socket_*_bytes` may ask for: below
/// it, TCP's window and delayed acknowledgements stall streams of
/// kilobyte messages (2,000 QoS 1 messages of 2 KiB took 12.6 s with
/// 16 KiB buffers and 0.13 s with 32 KiB on loopback).
pub const SOCKET_BYTES_MIN: u32 = 32 << 10;

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            tls: Vec::new(),
            ws: Vec::new(),
            wss: Vec::new(),
            ws_path: "/mqtt".into(),
            socket_receive_bytes: 0,
            socket_send_bytes: 0,
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            io_memory_bytes: 256 << 10,
            io_ring_entries: 1024,
            mesh_queue_batches_max: 8,
            route_catch_up_micros: 1000,
            mesh_backlog_pause_messages: 2_048,
            mesh_backlog_pause_bytes: 1 << 20,
            tick_millis: 250,
            read_bytes_max: 64 << 10,
            shutdown_grace_millis: 2_000,
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with line and column.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// A log filter is a comma-separated list of levels (`info`) and
/// `target=level` directives. tracing reads a word that is not a level as
/// a target shown at every level, so `inf` or `warning` would leave the
/// broker silent: every directive must end in a level here.
fn check_log_level(text: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(text).map_err(|e| e.to_string())?;
    let levels = [
        "off", "error", "warn", "info", "debug", "trace", "0", "1", "2", "3", "4", "5",
    ];
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !levels.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{directive:?} does not end in a level (off, error, warn, info, debug, trace)"
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(config)
    }

    /// Checks values that the types alone do not bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if let Err(e) = check_log_level(&self.log_level) {
            return Err(ConfigError::Invalid(format!(
                "log_level: {:?}: {e} (e.g. info, debug, info,ringmq=trace)",
                self.log_level
            )));
        }
        if self.listeners.tcp.is_empty() {
            return bad("listeners.tcp: at least one address is needed");
        }
        let ls = &self.listeners;
        if ls.all().any(|a| a.port() == 0) {
            return bad("listeners: a fixed port is needed (every shard binds it)");
        }
        let tls = &self.tls;
        let wants_tls = !ls.tls.is_empty() || !ls.wss.is_empty();
        if wants_tls && (tls.cert_file.is_none() || tls.key_file.is_none()) {
            return bad("listeners.tls and listeners.wss need tls.cert_file and tls.key_file");
        }
        if tls.ca_file.is_none() && (tls.require_client_cert || tls.cert_cn_as_username) {
            return bad("tls.require_client_cert and tls.cert_cn_as_username need tls.ca_file");
        }
        if !ls.ws_path.starts_with('/') {
            return bad("listeners.ws_path: a path such as /mqtt");
        }
        for (key, v) in [
            ("socket_receive_bytes", ls.socket_receive_bytes),
            ("socket_send_bytes", ls.socket_send_bytes),
        ] {
            if v != 0 && !(SOCKET_BYTES_MIN..=i32::MAX as u32).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "listeners.{key}: 0 (the kernel's autotuning) or {SOCKET_BYTES_MIN} to {}",
                    i32::MAX
                )));
            }
        }
        if self.shards > 64 {
            return bad("shards: at most 64");
        }
        let a = &self.admin;
        if !a.listen.is_empty() && a.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("admin.listen: an address such as 127.0.0.1:18083, or empty");
        }
        if a.requests_concurrent_max == 0 || a.connections_max == 0 || a.nonces_max == 0 {
            return bad("admin.requests_concurrent_max, connections_max, nonces_max: at least 1");
        }
        if a.header_bytes_max < 8192 || a.body_bytes_max < 1024 {
            return bad(
                "admin.header_bytes_max: at least 8192; admin.body_bytes_max: at least 1024",
            );
        }
        if a.request_timeout_secs == 0 || a.idle_timeout_secs == 0 {
            return bad("admin.request_timeout_secs and admin.idle_timeout_secs: at least 1");
        }
        if l.packet_bytes_max < 64 {
            return bad("limits.packet_bytes_max: at least 64");
        }
        if l.inflight_count_max == 0 {
            return bad("limits.inflight_count_max: at least 1");
        }
        if self.runtime.mesh_queue_batches_max == 0 || self.runtime.tick_millis == 0 {
            return bad("runtime.mesh_queue_batches_max and runtime.tick_millis: at least 1");
        }
        if !(16..=32_768).contains(&self.runtime.io_ring_entries) {
            return bad("runtime.io_ring_entries: 16 to 32768");
        }
        if self.runtime.read_bytes_max < 1024 {
            return bad("runtime.read_bytes_max: at least 1024");
        }
        let s = &self.storage;
        if s.segment_bytes < 64 << 10 || s.state_segment_bytes < 64 << 10 {
            return bad("storage.segment_bytes and storage.state_segment_bytes: at least 65536");
        }
        // The offline log indexes its messages by 32-bit offsets.
        if u32::try_from(s.segment_bytes).is_err() {
            return bad("storage.segment_bytes: at most 4294967295");
        }
        if s.flush == Flush::Interval && s.flush_interval_millis == 0 {
            return bad("storage.flush_interval_millis: at least 1");
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            return bad("admin.listen: an address such as 127.0.0.1:18083, or empty");
        }
        crate::bridge::config::check(&self.nats, &self.rules, self.profile == Profile::Aliyun)
            .map_err(ConfigError::Invalid)?;
        crate::bridge::config::check_cluster(&self.cluster, &self.nats)
            .map_err(ConfigError::Invalid)?;
        if self.profile == Profile::Aliyun {
            self.validate_aliyun()?;
        }
        Ok(())
    }

    fn validate_aliyun(&self) -> Result<(), ConfigError> {
        use crate::core::aliyun::names;
        let a = &self.aliyun;
        let bad = |what: String| Err(ConfigError::Invalid(what));
        if a.instance_id.is_empty() {
            return bad("aliyun.instance_id: needed by the aliyun profile".into());
        }
        if self.auth.password_file.is_some() || self.auth.acl_file.is_some() {
            return bad("auth.password_file and auth.acl_file: not used by the aliyun profile, which signs clients in with access keys and tokens".into());
        }
        for t in &a.parent_topics {
            if let Err(e) = names::check_parent_topic(t) {
                return bad(format!("aliyun.parent_topics: {t}: {e}"));
            }
        }
        if a.parent_topics.len() > a.parent_topics_max {
            return bad(format!(
                "aliyun.parent_topics: at most {} (aliyun.parent_topics_max)",
                a.parent_topics_max
            ));
        }
        for g in &a.group_ids {
            if let Err(e) = names::check_group_id(g) {
                return bad(format!("aliyun.group_ids: {g}: {e}"));
            }
        }
        if a.access_keys
            .iter()
            .any(|k| k.id.is_empty() || k.secret.is_empty() || k.id.contains('|'))
        {
            return bad(
                "aliyun.access_keys: every key needs an id (without `|`) and a secret".into(),
            );
        }
        if a.token_life_secs_min > a.token_life_secs_max {
            return bad("aliyun.token_life_secs_min: at most token_life_secs_max".into());
        }
        Ok(())
    }

    /// The number of shards to run.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(64),
            n => n,
        }
    }
}
