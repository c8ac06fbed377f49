//! Codec benches: ringmq-protocol beside `mqttbytes` (the codec of rumqttc
//! and rumqttd) and `mqttrs`, doing the same work on the same bytes, in the
//! same groups, so that the ratios come from one run.
//!
//! Every crate decodes the same MQTT 3.1.1 bytes, made by ringmq's encoder;
//! every crate encodes the packet its own decoder produced from them. Decode
//! inputs are fresh `BytesMut`s made outside the timed section.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ringmq_protocol::{
    Connect, Decoder, Delivery, EncodedPublish, LastWill, MqttString, Packet, PacketId,
    ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};
use std::hint::black_box;

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

/// Encodes with mqttrs into a reused buffer large enough for the packet.
fn encode_mqttrs(p: &mqttrs::Packet<'_>, out: &mut [u8]) -> usize {
    mqttrs::encode_slice(p, out).expect("fits")
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

/// Decode, encode and decode+encode of one packet, for the three crates.
fn bench_packet(c: &mut Criterion, group: &str, id: &str, bytes: &BytesMut) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    let fresh = || bytes.clone();

    g.bench_with_input(BenchmarkId::new("decode/ringmq", id), bytes, |b, _| {
        b.iter_batched(fresh, |buf| decode_ringmq(V4, buf), BatchSize::SmallInput)
    });
    g.bench_with_input(BenchmarkId::new("decode/mqttbytes", id), bytes, |b, _| {
        b.iter_batched(fresh, decode_mqttbytes, BatchSize::SmallInput)
    });
    g.bench_with_input(BenchmarkId::new("decode/mqttrs", id), bytes, |b, _| {
        b.iter(|| black_box(decode_mqttrs(black_box(bytes))).is_some_packet())
    });

    let ours = decode_ringmq(V4, bytes.clone());
    let theirs = decode_mqttbytes(bytes.clone());
    let raw = bytes.to_vec();
    let rs = decode_mqttrs(&raw);
    let mut out = BytesMut::with_capacity(bytes.len() * 2);
    let mut slice = vec![0u8; bytes.len() * 2];

    g.bench_with_input(BenchmarkId::new("encode/ringmq", id), bytes, |b, _| {
        b.iter(|| {
            out.clear();
            black_box(&ours).encode(V4, &mut out).expect("valid");
        })
    });
    g.bench_with_input(BenchmarkId::new("encode/mqttbytes", id), bytes, |b, _| {
        b.iter(|| {
            out.clear();
            write_mqttbytes(black_box(&theirs), &mut out);
        })
    });
    g.bench_with_input(BenchmarkId::new("encode/mqttrs", id), bytes, |b, _| {
        b.iter(|| encode_mqttrs(black_box(&rs), &mut slice))
    });

    g.bench_with_input(
        BenchmarkId::new("decode+encode/ringmq", id),
        bytes,
        |b, _| {
            b.iter_batched(
                fresh,
                |buf| {
                    out.clear();
                    decode_ringmq(V4, buf).encode(V4, &mut out).expect("valid");
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_with_input(
        BenchmarkId::new("decode+encode/mqttbytes", id),
        bytes,
        |b, _| {
            b.iter_batched(
                fresh,
                |buf| {
                    out.clear();
                    write_mqttbytes(&decode_mqttbytes(buf), &mut out);
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_with_input(
        BenchmarkId::new("decode+encode/mqttrs", id),
        bytes,
        |b, _| b.iter(|| encode_mqttrs(&decode_mqttrs(black_box(&raw)), &mut slice)),
    );
    g.finish();
}

trait IsPacket {
    fn is_some_packet(&self) -> bool;
}

impl IsPacket for mqttrs::Packet<'_> {
    fn is_some_packet(&self) -> bool {
        !matches!(self, mqttrs::Packet::Pingreq)
    }
}

fn publish(c: &mut Criterion) {
    for &(id, size) in SIZES {
        let bytes = encode(&Packet::Publish(ringmq_publish(size)), V4);
        bench_packet(c, "publish", id, &bytes);
    }
}

/// The broker's path: decode a PUBLISH, then produce a subscriber's copy.
/// ringmq writes the per-copy header and shares topic and payload (ready for
/// a vectored write); mqttbytes re-encodes the whole packet into a buffer.
fn publish_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_fanout");
    for &(id, size) in SIZES {
        let bytes = encode(&Packet::Publish(ringmq_publish(size)), V4);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let fresh = || bytes.clone();
        let mut out = BytesMut::with_capacity(bytes.len() * 2);
        g.bench_with_input(
            BenchmarkId::new("decode+copy/ringmq", id),
            &bytes,
            |b, _| {
                b.iter_batched(
                    fresh,
                    |buf| {
                        let Packet::Publish(p) = decode_ringmq(V4, buf) else {
                            unreachable!("a PUBLISH")
                        };
                        let encoded = EncodedPublish::new(&p, V4).expect("valid");
                        let d = Delivery {
                            qos: p.qos,
                            packet_id: p.packet_id,
                            ..Delivery::default()
                        };
                        let head = encoded.head(&d).expect("valid");
                        black_box(
                            encoded
                                .slices(&head, &d)
                                .iter()
                                .map(|s| s.len())
                                .sum::<usize>(),
                        )
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        g.bench_with_input(
            BenchmarkId::new("decode+copy/mqttbytes", id),
            &bytes,
            |b, _| {
                b.iter_batched(
                    fresh,
                    |buf| {
                        out.clear();
                        write_mqttbytes(&decode_mqttbytes(buf), &mut out);
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}

fn connect(c: &mut Criterion) {
    let connect = Connect {
        protocol: V4,
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
    let bytes = encode(&Packet::Connect(Box::new(connect)), V4);
    bench_packet(c, "connect", "will+login", &bytes);
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
    let bytes = encode(&Packet::Subscribe(subscribe), V4);
    bench_packet(c, "subscribe", "3-filters", &bytes);
}

/// MQTT 5.0 PUBLISH with properties: ringmq beside mqttbytes' v5 codec.
fn publish_v5(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_v5");
    for &(id, size) in SIZES {
        let mut p = ringmq_publish(size);
        p.properties_mut().message_expiry_interval = Some(3600);
        p.properties_mut().content_type = MqttString::new("application/json").ok();
        let bytes = encode(&Packet::Publish(p), ProtocolVersion::V5);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let fresh = || bytes.clone();
        let mut out = BytesMut::with_capacity(bytes.len() * 2);
        g.bench_with_input(
            BenchmarkId::new("decode+encode/ringmq", id),
            &bytes,
            |b, _| {
                b.iter_batched(
                    fresh,
                    |buf| {
                        out.clear();
                        let p = decode_ringmq(ProtocolVersion::V5, buf);
                        p.encode(ProtocolVersion::V5, &mut out).expect("valid");
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        g.bench_with_input(
            BenchmarkId::new("decode+encode/mqttbytes", id),
            &bytes,
            |b, _| {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        out.clear();
                        match mqttbytes::v5::read(&mut buf, MAX).expect("valid") {
                            mqttbytes::v5::Packet::Publish(p) => p.write(&mut out).expect("valid"),
                            _ => unreachable!("a PUBLISH"),
                        };
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}

/// A read buffer holding many PUBLISHes back to back, as a busy
/// connection's socket delivers them: decode them all.
fn publish_stream(c: &mut Criterion) {
    const COUNT: usize = 256;
    let mut g = c.benchmark_group("publish_stream");
    for &(id, size) in &SIZES[..2] {
        let one = encode(&Packet::Publish(ringmq_publish(size)), V4);
        let mut many = BytesMut::new();
        for _ in 0..COUNT {
            many.extend_from_slice(&one);
        }
        g.throughput(Throughput::Elements(COUNT as u64));
        let fresh = || many.clone();
        g.bench_with_input(BenchmarkId::new("decode/ringmq", id), &many, |b, _| {
            b.iter_batched(
                fresh,
                |mut buf| {
                    let mut d = Decoder::with_version(V4, MAX);
                    while let Some(p) = d.decode(&mut buf).expect("valid") {
                        black_box(p);
                    }
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("decode/mqttbytes", id), &many, |b, _| {
            b.iter_batched(
                fresh,
                |mut buf| {
                    while !buf.is_empty() {
                        black_box(mqttbytes::v4::read(&mut buf, MAX).expect("valid"));
                    }
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("decode/mqttrs", id), &many, |b, _| {
            b.iter(|| {
                let mut at = 0;
                while at < many.len() {
                    let p = decode_mqttrs(&many[at..]);
                    at += one.len();
                    black_box(p);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    publish_stream,
    publish,
    publish_fanout,
    publish_v5,
    connect,
    subscribe
);
criterion_main!(benches);
