//! The offline log's write and read paths, without the broker around them:
//!
//! - `append`: one message for one persistent session, encoded as the
//!   storage layer encodes it (a frame with crc32c) and copied into the
//!   mmapped segment; its acknowledgement frees it, so segments are
//!   deleted as they fill and the log stays small however long it runs.
//!   No msync: that is the flush policy's cost, measured end to end.
//! - `recover`: reading a log of 100,000 such messages as a shard does at
//!   start: every frame checked, each message's lsn, weight and holder
//!   taken, its place indexed; the message itself is not decoded.
//! - `read`: reading those messages back by lsn and decoding them, as a
//!   session drains what was held for it on disk.
//!
//! Throughput is in records (and bytes of payload).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq_engine::core::journal::{Entry, Target};
use ringmq_engine::core::message::Message;
use ringmq_engine::store::log::Log;
use ringmq_engine::store::record::{self, Clock};
use ringmq_protocol::{QoS, TopicName};

const SIZES: &[(&str, usize)] = &[("100B", 100), ("1KiB", 1024)];
const SEGMENT_BYTES: usize = 8 << 20;
const RECOVER_RECORDS: u64 = 100_000;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringmq-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn message(payload: usize) -> Arc<Message> {
    Arc::new(Message {
        id: 1,
        topic: TopicName::new("sensors/building-7/floor-3/room-12".to_owned()).expect("topic"),
        payload: Bytes::from(vec![b'x'; payload]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
        origin: 1,
        expires_at: None,
        encoded: Default::default(),
    })
}

fn entry(lsn: u64, message: &Arc<Message>) -> Entry {
    Entry::Message {
        lsn,
        message: Arc::clone(message),
        targets: vec![Target {
            uid: 7,
            qos: QoS::AtLeastOnce,
            retain: false,
        }],
    }
}

fn clock() -> Clock {
    Clock {
        now: Instant::now(),
        now_millis: 1_790_000_000_000,
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("offline_log/append");
    for &(name, size) in SIZES {
        g.throughput(Throughput::Elements(1));
        let path = dir(&format!("append-{name}"));
        let (mut log, _) = Log::open(&path, SEGMENT_BYTES, |_, _| None).expect("open");
        let m = message(size);
        let (clock, mut scratch, mut frame) = (clock(), BytesMut::new(), Vec::new());
        let mut lsn = 0u64;
        g.bench_function(BenchmarkId::new("message+ack", name), |b| {
            b.iter(|| {
                lsn += 1;
                frame.clear();
                record::encode(&entry(lsn, &m), clock, &mut scratch, &mut frame);
                log.append_message(&frame, lsn, 1).expect("append");
                frame.clear();
                record::encode(&Entry::Ack { uid: 7, lsn }, clock, &mut scratch, &mut frame);
                log.append(&frame).expect("append");
                log.release(lsn);
                if lsn.is_multiple_of(4096) {
                    log.reclaim();
                }
            })
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&path);
    }
    g.finish();
}

/// A log of `RECOVER_RECORDS` messages of `size` bytes in a fresh directory.
fn filled(name: &str, size: usize) -> PathBuf {
    let path = dir(name);
    let (mut log, _) = Log::open(&path, SEGMENT_BYTES, |_, _| None).expect("open");
    let m = message(size);
    let (clock, mut scratch, mut frame) = (clock(), BytesMut::new(), Vec::new());
    for lsn in 1..=RECOVER_RECORDS {
        frame.clear();
        record::encode(&entry(lsn, &m), clock, &mut scratch, &mut frame);
        log.append_message(&frame, lsn, 1).expect("append");
    }
    path
}

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("offline_log/recover");
    g.sample_size(10);
    for &(name, size) in SIZES {
        let path = filled(&format!("recover-{name}"), size);
        g.throughput(Throughput::Elements(RECOVER_RECORDS));
        g.bench_function(BenchmarkId::new("open+index", name), |b| {
            let mut targets = Vec::new();
            b.iter(|| {
                let mut n = 0u64;
                let opened = Log::open(&path, SEGMENT_BYTES, |_, body| {
                    targets.clear();
                    let (lsn, weight) = record::peek_message(body, &mut targets)?.ok()?;
                    black_box(weight);
                    n += 1;
                    Some(lsn)
                });
                black_box(opened.expect("open"));
                assert_eq!(n, RECOVER_RECORDS);
            })
        });
        let _ = std::fs::remove_dir_all(&path);
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("offline_log/read");
    for &(name, size) in SIZES {
        let path = filled(&format!("read-{name}"), size);
        let (mut log, _) = Log::open(&path, SEGMENT_BYTES, |_, body| {
            record::peek_message(body, &mut Vec::new())?
                .ok()
                .map(|(lsn, _)| lsn)
        })
        .expect("open");
        let clock = clock();
        let mut lsn = 0u64;
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("by-lsn+decode", name), |b| {
            b.iter(|| {
                lsn = lsn % RECOVER_RECORDS + 1;
                let body = log.read(lsn).expect("held");
                black_box(record::decode_message(body, clock).expect("decodes"))
            })
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&path);
    }
    g.finish();
}

criterion_group!(benches, append, recover, read);
criterion_main!(benches);
