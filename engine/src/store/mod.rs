//! Files: the per-shard logs that keep persistent sessions, their
//! unacknowledged messages and retained messages across restarts, and the
//! instance registry of the Alibaba Cloud profile. Plain
//! blocking file code with no event loop: the shard layer decides when it
//! runs and moves the slow calls (msync, segment creation) off its reactor.

pub mod log;
pub mod record;
pub mod registry;
pub mod replace;
pub mod segment;
