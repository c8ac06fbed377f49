//! `[nats]` and `[[rules]]`: where the bridge connects, and what it sends.

use serde::{Deserialize, Serialize};

/// The NATS servers the bridge connects to; no servers, no bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, e.g. `nats://127.0.0.1:4222`, tried in order: the
    /// bridge connects to the first it reaches and moves to another when
    /// that one fails.
    pub servers: Vec<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
    /// Token, instead of a user and password.
    pub token: Option<String>,
    /// Messages the shards may have handed the bridge and it has not yet
    /// taken; beyond it new ones are dropped and counted
    /// (`ringmq_outflow_dropped_total`), so a NATS outage never stalls MQTT.
    /// Also the JetStream publishes that may wait for the window of
    /// acknowledgements (beyond, `ringmq_nats_bridge_dropped_total`).
    pub outbox_messages_max: usize,
    /// Messages the NATS client holds while it reconnects (async-nats'
    /// client capacity).
    pub client_messages_max: usize,
    /// JetStream acknowledgements awaited at once; the next JetStream
    /// publish waits for one.
    pub jetstream_acks_pending_max: u32,
    /// Inflow: messages one rule hands the shards at once (and the most
    /// its consumer has unacknowledged); what is ready is taken together.
    pub inflow_batch_messages_max: usize,
    /// Bytes of QoS 1/2 rule messages and status notifications held on
    /// disk (`<data_dir>/nats-spool`) until NATS has them; beyond it new
    /// ones are dropped and counted (`ringmq_nats_spool_dropped_total`).
    /// 0: no spool, they are held in memory only.
    pub spool_bytes_max: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: Vec::new(),
            user: None,
            password: None,
            token: None,
            outbox_messages_max: 65_536,
            client_messages_max: 65_536,
            jetstream_acks_pending_max: 1024,
            inflow_batch_messages_max: 256,
            spool_bytes_max: 1 << 30,
        }
    }
}

/// `[cluster]`: ringmq nodes sharing one NATS (cluster) behave as one
/// broker: what a client publishes on one node reaches the subscribers of
/// every node, NATS carrying it to the nodes with interest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster; empty: no cluster.
    pub node_id: String,
    /// NATS subjects of the messages are `<subject_prefix>.m.<levels…>`
    /// (retained ones `<subject_prefix>.r.<levels…>`); nodes with the same
    /// prefix form one cluster.
    pub subject_prefix: String,
    /// Messages received from other nodes and not yet handed to the
    /// shards; beyond it NATS treats the node as a slow consumer and drops.
    pub inbox_messages_max: usize,
    /// How long a CONNECT without Clean Start waits for the client's
    /// persistent session to come from the node that holds it; 0: sessions
    /// stay on their node.
    pub session_move_wait_ms: u64,
    /// Copies JetStream keeps of the session registry (the bucket
    /// `<subject_prefix>-sessions`), at most the NATS cluster's servers.
    pub registry_replicas: usize,
    /// How long a QoS 1/2 publisher's acknowledgement waits for the other
    /// nodes with persistent sessions subscribed to its message to say
    /// they hold it; past it the publisher is disconnected unacknowledged
    /// (it publishes again). 0: it does not wait for other nodes.
    pub remote_ack_wait_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            subject_prefix: "ringmq".into(),
            inbox_messages_max: 65_536,
            session_move_wait_ms: 3_000,
            registry_replicas: 1,
            remote_ack_wait_ms: 2_000,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.node_id.is_empty()
    }
}

/// Checks `[cluster]` against `[nats]`.
pub fn check_cluster(cluster: &ClusterConfig, nats: &NatsConfig) -> Result<(), String> {
    if !cluster.enabled() {
        return Ok(());
    }
    if !valid_js_name(&cluster.node_id) {
        return Err("cluster.node_id: letters, digits, - and _, e.g. \"n1\"".into());
    }
    if nats.servers.is_empty() {
        return Err("cluster.node_id: a cluster needs [nats] servers".into());
    }
    if !valid_subject(&cluster.subject_prefix) {
        return Err("cluster.subject_prefix: a NATS subject without wildcards".into());
    }
    if cluster.inbox_messages_max == 0 {
        return Err("cluster.inbox_messages_max: at least 1".into());
    }
    if !(1..=5).contains(&cluster.registry_replicas) {
        return Err("cluster.registry_replicas: 1 to 5 (JetStream's limit)".into());
    }
    Ok(())
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The online/offline events of Group IDs (aliyun profile) to the NATS
    /// subjects `<GroupID>_MQTT.connect|disconnect|tcpclean`.
    Status,
    /// Messages published on `source` to the NATS subject `subject`, with
    /// headers `mqttSecondTopic`, `qoslevel`, `clientId`, `mqttMessageId`.
    Outflow,
    /// Messages of a JetStream stream (`stream`, optionally only `subject`)
    /// published on `topic` plus their `mqttSecondTopic` header, at the
    /// QoS of their `qoslevel` header; acknowledged to JetStream once
    /// delivered or stored.
    Inflow,
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, unique, for logs.
    pub name: String,
    /// What it does.
    pub kind: RuleKind,
    /// `status`: the Group IDs it applies to.
    #[serde(default)]
    pub group_ids: Vec<String>,
    /// `outflow`: a parent topic (`devices`, all of it) or an MQTT filter
    /// (`devices/+/telemetry`).
    #[serde(default)]
    pub source: String,
    /// `outflow`: the NATS subject messages go to. `inflow`: the subjects
    /// of `stream` taken (wildcards allowed; empty: all of them).
    #[serde(default)]
    pub subject: String,
    /// `inflow`: the JetStream stream read, through a durable consumer
    /// named `ringmq-<name>` that the bridge creates.
    #[serde(default)]
    pub stream: String,
    /// `inflow`: the MQTT topic messages are published on (a parent topic,
    /// or a whole topic), their `mqttSecondTopic` header appended.
    #[serde(default)]
    pub topic: String,
    /// `outflow`: publish through JetStream (a stream must capture
    /// `subject`) and await its acknowledgement; otherwise core NATS.
    #[serde(default)]
    pub jetstream: bool,
    /// `outflow` with `jetstream`: a QoS 1/2 publisher's PUBACK/PUBREC
    /// waits until the stream stored the message (at least once).
    #[serde(default)]
    pub ack_after_stored: bool,
}

impl Rule {
    /// `source` as an MQTT filter: a bare parent topic is `parent/#`.
    pub fn source_filter(&self) -> String {
        match self.source.contains(['/', '+', '#']) {
            true => self.source.clone(),
            false => format!("{}/#", self.source),
        }
    }
}

/// The outflow rules among `rules`, as the shards apply them.
pub fn outflow_rules<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
) -> Vec<crate::core::outflow::OutflowRule> {
    rules
        .into_iter()
        .filter(|rule| rule.kind == RuleKind::Outflow)
        .map(|rule| crate::core::outflow::OutflowRule {
            filter: rule.source_filter(),
            subject: rule.subject.clone(),
            jetstream: rule.jetstream,
            confirm: rule.ack_after_stored,
        })
        .collect()
}

/// The Group IDs whose online/offline events the status rules among
/// `rules` send to NATS.
pub fn status_groups<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> ahash::AHashSet<Box<str>> {
    rules
        .into_iter()
        .filter(|rule| rule.kind == RuleKind::Status)
        .flat_map(|rule| rule.group_ids.iter().map(|g| g.as_str().into()))
        .collect()
}

/// Whether `subject` can be published to: tokens of printable ASCII
/// without `*` or `>`, none empty.
fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
}

/// Whether `subject` can be subscribed to: tokens of printable ASCII,
/// none empty, `*` and `>` only as whole tokens, `>` last.
fn valid_filter_subject(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| match *t {
        "*" => true,
        ">" => i == last,
        t => valid_subject(t),
    })
}

/// Whether `name` can name a JetStream stream or consumer.
fn valid_js_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks the rules against `[nats]` and the profile; the error names the
/// rule and the setting.
pub fn check(nats: &NatsConfig, rules: &[Rule], aliyun: bool) -> Result<(), String> {
    let sizes = [
        nats.outbox_messages_max,
        nats.client_messages_max,
        nats.jetstream_acks_pending_max as usize,
        nats.inflow_batch_messages_max,
    ];
    if !nats.servers.is_empty() && sizes.contains(&0) {
        return Err(
            "nats.outbox_messages_max, client_messages_max, jetstream_acks_pending_max, inflow_batch_messages_max: at least 1"
                .into(),
        );
    }
    for server in &nats.servers {
        if let Err(e) = server.parse::<async_nats::ServerAddr>() {
            return Err(format!(
                "nats.servers: {server:?}: {e} (e.g. nats://127.0.0.1:4222)"
            ));
        }
    }
    if nats.user.is_some() != nats.password.is_some() {
        return Err("nats.user and nats.password: both or neither".into());
    }
    let mut names = std::collections::HashSet::new();
    for rule in rules {
        if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
            return Err(format!("rules: {:?}: a unique, non-empty name", rule.name));
        }
        if nats.servers.is_empty() {
            return Err(format!("rules.{}: needs [nats] servers", rule.name));
        }
        if rule.ack_after_stored && rule.kind != RuleKind::Outflow {
            return Err(format!(
                "rules.{}: ack_after_stored is for outflow rules with jetstream = true",
                rule.name
            ));
        }
        match rule.kind {
            RuleKind::Status if !aliyun => {
                return Err(format!(
                    "rules.{}: kind \"status\" needs profile = \"aliyun\" (Group IDs)",
                    rule.name
                ))
            }
            RuleKind::Status if rule.group_ids.is_empty() => {
                return Err(format!("rules.{}: group_ids: at least one", rule.name))
            }
            RuleKind::Status => {}
            RuleKind::Outflow => check_outflow(rule)?,
            RuleKind::Inflow => check_inflow(rule)?,
        }
    }
    Ok(())
}

fn check_outflow(rule: &Rule) -> Result<(), String> {
    if rule.ack_after_stored && !rule.jetstream {
        return Err(format!(
            "rules.{}: ack_after_stored needs jetstream = true (core NATS stores nothing)",
            rule.name
        ));
    }
    if rule.source.is_empty() || ringmq_protocol::TopicFilter::new(rule.source_filter()).is_err() {
        return Err(format!(
            "rules.{}: source: a parent topic or an MQTT filter, e.g. \"devices\"",
            rule.name
        ));
    }
    if !valid_subject(&rule.subject) {
        return Err(format!(
            "rules.{}: subject: a NATS subject without wildcards, e.g. \"mqtt.devices\"",
            rule.name
        ));
    }
    Ok(())
}

fn check_inflow(rule: &Rule) -> Result<(), String> {
    if !valid_js_name(&rule.name) {
        return Err(format!(
            "rules.{}: an inflow rule's name names its JetStream consumer: letters, digits, - and _",
            rule.name
        ));
    }
    if !valid_js_name(&rule.stream) {
        return Err(format!(
            "rules.{}: stream: a JetStream stream name (letters, digits, - and _)",
            rule.name
        ));
    }
    if !rule.subject.is_empty() && !valid_filter_subject(&rule.subject) {
        return Err(format!(
            "rules.{}: subject: NATS subjects of the stream, e.g. \"devices.MQ2MQTT\" or \"devices.>\"",
            rule.name
        ));
    }
    let topic = ringmq_protocol::TopicName::new(rule.topic.as_str());
    if topic.is_err() || rule.topic.starts_with('$') {
        return Err(format!(
            "rules.{}: topic: an MQTT topic without wildcards, not a $ topic [MQTT-4.7.2-1], e.g. \"devices\"",
            rule.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outflow(source: &str, subject: &str) -> Rule {
        Rule {
            name: "o".into(),
            kind: RuleKind::Outflow,
            group_ids: Vec::new(),
            source: source.into(),
            subject: subject.into(),
            stream: String::new(),
            topic: String::new(),
            jetstream: false,
            ack_after_stored: false,
        }
    }

    fn inflow(name: &str, stream: &str, subject: &str, topic: &str) -> Rule {
        Rule {
            name: name.into(),
            kind: RuleKind::Inflow,
            group_ids: Vec::new(),
            source: String::new(),
            subject: subject.into(),
            stream: stream.into(),
            topic: topic.into(),
            jetstream: false,
            ack_after_stored: false,
        }
    }

    #[test]
    fn a_cluster_needs_a_node_id_and_nats() {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let node = |id: &str| ClusterConfig {
            node_id: id.into(),
            ..ClusterConfig::default()
        };
        assert_eq!(
            check_cluster(&ClusterConfig::default(), &NatsConfig::default()),
            Ok(())
        );
        assert_eq!(check_cluster(&node("n1"), &nats), Ok(()));
        assert!(check_cluster(&node("n1"), &NatsConfig::default()).is_err());
        assert!(check_cluster(&node("n.1"), &nats).is_err());
        let mut wild = node("n1");
        wild.subject_prefix = "a.*".into();
        assert!(check_cluster(&wild, &nats).is_err());
    }

    #[test]
    fn ack_after_stored_needs_a_jetstream_outflow() {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let mut rule = outflow("devices", "mqtt.devices");
        rule.ack_after_stored = true;
        let err = check(&nats, &[rule.clone()], false).expect_err("without jetstream");
        assert!(err.contains("needs jetstream = true"), "{err}");
        rule.jetstream = true;
        assert_eq!(check(&nats, &[rule], false), Ok(()));
        let mut rule = inflow("in", "CMD", "", "devices");
        rule.ack_after_stored = true;
        let err = check(&nats, &[rule], false).expect_err("an inflow rule");
        assert!(err.contains("is for outflow rules"), "{err}");
    }

    #[test]
    fn inflow_rules_are_checked() {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let ok = |r: Rule| check(&nats, &[r], false);
        assert_eq!(ok(inflow("in", "CMD", "", "devices")), Ok(()));
        assert_eq!(ok(inflow("in-1", "CMD_2", "cmd.*.MQ2MQTT", "a/b")), Ok(()));
        assert_eq!(ok(inflow("in", "CMD", "cmd.>", "devices")), Ok(()));
        let bad = [
            inflow("in.x", "CMD", "", "devices"),
            inflow("in", "", "", "devices"),
            inflow("in", "C.D", "", "devices"),
            inflow("in", "CMD", "cmd.>.x", "devices"),
            inflow("in", "CMD", "cmd..x", "devices"),
            inflow("in", "CMD", "", ""),
            inflow("in", "CMD", "", "a/+"),
            inflow("in", "CMD", "", "$SYS/x"),
        ];
        for rule in bad {
            assert!(ok(rule.clone()).is_err(), "{rule:?}");
        }
    }

    #[test]
    fn a_parent_topic_source_is_the_whole_parent() {
        assert_eq!(outflow("devices", "a").source_filter(), "devices/#");
        assert_eq!(outflow("devices/+/t", "a").source_filter(), "devices/+/t");
    }

    #[test]
    fn outflow_subjects_are_checked() {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        for good in ["mqtt.devices", "a", "a-b_c.d"] {
            assert_eq!(check(&nats, &[outflow("devices", good)], false), Ok(()));
        }
        for bad in ["", "a.*", "a.>", "a..b", "a b", ".a"] {
            assert!(
                check(&nats, &[outflow("devices", bad)], false).is_err(),
                "{bad:?}"
            );
        }
        assert!(check(&nats, &[outflow("", "a")], false).is_err());
        assert!(check(&nats, &[outflow("a/#/b", "a")], false).is_err());
    }
}
