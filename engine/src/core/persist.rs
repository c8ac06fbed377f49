//! What the broker tells its journal when a session's persistent state
//! changes: created or resumed, detached, ended; subscriptions; retained
//! messages of the topics this shard owns.

use std::sync::Arc;
use std::time::Instant;

use super::broker::Broker;
use super::connect::home_shard;
use super::journal::{Entry, InflightRef};
use super::message::Message;
use super::session::{Session, Subscription};
use super::spill::Loader;

impl Broker {
    /// Milliseconds since the Unix epoch at `now`.
    pub fn unix_millis(&self, now: Instant) -> u64 {
        self.start_millis + now.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Sets the wall clock: `now` is `unix_millis` milliseconds after the
    /// Unix epoch (tests move it; a broker reads it once at start).
    pub fn set_wall_clock(&mut self, now: Instant, unix_millis: u64) {
        self.start = now;
        self.start_millis = unix_millis;
    }

    /// After CONNECT: a persistent session is logged (again, with its
    /// current expiry); one that stopped being persistent leaves the log.
    pub(super) fn log_session(&mut self, slot: u32, now: Instant) {
        if !self.journal.enabled {
            return;
        }
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        if session.expiry_secs == 0 {
            return self.unlog_session(slot, true, now);
        }
        let was_logged = std::mem::replace(&mut session.logged, true);
        let entry = Entry::Session {
            uid: session.uid,
            client_id: session.client_id.clone(),
            username: session.username.clone(),
            expiry_secs: session.expiry_secs,
        };
        self.journal.push(entry);
        if !was_logged {
            self.durable_session(slot, true);
        }
    }

    /// Takes session `slot` out of the log: its logged copies stay in
    /// memory (if it goes on: `keep`; those on disk up to
    /// `session_queue_*`) but no longer count.
    pub(super) fn unlog_session(&mut self, slot: u32, keep: bool, now: Instant) {
        let (msgs_max, bytes_max) = (
            self.limits.session_queue_messages_max,
            self.limits.session_queue_bytes_max,
        );
        let now_millis = self.unix_millis(now);
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        if !session.logged {
            return;
        }
        session.logged = false;
        if keep {
            let room = msgs_max.saturating_sub(session.queue.len());
            let mut loader = Loader {
                log: self.log.as_deref(),
                journal: &mut self.journal,
                stats: &mut self.stats,
                now,
                now_millis,
            };
            loader.refill(session, room);
            let mut dropped = session.spilled.len() as u64;
            while session.queued_bytes > bytes_max && session.queue.len() > 1 {
                if let Some(q) = session.queue.pop_back() {
                    session.queued_bytes -= q.message.weight();
                    self.journal.release(q.lsn);
                    dropped += 1;
                }
            }
            self.stats.dropped_queue_full += dropped;
        }
        for lsn in session.lsns() {
            self.journal.release(lsn);
        }
        for m in session.inflight.iter_mut() {
            m.lsn = 0;
        }
        for q in session.queue.iter_mut() {
            q.lsn = 0;
        }
        session.spilled.clear();
        session.spilled_bytes = 0;
        let uid = session.uid;
        self.journal.push(Entry::SessionEnd { uid });
        self.durable_session(slot, false);
    }

    /// The connection of logged session `slot` ended at `now`: what it
    /// has queued goes to disk.
    pub(super) fn log_detached(&mut self, slot: u32, now: Instant) {
        let at_millis = self.unix_millis(now);
        let Some(Some(session)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        if session.logged && session.expiry_secs > 0 {
            session.spill_queue();
            let uid = session.uid;
            let inflight = inflight_refs(session);
            self.journal.push(Entry::Detached {
                uid,
                at_millis,
                inflight,
            });
        }
    }

    /// Session `slot` subscribed to `filter` (or replaced it).
    pub(super) fn log_subscribe(&mut self, slot: u32, filter: &str, sub: Subscription) {
        let Some(Some(session)) = self.sessions.get(slot as usize) else {
            return;
        };
        if session.logged {
            let (uid, filter) = (session.uid, filter.into());
            self.journal.push(Entry::Subscribe { uid, filter, sub });
        }
    }

    /// Session `slot` unsubscribed from `filter`.
    pub(super) fn log_unsubscribe(&mut self, slot: u32, filter: &str) {
        let Some(Some(session)) = self.sessions.get(slot as usize) else {
            return;
        };
        if session.logged {
            let (uid, filter) = (session.uid, filter.into());
            self.journal.push(Entry::Unsubscribe { uid, filter });
        }
    }

    /// Session `slot`'s client sent QoS 2 PUBLISH `packet_id` (received)
    /// or released it with PUBREL.
    pub(super) fn log_qos2_in(&mut self, slot: u32, packet_id: u16, received: bool) {
        let Some(Some(session)) = self.sessions.get(slot as usize) else {
            return;
        };
        if session.logged {
            let uid = session.uid;
            self.journal.push(Entry::Qos2In {
                uid,
                packet_id,
                received,
            });
        }
    }

    /// A retained message was stored or cleared on this shard: logged if
    /// this shard owns its topic (one log per topic, so one order).
    /// `$SYS/` topics are the broker's own figures, published again every
    /// `sys_interval_secs`: never logged.
    pub(super) fn log_retained(&mut self, message: &Arc<Message>) {
        let topic = message.topic.as_str();
        if self.journal.enabled && self.owns_topic(topic) && !topic.starts_with("$SYS/") {
            self.journal.push(Entry::Retain(Arc::clone(message)));
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The lsn of every logged copy held by a session.
    pub fn held_lsns(&self) -> impl Iterator<Item = u64> + '_ {
        let logged = self.sessions.iter().flatten().filter(|s| s.logged);
        logged.flat_map(|s| s.lsns())
    }

    /// Everything live in the state log, as entries that rebuild it:
    /// logged sessions with their subscriptions, and the retained messages
    /// this shard owns.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for s in self.sessions.iter().flatten().filter(|s| s.logged) {
            out.push(Entry::Session {
                uid: s.uid,
                client_id: s.client_id.clone(),
                username: s.username.clone(),
                expiry_secs: s.expiry_secs,
            });
            if let (None, Some(at)) = (&s.link, s.expires_at) {
                let ends = self.unix_millis(at);
                let at_millis = ends.saturating_sub(u64::from(s.expiry_secs) * 1000);
                let inflight = inflight_refs(s);
                out.push(Entry::Detached {
                    uid: s.uid,
                    at_millis,
                    inflight,
                });
            }
            for (filter, sub) in &s.subs {
                let (uid, filter, sub) = (s.uid, filter.clone(), *sub);
                out.push(Entry::Subscribe { uid, filter, sub });
            }
            for &packet_id in &s.qos2_in {
                let uid = s.uid;
                out.push(Entry::Qos2In {
                    uid,
                    packet_id,
                    received: true,
                });
            }
        }
        for m in self.retained.iter() {
            if self.owns_topic(m.topic.as_str()) {
                out.push(Entry::Retain(Arc::clone(m)));
            }
        }
        out
    }

    /// Whether this shard logs the retained message of `topic`.
    pub fn owns_topic(&self, topic: &str) -> bool {
        home_shard(topic.as_bytes(), self.shards) == self.shard
    }
}

/// The logged messages in `session`'s window.
fn inflight_refs(session: &Session) -> Vec<InflightRef> {
    let logged = session.inflight.iter().filter(|m| m.lsn != 0);
    logged
        .map(|m| InflightRef {
            lsn: m.lsn,
            packet_id: m.packet_id.get(),
            released: m.released,
        })
        .collect()
}
