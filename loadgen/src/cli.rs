//! Command-line arguments of `loadgen run`.

use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// P publishers, S subscribers on one wildcard filter: every subscriber gets every message.
    Fanout,
    /// Many publishers, few subscribers, each on one wildcard filter.
    Fanin,
    /// N publisher → subscriber pairs, each on its own topic.
    Pairs,
    /// S subscribers in one v5 shared subscription group: each message reaches one of them.
    Shared,
    /// N publishers each sending to one client's `<parent>/p2p/<clientId>`.
    P2p,
    /// Persistent QoS 1 subscribers go offline, messages are published, they come back and drain.
    Offline,
    /// Open and hold N idle connections at a given connect rate.
    Connections,
    /// A connect/disconnect storm.
    Churn,
}

/// MQTT protocol version spoken by every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1", alias = "3", alias = "4", alias = "311")]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    #[serde(rename = "5")]
    V5,
}

/// `loadgen run`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RunArgs {
    /// What the clients do.
    #[arg(long, short = 's', value_enum, default_value = "fanout")]
    pub scenario: Scenario,
    /// Broker host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, short = 'p', default_value_t = 1883)]
    pub port: u16,
    /// MQTT version: 3.1.1 or 5 (`shared` needs 5 on brokers that follow the 3.1.1 spec strictly).
    #[arg(long, value_enum, default_value = "3.1.1")]
    pub mqtt_version: MqttVersion,
    /// How clients reach the broker: TCP, TLS, WebSocket (path /mqtt,
    /// subprotocol mqtt) or WebSocket over TLS.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: crate::transport::Transport,
    /// CA certificate (PEM) the broker's certificate must chain to (tls, wss).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// User name for every client.
    #[arg(long)]
    pub username: Option<String>,
    /// Password for every client.
    #[arg(long)]
    #[serde(skip)]
    pub password: Option<String>,
    /// Alibaba Cloud MQTT: AccessKey ID; with --secret-key and --instance-id, every client
    /// signs in in Signature mode.
    #[arg(long, requires_all = ["secret_key", "instance_id"])]
    pub access_key: Option<String>,
    /// Alibaba Cloud MQTT: AccessKey secret.
    #[arg(long)]
    #[serde(skip)]
    pub secret_key: Option<String>,
    /// Alibaba Cloud MQTT: instance id.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Client ids become `<group-id>@@@<device>` (Alibaba: `GID_…`).
    #[arg(long)]
    pub group_id: Option<String>,
    /// Parent topic of `p2p` (`<parent>/p2p/<clientId>`).
    #[arg(long, default_value = "loadgen")]
    pub parent_topic: String,

    /// Publishers (default per scenario: fanout 1, fanin 100, pairs/p2p 10, shared 2, offline 1).
    #[arg(long, short = 'P')]
    pub publishers: Option<u32>,
    /// Subscribers (default per scenario: fanout 10, fanin 1, pairs/p2p = publishers, shared 4, offline 10).
    #[arg(long, short = 'S')]
    pub subscribers: Option<u32>,
    /// `connections`/`churn`: connections to open (held, or looping for churn).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: u32,
    /// `connections`/`churn`: new connections per second, all threads together (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u32,
    /// Concurrent connection attempts per thread while connecting.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: u32,
    /// Kernel send buffer of every client socket, in bytes (the kernel
    /// doubles it); 0 leaves it to the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). Bounded by
    /// default so that a closed-loop publisher's stamped messages do not
    /// wait seconds in its own socket while the broker holds it back: the
    /// latency measured is then the broker's, not the generator's queue.
    #[arg(long, default_value_t = 64 << 10)]
    pub socket_send_bytes: u32,
    /// Kernel receive buffer of every client socket, in bytes (the kernel
    /// doubles it); 0 leaves it to the kernel's autotuning (up to
    /// `net.ipv4.tcp_rmem`'s maximum). Bounded by default for the same
    /// reason: a subscriber that falls behind should hold the broker back,
    /// not queue seconds of messages in its own socket.
    #[arg(long, default_value_t = 64 << 10)]
    pub socket_receive_bytes: u32,

    /// QoS of PUBLISH (default 0; `offline` 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// QoS of SUBSCRIBE (default: as --qos).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
    /// Payload bytes; at least 20 (publisher, sequence number, send time).
    #[arg(long, short = 'm', default_value_t = 64, value_parser = clap::value_parser!(u32).range(20..=268_435_000))]
    pub payload_bytes: u32,
    /// Topic of publisher `{i}`; `{prefix}` is the run's own prefix (default per scenario).
    #[arg(long)]
    pub topic: Option<String>,
    /// Filter every subscriber subscribes to (default per scenario).
    #[arg(long)]
    pub filter: Option<String>,
    /// Shared subscription group name (`shared`).
    #[arg(long, default_value = "loadgen")]
    pub share_group: String,
    /// Topic prefix, so runs never see each other's messages (default: `loadgen/<random>`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Subscribers keep their session (3.1.1 clean session 0 / v5 Clean Start 0 with an expiry).
    #[arg(long)]
    pub persistent: bool,
    /// v5 Session Expiry Interval of persistent sessions, seconds.
    #[arg(long, default_value_t = 3600)]
    pub session_expiry_secs: u32,
    /// Keep-alive, seconds.
    #[arg(long, default_value_t = 60)]
    pub keep_alive_secs: u16,

    /// Length of the run after warm-up, e.g. 10s, 2m, 500ms.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// After the last publish: how long deliveries (and acks) may stall before the run
    /// ends; a broker still delivering its backlog is waited for, up to a minute.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub drain: Duration,
    /// Open loop: messages per second, all publishers together. Latency is taken from each
    /// message's intended send time, so a stalled broker cannot hide its stall.
    /// Without it: closed loop, as fast as --inflight allows.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: unacknowledged messages per publisher (QoS 1/2); for QoS 0, messages per write.
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// `offline`: messages each publisher sends while the subscribers are away.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u32,

    /// Worker threads, each pinned to its own core (default: every core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Do not pin worker threads.
    #[arg(long)]
    pub no_pin: bool,
    /// Ports of the same host the subscribers connect to instead of
    /// `--port`, in turn (e.g. the other nodes of a cluster: publishers on
    /// one node, subscribers on the others).
    #[arg(long, value_delimiter = ',')]
    pub subscriber_ports: Vec<u16>,
    /// Source addresses 127.0.0.1..=127.0.0.N for loopback targets (each gives ~28k ports;
    /// default: enough for --connections).
    #[arg(long)]
    pub source_ips: Option<u8>,

    /// The broker's process id: its RSS goes into the summary (`connections`: per connection).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// The broker's version string for the summary (default: `$SYS/broker/version` if published).
    #[arg(long)]
    pub broker_version: Option<String>,
    /// A name for this run in tables and plots (default: the scenario and QoS).
    #[arg(long)]
    pub label: Option<String>,
    /// Directory for summary.json and the histograms.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Find the highest sustainable rate: runs again and again from --rate, doubling it
    /// while a run is sustained (nothing lost, end-to-end p99 within --p99-max, the
    /// publishers kept up), then halving the gap to the first rate that was not,
    /// --find-max-steps times. Each run gets fresh clients; the broker stays.
    #[arg(long, requires = "rate")]
    pub find_max: bool,
    /// --find-max: the end-to-end p99 a sustained run stays within.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub p99_max: Duration,
    /// --find-max: runs between the highest sustained rate and the lowest that was not.
    #[arg(long, default_value_t = 4)]
    pub find_max_steps: u32,
    /// --find-max: the highest rate to try (0: no limit); sustained there, the search ends.
    #[arg(long, default_value_t = 0.0)]
    pub rate_max: f64,
    /// --find-max: a rate that is not sustained is run again this many times before it
    /// counts as not sustained (one noisy run should not decide the search).
    #[arg(long, default_value_t = 1)]
    pub find_max_retries: u32,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `10s`, `2m`, `500ms`, `1.5s`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit (ms, s, m, h)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("`{text}`: must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

impl RunArgs {
    /// Publishers and subscribers: as given, or the scenario's default.
    pub fn counts(&self) -> (u32, u32) {
        let (p, s) = match self.scenario {
            Scenario::Fanout => (1, 10),
            Scenario::Fanin => (100, 1),
            Scenario::Pairs | Scenario::P2p => (10, 10),
            Scenario::Shared => (2, 4),
            Scenario::Offline => (1, 10),
            Scenario::Connections | Scenario::Churn => (0, 0),
        };
        let p = self.publishers.unwrap_or(p);
        let paired = matches!(self.scenario, Scenario::Pairs | Scenario::P2p);
        (p, self.subscribers.unwrap_or(if paired { p } else { s }))
    }

    /// The publish QoS.
    pub fn qos(&self) -> u8 {
        let default = u8::from(self.scenario == Scenario::Offline);
        self.qos.unwrap_or(default)
    }

    /// The subscribe QoS.
    pub fn sub_qos(&self) -> u8 {
        self.sub_qos.unwrap_or(self.qos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
