//! One shard's fan-out in `engine::core`, without sockets: a publisher's
//! QoS 0 PUBLISH matched and written to `SUBSCRIBERS` subscribers' output,
//! which is then taken as a connection's writer takes it. The broker is
//! the standard profile, the aliyun profile with traces off, or with
//! traces on (a ring of 500,000 events, as each of two shards keeps by
//! default).

use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use ringmq_engine::core::aliyun::registry::{Change, Registry};
use ringmq_engine::core::aliyun::signin::signature;
use ringmq_engine::core::aliyun::{Aliyun, AliyunConfig};
use ringmq_engine::core::auth::Auth;
use ringmq_engine::core::trace::Traces;
use ringmq_engine::core::{Broker, ConnId, Flow, Limits};
use ringmq_protocol::properties::ConnectProperties;
use ringmq_protocol::{
    Connect, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};

/// Subscribers of the one filter.
pub const SUBSCRIBERS: usize = 100;
const AK: &str = "LTAI5tBenchKey";
const SECRET: &str = "BenchSecret0123456789abcd";

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The standard profile.
    Standard,
    /// The aliyun profile, traces off.
    AliyunTracesOff,
    /// The aliyun profile, traces on.
    AliyunTracesOn,
}

impl Variant {
    /// Every variant with its name.
    pub const ALL: [(&'static str, Variant); 3] = [
        ("standard", Variant::Standard),
        ("aliyun-traces-off", Variant::AliyunTracesOff),
        ("aliyun-traces-on", Variant::AliyunTracesOn),
    ];
}

/// A broker with `SUBSCRIBERS` subscribers on `loadgen/run/+` and one
/// publisher.
#[derive(Debug)]
pub struct Fanout {
    broker: Broker,
    subscribers: Vec<ConnId>,
    publisher: ConnId,
    frames: Vec<Bytes>,
    topic: TopicName,
    payload: Bytes,
}

fn broker(v: Variant, now: Instant) -> Broker {
    let mut b = Broker::new(0, 1, Limits::default(), Auth::default(), now);
    if v == Variant::Standard {
        return b;
    }
    let mut r = Registry::default();
    r.apply(&Change::SetInstance { id: "bench".into() });
    r.apply(&Change::PutAccessKey {
        id: AK.into(),
        secret: SECRET.into(),
    });
    r.apply(&Change::CreateParentTopic {
        name: "loadgen".into(),
        at_ms: 1,
    });
    r.apply(&Change::CreateGroupId {
        id: "GID_bench".into(),
        at_ms: 1,
    });
    b.aliyun = Some(Box::new(Aliyun::new(AliyunConfig::default(), r)));
    if v == Variant::AliyunTracesOn {
        b.traces = Traces::new(500_000, 3 * 24 * 3_600_000);
    }
    b
}

fn connect(b: &mut Broker, client_id: &str, now: Instant) -> ConnId {
    let c = Connect {
        protocol: ProtocolVersion::V311,
        v31: false,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id.to_owned()).expect("id"),
        will: None,
        username: MqttString::new(format!("Signature|{AK}|bench")).ok(),
        password: Some(Bytes::from(signature(SECRET, client_id))),
    };
    b.connect(c, false, now).expect("accepted").id
}

impl Fanout {
    /// The broker of `v`, its clients connected and subscribed.
    pub fn new(v: Variant) -> Fanout {
        let now = Instant::now();
        let mut broker = broker(v, now);
        let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
        for i in 0..SUBSCRIBERS {
            let id = connect(&mut broker, &format!("GID_bench@@@s{i}"), now);
            let filter = TopicFilter::new("loadgen/run/+".to_owned()).expect("filter");
            let s = Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                properties: Default::default(),
                filters: vec![(filter, SubscriptionOptions::qos(QoS::AtMostOnce))],
            };
            if let Flow::Barrier(p) = broker.handle(id, Packet::Subscribe(s), now) {
                broker.finish_subscribe(p, now);
            }
            subscribers.push(id);
        }
        let publisher = connect(&mut broker, "GID_bench@@@p", now);
        let mut f = Fanout {
            broker,
            subscribers,
            publisher,
            frames: Vec::new(),
            topic: TopicName::new("loadgen/run/7".to_owned()).expect("topic"),
            payload: Bytes::from(vec![b'x'; 64]),
        };
        f.take_all();
        f
    }

    /// One PUBLISH, delivered and taken by every subscriber's writer.
    /// Returns the deliveries so far.
    pub fn publish(&mut self) -> u64 {
        let p = Publish::new(self.topic.clone(), self.payload.clone());
        let id = self.publisher;
        self.broker.handle(id, Packet::Publish(p), Instant::now());
        self.take_all();
        self.broker.stats.deliveries
    }

    fn take_all(&mut self) {
        let ids = std::iter::once(self.publisher).chain(self.subscribers.iter().copied());
        for id in ids {
            self.broker.take_output(id, &mut self.frames, Waker::noop());
            self.frames.clear();
        }
    }
}
