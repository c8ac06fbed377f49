//! `loadgen`: drives any MQTT 3.1.1 / 5.0 broker with a scenario, records
//! latency in HdrHistograms, checks every message for loss, duplication
//! and order, and compares and plots runs.
//!
//! The main thread moves a run through its phases ([`ctx::Phase`]); one
//! pinned worker thread per core ([`worker`]) drives its share of the
//! clients on a single-threaded runtime. Packets are encoded and decoded
//! by `ringmq-protocol` only.

// A command-line tool's results are its standard output.
#![allow(clippy::print_stdout)]

pub mod checks;
pub mod cli;
pub mod compare;
pub mod connector;
pub mod ctx;
pub mod findmax;
pub mod format;
pub mod identity;
pub mod mqtt;
pub mod pacer;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod publisher;
pub mod reference;
pub mod report;
pub mod run;
pub mod seqset;
pub mod stamp;
pub mod subscriber;
pub mod summary;
pub mod system;
pub mod transport;
pub mod worker;
