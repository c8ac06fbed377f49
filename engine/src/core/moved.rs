//! A persistent session moving between the nodes of a cluster: the node
//! that holds it gives it up ([`Broker::export_session`]: its connection
//! is taken over, its subscriptions and unacknowledged messages are taken
//! out, the session ends here), and the node where its client connected
//! takes it in ([`Broker::import_session`]) before handling the CONNECT,
//! which then resumes it. The bridge carries it between them.

use std::sync::Arc;
use std::time::Instant;

use ringmq_protocol::{topic, MqttString, QoS};

use super::broker::Broker;
use super::cluster::FROM_CLUSTER;
use super::deliver::{Encoded, Outgoing};
use super::message::Message;
use super::session::{Session, Subscription};
use super::spill::Loader;
use super::Sub;

/// A session on its way to another node.
#[derive(Debug, Default)]
pub struct Moved {
    /// The user it was authorized for: only that user resumes it.
    pub username: Option<MqttString>,
    /// Session Expiry Interval, in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// Its subscriptions, `$share/…` included.
    pub subs: Vec<(Box<str>, Subscription)>,
    /// Its copies not yet acknowledged by its client, oldest first: those
    /// in flight, then those queued. A QoS 2 copy whose PUBREC came is
    /// not among them (the client has it; the PUBREL/PUBCOMP exchange
    /// does not move).
    pub messages: Vec<MovedCopy>,
    /// Packet identifiers of its client's QoS 2 messages received (PUBREC
    /// sent) and not yet released: a resend is not delivered again.
    pub qos2_in: Vec<u16>,
}

/// One unacknowledged copy.
#[derive(Debug)]
pub struct MovedCopy {
    /// The message.
    pub message: Arc<Message>,
    /// QoS of the copy.
    pub qos: QoS,
    /// RETAIN flag of the copy.
    pub retain: bool,
}

impl Broker {
    /// Gives up the persistent session of `client_id` to another node: its
    /// connection here is closed as a take-over closes it (v5 0x8E), its
    /// state is returned, and it ends here. `None` if there is none (or
    /// it is not persistent).
    pub fn export_session(&mut self, client_id: &str, now: Instant) -> Option<Moved> {
        let slot = *self.by_client.get(client_id)?;
        if self.slot(slot)?.expiry_secs == 0 {
            return None;
        }
        // The client resumes it elsewhere: a delayed Will is not due.
        self.take_over(slot, true, now);
        let now_millis = self.unix_millis(now);
        let session = self.sessions.get_mut(slot as usize)?.as_mut()?;
        session.will_due = None;
        let mut loader = Loader {
            log: self.log.as_deref(),
            journal: &mut self.journal,
            stats: &mut self.stats,
            now,
            now_millis,
        };
        loader.refill(session, usize::MAX);
        let moved = take_state(session);
        self.end_session(slot, now);
        self.stats.sessions_moved_out += 1;
        tracing::info!(
            client = client_id,
            messages = moved.messages.len(),
            "session moved to another node"
        );
        Some(moved)
    }

    /// Whether a session of `client_id` is here.
    pub fn holds_session(&self, client_id: &str) -> bool {
        self.by_client.contains_key(client_id)
    }

    /// Takes in the session of `client_id` another node gave up, before
    /// the client's CONNECT resumes it. A session of the same client here
    /// is older (the other node had it since): it ends first.
    pub fn import_session(&mut self, client_id: &MqttString, moved: Moved, now: Instant) {
        if let Some(&old) = self.by_client.get(client_id) {
            self.take_over(old, false, now);
            self.end_session(old, now);
        }
        let uid = self.new_uid();
        let mut session = Session::new(uid, client_id.detached());
        session.trace_name = self.traces.intern(&session.client_id);
        session.username = moved.username;
        session.expiry_secs = moved.expiry_secs;
        for (filter, sub) in &moved.subs {
            session.subs.insert(filter.clone(), *sub);
        }
        let slot = self.place_session(session);
        self.log_session(slot, now);
        for (filter, sub) in moved.subs {
            self.log_subscribe(slot, &filter, sub);
            self.add_subscription(slot, uid, &filter, sub);
        }
        for packet_id in moved.qos2_in {
            if let Some(s) = self.slot(slot) {
                s.qos2_in.insert(packet_id);
            }
            self.log_qos2_in(slot, packet_id, true);
        }
        let count = moved.messages.len();
        for copy in moved.messages {
            self.requeue(slot, copy, now);
        }
        self.stats.sessions_moved_in += 1;
        tracing::info!(
            client = client_id.as_str(),
            messages = count,
            "session moved here from another node"
        );
    }

    /// Queues a moved copy for session `slot`, logged as any copy for a
    /// persistent session is.
    fn requeue(&mut self, slot: u32, copy: MovedCopy, now: Instant) {
        let sub_ids = self.slot(slot).and_then(|s| {
            let topic = copy.message.topic.as_str();
            let ids: Vec<_> = s
                .subs
                .iter()
                .filter(|(filter, _)| {
                    let filter = topic::parse_shared(filter).map_or(&***filter, |s| s.filter);
                    topic::matches(filter, topic)
                })
                .filter_map(|(_, sub)| sub.id)
                .collect();
            (!ids.is_empty()).then(|| ids.into_boxed_slice())
        });
        let out = Outgoing {
            qos: copy.qos,
            sub_qos: copy.qos,
            retain: copy.retain,
            sub_ids,
        };
        self.deliver_to(slot, &copy.message, out, &mut Encoded::default(), now);
        self.journal.finish(&copy.message);
    }

    /// Adds a restored or moved subscription of session `slot` to the trie
    /// (or its shared group).
    pub(super) fn add_subscription(
        &mut self,
        slot: u32,
        uid: u64,
        filter: &str,
        sub: Subscription,
    ) {
        let entry = Sub { slot, uid, sub };
        if let Some(shared) = topic::parse_shared(filter) {
            return self.join_group(shared.group, shared.filter, entry);
        }
        let subs = self.trie.entry(filter);
        let was_empty = subs.is_empty();
        subs.push(entry);
        if was_empty {
            self.announce(filter, true);
        }
    }
}

/// The state of `session` (its spilled copies loaded) to move.
fn take_state(session: &mut Session) -> Moved {
    let mut messages = Vec::with_capacity(session.inflight.len() + session.queue.len());
    let copy = |message: &Arc<Message>, qos, retain| {
        // Its publisher's session is not on the node it goes to.
        let mut message = Message::clone(message);
        message.origin = FROM_CLUSTER;
        message.encoded = Default::default();
        MovedCopy {
            message: Arc::new(message),
            qos,
            retain,
        }
    };
    for m in session.inflight.iter().filter(|m| !m.released) {
        messages.push(copy(&m.message, m.qos, m.retain));
    }
    for q in &session.queue {
        messages.push(copy(&q.message, q.qos, q.retain));
    }
    Moved {
        username: session.username.clone(),
        expiry_secs: session.expiry_secs,
        subs: session.subs.iter().map(|(f, s)| (f.clone(), *s)).collect(),
        messages,
        qos2_in: session.qos2_in.iter().copied().collect(),
    }
}
