//! Publishers whose acknowledgement waits for a NATS stream (outflow rules
//! with `ack_after_stored`): the shard hands each such message to the
//! bridge with a one-shot channel, and the connection's commit awaits
//! them (see `Shard::commit`). The bridge's thread sends on the channel;
//! glommio's waker takes the wake-up from that thread.

use std::cell::RefCell;

use ahash::AHashMap;
use tokio::sync::oneshot;

use crate::bridge::Confirm;

/// The channels of the messages not yet confirmed, by token.
#[derive(Debug, Default)]
pub(super) struct Confirms {
    waiting: RefCell<AHashMap<u64, oneshot::Receiver<bool>>>,
}

impl Confirms {
    /// The channel the bridge confirms message `token` on.
    pub(super) fn channel(&self, token: u64) -> Confirm {
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(token, rx);
        tx
    }

    /// Whether the stream stored every message of `tokens`; waits for
    /// each. False as soon as one was not handed over or the bridge gave
    /// it up.
    pub(super) async fn all(&self, tokens: Vec<u64>) -> bool {
        let waiting: Vec<_> = {
            let mut map = self.waiting.borrow_mut();
            tokens.iter().map(|t| map.remove(t)).collect()
        };
        for rx in waiting {
            let Some(rx) = rx else { return false };
            if rx.await != Ok(true) {
                return false;
            }
        }
        true
    }

    /// Lets go of `tokens` (their connection closed).
    pub(super) fn forget(&self, tokens: &[u64]) {
        let mut map = self.waiting.borrow_mut();
        for t in tokens {
            map.remove(t);
        }
    }
}
