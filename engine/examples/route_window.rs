//! How soon after another shard's SUBSCRIBE a PUBLISH reaches the new
//! subscriber. A subscriber homed on shard 1 sends SUBSCRIBE; `d` µs later a
//! publisher homed on shard 0 publishes (QoS 0) on that topic. Until the
//! route reaches shard 0 the message finds no subscriber there. Prints, per
//! delay, the share of messages delivered; the delay from which all are is
//! the window.
//!
//!   cargo run --release --example route_window -- 127.0.0.1:1883 [TRIALS]
//!
//! Run against a broker with two shards (`--shards 2`) and nothing else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_engine::core::connect::home_shard;
use ringmq_protocol::{
    Connect, ConnectProperties, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish,
    QoS, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};

const V: ProtocolVersion = ProtocolVersion::V311;
const DELAYS_US: &[u64] = &[0, 10, 25, 50, 100, 200, 500, 1000];

struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    fn connect(addr: &str, id: &str) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            decoder: Decoder::with_version(V, 1 << 20),
            buf: BytesMut::new(),
        };
        let connect = Connect {
            protocol: V,
            v31: false,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id: MqttString::new(id.to_owned()).map_err(invalid)?,
            will: None,
            username: None,
            password: None,
        };
        c.send(&Packet::Connect(Box::new(connect)))?;
        match c.recv(Duration::from_secs(5))? {
            Some(Packet::ConnAck(_)) => Ok(c),
            other => Err(invalid(format!("expected CONNACK, got {other:?}"))),
        }
    }

    fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        p.encode(V, &mut out).map_err(invalid)?;
        self.stream.write_all(&out)
    }

    /// The next packet within `wait`, or none.
    fn recv(&mut self, wait: Duration) -> std::io::Result<Option<Packet>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).map_err(invalid)? {
                return Ok(Some(p));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(invalid("closed")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

fn invalid(e: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
}

fn id_on_shard(prefix: &str, shard: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| home_shard(id.as_bytes(), 2) == shard)
        .unwrap_or_default()
}

/// One trial: whether the PUBLISH sent `delay` after the SUBSCRIBE arrived.
fn trial(
    sub: &mut Client,
    publisher: &mut Client,
    topic: &str,
    delay: Duration,
) -> std::io::Result<bool> {
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).ok_or_else(|| invalid("id"))?,
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new(topic.to_owned()).map_err(invalid)?,
            SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
    };
    let publish = Publish::new(
        TopicName::new(topic.to_owned()).map_err(invalid)?,
        Bytes::from_static(b"x"),
    );
    sub.send(&Packet::Subscribe(subscribe))?;
    let sent = Instant::now();
    while sent.elapsed() < delay {
        std::hint::spin_loop();
    }
    publisher.send(&Packet::Publish(publish))?;
    let mut delivered = false;
    while let Some(p) = sub.recv(Duration::from_millis(30))? {
        delivered |= matches!(p, Packet::Publish(_));
    }
    Ok(delivered)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:1883", String::as_str);
    let trials: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(200);
    let mut sub = Client::connect(addr, &id_on_shard("window-sub", 1))?;
    let mut publisher = Client::connect(addr, &id_on_shard("window-pub", 0))?;
    println!("delay after SUBSCRIBE | delivered | of");
    println!("---:|---:|---:");
    for &us in DELAYS_US {
        let mut delivered = 0;
        for n in 0..trials {
            let topic = format!("window/{us}/{n}");
            delivered += usize::from(trial(
                &mut sub,
                &mut publisher,
                &topic,
                Duration::from_micros(us),
            )?);
        }
        println!(
            "{us} µs | {:.1} % | {trials}",
            delivered as f64 * 100.0 / trials as f64
        );
    }
    Ok(())
}
