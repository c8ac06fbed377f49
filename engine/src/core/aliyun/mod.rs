//! The Alibaba Cloud MQTT profile (`profile = "aliyun"`): the product's
//! names and limits, its sign-in modes and tokens, P2P topics and
//! online/offline notifications. [`Aliyun`] is one shard's part: the rules,
//! its copy of the instance [`registry::Registry`], and the count of
//! wildcard filters per parent topic across the instance.

pub mod custom;
pub mod names;
pub mod registry;
pub mod signin;
pub mod token;

mod hooks;
pub mod notices;

use std::collections::BTreeMap;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use names::{Filter, Topic};
use registry::{Quotas, Registry};

pub(super) use hooks::PublishTo;
pub use hooks::{LinkAliyun, UPLOAD_TOKEN_TOPIC};
pub use signin::SignInError;
pub use token::TokenRequest;

/// One access key of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// AccessKeyId.
    pub id: String,
    /// AccessKeySecret.
    pub secret: String,
}

/// The `[aliyun]` table: the instance's names, created at start, and the
/// product's limits (its numbers are the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AliyunConfig {
    /// The instance id clients sign in to.
    pub instance_id: String,
    /// Parent topics created at start (if missing).
    pub parent_topics: Vec<String>,
    /// Group IDs created at start (if missing).
    pub group_ids: Vec<String>,
    /// Access keys, added or updated at start.
    pub access_keys: Vec<AccessKey>,
    /// Longest client id, in characters.
    pub client_id_chars_max: usize,
    /// Longest topic name or filter, in characters (a P2P topic's client
    /// id does not count).
    pub topic_chars_max: usize,
    /// Subscriptions per client; the next filter gets SUBACK 0x80.
    pub subscriptions_per_client_max: usize,
    /// Distinct wildcard filters per parent topic across the instance.
    pub wildcard_filters_per_parent_max: usize,
    /// Largest payload of a PUBLISH, in bytes; larger closes a 3.1.1
    /// connection (v5: DISCONNECT 0x95).
    pub payload_bytes_max: usize,
    /// Parent topics per instance.
    pub parent_topics_max: usize,
    /// Group IDs per instance.
    pub group_ids_max: usize,
    /// Rules created through the OpenAPI (CreateRule), per instance.
    pub rules_max: usize,
    /// Device credentials per instance.
    pub device_credentials_max: usize,
    /// Topic filters in one token.
    pub token_resources_max: usize,
    /// Tokens issued and not yet expired, per instance.
    pub tokens_max: usize,
    /// Custom-auth identities per instance.
    pub custom_identities_max: usize,
    /// Custom-auth permissions per instance.
    pub custom_permissions_max: usize,
    /// Longest token life, in seconds (a later expiry is cut to it).
    pub token_life_secs_max: u64,
    /// Shortest token life, in seconds.
    pub token_life_secs_min: u64,
    /// How long before a token expires its holder gets
    /// `$SYS/tokenExpireNotice`, in seconds.
    pub token_expire_notice_secs: u64,
    /// Whether connect / disconnect / tcpclean events are published to
    /// `<GroupID>_MQTT/<eventType>`.
    pub notify_online_offline: bool,
}

impl Default for AliyunConfig {
    fn default() -> Self {
        AliyunConfig {
            instance_id: "mqtt-local".into(),
            parent_topics: Vec::new(),
            group_ids: Vec::new(),
            access_keys: Vec::new(),
            client_id_chars_max: 64,
            topic_chars_max: 64,
            subscriptions_per_client_max: 30,
            wildcard_filters_per_parent_max: 100,
            payload_bytes_max: 64 << 10,
            parent_topics_max: 25,
            group_ids_max: 10_000,
            rules_max: 100,
            device_credentials_max: 1_000_000,
            token_resources_max: 100,
            tokens_max: 1_000_000,
            custom_identities_max: 100_000,
            custom_permissions_max: 100_000,
            token_life_secs_max: 30 * 24 * 3600,
            token_life_secs_min: 60,
            token_expire_notice_secs: 300,
            notify_online_offline: true,
        }
    }
}

impl AliyunConfig {
    /// The quotas the registry checks changes against.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            parent_topics_max: self.parent_topics_max,
            group_ids_max: self.group_ids_max,
            credentials_max: self.device_credentials_max,
            tokens_max: self.tokens_max,
            custom_identities_max: self.custom_identities_max,
            custom_permissions_max: self.custom_permissions_max,
            rules_max: self.rules_max,
        }
    }
}

/// One shard's part of the profile.
#[derive(Debug)]
pub struct Aliyun {
    /// The rules.
    pub config: AliyunConfig,
    /// This shard's copy of the registry.
    pub registry: Registry,
    /// Group IDs whose online/offline events status rules send to NATS.
    pub status_groups: ahash::AHashSet<Box<str>>,
    /// Wildcard filters with subscribers somewhere: filter → shards.
    wildcards: AHashMap<Box<str>, u64>,
    /// Wildcard filters with subscribers, per parent topic.
    per_parent: BTreeMap<Box<str>, usize>,
}

impl Aliyun {
    /// One shard's part, with its copy of the registry.
    pub fn new(config: AliyunConfig, mut registry: Registry) -> Self {
        registry.reindex();
        Aliyun {
            config,
            registry,
            status_groups: Default::default(),
            wildcards: AHashMap::new(),
            per_parent: BTreeMap::new(),
        }
    }

    /// Checks a client id: `<GroupID>@@@<DeviceID>`, short enough, of a
    /// Group ID that exists.
    pub fn check_client_id(&self, id: &str) -> Result<(), String> {
        let (group, _) = names::split_client_id(id, self.config.client_id_chars_max)
            .map_err(|e| e.to_string())?;
        if !self.registry.group_ids.contains_key(group) {
            return Err(format!("Group ID {group} does not exist"));
        }
        Ok(())
    }

    /// Checks a PUBLISH topic: its form, and that its parent topic exists.
    pub fn check_topic<'a>(&self, topic: &'a str) -> Result<Topic<'a>, String> {
        let c = &self.config;
        let t = names::check_topic(topic, c.topic_chars_max, c.client_id_chars_max)
            .map_err(|e| e.to_string())?;
        if !self.registry.parent_topics.contains_key(t.parent()) {
            return Err(format!("parent topic {} does not exist", t.parent()));
        }
        Ok(t)
    }

    /// Checks a subscription filter (without `$share/<group>/`): its form,
    /// that its parent topic (or Group ID) exists, and, for a new wildcard
    /// filter, that its parent topic has room for one more.
    pub fn check_filter<'a>(&self, filter: &'a str) -> Result<Filter<'a>, String> {
        let f =
            names::check_filter(filter, self.config.topic_chars_max).map_err(|e| e.to_string())?;
        let known = match f {
            Filter::Plain { parent, .. } | Filter::P2p { parent } => {
                self.registry.parent_topics.contains_key(parent)
            }
            Filter::Notices { group } => self.registry.group_ids.contains_key(group),
        };
        if !known {
            return Err(format!(
                "{filter}: its parent topic or Group ID does not exist"
            ));
        }
        if let Filter::Plain {
            parent,
            wildcard: true,
        } = f
        {
            let used = self.per_parent.get(parent).copied().unwrap_or(0);
            let new = !self.wildcards.contains_key(filter);
            if new && used >= self.config.wildcard_filters_per_parent_max {
                return Err(format!(
                    "parent topic {parent} has {used} wildcard filters (wildcard_filters_per_parent_max)"
                ));
            }
        }
        Ok(f)
    }

    /// Shard `shard` gained (`add`) or lost its last subscriber on `filter`.
    pub fn filter_routed(&mut self, filter: &str, shard: usize, add: bool) {
        let Ok(Filter::Plain {
            parent,
            wildcard: true,
        }) = names::check_filter(filter, usize::MAX)
        else {
            return;
        };
        let bit = 1u64 << shard;
        let mask = self.wildcards.entry(filter.into()).or_insert(0);
        let before = *mask != 0;
        match add {
            true => *mask |= bit,
            false => *mask &= !bit,
        }
        let after = *mask != 0;
        if !after {
            self.wildcards.remove(filter);
        }
        let count = self.per_parent.entry(parent.into()).or_insert(0);
        match (before, after) {
            (false, true) => *count += 1,
            (true, false) => *count = count.saturating_sub(1),
            _ => {}
        }
    }
}
