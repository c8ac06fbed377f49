//! The subscription trie: topic filters split on `/`, one node per level,
//! with `+` and `#` children kept apart from literal ones. A node's slot `T`
//! holds what is subscribed there: a shard's own subscribers, or, in the
//! route table, the set of shards that have any.
//!
//! Matching walks the topic once; `$`-topics are never matched by a leading
//! wildcard [MQTT-4.7.2-1].

use ahash::AHashMap;

/// What a node holds; empty slots on leaf nodes are pruned.
pub trait Slot: Default {
    /// Whether nothing is subscribed here.
    fn is_empty(&self) -> bool;
}

impl<V> Slot for Vec<V> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

impl Slot for u64 {
    fn is_empty(&self) -> bool {
        *self == 0
    }
}

#[derive(Debug, Default)]
struct Node<T> {
    children: AHashMap<Box<str>, u32>,
    plus: Option<u32>,
    hash: Option<u32>,
    slot: T,
}

impl<T: Slot> Node<T> {
    fn is_unused(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.slot.is_empty()
    }
}

/// A trie of topic filters, each with a slot `T`.
#[derive(Debug)]
pub struct Trie<T> {
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
}

impl<T: Slot> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
            free: Vec::new(),
        }
    }
}

const ROOT: u32 = 0;

impl<T: Slot> Trie<T> {
    /// The slot of `filter`, created if missing. `filter` must be valid.
    pub fn entry(&mut self, filter: &str) -> &mut T {
        let mut at = ROOT;
        for level in filter.split('/') {
            at = match self.child(at, level) {
                Some(next) => next,
                None => self.add_child(at, level),
            };
        }
        &mut self.nodes[at as usize].slot
    }

    /// The slot of `filter`, if the filter has a node.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut T> {
        let at = self.find(filter)?;
        Some(&mut self.nodes[at as usize].slot)
    }

    /// The slot of `filter`, if the filter has a node.
    pub fn get(&self, filter: &str) -> Option<&T> {
        let at = self.find(filter)?;
        Some(&self.nodes[at as usize].slot)
    }

    /// Removes the nodes of `filter` that no longer hold anything; call it
    /// after emptying the filter's slot.
    pub fn prune(&mut self, filter: &str) {
        let mut path = Vec::with_capacity(8);
        let mut at = ROOT;
        for level in filter.split('/') {
            match self.child(at, level) {
                Some(next) => {
                    path.push((at, level));
                    at = next;
                }
                None => return,
            }
        }
        while let Some((parent, level)) = path.pop() {
            if !self.nodes[at as usize].is_unused() {
                return;
            }
            self.unlink(parent, level);
            self.nodes[at as usize] = Node::default();
            self.free.push(at);
            at = parent;
        }
    }

    /// Calls `f` with the slot of every filter that matches `topic`.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&T)) {
        let dollar = topic.starts_with('$');
        self.walk(ROOT, Some(topic), dollar, &mut f);
    }

    /// Number of nodes in use, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn walk(&self, at: u32, rest: Option<&str>, dollar: bool, f: &mut impl FnMut(&T)) {
        let node = &self.nodes[at as usize];
        // A leading wildcard never matches a `$` topic [MQTT-4.7.2-1].
        let wild_ok = !(dollar && at == ROOT);
        if let (Some(h), true) = (node.hash, wild_ok) {
            f(&self.nodes[h as usize].slot);
        }
        let Some(rest) = rest else {
            f(&node.slot);
            return;
        };
        let (level, next) = match memchr::memchr(b'/', rest.as_bytes()) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        if let Some(&c) = node.children.get(level) {
            self.walk(c, next, dollar, f);
        }
        if let (Some(p), true) = (node.plus, wild_ok) {
            self.walk(p, next, dollar, f);
        }
    }

    fn find(&self, filter: &str) -> Option<u32> {
        filter
            .split('/')
            .try_fold(ROOT, |at, level| self.child(at, level))
    }

    fn child(&self, at: u32, level: &str) -> Option<u32> {
        let node = &self.nodes[at as usize];
        match level {
            "+" => node.plus,
            "#" => node.hash,
            _ => node.children.get(level).copied(),
        }
    }

    fn add_child(&mut self, at: u32, level: &str) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node::default());
                (self.nodes.len() - 1) as u32
            }
        };
        let node = &mut self.nodes[at as usize];
        match level {
            "+" => node.plus = Some(id),
            "#" => node.hash = Some(id),
            _ => {
                node.children.insert(level.into(), id);
            }
        }
        id
    }

    fn unlink(&mut self, at: u32, level: &str) {
        let node = &mut self.nodes[at as usize];
        match level {
            "+" => node.plus = None,
            "#" => node.hash = None,
            _ => {
                node.children.remove(level);
            }
        }
    }
}
