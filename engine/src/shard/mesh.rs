//! What shards send each other over the mesh, and the task that receives
//! from one peer. Every queue is bounded; a sender that finds it full waits,
//! which holds back the publisher that caused it (never a silent drop).

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::TcpStream;
use ringmq_protocol::Connect;

use super::context::Shard;
use crate::core::Remote;

/// One message between two shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Publishes, retained messages and route changes, in order; and
    /// whether route changes are among them (see `shard::routes`), found
    /// by the sender, which counted it.
    Batch(Vec<Remote>, bool),
    /// A connection whose client's home is the receiving shard: its socket,
    /// its CONNECT and the bytes read after it.
    Handoff(Box<Handoff>),
}

/// A connection moving to its home shard.
#[derive(Debug)]
pub struct Handoff {
    /// The socket.
    pub fd: OwnedFd,
    /// Its CONNECT.
    pub connect: Box<Connect>,
    /// Whether the client identifier was assigned by the server.
    pub assigned: bool,
    /// Bytes read after CONNECT (plaintext).
    pub rest: Bytes,
    /// Its transport (a TLS session goes with it).
    pub transport: super::transport::Transport,
}

/// Receives everything peer `from` sends, until the mesh closes.
pub(super) async fn receive(shard: Rc<Shard>, from: usize, rx: ConnectedReceiver<ShardMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Batch(batch, routes) => {
                apply(&shard, from, batch);
                if routes {
                    shard.routes.applied(from);
                }
                shard.kick();
                shard.wake_paused();
                if shard.must_queue(None) {
                    shard.wait_turn(None).await;
                }
            }
            ShardMsg::Handoff(h) => {
                let Handoff {
                    fd,
                    connect,
                    assigned,
                    rest,
                    transport,
                } = *h;
                // SAFETY: the descriptor was duplicated for this shard alone.
                let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                let shard = Rc::clone(&shard);
                super::conn::resume(shard, stream, transport, connect, assigned, rest);
            }
        }
    }
}

/// Applies one batch from `from`; barriers are answered through the outbox,
/// behind anything queued for `from` before.
fn apply(shard: &Rc<Shard>, from: usize, batch: Vec<Remote>) {
    let now = Instant::now();
    let mut synced_acks = Vec::new();
    let mut broker = shard.broker.borrow_mut();
    for remote in batch {
        match remote {
            Remote::Barrier(token) if shard.sync_before_barrier_ack() => synced_acks.push(token),
            Remote::Barrier(token) => broker.outbox[from].push(Remote::BarrierAck(token)),
            Remote::BarrierAck(token) => shard.barrier_acked(token),
            other => broker.apply_remote(from, other, now),
        }
    }
    drop(broker);
    // Spawned tasks may run at once: the broker is no longer borrowed.
    for token in synced_acks {
        glommio::spawn_local(ack_when_synced(Rc::clone(shard), from, token)).detach();
    }
}

/// Answers barrier `token` from `from` once this shard's log is synced
/// (`flush = always`): the peer holds acknowledgements until then.
async fn ack_when_synced(shard: Rc<Shard>, from: usize, token: u64) {
    // What the batch journaled is appended first.
    shard.kick();
    if let Some(storage) = &shard.storage {
        storage.synced().await;
    }
    shard.broker.borrow_mut().outbox[from].push(Remote::BarrierAck(token));
    shard.kick();
}
