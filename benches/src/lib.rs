//! Criterion benches live in `benches/`; what more than one of them (or
//! an example run under valgrind) sets up lives here.

pub mod fanout;
