//! N PUBLISHes of one fan-out variant, for instruction counts that do not
//! depend on the machine's load:
//!
//! ```sh
//! cargo build --release -p ringmq-benches --example fanout_count
//! valgrind --tool=callgrind target/release/examples/fanout_count aliyun-traces-on 20000
//! ```
//!
//! Run it with two counts: the difference over the difference in counts
//! is the cost of one PUBLISH to 100 subscribers, without the set-up.

use ringmq_benches::fanout::{Fanout, Variant};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let Some((_, v)) = Variant::ALL.into_iter().find(|(n, _)| *n == name) else {
        eprintln!("usage: fanout_count standard|aliyun-traces-off|aliyun-traces-on [PUBLISHES]");
        return std::process::ExitCode::from(2);
    };
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let mut f = Fanout::new(v);
    let mut delivered = 0;
    for _ in 0..n {
        delivered = f.publish();
    }
    eprintln!("{delivered} deliveries");
    std::process::ExitCode::SUCCESS
}
