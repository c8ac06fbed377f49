//! Criterion benches live in `benches/`; what more than one of them (or
//! an example run under valgrind) sets up lives here.

pub mod fanout;
pub mod raw;

/// This process's resident set, in bytes (0 if /proc cannot say).
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Whether the bench was started to measure (`cargo bench` passes
/// `--bench`), not by `cargo test --benches`, which only checks that each
/// bench runs: the big setups shrink then.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}
