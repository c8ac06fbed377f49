//! The ring of one shard's events and the table of client names they
//! refer to.

use ringmq_protocol::MqttString;

use super::{format_time, Action, Info, Naming, TraceItem, TraceQuery};

/// One recorded event.
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

/// An event as the ring holds it: four words, no pointer (the client is
/// an index in the store's name table). A ring of words can be allocated
/// zeroed: its pages are untouched until events are written there, and
/// recording never grows it.
type Packed = [u64; 4];

impl Event {
    fn pack(&self) -> Packed {
        let tail = u64::from(self.name.0)
            | u64::from(self.action.index()) << 32
            | u64::from(self.info.index()) << 40;
        [self.time_ms, self.msg_id, self.channel, tail]
    }

    fn unpack(p: &Packed) -> Event {
        Event {
            time_ms: p[0],
            msg_id: p[1],
            channel: p[2],
            name: TraceName(p[3] as u32),
            action: Action::from_index((p[3] >> 32) as u8),
            info: Info::from_index((p[3] >> 40) as u8),
        }
    }
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
    /// The ring, allocated whole and zeroed; `filled` slots hold events,
    /// and once all do, each event takes the oldest one's place.
    ring: Vec<Packed>,
    /// Slots written.
    filled: usize,
    /// Where the next event goes (the oldest, once the ring is full).
    next: usize,
    /// Client ids events refer to, by [`TraceName`].
    names: Vec<Name>,
    /// Entries of `names` free for reuse.
    free: Vec<u32>,
    /// The time of the newest event.
    last_ms: u64,
    /// Events older than this are past the retention: kept in the ring
    /// until overwritten, never answered.
    oldest_ms: u64,
    /// Age past which events go, in ms.
    retention_ms: u64,
}

impl Traces {
    /// A store of `cap` events (0: records nothing), kept `retention_ms`.
    pub fn new(cap: usize, retention_ms: u64) -> Self {
        Traces {
            ring: vec![[0; 4]; cap],
            retention_ms,
            ..Traces::default()
        }
    }

    /// Whether events are recorded at all.
    pub fn is_on(&self) -> bool {
        !self.ring.is_empty()
    }

    /// Events kept at most.
    pub fn cap(&self) -> usize {
        self.ring.len()
    }

    /// Events held and within the retention.
    pub fn len(&self) -> usize {
        self.ordered()
            .filter(|e| e.time_ms >= self.oldest_ms)
            .count()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
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

    /// Records one event of client `name`; once the store is full, it
    /// takes the oldest one's place. Writes the event and nothing else.
    #[inline]
    pub fn record(
        &mut self,
        time_ms: u64,
        action: Action,
        info: Info,
        name: TraceName,
        channel: u64,
        msg_id: u64,
    ) {
        let Some(slot) = self.ring.get_mut(self.next) else {
            return;
        };
        // Clocks may step back: keep the ring sorted for the range search.
        self.last_ms = self.last_ms.max(time_ms);
        let event = Event {
            time_ms: self.last_ms,
            msg_id,
            channel,
            name,
            action,
            info,
        };
        *slot = event.pack();
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
        }
        if self.filled < self.ring.len() {
            self.filled += 1;
        }
    }

    /// The ring's events as two runs, older first, each sorted by time.
    fn runs(&self) -> (&[Packed], &[Packed]) {
        if self.filled < self.ring.len() {
            return (&self.ring[..self.filled], &[]);
        }
        let (newer, older) = self.ring.split_at(self.next);
        (older, newer)
    }

    /// Events oldest first (within the ring, past the retention too).
    fn ordered(&self) -> impl Iterator<Item = Event> + '_ {
        let (older, newer) = self.runs();
        older.iter().chain(newer).map(Event::unpack)
    }

    /// Retires events older than the retention at `now_ms`, and the names
    /// no session holds and no event within it names (found here, by a
    /// pass over the ring, so that recording writes only the event).
    pub fn purge(&mut self, now_ms: u64) {
        self.oldest_ms = self.oldest_ms.max(now_ms.saturating_sub(self.retention_ms));
        let mut named = vec![false; self.names.len()];
        for e in self.ordered().filter(|e| e.time_ms >= self.oldest_ms) {
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
        let begin = begin.max(self.oldest_ms);
        let client = |e: &Event| {
            self.names
                .get(e.name.0 as usize)
                .map_or("", |n| n.client.as_str())
        };
        let (older, newer) = self.runs();
        let (older, newer) = (in_range(older, begin, end), in_range(newer, begin, end));
        let mut out = Vec::new();
        for e in older.iter().chain(newer).map(Event::unpack) {
            if q.wants(&e, client(&e)) {
                out.push(item(&e, client(&e), naming));
            }
        }
        out
    }
}

/// The events of `events` (sorted by time) from `begin` until `end`.
fn in_range(events: &[Packed], begin: u64, end: u64) -> &[Packed] {
    let from = events.partition_point(|e| e[0] < begin);
    let to = events.partition_point(|e| e[0] < end).max(from);
    &events[from..to]
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
    fn an_event_packs_into_32_bytes_and_back() {
        assert_eq!(std::mem::size_of::<Packed>(), 32);
        for (i, action) in Action::ALL.into_iter().enumerate() {
            let info = Info::ALL[i % Info::ALL.len()];
            let e = Event {
                time_ms: 1,
                msg_id: 2,
                channel: 3,
                name: TraceName(4),
                action,
                info,
            };
            let back = Event::unpack(&e.pack());
            assert_eq!(
                (back.time_ms, back.msg_id, back.channel, back.name),
                (1, 2, 3, TraceName(4))
            );
            assert_eq!((back.action, back.info), (action, info));
        }
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
