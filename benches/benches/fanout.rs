//! One shard's fan-out in `engine::core`, without sockets (see
//! `ringmq_benches::fanout`): the standard profile, the aliyun profile
//! with traces off, and with traces on. Throughput is in deliveries.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq_benches::fanout::{Fanout, Variant, SUBSCRIBERS};

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (name, v) in Variant::ALL {
        let mut f = Fanout::new(v);
        group.bench_function(BenchmarkId::new("qos0-100-subscribers", name), |b| {
            b.iter(|| black_box(f.publish()))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
