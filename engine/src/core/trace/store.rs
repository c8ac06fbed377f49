//! One shard's trace store: the ring of records and the table of client
//! names they refer to. Deliveries of one message gather in a pending
//! record (a name each) that goes into the ring when anything else is
//! recorded, queried or purged.

use ahash::AHashMap;
use ringmq_protocol::MqttString;

use super::ring::{Header, Ring, HEADER_WORDS};
use super::{format_time, Action, Info, Naming, TraceItem, TraceQuery};

/// Deliveries gathered in one record at most.
const GROUP_NAMES_MAX: usize = 4096;

/// A client id in a shard's trace store: sessions hold one for as long as
/// they live, events refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceName(u32);

impl TraceName {
    /// No name (the store is off).
    pub const NONE: TraceName = TraceName(u32::MAX);
}

/// One entry of the name table: one per client id.
#[derive(Debug)]
struct Name {
    client: MqttString,
    /// Sessions (and refused connections being recorded) holding it.
    holds: u32,
}

/// One shard's trace store.
#[derive(Debug, Default)]
pub struct Traces {
    ring: Ring,
    /// The record of the deliveries being gathered, if `gathering`.
    pending: Header,
    /// Its client names (the buffer is kept from record to record).
    pending_names: Vec<u32>,
    gathering: bool,
    /// Client ids events refer to, by [`TraceName`].
    names: Vec<Name>,
    /// The name of each client id in `names`: a client that comes back, or
    /// is refused again and again, keeps one name.
    by_client: AHashMap<MqttString, u32>,
    /// Entries of `names` free for reuse.
    free: Vec<u32>,
    /// Events guaranteed to be kept (when each is a record of its own).
    cap: usize,
    /// The time of the newest event.
    last_ms: u64,
    /// Age past which events go, in ms.
    retention_ms: u64,
}

impl Traces {
    /// A store keeping at least `cap` events (0: records nothing), each
    /// `retention_ms` at most. It takes up to 24 bytes per event: a
    /// device event or a publish is 24, a delivery of a fan-out 4.
    pub fn new(cap: usize, retention_ms: u64) -> Self {
        Traces {
            ring: Ring::new(cap.saturating_mul(HEADER_WORDS + 1)),
            cap,
            retention_ms,
            ..Traces::default()
        }
    }

    /// Whether events are recorded at all.
    pub fn is_on(&self) -> bool {
        self.cap > 0
    }

    /// Events kept at least.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Events held (a delivery each), after what is pending is written.
    pub fn len(&mut self) -> usize {
        self.flush();
        self.ring.iter().map(|r| r.names().count()).sum()
    }

    /// Whether no event is held.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Entries in the name table (held by sessions, or named by events).
    pub fn names(&self) -> usize {
        self.names.len() - self.free.len()
    }

    /// A name for `client`, held until [`Traces::release`].
    pub fn intern(&mut self, client: &MqttString) -> TraceName {
        if !self.is_on() {
            return TraceName::NONE;
        }
        if let Some(&i) = self.by_client.get(client.as_str()) {
            self.names[i as usize].holds += 1;
            return TraceName(i);
        }
        let name = Name {
            client: client.clone(),
            holds: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.names[i as usize] = name;
                i
            }
            None => {
                self.names.push(name);
                self.names.len() as u32 - 1
            }
        };
        self.by_client.insert(client.clone(), i);
        TraceName(i)
    }

    /// One holder of `name` is done with it: the entry goes once nothing
    /// holds it and no event names it.
    pub fn release(&mut self, name: TraceName) {
        if let Some(n) = self.names.get_mut(name.0 as usize) {
            n.holds = n.holds.saturating_sub(1);
        }
    }

    /// Records a device event (`id`: the connection's channel) or a
    /// publish (`id`: the message id) of client `name`.
    pub fn record(&mut self, time_ms: u64, action: Action, info: Info, name: TraceName, id: u64) {
        if !self.is_on() {
            return;
        }
        self.flush();
        let header = self.header(time_ms, action, info, id);
        self.ring.push(header, &[name.0]);
    }

    /// Records the delivery of message `msg_id` to client `name`: one word
    /// in the record of the message's deliveries.
    #[inline(always)]
    pub fn deliver(&mut self, time_ms: u64, action: Action, name: TraceName, msg_id: u64) {
        let p = &self.pending;
        if self.gathering
            && p.id == msg_id
            && p.action == action
            && self.pending_names.len() < GROUP_NAMES_MAX
        {
            self.pending_names.push(name.0);
        } else {
            self.start_deliveries(time_ms, action, name, msg_id);
        }
    }

    fn start_deliveries(&mut self, time_ms: u64, action: Action, name: TraceName, msg_id: u64) {
        if !self.is_on() {
            return;
        }
        self.flush();
        self.pending = self.header(time_ms, action, Info::Message, msg_id);
        self.pending_names.push(name.0);
        self.gathering = true;
    }

    /// A header at `time_ms`, kept in order (clocks may step back).
    fn header(&mut self, time_ms: u64, action: Action, info: Info, id: u64) -> Header {
        self.last_ms = self.last_ms.max(time_ms);
        Header {
            action,
            info,
            time_ms: self.last_ms,
            id,
        }
    }

    /// Writes the pending deliveries into the ring.
    pub fn flush(&mut self) {
        if self.gathering {
            self.ring.push(self.pending, &self.pending_names);
            self.pending_names.clear();
            self.gathering = false;
        }
    }

    /// Drops records older than the retention at `now_ms`, and the names
    /// no session holds and no record names (found here, by a pass over
    /// the ring, so that recording writes only the event).
    pub fn purge(&mut self, now_ms: u64) {
        self.flush();
        let oldest = now_ms.saturating_sub(self.retention_ms);
        while self.ring.front().is_some_and(|h| h.time_ms < oldest) {
            self.ring.pop();
        }
        let mut named = vec![false; self.names.len()];
        for r in self.ring.iter() {
            for n in r.names() {
                if let Some(n) = named.get_mut(n as usize) {
                    *n = true;
                }
            }
        }
        for (i, n) in self.names.iter_mut().enumerate() {
            if n.holds == 0 && !named[i] && !n.client.is_empty() {
                self.by_client.remove(n.client.as_str());
                n.client = MqttString::default();
                self.free.push(i as u32);
            }
        }
    }

    /// The events `q` asks for, oldest first, named by `naming`.
    pub fn query(&mut self, q: &TraceQuery, naming: &Naming) -> Vec<TraceItem> {
        self.flush();
        let (begin, end) = q.range();
        // The name of the client the query is about, if it is about one.
        let wanted = q.client().map(|c| self.by_client.get(c).copied());
        if wanted == Some(None) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for r in self.ring.iter() {
            let h = r.header;
            if h.time_ms >= end {
                break;
            }
            if h.time_ms < begin || !q.wants(&h) {
                continue;
            }
            for name in r.names() {
                if wanted.is_none_or(|w| w == Some(name)) {
                    out.push(item(&h, self.client(name), naming));
                }
            }
        }
        out
    }

    fn client(&self, name: u32) -> &str {
        self.names
            .get(name as usize)
            .map_or("", |n| n.client.as_str())
    }
}

impl TraceQuery {
    /// Whether records with header `h` answer the query (its clients are
    /// checked apart).
    fn wants(&self, h: &Header) -> bool {
        match self {
            TraceQuery::Device { .. } => h.action.is_device(),
            TraceQuery::MessageOfClient { .. } => {
                matches!(
                    h.action,
                    Action::PubMqtt | Action::Sub | Action::PushOffline
                )
            }
            TraceQuery::Publish { msg_id, .. } => {
                matches!(h.action, Action::PubMqtt | Action::PubMq) && h.id == *msg_id
            }
            TraceQuery::Subscribe { msg_id, .. } => {
                matches!(h.action, Action::Sub | Action::PushOffline) && h.id == *msg_id
            }
        }
    }

    /// The client id the query is about, if any.
    fn client(&self) -> Option<&str> {
        match self {
            TraceQuery::Device { client_id, .. }
            | TraceQuery::MessageOfClient { client_id, .. } => Some(client_id),
            TraceQuery::Subscribe { client_id, .. } => client_id.as_deref(),
            TraceQuery::Publish { .. } => None,
        }
    }
}

fn item(h: &Header, client: &str, n: &Naming) -> TraceItem {
    let (msg_id, channel_id) = match h.action.is_device() {
        true => (String::new(), n.channel_id(h.id)),
        false => {
            let id = crate::core::message::msg_id_string(h.id, n.now_ms, n.instance_tag);
            (id, String::new())
        }
    };
    TraceItem {
        time_ms: h.time_ms,
        action: h.action.name().into(),
        action_code: h.action.code().into(),
        action_info: h.info.text(h.action).into(),
        client_id: client.into(),
        msg_id,
        channel_id,
        time: format_time(h.time_ms, n.offset_minutes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            shard: 1,
            boot_ms: 5,
            instance_tag: 0,
            now_ms: 200,
            offset_minutes: 0,
        }
    }

    fn name(t: &mut Traces, client: &str) -> TraceName {
        t.intern(&MqttString::new(client.to_owned()).unwrap_or_default())
    }

    #[test]
    fn device_events_answer_by_client_and_range() {
        let mut t = Traces::new(3, 1_000);
        let c = name(&mut t, "GID_a@@@1");
        let actions = [
            Action::Connect,
            Action::Disconnect,
            Action::Close,
            Action::Connect,
        ];
        for (i, a) in actions.iter().enumerate() {
            t.record(100 + i as u64, *a, Info::Accepted, c, 7);
        }
        assert_eq!(t.len(), 3, "the oldest made room");
        let q = |begin_ms, end_ms| TraceQuery::Device {
            client_id: "GID_a@@@1".into(),
            begin_ms,
            end_ms,
        };
        let got: Vec<_> = t
            .query(&q(0, 1_000), &naming())
            .into_iter()
            .map(|i| i.action)
            .collect();
        assert_eq!(got, vec!["disconnect", "close", "connect"]);
        assert_eq!(t.query(&q(103, 104), &naming()).len(), 1);
        assert_eq!(naming().channel_id(7), "00000000000500010000000000000007");
        let other = TraceQuery::Device {
            client_id: "GID_b@@@2".into(),
            begin_ms: 0,
            end_ms: 1_000,
        };
        assert!(t.query(&other, &naming()).is_empty());
    }

    #[test]
    fn deliveries_of_one_message_share_a_record() {
        let mut t = Traces::new(100, 1_000);
        let (a, b) = (name(&mut t, "GID_a@@@1"), name(&mut t, "GID_a@@@2"));
        t.record(10, Action::PubMqtt, Info::Message, a, 42);
        t.deliver(10, Action::Sub, a, 42);
        t.deliver(10, Action::Sub, b, 42);
        t.deliver(11, Action::PushOffline, b, 41);
        assert_eq!(t.len(), 4);
        let subs = TraceQuery::Subscribe {
            msg_id: 42,
            client_id: None,
            begin_ms: 0,
            end_ms: 100,
        };
        let got: Vec<_> = t
            .query(&subs, &naming())
            .into_iter()
            .map(|i| i.client_id)
            .collect();
        assert_eq!(got, vec!["GID_a@@@1", "GID_a@@@2"]);
        let mine = TraceQuery::MessageOfClient {
            client_id: "GID_a@@@2".into(),
            begin_ms: 0,
            end_ms: 100,
        };
        let got: Vec<_> = t
            .query(&mine, &naming())
            .into_iter()
            .map(|i| i.action)
            .collect();
        assert_eq!(got, vec!["sub", "push_offline"]);
        let publish = TraceQuery::Publish {
            msg_id: 42,
            begin_ms: 0,
            end_ms: 100,
        };
        assert_eq!(t.query(&publish, &naming()).len(), 1);
    }

    #[test]
    fn purge_drops_old_records_and_names_nobody_refers_to() {
        let mut t = Traces::new(10, 1_000);
        let c = name(&mut t, "GID_a@@@1");
        t.record(100, Action::Connect, Info::Accepted, c, 1);
        t.record(900, Action::Close, Info::ClosedByClient, c, 1);
        t.purge(1_102);
        assert_eq!(t.len(), 1);
        assert_eq!(name(&mut t, "GID_a@@@1"), c, "one name per client id");
        t.release(c);
        t.release(c);
        t.purge(1_102);
        assert_eq!(t.names(), 1, "an event still names it");
        t.purge(5_000);
        assert_eq!((t.len(), t.names()), (0, 0));
        let again = name(&mut t, "GID_b@@@2");
        assert_eq!(again, c, "a free entry is reused");
    }
}
