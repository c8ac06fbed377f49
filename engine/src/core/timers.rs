//! The end of connections and sessions: DISCONNECT, a dropped connection,
//! keep-alive expiry, Will delay and session expiry. [`Broker::tick`] runs
//! the clock-driven parts; the shard calls it periodically.

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_protocol::{Disconnect, ReasonCode};

use super::aliyun::notices::Event;
use super::broker::{Broker, ConnId};
use super::message::Message;
use super::session::Link;
use super::trace::{Action, Info};

/// How often expired retained messages are purged.
const RETAINED_PURGE_PERIOD: Duration = Duration::from_secs(10);

/// What a connection's writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Write what was taken; then close if `close`.
    Ready {
        /// Close the connection after writing.
        close: bool,
    },
    /// Nothing to write; the waker is registered.
    Idle,
    /// The connection is no longer known: close it.
    Gone,
}

impl Broker {
    /// Moves connection `id`'s pending output into `out`, for its writer.
    pub fn take_output(&mut self, id: ConnId, out: &mut Vec<Bytes>, waker: &Waker) -> Output {
        if let Some(tx) = self.tx_mut(id) {
            if tx.is_empty() && !tx.is_closing() {
                tx.set_waker(waker);
                self.recheck_backlog(id.session);
                return Output::Idle;
            }
            let close = tx.take(out);
            self.recheck_backlog(id.session);
            return Output::Ready { close };
        }
        match self.detached.remove(&id) {
            Some(mut tx) => Output::Ready {
                close: tx.take(out),
            },
            None => Output::Gone,
        }
    }

    pub(super) fn disconnect_in(&mut self, id: ConnId, d: Disconnect, now: Instant) {
        let max_expiry = self.limits.session_expiry_secs_max;
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let asked = d.properties.session_expiry_interval;
        if let Some(secs) = asked {
            if session.expiry_secs == 0 && secs != 0 {
                return self.fail(
                    id,
                    ReasonCode::ProtocolError,
                    "[MQTT-3.14.2-2] Session Expiry set on DISCONNECT after 0 on CONNECT",
                );
            }
            session.expiry_secs = secs.min(max_expiry);
        }
        let Some(link) = session.link.as_mut() else {
            return;
        };
        // DISCONNECT 0x04 keeps the Will; any other discards it [MQTT-3.14.4-3].
        link.graceful = d.reason_code != ReasonCode::DisconnectWithWill;
        link.end.get_or_insert(Info::DisconnectedByClient);
        link.tx.close();
        let peer = link.aliyun.as_ref().and_then(|a| a.peer);
        let (client, name) = (session.client_id.clone(), session.trace_name);
        let info = Info::DisconnectedByClient;
        self.trace_device(now, Action::Disconnect, info, name, id.generation);
        self.notify(Event::Disconnect, client.as_str(), id.generation, peer, now);
    }

    /// The connection `id` is gone (closed by either side). Publishes the
    /// Will unless the client disconnected cleanly, and ends the session or
    /// starts its expiry.
    pub fn disconnected(&mut self, id: ConnId, now: Instant) {
        self.detached.remove(&id);
        // Acknowledgements still held (the connection closed before they
        // were released) have no one to go to.
        let _ = self.take_held_acks(id);
        let _ = self.take_confirms(id);
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let Some(mut link) = session.link.take() else {
            return;
        };
        let (client, name) = (session.client_id.clone(), session.trace_name);
        let expiry = session.expiry_secs;
        session.expires_at = match expiry {
            u32::MAX => None,
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        };
        let info = link.end.take().unwrap_or(Info::ClosedByClient);
        self.trace_device(now, Action::Close, info, name, id.generation);
        self.cluster_disconnected(client.as_str(), id.generation);
        let peer = link.aliyun.as_ref().and_then(|a| a.peer);
        self.notify(Event::TcpClean, client.as_str(), id.generation, peer, now);
        let orphans = self.take_shared(id.session);
        self.log_detached(id.session, now);
        self.schedule_will(id.session, link, now);
        if expiry == 0 {
            self.end_session(id.session, now);
        }
        // After the session left its groups, so that none goes back to it.
        self.redistribute(orphans, now);
    }

    fn schedule_will(&mut self, slot: u32, link: Link, now: Instant) {
        let Some(will) = link.will.filter(|_| !link.graceful) else {
            return;
        };
        let Some(session) = self.slot(slot) else {
            return;
        };
        // The Will waits for its delay or the session's end, whichever is first.
        let delay = will.delay_secs.min(session.expiry_secs);
        if delay == 0 {
            return self.publish_will(will.message, now);
        }
        let at = now + Duration::from_secs(u64::from(delay));
        session.will_due = Some(Box::new((at, will.message)));
    }

    /// Publishes a Will (or any broker-made message) as if a client had.
    pub(super) fn publish_will(&mut self, mut message: Message, now: Instant) {
        self.stats.wills += 1;
        message.id = self.new_message_id(now);
        if let Some(secs) = message
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
        {
            message.expires_at = Some(now + Duration::from_secs(u64::from(secs)));
        }
        tracing::debug!(topic = %message.topic.as_str(), "publishing Will");
        let _ = self.route_published(Arc::new(message), now);
    }

    /// Ends session `slot`: its subscriptions leave the trie, its messages
    /// are dropped, a pending Will is published.
    pub(super) fn end_session(&mut self, slot: u32, now: Instant) {
        self.unlog_session(slot, false, now);
        let Some(session) = self.slot(slot) else {
            return;
        };
        let filters: Vec<Box<str>> = session.subs.keys().cloned().collect();
        let will = session.will_due.take();
        for filter in filters {
            self.remove_subscription(slot, &filter);
        }
        if let Some(due) = will {
            self.publish_will(due.1, now);
        }
        if let Some(session) = self.sessions.get_mut(slot as usize).and_then(Option::take) {
            self.by_client.remove(&session.client_id);
            self.traces.release(session.trace_name);
            self.free_slots.push(slot);
        }
    }

    /// Runs what is due at `now`: keep-alive timeouts (1.5 × the
    /// keep-alive [MQTT-3.1.2-22]), delayed Wills and expired sessions.
    pub fn tick(&mut self, now: Instant) {
        let mut silent = Vec::new();
        let mut wills = Vec::new();
        let mut expired = Vec::new();
        for (slot, session) in self.sessions.iter_mut().enumerate() {
            let Some(session) = session.as_mut() else {
                continue;
            };
            if let Some(link) = &session.link {
                let idle = now.saturating_duration_since(link.last_rx);
                if link.idle_max.is_some_and(|max| idle > max) && !link.tx.is_closing() {
                    silent.push(ConnId {
                        session: slot as u32,
                        generation: link.generation,
                    });
                }
            } else if session.expires_at.is_some_and(|at| at <= now) {
                expired.push(slot as u32);
            }
            if session.will_due.as_ref().is_some_and(|due| due.0 <= now) {
                if let Some(due) = session.will_due.take() {
                    wills.push(due.1);
                }
            }
        }
        for id in silent {
            self.stats.keep_alive_timeouts += 1;
            self.set_close_info(id, Info::NoHeart);
            self.fail(
                id,
                ReasonCode::KeepAliveTimeout,
                "[MQTT-3.1.2-22] no packet within 1.5 × Keep Alive",
            );
        }
        for message in wills {
            self.publish_will(message, now);
        }
        for slot in expired {
            self.stats.sessions_expired += 1;
            self.end_session(slot, now);
        }
        if now.saturating_duration_since(self.retained_purged_at) >= RETAINED_PURGE_PERIOD {
            self.retained_purged_at = now;
            self.retained.purge_expired(now);
            let now_ms = self.unix_millis(now);
            self.traces.purge(now_ms);
        }
        self.check_tokens(now);
        if self.journal.enabled {
            self.enforce_offline_caps(now);
        }
    }
}
