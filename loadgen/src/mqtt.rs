//! One client connection: TCP set-up, CONNECT/CONNACK, SUBSCRIBE/SUBACK
//! and reading packets. Everything is encoded and decoded by
//! `ringmq-protocol`; this module only moves bytes.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use ringmq_protocol::properties::DisconnectProperties;
use ringmq_protocol::{
    Connect, Decoder, Disconnect, MqttString, Packet, PacketId, ProtocolVersion, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, TopicFilter,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::transport::{ReadHalf, Transport, WriteHalf};

/// Largest packet a loadgen client accepts (the protocol's own limit).
const PACKET_BYTES_MAX: usize = ringmq_protocol::PACKET_BYTES_LIMIT;
/// How long a broker may take to answer CONNECT or SUBSCRIBE.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the broker to close after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer reserved per read call by a busy client; a read takes
/// whatever is there.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The same for an idle connection, which only ever reads small acks.
pub const IDLE_READ_CHUNK_BYTES: usize = 256;

/// Who a client is and how it connects.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Client identifier.
    pub client_id: String,
    /// Clean Session / Clean Start.
    pub clean: bool,
    /// Keep-alive, seconds.
    pub keep_alive_secs: u16,
    /// v5 Session Expiry Interval, seconds (persistent sessions).
    pub session_expiry_secs: Option<u32>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
}

/// Where and how to connect.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Broker address.
    pub addr: SocketAddr,
    /// Local address to bind, for more than one source IP.
    pub source: Option<IpAddr>,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// TCP, TLS, WebSocket or WebSocket over TLS.
    pub transport: Transport,
    /// Kernel send buffer of each socket (`SO_SNDBUF`), 0: the kernel's
    /// autotuning.
    pub send_buffer_bytes: u32,
    /// Kernel receive buffer of each socket (`SO_RCVBUF`), 0: the kernel's
    /// autotuning.
    pub receive_buffer_bytes: u32,
}

/// The reading half of a connection and its decode state.
#[derive(Debug)]
pub struct Reader {
    read: ReadHalf,
    /// Bytes read and not yet decoded.
    pub buf: BytesMut,
    /// Splits `buf` into packets.
    pub decoder: Decoder,
    /// Bytes reserved before each read.
    read_chunk: usize,
}

impl Reader {
    /// Reads more bytes into `buf`; an error at end of stream.
    pub async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(self.read_chunk);
        let n = self.read.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("connection closed by the broker");
        }
        Ok(())
    }

    /// The next whole packet in `buf`, if there is one.
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| anyhow!("undecodable packet from the broker: {e}"))
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Conn {
    /// Incoming packets.
    pub reader: Reader,
    /// Outgoing bytes.
    pub write: WriteHalf,
    /// The version spoken.
    pub version: ProtocolVersion,
    /// Whether the broker resumed a session.
    pub session_present: bool,
}

/// Opens a TCP connection (TCP_NODELAY set, the kernel buffers as asked).
pub async fn tcp(target: &Target) -> Result<TcpStream> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    if target.send_buffer_bytes > 0 {
        socket.set_send_buffer_size(target.send_buffer_bytes)?;
    }
    if target.receive_buffer_bytes > 0 {
        socket.set_recv_buffer_size(target.receive_buffer_bytes)?;
    }
    if let Some(ip) = target.source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects and completes CONNECT/CONNACK; a refusal is an error naming
    /// the reason code. `read_chunk`: bytes reserved before each read.
    pub async fn open(target: &Target, spec: &ClientSpec, read_chunk: usize) -> Result<Conn> {
        let stream = tcp(target).await?;
        let (read, write) = crate::transport::open(target.transport, stream).await?;
        let mut conn = Conn {
            reader: Reader {
                read,
                buf: BytesMut::new(),
                decoder: Decoder::with_version(target.version, PACKET_BYTES_MAX),
                read_chunk,
            },
            write,
            version: target.version,
            session_present: false,
        };
        conn.send(&Packet::Connect(Box::new(connect_packet(
            target.version,
            spec,
        )?)))
        .await?;
        match conn.handshake_reply().await? {
            Packet::ConnAck(ack) if !ack.reason_code.is_error() => {
                conn.session_present = ack.session_present;
                Ok(conn)
            }
            Packet::ConnAck(ack) => {
                bail!("CONNACK refused {}: {:?}", spec.client_id, ack.reason_code)
            }
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    }

    /// Subscribes to one filter; a refusal (SUBACK failure code) is an error.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).ok_or_else(|| anyhow!("packet id"))?,
            properties: Default::default(),
            filters: vec![(
                TopicFilter::new(filter.to_owned()).map_err(|e| anyhow!("filter {filter}: {e}"))?,
                SubscriptionOptions::qos(qos),
            )],
        });
        self.send(&packet).await?;
        match self.handshake_reply().await? {
            Packet::SubAck(ack) => match ack.reason_codes.first() {
                Some(rc) if !rc.is_error() => Ok(()),
                rc => bail!("SUBSCRIBE {filter} refused: {rc:?}"),
            },
            other => bail!("expected SUBACK, got {:?}", other.packet_type()),
        }
    }

    /// Sends DISCONNECT; `end_session` asks a v5 broker to drop the session.
    pub async fn disconnect(mut self, end_session: bool) -> Result<()> {
        self.send(&disconnect_packet(self.version, end_session))
            .await?;
        // Brokers close at once on DISCONNECT; waiting for that (briefly)
        // leaves TIME_WAIT on their side, so churn does not run out of ports.
        let closed = async { while self.reader.fill().await.is_ok() {} };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
        Ok(())
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<()> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out)?;
        self.write.write_all(&out).await?;
        Ok(())
    }

    /// The next packet other than PUBLISH (which a resumed session may
    /// send before a SUBACK), within [`HANDSHAKE_TIMEOUT`].
    async fn handshake_reply(&mut self) -> Result<Packet> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            loop {
                match self.reader.next_packet()? {
                    Some(Packet::Publish(_)) => continue,
                    Some(p) => return Ok(p),
                    None => self.reader.fill().await?,
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no answer within {HANDSHAKE_TIMEOUT:?}"))?
    }
}

fn connect_packet(version: ProtocolVersion, spec: &ClientSpec) -> Result<Connect> {
    let string = |s: &str| MqttString::new(s.to_owned()).map_err(|e| anyhow!("{s:?}: {e}"));
    let mut connect = Connect {
        protocol: version,
        v31: false,
        clean_start: spec.clean,
        keep_alive: spec.keep_alive_secs,
        properties: Default::default(),
        client_id: string(&spec.client_id)?,
        will: None,
        username: spec.username.as_deref().map(string).transpose()?,
        password: spec.password.clone(),
    };
    if version == ProtocolVersion::V5 {
        connect.properties.session_expiry_interval = spec.session_expiry_secs;
    }
    Ok(connect)
}

/// DISCONNECT; `end_session` asks a v5 broker to drop the session
/// (Session Expiry Interval 0).
pub fn disconnect_packet(version: ProtocolVersion, end_session: bool) -> Packet {
    let mut packet = Disconnect::new(ReasonCode::Success);
    if end_session && version == ProtocolVersion::V5 {
        packet.properties = DisconnectProperties {
            session_expiry_interval: Some(0),
            ..Default::default()
        };
    }
    Packet::Disconnect(packet)
}
