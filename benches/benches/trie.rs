//! The subscription trie of one shard with 1,000,000 filters (20,000 under
//! `cargo test`, which only checks that it runs), 10 % of them
//! with wildcards: `site/<s>/dev/<d>/cmd` (900,000 literal), and for the
//! first 50 devices of each of the 1,000 sites `site/<s>/dev/<d>/#` and
//! `site/<s>/+/<d>/cmd` (100,000). A publish to `site/<s>/dev/<d>/cmd`
//! matches three filters (one for devices past the first 50). Measured:
//! matching one topic, subscribing and unsubscribing one filter in the full
//! trie, and (printed once) the memory per filter and the time to build it.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmq_benches::{measuring, rss_bytes};
use ringmq_engine::core::trie::Trie;

/// 1,000 sites when measuring, 20 under `cargo test`.
fn sites() -> usize {
    match measuring() {
        true => 1_000,
        false => 20,
    }
}
const DEVICES: usize = 900;
const WILD_DEVICES: usize = 50;

fn filters() -> Vec<String> {
    let mut all = Vec::with_capacity(sites() * (DEVICES + 2 * WILD_DEVICES));
    for s in 0..sites() {
        for d in 0..DEVICES {
            all.push(format!("site/{s}/dev/{d}/cmd"));
        }
        for d in 0..WILD_DEVICES {
            all.push(format!("site/{s}/dev/{d}/#"));
            all.push(format!("site/{s}/+/{d}/cmd"));
        }
    }
    all
}

fn build() -> Trie<u64> {
    let filters = filters();
    let before = rss_bytes();
    let started = Instant::now();
    let mut t: Trie<u64> = Trie::default();
    for f in &filters {
        *t.entry(f) |= 1;
    }
    let took = started.elapsed();
    let grew = rss_bytes().saturating_sub(before);
    eprintln!(
        "trie: {} filters in {:.2} s ({:.0}k subscribes/s), {} nodes, RSS grew {:.0} MB ({} B per filter)",
        filters.len(),
        took.as_secs_f64(),
        filters.len() as f64 / took.as_secs_f64() / 1e3,
        t.node_count(),
        grew as f64 / 1e6,
        grew / filters.len()
    );
    t
}

fn bench(c: &mut Criterion) {
    let mut t = build();
    let mut g = c.benchmark_group("trie_1M");
    for (name, topic, expect) in [
        ("match_3", "site/17/dev/7/cmd", 3),
        ("match_1", "site/17/dev/700/cmd", 1),
        ("match_0", "site/17/dev/7/status", 1),
        ("match_none", "elsewhere/x", 0),
    ] {
        let mut n = 0;
        t.for_each_match(topic, |_| n += 1);
        assert_eq!(n, expect, "{topic}");
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0u32;
                t.for_each_match(black_box(topic), |s| n += *s as u32);
                n
            })
        });
    }
    let mut i = 0usize;
    g.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            i = (i + 7919) % sites();
            let f = format!("site/{i}/new/+/x");
            *t.entry(&f) |= 1;
            *t.entry(&f) = 0;
            t.prune(&f);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
