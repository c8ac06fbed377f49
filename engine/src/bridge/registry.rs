//! Persistent sessions across the cluster. A JetStream key-value bucket,
//! `<subject_prefix>-sessions`, maps each client id with a persistent
//! session to the node that holds it (put when such a client connects).
//! A client connecting without Clean Start on another node has its
//! session fetched from there before its CONNECT is handled: the node
//! looks the client up, asks the holder on `<subject_prefix>.s.<node>`,
//! and the holder gives the session up (`Broker::export_session`, once
//! that is durable there) in one or more replies, the last one without
//! the `rmq-more` header.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{Client, HeaderMap, StatusCode, Subscriber};
use futures_lite::StreamExt;
use ringmq_protocol::MqttString;
use tokio::sync::{oneshot, Mutex};
use tokio::time::Instant;

use super::header;
use super::moved;
use crate::core::cluster::ClusterRoute;
use crate::core::connect::home_shard;
use crate::core::moved::Moved;
use crate::core::subject::{name_subject, subject_name};
use crate::shard::{Controls, DurableJob};

/// A shard's request for the session of `client_id`, if another node
/// holds it.
#[derive(Debug)]
pub struct Fetch {
    /// The client connecting.
    pub client_id: String,
    /// Told the session, or `None` (none elsewhere, or it could not come
    /// within `cluster.session_move_wait_ms`).
    pub reply: oneshot::Sender<Option<Moved>>,
}

/// How long a registry request waits for JetStream's answer.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);
/// How long past `session_move_wait_ms` a holder waits for the asking
/// node to confirm a session before taking it back.
const CONFIRM_GRACE: Duration = Duration::from_secs(2);
/// How long after the bucket could not be opened it is tried again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// Tries to record a session's home while the bucket cannot be opened.
const RECORD_ATTEMPTS: u32 = 10;

/// The client-id → node bucket, opened (or created) on first use.
#[derive(Clone)]
pub(super) struct Registry {
    js: jetstream::Context,
    bucket: String,
    replicas: usize,
    store: Arc<Mutex<(Option<kv::Store>, Option<Instant>)>>,
}

impl Registry {
    pub(super) fn new(js: jetstream::Context, subject_prefix: &str, replicas: usize) -> Registry {
        let bucket = subject_prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        Registry {
            js,
            bucket: format!("{bucket}-sessions"),
            replicas,
            store: Arc::new(Mutex::new((None, None))),
        }
    }

    async fn store(&self) -> Option<kv::Store> {
        let mut held = self.store.lock().await;
        if let Some(store) = &held.0 {
            return Some(store.clone());
        }
        if held.1.is_some_and(|failed| failed.elapsed() < REOPEN_AFTER) {
            return None;
        }
        // A CONNECT waits on it: JetStream not answering (a NATS cluster
        // starting) is given up on soon.
        let opening = async {
            match self.js.get_key_value(self.bucket.as_str()).await {
                Ok(store) => Ok(store),
                Err(_) => self.create().await,
            }
        };
        let opened = tokio::time::timeout(LOOKUP_WAIT, opening)
            .await
            .unwrap_or_else(|_| Err("JetStream did not answer".into()));
        match opened {
            Ok(store) => {
                held.0 = Some(store.clone());
                Some(store)
            }
            Err(e) => {
                if held.1.is_none() {
                    tracing::warn!(bucket = %self.bucket, "cluster: the session registry is not available (sessions do not move between nodes until it is): {e}");
                }
                held.1 = Some(Instant::now());
                None
            }
        }
    }

    async fn create(&self) -> Result<kv::Store, String> {
        create_bucket(&self.js, &self.bucket, self.replicas).await
    }

    /// Records this node (`node`) as the home of `client_id`'s session.
    pub(super) async fn record(&self, client_id: &str, node: &str) {
        let mut attempts = 0;
        let store = loop {
            if let Some(store) = self.store().await {
                break store;
            }
            attempts += 1;
            if attempts == RECORD_ATTEMPTS {
                return tracing::warn!(
                    client = client_id,
                    "cluster: the session registry was not updated: not available"
                );
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        };
        let key = name_subject("c", client_id);
        let put = store.put(key, node.to_owned().into()).await;
        if let Err(e) = put {
            tracing::warn!(
                client = client_id,
                "cluster: the session registry was not updated: {e}"
            );
        }
    }

    /// Tells `acks` the node of every persistent session, as the bucket
    /// says and as it changes (P2P messages wait for it), for as long as
    /// the bridge runs.
    pub(super) async fn watch_homes(self, acks: super::acks::Acks) {
        let mut last = 0;
        loop {
            if let Some(store) = self.store().await {
                let watch = match last {
                    0 => store.watch_with_history(">").await,
                    seen => store.watch_from_revision(">", seen + 1).await,
                };
                match watch {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            let Ok(entry) = entry else { continue };
                            last = entry.revision;
                            let Some(client_id) = subject_name("c", &entry.key) else {
                                continue;
                            };
                            let node = (entry.operation == kv::Operation::Put)
                                .then(|| String::from_utf8_lossy(&entry.value).into_owned());
                            acks.home(&client_id, node.as_deref());
                        }
                        tracing::warn!(bucket = %self.bucket, "cluster: the watch of the session registry ended; watching again");
                    }
                    Err(e) => {
                        tracing::debug!(bucket = %self.bucket, "cluster: cannot watch the session registry yet: {e}")
                    }
                }
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }

    /// The node that last held `client_id`'s session, if any.
    async fn home(&self, client_id: &str) -> Option<String> {
        let store = self.store().await?;
        let got = store.get(name_subject("c", client_id)).await;
        match got {
            Ok(value) => String::from_utf8(value?.to_vec()).ok(),
            Err(e) => {
                tracing::warn!(
                    client = client_id,
                    "cluster: the session registry cannot be read: {e}"
                );
                None
            }
        }
    }
}

/// Creates key-value bucket `bucket` (one value per key) as async-nats's
/// `create_key_value` would, without its account query (which cannot
/// read a 2.9 server's answer).
pub(super) async fn create_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("ringmq cluster state".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_stream(config).await.map_err(|e| e.to_string())?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// Answers a shard's fetch: the session from the node that holds it, if
/// not this one, within `wait`.
pub(super) async fn fetch(
    client: Client,
    registry: Registry,
    route: ClusterRoute,
    fetch: Fetch,
    wait: Duration,
) {
    let Fetch { client_id, reply } = fetch;
    let fetched = tokio::time::timeout(
        wait,
        fetch_from_home(&client, &registry, &route, &client_id),
    );
    let moved = match fetched.await {
        Ok(moved) => moved,
        Err(_) => {
            tracing::warn!(
                client = %client_id,
                "cluster: the session did not come from its node within {wait:?}; the client gets the one here, if any"
            );
            None
        }
    };
    let _ = reply.send(moved);
}

async fn fetch_from_home(
    client: &Client,
    registry: &Registry,
    route: &ClusterRoute,
    client_id: &str,
) -> Option<Moved> {
    let home = registry.home(client_id).await?;
    if home == route.node {
        return None;
    }
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.ok()?;
    let ask = name_subject(&route.sessions, &home);
    let asked = client
        .publish_with_reply(ask, inbox, client_id.to_owned().into())
        .await;
    if let Err(e) = asked {
        tracing::warn!(client = client_id, "cluster: cannot ask for a session: {e}");
        return None;
    }
    let (bytes, confirm) = gather(&mut replies, &home).await?;
    if bytes.is_empty() {
        return None;
    }
    match moved::decode(&bytes) {
        Ok(moved) => {
            // The holder keeps a copy until it hears this.
            if let Some(confirm) = confirm {
                let _ = client.publish(confirm, bytes::Bytes::new()).await;
            }
            Some(moved)
        }
        Err(e) => {
            tracing::warn!(client = client_id, node = %home, "cluster: a moved session is unreadable: {e}");
            None
        }
    }
}

/// The replies' payloads, joined, and where to confirm; `None` if nobody
/// answers for `node`.
async fn gather(replies: &mut Subscriber, node: &str) -> Option<(Vec<u8>, Option<String>)> {
    let mut bytes = Vec::new();
    while let Some(m) = replies.next().await {
        if m.status == Some(StatusCode::NO_RESPONDERS) {
            tracing::info!(node, "cluster: the node that held a session is not running");
            return None;
        }
        bytes.extend_from_slice(&m.payload);
        if header(&m.headers, "rmq-more").is_none() {
            let confirm = header(&m.headers, "rmq-ok").map(str::to_owned);
            return Some((bytes, confirm));
        }
    }
    None
}

/// Gives up the sessions other nodes ask this one for, until the bridge
/// stops. A session given up is taken back if the asking node does not
/// confirm it has it within `wait` and a grace (its answer was lost, or
/// came too late): it is then not lost, at worst on two nodes.
pub(super) async fn serve(client: Client, route: ClusterRoute, controls: Controls, wait: Duration) {
    let subject = name_subject(&route.sessions, &route.node);
    let mut asks = match client.subscribe(subject.clone()).await {
        Ok(sub) => sub,
        Err(e) => return tracing::warn!("cluster: cannot serve sessions to other nodes: {e}"),
    };
    let mut n = 0u64;
    while let Some(m) = asks.next().await {
        let (Some(reply), Ok(client_id)) = (m.reply, String::from_utf8(m.payload.to_vec())) else {
            continue;
        };
        n += 1;
        let confirm = format!("{subject}.ok.{n}");
        let (client, controls) = (client.clone(), controls.clone());
        tokio::spawn(async move {
            let Some(moved) = export(&controls, &client_id).await else {
                return answer(&client, reply.to_string(), Vec::new(), None).await;
            };
            let confirmed = client.subscribe(confirm.clone()).await;
            let bytes = moved::encode(&client_id, &moved);
            answer(&client, reply.to_string(), bytes, Some(&confirm)).await;
            let heard = match confirmed {
                Ok(mut sub) => tokio::time::timeout(wait + CONFIRM_GRACE, sub.next()).await,
                Err(_) => Ok(None),
            };
            if !matches!(heard, Ok(Some(_))) {
                take_back(&controls, client_id, moved);
            }
        });
    }
}

/// The session of `client_id`, given up by its shard once that is durable;
/// `None` if it has none.
async fn export(controls: &Controls, client_id: &str) -> Option<Moved> {
    let (tx, rx) = oneshot::channel();
    let shard = home_shard(client_id.as_bytes(), controls.shards());
    let id = client_id.to_owned();
    let job: DurableJob = Box::new(move |broker, now| {
        let moved = broker.export_session(&id, now);
        Box::new(move || {
            let _ = tx.send(moved);
        })
    });
    if !controls.run_durable(shard, job) {
        return None;
    }
    rx.await.ok().flatten()
}

/// The node that asked never confirmed: the session comes back here,
/// unless its client has connected here again meanwhile.
fn take_back(controls: &Controls, client_id: String, moved: Moved) {
    tracing::warn!(client = %client_id, "cluster: the node that asked for a session did not confirm it; kept here");
    let shard = home_shard(client_id.as_bytes(), controls.shards());
    let job: crate::shard::Job = Box::new(move |broker, now| {
        let Ok(id) = MqttString::new(client_id) else {
            return;
        };
        if !broker.holds_session(id.as_str()) {
            broker.import_session(&id, moved, now);
        }
    });
    let _ = controls.run(shard, job);
}

/// Sends `bytes` to `reply` in payloads NATS takes, the last one without
/// `rmq-more`.
async fn answer(client: &Client, reply: String, bytes: Vec<u8>, confirm: Option<&str>) {
    let chunk = client
        .server_info()
        .max_payload
        .saturating_sub(4096)
        .max(4096);
    let chunks: Vec<&[u8]> = match bytes.is_empty() {
        true => vec![&[][..]],
        false => bytes.chunks(chunk).collect(),
    };
    let last = chunks.len() - 1;
    for (i, part) in chunks.into_iter().enumerate() {
        let payload = bytes::Bytes::copy_from_slice(part);
        let mut headers = HeaderMap::new();
        match (i == last, confirm) {
            (false, _) => headers.insert("rmq-more", "1"),
            (true, Some(confirm)) => headers.insert("rmq-ok", confirm),
            (true, None) => {}
        }
        let sent = client
            .publish_with_headers(reply.clone(), headers, payload)
            .await;
        if let Err(e) = sent {
            tracing::warn!("cluster: a moved session was not sent: {e}");
            return;
        }
    }
}
