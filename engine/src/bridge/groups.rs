//! Shared subscriptions across the cluster. Each node with members of an
//! MQTT shared group (`$share/<group>/<filter>`) joins one NATS queue group
//! per (group, filter) on the filter's message and retained subjects, so
//! NATS hands each message to one node of those with members, and that
//! node to one of its members (see `Broker::shared_from_cluster`). The
//! publishing node's groups are reached the same way (see
//! `Broker::shared_by_cluster`), so these subscriptions live on a
//! connection of their own: the main one has `no_echo`.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::{Client, ConnectOptions};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::cluster::{forward, lose};
use crate::core::cluster::{ClusterRoute, SUBJECT_BYTES_MAX};
use crate::core::subject::{filter_subjects, queue_name};

/// The shared group a queue group's message is for.
#[derive(Debug)]
pub(super) struct GroupKey {
    /// The group's filter (without `$share/<group>/`).
    pub(super) filter: Box<str>,
    /// Its ShareName.
    pub(super) group: Box<str>,
}

/// Where the cluster's subscriptions hand what they receive.
pub(super) type Inbox = mpsc::Sender<(async_nats::Message, Option<Arc<GroupKey>>)>;

/// This node's queue groups: per (subject, queue name), how many shards
/// have members.
pub(super) struct Groups {
    client: Client,
    route: ClusterRoute,
    inbox: Inbox,
    subscribed: HashMap<(String, String), (usize, AbortHandle)>,
}

impl Groups {
    /// Connects the groups' connection (in the background while NATS is
    /// down); `None` if its options are refused.
    pub(super) async fn connect(
        options: ConnectOptions,
        servers: &[String],
        route: ClusterRoute,
        inbox: Inbox,
    ) -> Option<Groups> {
        match options.connect(servers).await {
            Ok(client) => Some(Groups {
                client,
                route,
                inbox,
                subscribed: HashMap::new(),
            }),
            Err(e) => {
                tracing::error!("cluster: shared subscriptions cannot connect: {e}");
                None
            }
        }
    }

    /// A shard gained (`add`) its first member of `group` on `filter`, or
    /// lost its last.
    pub(super) async fn change(&mut self, filter: Box<str>, group: Box<str>, add: bool) {
        let queue = queue_name(&group, &filter);
        let key = Arc::new(GroupKey { filter, group });
        let subjects = [&self.route.messages, &self.route.retained]
            .into_iter()
            .flat_map(|prefix| filter_subjects(prefix, &key.filter, SUBJECT_BYTES_MAX));
        for subject in subjects.collect::<Vec<_>>() {
            let at = (subject, queue.clone());
            match add {
                true => self.gain(at, &key).await,
                false => lose(&mut self.subscribed, &at),
            }
        }
    }

    async fn gain(&mut self, at: (String, String), key: &Arc<GroupKey>) {
        if let Some((count, _)) = self.subscribed.get_mut(&at) {
            *count += 1;
            return;
        }
        let (subject, queue) = (at.0.clone(), at.1.clone());
        match self.client.queue_subscribe(subject, queue).await {
            Ok(sub) => {
                let inbox = self.inbox.clone();
                let task = tokio::spawn(forward(sub, inbox, Some(Arc::clone(key))));
                self.subscribed.insert(at, (1, task.abort_handle()));
            }
            Err(e) => tracing::warn!(subject = %at.0, "cluster: cannot join a queue group: {e}"),
        }
    }
}
