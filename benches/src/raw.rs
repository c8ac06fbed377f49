//! A blocking MQTT 3.1.1 client over a plain socket, for the measuring
//! tools in `examples/` that time single packets: one connection, one
//! packet at a time, no background thread.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_engine::core::connect::home_shard;
use ringmq_protocol::properties::ConnectProperties;
use ringmq_protocol::{Connect, Decoder, MqttString, Packet, ProtocolVersion};

const V: ProtocolVersion = ProtocolVersion::V311;

/// One connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    /// Connects as `id` (clean session) and waits for the CONNACK.
    pub fn connect(addr: &str, id: &str) -> std::io::Result<Client> {
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

    /// Writes one packet.
    pub fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        p.encode(V, &mut out).map_err(invalid)?;
        self.stream.write_all(&out)
    }

    /// The next packet within `wait`, or none.
    pub fn recv(&mut self, wait: Duration) -> std::io::Result<Option<Packet>> {
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

/// An `InvalidData` error saying `e`.
pub fn invalid(e: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
}

/// The first client id `prefix-N` homed on `shard` of a two-shard broker.
pub fn id_on_shard(prefix: &str, shard: usize) -> String {
    assert!(
        shard < 2,
        "a two-shard broker has shards 0 and 1, not {shard}"
    );
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| home_shard(id.as_bytes(), 2) == shard)
        .unwrap_or_default()
}
