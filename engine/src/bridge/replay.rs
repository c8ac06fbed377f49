//! Sends what the spool holds, in order: up to `nats.jetstream_acks_pending_max`
//! messages at once, each until NATS has it (JetStream's acknowledgement,
//! or the client's flush on core NATS). The spool's cursor follows the
//! oldest message not yet sent, so what a stop or a crash cuts short is
//! sent again on the next start.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::spool::{Figures, Held, Position, Spool};

/// How often the cursor is written (what a crash may send twice).
const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// How often what was written to the spool is synced to the disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Attempts to send one message while connected to NATS, before it is
/// given up (a subject no stream captures, a payload over the server's
/// max_payload): dropped, logged and counted, so that one message cannot
/// hold up the spool. Attempts while NATS is unreachable do not count.
const ATTEMPTS_CONNECTED: u32 = 8;

/// The spool as the bridge's loop (appending) and the replay (sending)
/// share it; the lock is never held across an await.
#[derive(Debug)]
pub(super) struct Shared {
    spool: Mutex<Spool>,
    /// Told when a message was appended.
    more: Notify,
    pub(super) figures: Arc<Figures>,
}

impl Shared {
    pub(super) fn new(spool: Spool, figures: Arc<Figures>) -> Arc<Shared> {
        Arc::new(Shared {
            spool: Mutex::new(spool),
            more: Notify::new(),
            figures,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `msg` to be sent; false if the spool is full (dropped,
    /// counted).
    pub(super) fn append(&self, msg: &crate::core::outflow::Outflow) -> bool {
        let appended = self.lock().append(msg);
        self.more.notify_one();
        appended
    }

    /// Writes what was appended to the disk (the page cache: a process
    /// killed loses none of it).
    pub(super) fn write_pending(&self) {
        self.lock().write_or_log();
    }
}

/// Where the replay sends.
pub(super) struct Sender {
    pub(super) client: async_nats::Client,
    pub(super) js: async_nats::jetstream::Context,
    /// Messages sent at once.
    pub(super) window: usize,
}

/// Sends the spool's messages until `stop` fires, then until they are all
/// sent or the deadline it carries passes; the cursor is written last.
pub(super) async fn run(shared: Arc<Shared>, to: Sender, mut stop: oneshot::Receiver<Instant>) {
    let mut sending: VecDeque<(JoinHandle<bool>, Position)> = VecDeque::new();
    let (mut saved, mut synced) = (Instant::now(), Instant::now());
    let mut deadline: Option<Instant> = None;
    loop {
        // What the bridge appended in a burst reaches the disk even while
        // the window is full.
        shared.write_pending();
        take(&shared, &to, &mut sending).await;
        if deadline.is_some() && sending.is_empty() {
            break;
        }
        let room = sending.len() < to.window;
        let woke = tokio::select! {
            sent = front(&mut sending), if !sending.is_empty() => Woke::Sent(sent),
            () = shared.more.notified(), if room && deadline.is_none() => Woke::More,
            by = &mut stop, if deadline.is_none() => Woke::Stop(by.unwrap_or_else(|_| Instant::now())),
            () = sleep_until(deadline) => break,
            () = tokio::time::sleep(CURSOR_EVERY) => Woke::More,
        };
        match woke {
            Woke::Sent(sent) => {
                if let Some((_, end)) = sending.pop_front() {
                    shared.lock().commit(end);
                    match sent {
                        true => shared.figures.sent.fetch_add(1, Relaxed),
                        false => shared.figures.dropped.fetch_add(1, Relaxed),
                    };
                }
            }
            Woke::Stop(by) => deadline = Some(by),
            Woke::More => {}
        }
        if saved.elapsed() >= CURSOR_EVERY {
            save(&shared);
            saved = Instant::now();
        }
        if synced.elapsed() >= SYNC_EVERY {
            sync(&shared).await;
            synced = Instant::now();
        }
    }
    if !sending.is_empty() {
        tracing::warn!(
            left = sending.len(),
            "NATS spool: NATS did not take every message before the stop; they are sent on the next start"
        );
    }
    shared.write_pending();
    save(&shared);
    sync(&shared).await;
}

/// Takes what the window has room for and starts sending it.
async fn take(shared: &Shared, to: &Sender, sending: &mut VecDeque<(JoinHandle<bool>, Position)>) {
    let room = to.window.saturating_sub(sending.len());
    if room == 0 {
        return;
    }
    let taken = shared.lock().take(room);
    match taken {
        Ok(taken) => {
            for (held, end) in taken {
                let task = tokio::spawn(send(to.client.clone(), to.js.clone(), held));
                sending.push_back((task, end));
            }
        }
        Err(e) => {
            tracing::error!("NATS spool: cannot read: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// What woke the replay.
enum Woke {
    /// The oldest message being sent was sent (true), or given up.
    Sent(bool),
    /// Messages were appended, or it is time to write the cursor.
    More,
    /// Stop by then.
    Stop(Instant),
}

/// Waits for the oldest message being sent.
async fn front(sending: &mut VecDeque<(JoinHandle<bool>, Position)>) -> bool {
    match sending.front_mut() {
        Some((task, _)) => task.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn save(shared: &Shared) {
    if let Err(e) = shared.lock().save_cursor() {
        tracing::error!("NATS spool: cannot write its cursor: {e}");
    }
}

/// Syncs the spool's last segment if it was written to, off the bridge's
/// thread.
async fn sync(shared: &Shared) {
    let Some(file) = shared.lock().take_unsynced() else {
        return;
    };
    let synced = match file {
        Ok(file) => tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(e) => Err(e),
    };
    if let Err(e) = synced {
        tracing::error!("NATS spool: cannot sync: {e}");
    }
}

/// Sends one message until NATS has it: JetStream until the stream
/// acknowledges it (published again with the same `Nats-Msg-Id`, which
/// the stream de-duplicates), core NATS once the client flushed it while
/// connected. False if NATS refused it `ATTEMPTS_CONNECTED` times while
/// connected (logged).
async fn send(client: async_nats::Client, js: async_nats::jetstream::Context, held: Held) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &held.headers {
        headers.insert(name.as_str(), value.as_str());
    }
    let (mut wait, mut refused) = (Duration::from_millis(100), 0);
    loop {
        let connected = || client.connection_state() == async_nats::connection::State::Connected;
        let outcome = match (held.jetstream, connected()) {
            (true, _) => {
                let (subject, payload) = (&held.subject, held.payload.clone());
                super::connector::stored_once(&js, subject, headers.clone(), payload).await
            }
            (false, true) => flushed_once(&client, &held, headers.clone()).await,
            (false, false) => Err("not connected".into()),
        };
        match outcome {
            Ok(()) => return true,
            Err(e) if connected() => {
                refused += 1;
                if refused == ATTEMPTS_CONNECTED {
                    let subject = held.subject.as_str();
                    tracing::warn!(
                        subject,
                        "NATS spool: NATS refused a message {refused} times; dropped: {e}"
                    );
                    return false;
                }
            }
            Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// One core NATS publish of `held`, flushed.
async fn flushed_once(
    client: &async_nats::Client,
    held: &Held,
    headers: async_nats::HeaderMap,
) -> Result<(), String> {
    let (subject, payload) = (held.subject.clone(), held.payload.clone());
    let published = match headers.is_empty() {
        true => client.publish(subject, payload).await,
        false => client.publish_with_headers(subject, headers, payload).await,
    };
    published.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}
