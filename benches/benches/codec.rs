//! Codec benches: ringmq-protocol beside `mqttbytes` (the codec of rumqttc
//! and rumqttd) and `mqttrs`, doing the same work on the same bytes, in the
//! same groups, so that the ratios come from one run.
//!
//! Every crate decodes the same MQTT 3.1.1 bytes, made by ringmq's encoder:
//! a read buffer holding a run of identical packets back to back, as a busy
//! connection's socket delivers them (the buffer is refilled outside the
//! timed section and its memory reused; throughput is in packets). Every crate encodes the packet its own
//! decoder produced from those bytes.
//!
//! - `decode`: split the buffer into packets. ringmq and mqttbytes return
//!   owned packets (topic and payload outlive the buffer); mqttrs returns
//!   packets that borrow the buffer.
//! - `encode`: write one packet into a reused buffer.
//! - `decode+encode`: decode every packet and encode it again, as a broker
//!   forwarding each message to one subscriber.
//! - `ringmq-peek` (PUBLISH): ringmq's in-place path, `Decoder::peek`, whose
//!   `PublishRef` borrows the buffer as mqttrs' packets do.
//! - `decode+forward` (PUBLISH): the broker's path, where each crate
//!   produces the bytes of a subscriber's copy its own best way: ringmq
//!   writes the per-copy header and shares topic and payload for a vectored
//!   write; the others re-encode the packet.

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq_protocol::{
    Connect, Decoder, Delivery, EncodedPublish, LastWill, MqttString, Packet, PacketId,
    ProtocolVersion, Publish, PublishRef, QoS, Subscribe, SubscriptionOptions, TopicFilter,
    TopicName,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const V4: ProtocolVersion = ProtocolVersion::V311;
const MAX: usize = 1 << 20;
const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const SIZES: &[(&str, usize)] = &[("16B", 16), ("1KiB", 1024), ("64KiB", 65536)];

fn ringmq_publish(payload: usize) -> Publish {
    Publish {
        qos: QoS::AtLeastOnce,
        packet_id: PacketId::new(4242),
        ..Publish::new(TopicName::new(TOPIC).expect("valid"), vec![0x5A; payload])
    }
}

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("valid");
    out
}

/// How many copies of a packet of `len` bytes make one read buffer.
fn run_length(len: usize) -> usize {
    (1 << 20) / len.max(1)
}

fn decode_ringmq(v: ProtocolVersion, mut buf: BytesMut) -> Packet {
    Decoder::with_version(v, MAX)
        .decode(&mut buf)
        .expect("valid")
        .expect("whole")
}

fn decode_mqttbytes(mut buf: BytesMut) -> mqttbytes::v4::Packet {
    mqttbytes::v4::read(&mut buf, MAX).expect("valid")
}

fn decode_mqttrs(buf: &[u8]) -> mqttrs::Packet<'_> {
    mqttrs::decode_slice(buf).expect("valid").expect("whole")
}

fn write_mqttbytes(p: &mqttbytes::v4::Packet, out: &mut BytesMut) {
    use mqttbytes::v4::Packet as P;
    let r = match p {
        P::Publish(p) => p.write(out),
        P::Connect(p) => p.write(out),
        P::Subscribe(p) => p.write(out),
        _ => unreachable!("the benches only encode these"),
    };
    r.expect("valid");
}

/// A read buffer holding a run of copies of one packet, refilled before
/// each timed pass (the refill is not timed; the buffer's memory is reused,
/// as a connection's read buffer is).
struct Run {
    template: Vec<u8>,
    one: usize,
    count: usize,
}

impl Run {
    fn new(one: &[u8]) -> Self {
        let count = run_length(one.len()).clamp(16, 256);
        Run {
            template: one.repeat(count),
            one: one.len(),
            count,
        }
    }

    /// Times `pass` over a freshly filled buffer, `iters` times.
    fn time(&self, iters: u64, mut pass: impl FnMut(&mut BytesMut)) -> Duration {
        let mut buf = BytesMut::with_capacity(self.template.len());
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            buf.clear();
            buf.reserve(self.template.len());
            buf.extend_from_slice(&self.template);
            let start = Instant::now();
            pass(&mut buf);
            total += start.elapsed();
        }
        total
    }

    fn ringmq(buf: &mut BytesMut, mut f: impl FnMut(Packet)) {
        let mut decoder = Decoder::with_version(V4, MAX);
        while let Some(p) = decoder.decode(buf).expect("valid") {
            f(p);
        }
    }

    /// ringmq's in-place path: `peek` each PUBLISH, then skip it.
    fn peek(buf: &mut BytesMut, mut f: impl FnMut(PublishRef<'_>)) {
        let decoder = Decoder::with_version(V4, MAX);
        let mut at = 0;
        while let Some(p) = decoder.peek(&buf[at..]).expect("valid") {
            f(p.publish.expect("a PUBLISH"));
            at += p.len;
        }
        buf.advance(at);
    }

    fn mqttbytes(buf: &mut BytesMut, mut f: impl FnMut(mqttbytes::v4::Packet)) {
        while !buf.is_empty() {
            f(mqttbytes::v4::read(buf, MAX).expect("valid"));
        }
    }

    fn mqttrs(&self, buf: &BytesMut, mut f: impl FnMut(mqttrs::Packet<'_>)) {
        for at in (0..buf.len()).step_by(self.one) {
            f(decode_mqttrs(&buf[at..]));
        }
    }
}

/// decode, encode and decode+encode of one packet type for the three crates.
fn bench_packet(c: &mut Criterion, group: &str, id: &str, one: &BytesMut) {
    let run = Run::new(one);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(run.count as u64));

    g.bench_function(BenchmarkId::new("decode/ringmq", id), |b| {
        b.iter_custom(|n| run.time(n, |buf| Run::ringmq(buf, |p| drop(black_box(p)))))
    });
    g.bench_function(BenchmarkId::new("decode/mqttbytes", id), |b| {
        b.iter_custom(|n| run.time(n, |buf| Run::mqttbytes(buf, |p| drop(black_box(p)))))
    });
    g.bench_function(BenchmarkId::new("decode/mqttrs", id), |b| {
        b.iter_custom(|n| run.time(n, |buf| run.mqttrs(buf, |p| drop(black_box(p)))))
    });

    let mut out = BytesMut::with_capacity(one.len() * 2);
    let mut slice = vec![0u8; one.len() * 2];
    g.bench_function(BenchmarkId::new("decode+encode/ringmq", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::ringmq(buf, |p| {
                    out.clear();
                    p.encode(V4, &mut out).expect("valid");
                })
            })
        })
    });
    g.bench_function(BenchmarkId::new("decode+encode/mqttbytes", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::mqttbytes(buf, |p| {
                    out.clear();
                    write_mqttbytes(&p, &mut out);
                })
            })
        })
    });
    g.bench_function(BenchmarkId::new("decode+encode/mqttrs", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                run.mqttrs(buf, |p| {
                    black_box(mqttrs::encode_slice(&p, &mut slice).expect("fits"));
                })
            })
        })
    });

    // encode alone: one packet per iteration.
    g.throughput(Throughput::Elements(1));
    let ours = decode_ringmq(V4, one.clone());
    let theirs = decode_mqttbytes(one.clone());
    let rs = decode_mqttrs(one);
    g.bench_function(BenchmarkId::new("encode/ringmq", id), |b| {
        b.iter(|| {
            out.clear();
            black_box(&ours).encode(V4, &mut out).expect("valid");
        })
    });
    g.bench_function(BenchmarkId::new("encode/mqttbytes", id), |b| {
        b.iter(|| {
            out.clear();
            write_mqttbytes(black_box(&theirs), &mut out);
        })
    });
    g.bench_function(BenchmarkId::new("encode/mqttrs", id), |b| {
        b.iter(|| mqttrs::encode_slice(black_box(&rs), &mut slice).expect("fits"))
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    for &(id, size) in SIZES {
        let one = encode(&Packet::Publish(ringmq_publish(size)), V4);
        bench_packet(c, "publish", id, &one);
        in_place(c, id, &one);
        forward(c, id, &one);
    }
}

/// ringmq's in-place path (`Decoder::peek`, `PublishRef`): the packet
/// borrows the read buffer, as mqttrs' packets do.
fn in_place(c: &mut Criterion, id: &str, one: &BytesMut) {
    let run = Run::new(one);
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(run.count as u64));
    g.bench_function(BenchmarkId::new("decode/ringmq-peek", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::peek(buf, |p| {
                    black_box(p);
                })
            })
        })
    });
    let mut out = BytesMut::with_capacity(one.len() * 2);
    g.bench_function(BenchmarkId::new("decode+encode/ringmq-peek", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::peek(buf, |p| {
                    out.clear();
                    p.encode(V4, &mut out).expect("valid");
                })
            })
        })
    });
    g.finish();
}

/// decode+forward: what a broker does with each PUBLISH for one subscriber.
fn forward(c: &mut Criterion, id: &str, one: &BytesMut) {
    let run = Run::new(one);
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(run.count as u64));
    let mut out = BytesMut::with_capacity(one.len() * 2);
    let mut slice = vec![0u8; one.len() * 2];
    g.bench_function(BenchmarkId::new("decode+forward/ringmq", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::ringmq(buf, |p| {
                    let Packet::Publish(p) = p else {
                        unreachable!("a PUBLISH")
                    };
                    let encoded = EncodedPublish::new(&p, V4).expect("valid");
                    let d = Delivery {
                        qos: p.qos,
                        packet_id: p.packet_id,
                        ..Delivery::default()
                    };
                    let head = encoded.head(&d).expect("valid");
                    black_box(encoded.slices(&head, &d));
                })
            })
        })
    });
    g.bench_function(BenchmarkId::new("decode+forward/mqttbytes", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                Run::mqttbytes(buf, |p| {
                    out.clear();
                    write_mqttbytes(&p, &mut out);
                })
            })
        })
    });
    g.bench_function(BenchmarkId::new("decode+forward/mqttrs", id), |b| {
        b.iter_custom(|n| {
            run.time(n, |buf| {
                run.mqttrs(buf, |p| {
                    black_box(mqttrs::encode_slice(&p, &mut slice).expect("fits"));
                })
            })
        })
    });
    g.finish();
}

fn connect(c: &mut Criterion) {
    let connect = Connect {
        protocol: V4,
        v31: false,
        clean_start: false,
        keep_alive: 60,
        properties: Default::default(),
        client_id: MqttString::new("GID_sensors@@@device-000042").expect("valid"),
        will: Some(LastWill {
            topic: TopicName::new("sensors/device-000042/status").expect("valid"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        }),
        username: Some(MqttString::new("Signature|LTAI5tExampleKey|mqtt-cn-0pp1").expect("valid")),
        password: Some(Bytes::from_static(b"qzBm3fJhUUiU5pw1A1xEkPkdPaY=")),
    };
    let one = encode(&Packet::Connect(Box::new(connect)), V4);
    bench_packet(c, "connect", "will+login", &one);
}

fn subscribe(c: &mut Criterion) {
    let filters = [
        "sensors/+/floor-3/#",
        "alerts/critical",
        "$SYS/broker/load/#",
    ]
    .into_iter()
    .map(|f| {
        (
            TopicFilter::new(f).expect("valid"),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )
    })
    .collect();
    let subscribe = Subscribe {
        packet_id: PacketId::new(7).expect("non-zero"),
        properties: Default::default(),
        filters,
    };
    let one = encode(&Packet::Subscribe(subscribe), V4);
    bench_packet(c, "subscribe", "3-filters", &one);
}

/// MQTT 5.0 PUBLISH with properties: ringmq beside mqttbytes' v5 codec
/// (mqttrs speaks 3.1.1 only).
fn publish_v5(c: &mut Criterion) {
    let v5 = ProtocolVersion::V5;
    let mut g = c.benchmark_group("publish_v5");
    for &(id, size) in SIZES {
        let mut p = ringmq_publish(size);
        p.properties_mut().message_expiry_interval = Some(3600);
        p.properties_mut().content_type = MqttString::new("application/json").ok();
        let one = encode(&Packet::Publish(p), v5);
        let run = Run::new(&one);
        g.throughput(Throughput::Elements(run.count as u64));
        let mut out = BytesMut::with_capacity(one.len() * 2);
        g.bench_function(BenchmarkId::new("decode+encode/ringmq", id), |b| {
            b.iter_custom(|n| {
                run.time(n, |buf| {
                    let mut decoder = Decoder::with_version(v5, MAX);
                    while let Some(p) = decoder.decode(buf).expect("valid") {
                        out.clear();
                        p.encode(v5, &mut out).expect("valid");
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("decode+encode/mqttbytes", id), |b| {
            b.iter_custom(|n| {
                run.time(n, |buf| {
                    while !buf.is_empty() {
                        out.clear();
                        match mqttbytes::v5::read(buf, MAX).expect("valid") {
                            mqttbytes::v5::Packet::Publish(p) => p.write(&mut out).expect("valid"),
                            _ => unreachable!("a PUBLISH"),
                        };
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, publish, publish_v5, connect, subscribe);
criterion_main!(benches);
