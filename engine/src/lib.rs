//! ringmq: an MQTT 3.1.1 / 5.0 broker, thread-per-core on io_uring.
//!
//! [`core`] is the broker's logic without sockets or clocks; [`shard`] runs
//! it on glommio executors, one per core; [`config`] reads the config file
//! and flags.

pub mod access;
pub mod acl;
pub mod admin;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod core;
pub mod instance;
pub mod passwd;
pub mod shard;
pub mod store;
