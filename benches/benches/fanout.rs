//! One shard's fan-out in `engine::core`, without sockets: a publisher's
//! QoS 0 PUBLISH matched and written to 100 subscribers' output, which is
//! then taken as a connection's writer takes it. Three brokers do the same
//! work: the standard profile, the aliyun profile with traces off, and
//! with traces on (a ring of 500,000 events, as each of two shards keeps
//! by default, full from the warm-up on). Throughput is in deliveries.

use std::hint::black_box;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

const SUBSCRIBERS: usize = 100;
const AK: &str = "LTAI5tBenchKey";
const SECRET: &str = "BenchSecret0123456789abcd";

#[derive(Clone, Copy)]
enum Variant {
    Standard,
    AliyunTracesOff,
    AliyunTracesOn,
}

fn broker(v: Variant, now: Instant) -> Broker {
    let mut b = Broker::new(0, 1, Limits::default(), Auth::default(), now);
    if matches!(v, Variant::Standard) {
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
    if matches!(v, Variant::AliyunTracesOn) {
        b.traces = Traces::new(500_000, 3 * 24 * 3_600_000);
    }
    b
}

fn connect(b: &mut Broker, client_id: &str, now: Instant) -> ConnId {
    let c = Connect {
        protocol: ProtocolVersion::V311,
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

/// Takes everything waiting for connection `id`, as its writer would.
fn drain(b: &mut Broker, id: ConnId, frames: &mut Vec<Bytes>) {
    b.take_output(id, frames, Waker::noop());
    frames.clear();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let variants = [
        ("standard", Variant::Standard),
        ("aliyun-traces-off", Variant::AliyunTracesOff),
        ("aliyun-traces-on", Variant::AliyunTracesOn),
    ];
    for (name, v) in variants {
        let now = Instant::now();
        let mut b = broker(v, now);
        let mut subs = Vec::with_capacity(SUBSCRIBERS);
        let mut frames = Vec::new();
        for i in 0..SUBSCRIBERS {
            let id = connect(&mut b, &format!("GID_bench@@@s{i}"), now);
            let filter = TopicFilter::new("loadgen/run/+".to_owned()).expect("filter");
            let s = Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                properties: Default::default(),
                filters: vec![(filter, SubscriptionOptions::qos(QoS::AtMostOnce))],
            };
            if let Flow::Barrier(p) = b.handle(id, Packet::Subscribe(s), now) {
                b.finish_subscribe(p, now);
            }
            drain(&mut b, id, &mut frames);
            subs.push(id);
        }
        let publisher = connect(&mut b, "GID_bench@@@p", now);
        drain(&mut b, publisher, &mut frames);
        let topic = TopicName::new("loadgen/run/7".to_owned()).expect("topic");
        let payload = Bytes::from(vec![b'x'; 64]);
        group.bench_function(BenchmarkId::new("qos0-100-subscribers", name), |bench| {
            bench.iter(|| {
                let p = Publish::new(topic.clone(), payload.clone());
                b.handle(publisher, Packet::Publish(p), Instant::now());
                for &id in &subs {
                    drain(&mut b, id, &mut frames);
                }
                black_box(b.stats.deliveries)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
