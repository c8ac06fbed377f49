//! Rules created and deleted through the OpenAPI (CreateRule, DeleteRule,
//! ListRule). They are registry changes like the others: checked, made
//! durable, replicated in a cluster; once applied, every shard gets the
//! rules in force and the NATS bridge starts or stops an inflow rule's
//! consumer. The config file's rules stay as they are: an API rule cannot
//! take one's name, and they cannot be deleted through the API.

use ahash::AHashSet;

use super::{now_ms, Registrar};
use crate::bridge::config::{check, outflow_rules, status_groups};
use crate::bridge::{NatsConfig, Rule, RuleChange, RuleKind};
use crate::core::aliyun::registry::{Change, Registry, RegistryError, Stamp};
use crate::core::outflow::OutflowRule;

/// What rules created through the API are checked against.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) nats: NatsConfig,
    pub(super) from_config: Vec<Rule>,
}

/// A rule in force and where it comes from.
#[derive(Debug, Clone)]
pub struct RuleInForce {
    /// The rule.
    pub rule: Rule,
    /// When it was created through the API; `None`: the config file's.
    pub stamp: Option<Stamp>,
}

/// What the shards apply: the outflow rules, and the Group IDs whose
/// online/offline events go to NATS.
pub(super) type ShardRules = (Vec<OutflowRule>, AHashSet<Box<str>>);

impl Registrar {
    /// From now on inflow rules created and deleted are started and
    /// stopped through `changes` (the NATS bridge's).
    pub fn drive_inflow(&self, changes: tokio::sync::mpsc::UnboundedSender<RuleChange>) {
        let _ = self.inflow.set(changes);
    }

    /// Creates `rule` (CreateRule): checked as a `[[rules]]` entry would
    /// be, then in force on every shard (and every node) at once.
    pub fn create_rule(&self, rule: Rule) -> Result<(), RegistryError> {
        if self.rules.from_config.iter().any(|r| r.name == rule.name) {
            return Err(RegistryError::Exists("rule", rule.name));
        }
        let (nats, rules) = (&self.rules.nats, std::slice::from_ref(&rule));
        check(nats, rules, true).map_err(RegistryError::Invalid)?;
        self.change(Change::PutRule {
            rule,
            at_ms: now_ms(),
        })
    }

    /// Deletes the rule `name` created through the API (DeleteRule).
    pub fn delete_rule(&self, name: &str) -> Result<(), RegistryError> {
        if self.rules.from_config.iter().any(|r| r.name == name) {
            return Err(RegistryError::Invalid(format!(
                "rule {name} comes from the config file: change it there"
            )));
        }
        self.change(Change::DeleteRule {
            name: name.to_owned(),
        })
    }

    /// Every rule in force: the config file's, then those created through
    /// the API by name (ListRule).
    pub fn list_rules(&self) -> Vec<RuleInForce> {
        let from_config = self.rules.from_config.iter().map(|rule| RuleInForce {
            rule: rule.clone(),
            stamp: None,
        });
        let inner = self.lock();
        let from_api = inner.registry.rules.values().map(|s| RuleInForce {
            rule: s.rule.clone(),
            stamp: Some(s.stamp),
        });
        from_config.chain(from_api).collect()
    }

    /// If `change` (just applied to `registry`) creates or deletes a rule:
    /// tells the bridge about an inflow rule, and returns what the shards
    /// apply from now on.
    pub(super) fn rules_changed(&self, change: &Change, registry: &Registry) -> Option<ShardRules> {
        let inflow = match change {
            Change::PutRule { rule, .. } if rule.kind == RuleKind::Inflow => {
                Some(RuleChange::Start(rule.clone()))
            }
            Change::PutRule { .. } => None,
            Change::DeleteRule { name } => Some(RuleChange::Stop(name.clone())),
            _ => return None,
        };
        if let (Some(inflow), Some(bridge)) = (inflow, self.inflow.get()) {
            let _ = bridge.send(inflow);
        }
        let api = registry.rules.values().map(|s| &s.rule);
        let all: Vec<&Rule> = self.rules.from_config.iter().chain(api).collect();
        let outflow = outflow_rules(all.iter().copied());
        Some((outflow, status_groups(all.iter().copied())))
    }
}
