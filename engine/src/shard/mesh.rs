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
    /// Publishes, retained messages and route changes, in order.
    Batch(Vec<Remote>),
    /// A connection whose client's home is the receiving shard: its socket,
    /// its CONNECT and the bytes read after it.
    Handoff(Box<Handoff>),
    /// Answer with `BarrierAck` once everything sent before is applied.
    Barrier(u64),
    /// Everything sent before the barrier `token` is applied.
    BarrierAck(u64),
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
    /// Bytes read after CONNECT.
    pub rest: Bytes,
}

/// Receives everything peer `from` sends, until the mesh closes.
pub(super) async fn receive(shard: Rc<Shard>, from: usize, rx: ConnectedReceiver<ShardMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Batch(batch) => {
                let now = Instant::now();
                {
                    let mut broker = shard.broker.borrow_mut();
                    for remote in batch {
                        broker.apply_remote(from, remote, now);
                    }
                }
                shard.flush_outbox().await;
                shard.wait_backpressure(None).await;
            }
            ShardMsg::Handoff(h) => {
                let Handoff {
                    fd,
                    connect,
                    assigned,
                    rest,
                } = *h;
                // SAFETY: the descriptor was duplicated for this shard alone.
                let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                let shard = Rc::clone(&shard);
                glommio::spawn_local(super::conn::resume(shard, stream, connect, assigned, rest))
                    .detach();
            }
            ShardMsg::Barrier(token) => {
                let shard = Rc::clone(&shard);
                // Answered from its own task, so that this receiver keeps
                // draining even if the way back is full.
                glommio::spawn_local(async move {
                    let _ = shard
                        .senders
                        .send_to(from, ShardMsg::BarrierAck(token))
                        .await;
                })
                .detach();
            }
            ShardMsg::BarrierAck(token) => shard.barrier_acked(token),
        }
    }
}
