//! The offline log as the broker reads it back: messages held for
//! persistent sessions on disk only, decoded when a session drains. A few
//! recent ones are cached, so that sessions draining the same messages side
//! by side decode (and encode) each once; messages whose frame could not be
//! written (a full disk) are kept in memory while sessions hold them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::core::message::Message;
use crate::core::spill::LogReader;
use crate::store::log::Log;
use crate::store::record::{self, Clock};

/// A message read back, with its lsn.
type Cached = (u64, Arc<Message>);

/// Messages that could not be written, by lsn, with their copies held.
pub(super) type Unwritten = Rc<RefCell<ahash::AHashMap<u64, (Arc<Message>, u64)>>>;

/// Messages read back lately, by lsn modulo this: sessions draining the
/// same messages side by side decode (and encode) each once.
const READ_CACHE_SLOTS: usize = 1024;

/// The offline log as the broker reads it: messages held on disk only.
#[derive(Debug)]
pub(super) struct OfflineReader {
    log: Rc<RefCell<Log>>,
    unwritten: Unwritten,
    cache: RefCell<Vec<Option<Cached>>>,
}

impl OfflineReader {
    pub(super) fn new(log: Rc<RefCell<Log>>, unwritten: Unwritten) -> Self {
        OfflineReader {
            log,
            unwritten,
            cache: RefCell::new(vec![None; READ_CACHE_SLOTS]),
        }
    }

    /// The log; never borrowed while the broker runs (a borrow conflict
    /// is a bug, and reads as an unreadable message in a release build).
    fn log(&self) -> Option<std::cell::RefMut<'_, Log>> {
        let log = self.log.try_borrow_mut();
        debug_assert!(
            log.is_ok(),
            "the offline log is borrowed while the broker reads it"
        );
        log.ok()
    }

    fn cached(&self, lsn: u64) -> Option<Arc<Message>> {
        let cache = self.cache.try_borrow().ok()?;
        match &cache[lsn as usize % READ_CACHE_SLOTS] {
            Some((l, m)) if *l == lsn => Some(Arc::clone(m)),
            _ => None,
        }
    }

    fn keep(&self, lsn: u64, m: &Arc<Message>) {
        if let Ok(mut cache) = self.cache.try_borrow_mut() {
            cache[lsn as usize % READ_CACHE_SLOTS] = Some((lsn, Arc::clone(m)));
        }
    }

    fn unwritten(&self, lsn: u64) -> Option<Arc<Message>> {
        let unwritten = self.unwritten.try_borrow().ok()?;
        unwritten.get(&lsn).map(|(m, _)| Arc::clone(m))
    }
}

impl LogReader for OfflineReader {
    fn read(&self, lsn: u64, now: Instant, now_millis: u64) -> Option<Arc<Message>> {
        if let Some(m) = self.cached(lsn) {
            return Some(m);
        }
        let mut log = self.log()?;
        let m = match message_body(&mut log, lsn) {
            Some(body) => record::decode_message(body, Clock { now, now_millis }).ok()?,
            None => return self.unwritten(lsn),
        };
        self.keep(lsn, &m);
        Some(m)
    }

    fn message_id(&self, lsn: u64) -> Option<u64> {
        let mut log = self.log()?;
        match message_body(&mut log, lsn) {
            Some(body) => record::message_id(body).ok(),
            None => self.unwritten(lsn).map(|m| m.id),
        }
    }
}

/// The body of message `lsn`'s frame, if the log holds it (and the frame
/// found holds that lsn).
fn message_body(log: &mut Log, lsn: u64) -> Option<&[u8]> {
    log.read(lsn)
        .filter(|body| record::message_lsn(body) == Some(lsn))
}
