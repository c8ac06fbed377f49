//! The offline log's write and read paths, without the broker around them:
//!
//! - `append`: one message for one persistent session, encoded as the
//!   storage layer encodes it (a frame with crc32c) and copied into the
//!   mmapped segment; its acknowledgement frees it, so segments are
//!   deleted as they fill and the log stays small however long it runs.
//!   No msync: that is the flush policy's cost, measured end to end.
//! - `recover`: reading back and decoding a log of 100,000 such messages
//!   (as a shard does at start).
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
        let (mut log, _) = Log::open(&path, SEGMENT_BYTES, |_, _| {}).expect("open");
        let m = message(size);
        let (clock, mut scratch, mut frame) = (clock(), BytesMut::new(), Vec::new());
        let mut lsn = 0u64;
        g.bench_function(BenchmarkId::new("message+ack", name), |b| {
            b.iter(|| {
                lsn += 1;
                frame.clear();
                record::encode(&entry(lsn, &m), clock, &mut scratch, &mut frame);
                log.append(&frame).expect("append");
                log.add_message(lsn, 1);
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

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("offline_log/recover");
    g.sample_size(10);
    for &(name, size) in SIZES {
        let path = dir(&format!("recover-{name}"));
        let (mut log, _) = Log::open(&path, SEGMENT_BYTES, |_, _| {}).expect("open");
        let m = message(size);
        let (clock, mut scratch, mut frame) = (clock(), BytesMut::new(), Vec::new());
        for lsn in 1..=RECOVER_RECORDS {
            frame.clear();
            record::encode(&entry(lsn, &m), clock, &mut scratch, &mut frame);
            log.append(&frame).expect("append");
        }
        drop(log);
        g.throughput(Throughput::Elements(RECOVER_RECORDS));
        g.bench_function(BenchmarkId::new("open+decode", name), |b| {
            b.iter(|| {
                let mut n = 0u64;
                let opened = Log::open(&path, SEGMENT_BYTES, |_, body| {
                    if record::decode(body, clock).is_ok() {
                        n += 1;
                    }
                });
                black_box(opened.expect("open"));
                assert_eq!(n, RECOVER_RECORDS);
            })
        });
        let _ = std::fs::remove_dir_all(&path);
    }
    g.finish();
}

criterion_group!(benches, append, recover);
criterion_main!(benches);
