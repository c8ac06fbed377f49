//! The ring of one shard's events and the table of client names they
//! refer to.

use std::collections::VecDeque;

use ringmq_protocol::MqttString;

use super::{format_time, Action, Info, Naming, TraceItem, TraceQuery};

/// One recorded event: 32 bytes, no pointer (the client is a name in the
/// store's table), so the ring costs one cache line per two events.
#[derive(Debug, Clone, Copy)]
struct Event {
    time_ms: u64,
    /// The message, for message events; 0 for device events.
    msg_id: u64,
    /// The connection's generation on its shard (its channel).
    channel: u64,
    /// The client, in the store's name table.
    name: TraceName,
    action: Action,
    info: Info,
}

/// A client id in a shard's trace store: sessions hold one for as long as
/// they live, events refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceName(u32);

impl TraceName {
    /// No name (the store is off).
    pub const NONE: TraceName = TraceName(u32::MAX);
}

/// One entry of the name table.
#[derive(Debug)]
struct Name {
    client: MqttString,
    /// A session holds it.
    held: bool,
}

impl TraceQuery {
    fn wants(&self, e: &Event, client: &str) -> bool {
        match self {
            TraceQuery::Device { client_id, .. } => e.action.is_device() && client == client_id,
            TraceQuery::MessageOfClient { client_id, .. } => {
                let message = matches!(
                    e.action,
                    Action::PubMqtt | Action::Sub | Action::PushOffline
                );
                message && client == client_id
            }
            TraceQuery::Publish { msg_id, .. } => {
                matches!(e.action, Action::PubMqtt | Action::PubMq) && e.msg_id == *msg_id
            }
            TraceQuery::Subscribe {
                msg_id, client_id, ..
            } => {
                matches!(e.action, Action::Sub | Action::PushOffline)
                    && e.msg_id == *msg_id
                    && client_id.as_deref().is_none_or(|c| c == client)
            }
        }
    }
}

/// One shard's trace store.
#[derive(Debug, Default)]
pub struct Traces {
    events: VecDeque<Event>,
    /// Client ids events refer to, by [`TraceName`].
    names: Vec<Name>,
    /// Entries of `names` free for reuse.
    free: Vec<u32>,
    /// The time of the newest event.
    last_ms: u64,
    /// Events kept at most.
    cap: usize,
    /// Age past which events go, in ms.
    retention_ms: u64,
}

impl Traces {
    /// A store of `cap` events (0: records nothing), kept `retention_ms`.
    pub fn new(cap: usize, retention_ms: u64) -> Self {
        Traces {
            // Reserved whole: pages are touched as the ring fills, and it
            // never grows by copying (a doubling would hold both buffers,
            // and the allocator keeps what was freed).
            events: VecDeque::with_capacity(cap),
            cap,
            retention_ms,
            ..Traces::default()
        }
    }

    /// Whether events are recorded at all.
    pub fn is_on(&self) -> bool {
        self.cap > 0
    }

    /// Events kept at most.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Entries in the name table (held by sessions, or named by events).
    pub fn names(&self) -> usize {
        self.names.len() - self.free.len()
    }

    /// A name for `client`, held until [`Traces::release`].
    pub fn intern(&mut self, client: &MqttString) -> TraceName {
        if self.cap == 0 {
            return TraceName::NONE;
        }
        let name = Name {
            client: client.clone(),
            held: true,
        };
        match self.free.pop() {
            Some(i) => {
                self.names[i as usize] = name;
                TraceName(i)
            }
            None => {
                self.names.push(name);
                TraceName(self.names.len() as u32 - 1)
            }
        }
    }

    /// The session of `name` ended: its entry goes once no event names it.
    pub fn release(&mut self, name: TraceName) {
        if let Some(n) = self.names.get_mut(name.0 as usize) {
            n.held = false;
        }
    }

    /// Records one event of client `name`; the oldest goes when the store
    /// is full.
    pub fn record(
        &mut self,
        time_ms: u64,
        action: Action,
        info: Info,
        name: TraceName,
        channel: u64,
        msg_id: u64,
    ) {
        if name == TraceName::NONE {
            return;
        }
        if self.events.len() >= self.cap {
            self.events.pop_front();
        }
        // Clocks may step back: keep the ring sorted for the range search.
        self.last_ms = self.last_ms.max(time_ms);
        self.events.push_back(Event {
            time_ms: self.last_ms,
            msg_id,
            channel,
            name,
            action,
            info,
        });
    }

    /// Drops events older than the retention at `now_ms`, and the names
    /// no session holds and no event names any more (found by a pass over
    /// the ring here, so that recording an event writes only the event).
    pub fn purge(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.retention_ms);
        while self.events.front().is_some_and(|e| e.time_ms < oldest) {
            self.events.pop_front();
        }
        let mut named = vec![false; self.names.len()];
        for e in &self.events {
            if let Some(n) = named.get_mut(e.name.0 as usize) {
                *n = true;
            }
        }
        for (i, n) in self.names.iter_mut().enumerate() {
            if !n.held && !named[i] && !n.client.is_empty() {
                n.client = MqttString::default();
                self.free.push(i as u32);
            }
        }
    }

    /// The events `q` asks for, oldest first, named by `naming`.
    pub fn query(&self, q: &TraceQuery, naming: &Naming) -> Vec<TraceItem> {
        let (begin, end) = q.range();
        let from = self.events.partition_point(|e| e.time_ms < begin);
        let to = self.events.partition_point(|e| e.time_ms < end);
        let client = |e: &Event| {
            self.names
                .get(e.name.0 as usize)
                .map_or("", |n| n.client.as_str())
        };
        self.events
            .range(from..to.max(from))
            .filter(|e| q.wants(e, client(e)))
            .map(|e| item(e, client(e), naming))
            .collect()
    }
}

fn item(e: &Event, client: &str, n: &Naming) -> TraceItem {
    TraceItem {
        time_ms: e.time_ms,
        action: e.action.name().into(),
        action_code: e.action.code().into(),
        action_info: e.info.text(e.action).into(),
        client_id: client.into(),
        msg_id: match e.msg_id {
            0 => String::new(),
            id => crate::core::message::msg_id_string(id, n.now_ms, n.instance_tag),
        },
        channel_id: n.channel_id(e.channel),
        time: format_time(e.time_ms, n.offset_minutes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_takes_32_bytes() {
        assert!(std::mem::size_of::<Event>() <= 32);
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_by_range() {
        let mut t = Traces::new(3, 1_000);
        let c = t.intern(&MqttString::new("GID_a@@@1".to_owned()).unwrap_or_default());
        for (i, a) in [Action::Connect, Action::Sub, Action::Close, Action::Connect]
            .iter()
            .enumerate()
        {
            t.record(100 + i as u64, *a, Info::Accepted, c, 7, 9);
        }
        assert_eq!(t.len(), 3);
        let naming = Naming {
            shard: 1,
            boot_ms: 5,
            instance_tag: 0,
            now_ms: 200,
            offset_minutes: 0,
        };
        let q = TraceQuery::Device {
            client_id: "GID_a@@@1".into(),
            begin_ms: 0,
            end_ms: 1_000,
        };
        let got: Vec<_> = t.query(&q, &naming).into_iter().map(|i| i.action).collect();
        assert_eq!(got, vec!["close", "connect"]);
        let q = TraceQuery::Device {
            client_id: "GID_a@@@1".into(),
            begin_ms: 103,
            end_ms: 104,
        };
        assert_eq!(t.query(&q, &naming).len(), 1);
        assert_eq!(naming.channel_id(7), "00000000000500010000000000000007");
        t.purge(1_102);
        assert_eq!(t.len(), 2);
        t.release(c);
        t.purge(1_102);
        assert_eq!(t.names(), 1, "events still name it");
        t.purge(5_000);
        assert_eq!((t.len(), t.names()), (0, 0));
        let again = t.intern(&MqttString::new("GID_b@@@2".to_owned()).unwrap_or_default());
        assert_eq!(again, c, "a free entry is reused");
    }
}
