//! The retained store of one shard with 1,000,000 topics (50,000 under
//! `cargo test`, which only checks that it runs; `dev/<i>/<k>`,
//! i < 100,000, k < 10, 100-byte payloads): what a SUBSCRIBE's lookup costs
//! for filters that match 10, 1 and 100,000 of them, and what a store or a
//! replacement costs. The memory the store takes is printed (RSS growth
//! while it is built, payloads included; then what one more shard's index
//! of the same, shared, messages adds).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use ringmq_benches::{measuring, rss_bytes};
use ringmq_engine::core::message::Message;
use ringmq_engine::core::retained::Retained;
use ringmq_protocol::{QoS, TopicName};

const PER_DEVICE: usize = 10;

/// 100,000 devices when measuring, 5,000 under `cargo test`.
fn devices() -> usize {
    match measuring() {
        true => 100_000,
        false => 5_000,
    }
}

fn message(topic: String, payload: &Bytes) -> Arc<Message> {
    Arc::new(Message {
        id: 1,
        topic: TopicName::new(topic).expect("topic"),
        payload: payload.clone(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: None,
        origin: 0,
        expires_at: None,
        encoded: Default::default(),
    })
}

fn build() -> Retained {
    let before = rss_bytes();
    let mut r = Retained::default();
    for i in 0..devices() {
        for k in 0..PER_DEVICE {
            // Each message its own payload, as clients send them.
            let payload = Bytes::from(vec![b'x'; 100]);
            r.store(message(format!("dev/{i}/{k}"), &payload), usize::MAX);
        }
    }
    let grew = rss_bytes().saturating_sub(before);
    eprintln!(
        "retained: {} topics, RSS grew {:.0} MB ({} B per topic, 100-byte payloads included)",
        r.len(),
        grew as f64 / 1e6,
        grew / r.len().max(1)
    );
    // Another shard holds the same messages (shared) under its own index.
    let before = rss_bytes();
    let mut other = Retained::default();
    for m in r.iter() {
        other.store(Arc::clone(m), usize::MAX);
    }
    let grew = rss_bytes().saturating_sub(before);
    eprintln!(
        "retained: another shard's index of them: {:.0} MB ({} B per topic)",
        grew as f64 / 1e6,
        grew / other.len().max(1)
    );
    drop(other);
    r
}

fn lookups(c: &mut Criterion) {
    let r = build();
    let now = Instant::now();
    let mut g = c.benchmark_group("retained_1M");
    for (name, filter, expect) in [
        ("match_10_plus", "dev/4242/+", 10),
        ("match_10_hash", "dev/4242/#", 10),
        ("match_1_root_plus", "+/4242/3", 1),
        ("match_100k", "dev/+/3", devices()),
        ("match_0", "other/#", 0),
    ] {
        assert_eq!(r.matching(filter, now).len(), expect, "{filter}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(r.matching(black_box(filter), now)))
        });
    }
    g.finish();
}

fn stores(c: &mut Criterion) {
    let mut r = build();
    let payload = Bytes::from(vec![b'y'; 100]);
    let mut g = c.benchmark_group("retained_1M");
    let mut i = 0usize;
    g.bench_function("replace", |b| {
        b.iter(|| {
            i = (i + 7919) % devices();
            r.store(message(format!("dev/{i}/5"), &payload), usize::MAX)
        })
    });
    g.finish();
}

criterion_group!(benches, lookups, stores);
criterion_main!(benches);
