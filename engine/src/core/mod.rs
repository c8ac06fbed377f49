//! The broker's logic, without sockets, threads or clocks: sessions, the
//! subscription trie, in-flight windows, limits and authorization. Every
//! entry point takes `now`, so all of it runs on a virtual clock in tests.

pub mod aliyun;
pub mod auth;
mod backpressure;
pub mod broker;
pub mod cluster;
pub mod connect;
mod deliver;
mod durable;
pub mod inflow;
pub mod journal;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod moved;
mod offline;
pub mod operate;
pub mod outflow;
mod p2p;
mod persist;
mod publish;
pub mod restore;
pub mod retained;
pub mod session;
pub mod shared;
pub mod spill;
pub mod stats;
pub mod subject;
mod subscribe;
pub mod timers;
pub mod trace;
pub mod trie;
pub mod tx;

pub use broker::{Broker, ConnId, Flow, Remote};
pub use connect::{Accepted, Refused};
pub use limits::Limits;
pub use subscribe::PendingSubAck;

use session::Subscription;

/// One subscription in the trie: whose it is and its options.
#[derive(Debug, Clone, Copy)]
pub struct Sub {
    /// Slot of the subscribing session.
    pub slot: u32,
    /// Instance-unique id of the session, for No Local.
    pub uid: u64,
    /// The subscription.
    pub sub: Subscription,
}
