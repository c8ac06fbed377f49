//! Retained messages, one per topic. Every shard holds the whole store (a
//! retained message is sent to every shard, the message itself shared), so
//! a SUBSCRIBE is answered from the subscriber's own shard without asking
//! another.
//!
//! The store is an ordered map whose keys are the topics with each `/`
//! written as NUL (which no topic may hold [MQTT-4.7.3-2]). NUL sorts below
//! every other character, so a topic and everything under it are one
//! contiguous range of keys: a filter is answered by seeking to its literal
//! levels, enumerating the distinct levels under a `+` by skipping from one
//! to the next, and scanning the range under a `#`. A SUBSCRIBE costs in
//! proportion to what it matches (and the levels its `+` passes over), not
//! to the size of the store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::message::Message;

/// Separates levels in a key.
const SEP: char = '\0';
/// The character right after `SEP`: `prefix + END` bounds `prefix`'s subtree.
const END: char = '\u{1}';

/// The retained store of one shard.
#[derive(Debug, Default)]
pub struct Retained {
    by_key: BTreeMap<Box<str>, Arc<Message>>,
}

/// Keys stepped over one by one under a `+` before seeking past the rest.
const STEPS_BEFORE_SEEK: usize = 8;

/// Whether key `k` lies in the subtree of the level whose key is `level`.
fn is_under(k: &str, level: &str) -> bool {
    k.len() > level.len() && k.starts_with(level) && k.as_bytes()[level.len()] == 0
}

/// The store's key of `topic`.
fn key(topic: &str) -> String {
    topic.replace('/', "\0")
}

impl Retained {
    /// Stores `message`, replacing the topic's previous one; an empty
    /// payload clears the topic [MQTT-3.3.1-10].
    /// Returns false (and stores nothing) when `max` topics are already
    /// retained and this is a new one.
    pub fn store(&mut self, message: Arc<Message>, max: usize) -> bool {
        let k = key(message.topic.as_str());
        if message.payload.is_empty() {
            self.by_key.remove(k.as_str());
            return true;
        }
        if self.by_key.len() >= max && !self.by_key.contains_key(k.as_str()) {
            return false;
        }
        self.by_key.insert(k.into_boxed_str(), message);
        true
    }

    /// Drops retained messages whose Message Expiry Interval ran out.
    pub fn purge_expired(&mut self, now: Instant) {
        self.by_key.retain(|_, m| !m.is_expired(now));
    }

    /// The unexpired retained messages matching `filter`, ordered level by
    /// level.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        let mut prefix = String::new();
        self.walk(&levels, true, &mut prefix, &mut |m| {
            if !m.is_expired(now) {
                out.push(Arc::clone(m));
            }
        });
        out
    }

    /// Matches `levels` under `prefix` (the key of the levels matched so
    /// far; `root` when there are none yet).
    fn walk(
        &self,
        levels: &[&str],
        root: bool,
        prefix: &mut String,
        found: &mut impl FnMut(&Arc<Message>),
    ) {
        let Some((&first, rest)) = levels.split_first() else {
            if let Some(m) = self.by_key.get(prefix.as_str()) {
                found(m);
            }
            return;
        };
        let base = prefix.len();
        if !root {
            prefix.push(SEP);
        }
        match first {
            "#" => self.everything_under(root, base, prefix, found),
            "+" => self.each_level(rest, root, prefix, found),
            literal => {
                prefix.push_str(literal);
                self.walk(rest, false, prefix, found);
            }
        }
        prefix.truncate(base);
    }

    /// `#`: the parent level itself [MQTT-4.7.1-2] and everything below it;
    /// at the root, every topic but the `$` ones [MQTT-4.7.2-1].
    fn everything_under(
        &self,
        root: bool,
        base: usize,
        prefix: &str,
        found: &mut impl FnMut(&Arc<Message>),
    ) {
        if root {
            // '%' follows '$': the `$` topics are the range between.
            let below = self
                .by_key
                .range::<str, _>((Bound::Unbounded, Bound::Excluded("$")));
            let above = self
                .by_key
                .range::<str, _>((Bound::Included("%"), Bound::Unbounded));
            below.chain(above).for_each(|(_, m)| found(m));
            return;
        }
        if let Some(m) = self.by_key.get(&prefix[..base]) {
            found(m);
        }
        let end = format!("{}{END}", &prefix[..base]);
        let range = (Bound::Included(prefix), Bound::Excluded(end.as_str()));
        self.by_key
            .range::<str, _>(range)
            .for_each(|(_, m)| found(m));
    }

    /// `+`: each distinct level under `prefix` (which ends with a
    /// separator unless at the root), stepping over a level's subtree key
    /// by key while it is small and seeking past it once it is not; at the
    /// root, not the `$` ones [MQTT-4.7.2-1].
    fn each_level(
        &self,
        rest: &[&str],
        root: bool,
        prefix: &mut String,
        found: &mut impl FnMut(&Arc<Message>),
    ) {
        let base = prefix.len();
        let stem = prefix.clone();
        let from = |k: &str| {
            self.by_key
                .range::<str, _>((Bound::Included(k), Bound::Unbounded))
        };
        let mut keys = from(&stem);
        let mut last: Option<&str> = None;
        let mut stepped = 0;
        while let Some((k, _)) = keys.next() {
            if !k.starts_with(stem.as_str()) {
                return;
            }
            if let Some(level) = last.filter(|l| is_under(k, l)) {
                stepped += 1;
                if stepped >= STEPS_BEFORE_SEEK {
                    keys = from(&format!("{level}{END}"));
                    stepped = 0;
                }
                continue;
            }
            stepped = 0;
            let level_end = k[base..].find(SEP).map_or(k.len(), |i| base + i);
            last = Some(&k[..level_end]);
            if root && k.starts_with('$') {
                continue;
            }
            prefix.truncate(base);
            prefix.push_str(&k[base..level_end]);
            self.walk(rest, false, prefix, found);
        }
    }

    /// Every retained message.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.by_key.values()
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// A copy of `message` whose payload no longer shares the buffer it was
/// read from, so that keeping it does not pin that buffer.
pub fn compact(message: &Message) -> Message {
    Message {
        id: message.id,
        topic: message.topic.detached(),
        payload: Bytes::copy_from_slice(&message.payload),
        qos: message.qos,
        retain: true,
        properties: message.properties.clone(),
        origin: message.origin,
        expires_at: message.expires_at,
        encoded: Default::default(),
    }
}
