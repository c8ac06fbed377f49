//! A client of a `Broker` on a virtual clock, for the deterministic
//! `engine::core` tests: connects, sends packets and decodes what the
//! broker wrote, without sockets.

use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringmq_engine::core::auth::Auth;
use ringmq_engine::core::timers::Output;
use ringmq_engine::core::{Broker, ConnId, Flow, Limits};
use ringmq_protocol::properties::ConnectProperties;
use ringmq_protocol::properties::WillProperties;
use ringmq_protocol::{
    Connect, Decoder, LastWill, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};

/// A client of the broker under test, on a virtual clock.
pub struct Client {
    pub id: ConnId,
    pub version: ProtocolVersion,
    pub decoder: Decoder,
    pub closed: bool,
    /// Packets that arrived with the CONNACK (a resumed session's messages).
    pub early: Vec<Packet>,
}

pub fn connect_packet(client_id: &str, v: ProtocolVersion, clean: bool) -> Connect {
    Connect {
        protocol: v,
        v31: false,
        clean_start: clean,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id.to_owned()).expect("valid id"),
        will: None,
        username: None,
        password: None,
    }
}

pub fn connect(b: &mut Broker, c: Connect, now: Instant) -> Client {
    let version = c.protocol;
    let id = b.connect(c, false, now).expect("accepted").id;
    let mut client = Client::attach(id, version);
    let mut got = client.recv(b).into_iter();
    match got.next() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client.early = got.collect();
    client
}

/// Connects a client with a plain CONNECT (keep-alive off).
pub fn join(
    b: &mut Broker,
    client_id: &str,
    v: ProtocolVersion,
    clean: bool,
    now: Instant,
) -> Client {
    connect(b, connect_packet(client_id, v, clean), now)
}

/// A SUBSCRIBE of one filter with default options.
pub fn subscribe_packet(id: u16, filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new(filter.to_owned()).expect("filter"),
            SubscriptionOptions::default(),
        )],
    })
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

pub fn publish(topic: &str, payload: &str, qos: QoS, id: Option<u16>) -> Packet {
    let mut p = Publish::new(
        TopicName::new(topic.to_owned()).expect("topic"),
        Bytes::from(payload.to_owned()),
    );
    p.qos = qos;
    p.packet_id = id.map(pid);
    Packet::Publish(p)
}

impl Client {
    /// The test's side of connection `id`.
    pub fn attach(id: ConnId, version: ProtocolVersion) -> Client {
        Client {
            id,
            version,
            decoder: Decoder::with_version(version, 1 << 20),
            closed: false,
            early: Vec::new(),
        }
    }

    /// Everything the broker has written to this client, decoded.
    pub fn recv(&mut self, b: &mut Broker) -> Vec<Packet> {
        let mut frames = Vec::new();
        match b.take_output(self.id, &mut frames, Waker::noop()) {
            Output::Ready { close } => self.closed |= close,
            Output::Idle => {}
            Output::Gone => self.closed = true,
        }
        let mut buf = BytesMut::new();
        for f in frames {
            buf.extend_from_slice(&f);
        }
        let mut out = std::mem::take(&mut self.early);
        while let Some(p) = self
            .decoder
            .decode(&mut buf)
            .expect("broker output decodes")
        {
            out.push(p);
        }
        assert!(buf.is_empty(), "partial packet in output");
        out
    }

    pub fn send(&self, b: &mut Broker, p: Packet, now: Instant) {
        if let Flow::Barrier(pending) = b.handle(self.id, p, now) {
            b.finish_subscribe(pending, now);
        }
    }

    pub fn subscribe(&mut self, b: &mut Broker, filter: &str, qos: QoS, now: Instant) {
        self.subscribe_with(b, filter, SubscriptionOptions::qos(qos), None, now);
    }

    pub fn subscribe_with(
        &mut self,
        b: &mut Broker,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
        now: Instant,
    ) {
        let mut s = Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![(
                TopicFilter::new(filter.to_owned()).expect("filter"),
                options,
            )],
        };
        s.properties.subscription_identifier =
            sub_id.and_then(ringmq_protocol::SubscriptionId::new);
        self.send(b, Packet::Subscribe(s), now);
        let got = self.recv(b);
        assert!(
            matches!(got.first(), Some(Packet::SubAck(_))),
            "expected SUBACK, got {got:?}"
        );
    }

    pub fn publishes(&mut self, b: &mut Broker) -> Vec<Publish> {
        self.recv(b)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

pub fn broker(now: Instant) -> Broker {
    Broker::new(0, 1, Limits::default(), Auth::default(), now)
}

pub fn v5_connect(client_id: &str, expiry: u32) -> Connect {
    let mut c = connect_packet(client_id, ProtocolVersion::V5, expiry == 0);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

pub fn will(topic: &str, delay: Option<u32>) -> LastWill {
    LastWill {
        topic: TopicName::new(topic.to_owned()).expect("topic"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    }
}
