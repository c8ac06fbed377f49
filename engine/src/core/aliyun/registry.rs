//! The instance registry: instance id, access keys, parent topics, Group
//! IDs, device credentials, issued and revoked tokens. Plain data. Its
//! owner (outside the shards) checks a [`Change`], makes it durable, then
//! sends it to every shard, which applies it to its own copy: every copy
//! goes through the same changes in the same order.

use crate::bridge::Rule;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::custom::{CustomAuth, CustomChange};

use super::names;
use super::token::Actions;

/// When a name was created and last changed, in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Created.
    pub create_ms: u64,
    /// Last changed.
    pub update_ms: u64,
}

/// A per-device access key (RegisterDeviceCredential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    /// The client id it belongs to.
    pub client_id: String,
    /// DeviceAccessKeyId.
    pub key_id: String,
    /// DeviceAccessKeySecret.
    pub secret: String,
    /// Registered.
    pub create_ms: u64,
    /// Last refreshed.
    pub update_ms: u64,
}

/// A token ringmq issued (ApplyToken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The access key that applied for it.
    pub access_key: String,
    /// What it allows.
    pub actions: Actions,
    /// The topic filters it covers.
    pub resources: Vec<String>,
    /// When it expires (ms since the Unix epoch).
    pub expire_ms: u64,
    /// When it was issued.
    pub issue_ms: u64,
}

/// One change of the registry, as logged and as sent to the shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Change {
    /// The instance id (from the config file).
    SetInstance {
        /// The id.
        id: String,
    },
    /// Adds or replaces an access key.
    PutAccessKey {
        /// AccessKeyId.
        id: String,
        /// AccessKeySecret.
        secret: String,
    },
    /// Removes an access key.
    RemoveAccessKey {
        /// AccessKeyId.
        id: String,
    },
    /// Creates a parent topic.
    CreateParentTopic {
        /// Its name.
        name: String,
        /// When.
        at_ms: u64,
    },
    /// Deletes a parent topic.
    DeleteParentTopic {
        /// Its name.
        name: String,
    },
    /// Creates a Group ID.
    CreateGroupId {
        /// The Group ID.
        id: String,
        /// When.
        at_ms: u64,
    },
    /// Deletes a Group ID.
    DeleteGroupId {
        /// The Group ID.
        id: String,
    },
    /// Registers or refreshes a device credential.
    PutCredential(DeviceCredential),
    /// Unregisters the device credential of a client id.
    RemoveCredential {
        /// The client id.
        client_id: String,
    },
    /// Records a token issued.
    IssueToken {
        /// Its id.
        id: String,
        /// What it is.
        token: IssuedToken,
    },
    /// Revokes a token until it would have expired.
    RevokeToken {
        /// Its id.
        id: String,
        /// Its expiry: past it, the revocation can be forgotten.
        expire_ms: u64,
    },
    /// A change of the custom-auth identities and permissions.
    Custom(CustomChange),
    /// Creates a rule (CreateRule); rules of the config file are not
    /// the registry's.
    PutRule {
        /// The rule.
        rule: Rule,
        /// When.
        at_ms: u64,
    },
    /// Deletes a rule created by [`Change::PutRule`].
    DeleteRule {
        /// Its name.
        name: String,
    },
    /// Forgets issued and revoked tokens that expired before `now_ms`.
    Prune {
        /// Now.
        now_ms: u64,
    },
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A parameter breaks the product's rules.
    #[error("invalid parameter: {0}")]
    Invalid(String),
    /// The thing named does not exist.
    #[error("{0} not found: {1}")]
    NotFound(&'static str, String),
    /// The thing named exists already.
    #[error("{0} already exists: {1}")]
    Exists(&'static str, String),
    /// A count limit is reached.
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// The change could not be made durable, or the shards did not apply it.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// The registry's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Registry {
    /// The instance id clients sign in to.
    pub instance_id: String,
    /// AccessKeyId → AccessKeySecret.
    pub access_keys: BTreeMap<String, String>,
    /// Parent topics.
    pub parent_topics: BTreeMap<String, Stamp>,
    /// Group IDs.
    pub group_ids: BTreeMap<String, Stamp>,
    /// Device credentials by client id.
    pub credentials: BTreeMap<String, DeviceCredential>,
    /// Tokens issued and not expired, by id (kept by the owner only).
    pub tokens: BTreeMap<String, IssuedToken>,
    /// Revoked tokens by id, with their expiry.
    pub revoked: BTreeMap<String, u64>,
    /// Custom authentication: identities and permissions.
    pub custom: CustomAuth,
    /// Rules created through the OpenAPI, by name.
    pub rules: BTreeMap<String, StoredRule>,
    /// DeviceAccessKeyId → client id.
    #[serde(skip)]
    credential_keys: HashMap<String, String>,
    /// Whether issued tokens are kept (the owner's copy; shards need only
    /// revocations).
    #[serde(skip)]
    pub keeps_issued: bool,
}

/// Limits checked on changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Parent topics per instance.
    pub parent_topics_max: usize,
    /// Group IDs per instance.
    pub group_ids_max: usize,
    /// Device credentials per instance.
    pub credentials_max: usize,
    /// Live issued tokens per instance.
    pub tokens_max: usize,
    /// Custom-auth identities per instance.
    pub custom_identities_max: usize,
    /// Custom-auth permissions per instance.
    pub custom_permissions_max: usize,
    /// Rules created through the OpenAPI.
    pub rules_max: usize,
}

/// A rule created through the OpenAPI, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRule {
    /// The rule, as a `[[rules]]` entry would say it.
    pub rule: Rule,
    /// When it was created.
    pub stamp: Stamp,
}

impl Registry {
    /// Rebuilds what is derived from the data (after loading a snapshot).
    pub fn reindex(&mut self) {
        self.credential_keys = self
            .credentials
            .values()
            .map(|c| (c.key_id.clone(), c.client_id.clone()))
            .collect();
    }

    /// The device credential with DeviceAccessKeyId `key_id`.
    pub fn credential_by_key(&self, key_id: &str) -> Option<&DeviceCredential> {
        self.credentials.get(self.credential_keys.get(key_id)?)
    }

    /// Whether token `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// Refuses a change that breaks a rule or a quota; `Ok` means
    /// [`Registry::apply`] will make it.
    pub fn check(&self, change: &Change, q: &Quotas) -> Result<(), RegistryError> {
        let invalid = |e: names::NameError| RegistryError::Invalid(e.to_string());
        match change {
            Change::CreateParentTopic { name, .. } => {
                names::check_parent_topic(name).map_err(invalid)?;
                if self.parent_topics.contains_key(name) {
                    return Err(RegistryError::Exists("parent topic", name.clone()));
                }
                if self.parent_topics.len() >= q.parent_topics_max {
                    let max = q.parent_topics_max;
                    return Err(RegistryError::Quota(format!("at most {max} parent topics")));
                }
            }
            Change::DeleteParentTopic { name } if !self.parent_topics.contains_key(name) => {
                return Err(RegistryError::NotFound("parent topic", name.clone()));
            }
            Change::CreateGroupId { id, .. } => {
                names::check_group_id(id).map_err(invalid)?;
                if self.group_ids.contains_key(id) {
                    return Err(RegistryError::Exists("Group ID", id.clone()));
                }
                if self.group_ids.len() >= q.group_ids_max {
                    let max = q.group_ids_max;
                    return Err(RegistryError::Quota(format!("at most {max} Group IDs")));
                }
            }
            Change::DeleteGroupId { id } if !self.group_ids.contains_key(id) => {
                return Err(RegistryError::NotFound("Group ID", id.clone()));
            }
            Change::PutCredential(c) => self.check_credential(c, q)?,
            Change::Custom(c) => {
                self.custom.check(c, q)?;
                if let CustomChange::PutIdentity { identity, .. } = c {
                    if self.access_keys.contains_key(&identity.username) {
                        return Err(RegistryError::Invalid(format!(
                            "Username {} is an AccessKeyId (it would take the legacy sign-in)",
                            identity.username
                        )));
                    }
                }
            }
            Change::RemoveCredential { client_id } if !self.credentials.contains_key(client_id) => {
                return Err(RegistryError::NotFound(
                    "device credential",
                    client_id.clone(),
                ));
            }
            Change::PutRule { rule, .. } if self.rules.contains_key(&rule.name) => {
                return Err(RegistryError::Exists("rule", rule.name.clone()));
            }
            Change::PutRule { .. } if self.rules.len() >= q.rules_max => {
                let max = q.rules_max;
                return Err(RegistryError::Quota(format!("at most {max} rules")));
            }
            Change::DeleteRule { name } if !self.rules.contains_key(name) => {
                return Err(RegistryError::NotFound("rule", name.clone()));
            }
            Change::IssueToken { .. } if self.tokens.len() >= q.tokens_max => {
                let max = q.tokens_max;
                return Err(RegistryError::Quota(format!("at most {max} live tokens")));
            }
            Change::RemoveAccessKey { id } if !self.access_keys.contains_key(id) => {
                return Err(RegistryError::NotFound("access key", id.clone()));
            }
            Change::PutAccessKey { id, secret } if id.is_empty() || secret.is_empty() => {
                return Err(RegistryError::Invalid(
                    "an access key needs an id and a secret".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn check_credential(&self, c: &DeviceCredential, q: &Quotas) -> Result<(), RegistryError> {
        let (group, _) = names::split_client_id(&c.client_id, usize::MAX)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        if !self.group_ids.contains_key(group) {
            return Err(RegistryError::NotFound("Group ID", group.to_owned()));
        }
        let known = self.credentials.contains_key(&c.client_id);
        if !known && self.credentials.len() >= q.credentials_max {
            let max = q.credentials_max;
            return Err(RegistryError::Quota(format!(
                "at most {max} device credentials"
            )));
        }
        match self.credential_keys.get(&c.key_id) {
            Some(owner) if *owner != c.client_id => {
                Err(RegistryError::Exists("DeviceAccessKeyId", c.key_id.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Makes `change` (checked before by the owner).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::SetInstance { id } => self.instance_id.clone_from(id),
            Change::PutAccessKey { id, secret } => {
                self.access_keys.insert(id.clone(), secret.clone());
            }
            Change::RemoveAccessKey { id } => {
                self.access_keys.remove(id);
            }
            Change::CreateParentTopic { name, at_ms } => {
                self.parent_topics.insert(name.clone(), stamp(*at_ms));
            }
            Change::DeleteParentTopic { name } => {
                self.parent_topics.remove(name);
            }
            Change::CreateGroupId { id, at_ms } => {
                self.group_ids.insert(id.clone(), stamp(*at_ms));
            }
            Change::DeleteGroupId { id } => {
                self.group_ids.remove(id);
            }
            Change::PutCredential(c) => self.put_credential(c),
            Change::Custom(c) => self.custom.apply(c),
            Change::RemoveCredential { client_id } => {
                if let Some(old) = self.credentials.remove(client_id) {
                    self.credential_keys.remove(&old.key_id);
                }
            }
            Change::IssueToken { id, token } if self.keeps_issued => {
                self.tokens.insert(id.clone(), token.clone());
            }
            Change::IssueToken { .. } => {}
            Change::RevokeToken { id, expire_ms } => {
                self.revoked.insert(id.clone(), *expire_ms);
                self.tokens.remove(id);
            }
            Change::PutRule { rule, at_ms } => {
                let stamp = stamp(*at_ms);
                let rule = rule.clone();
                self.rules
                    .insert(rule.name.clone(), StoredRule { rule, stamp });
            }
            Change::DeleteRule { name } => {
                self.rules.remove(name);
            }
            Change::Prune { now_ms } => {
                self.tokens.retain(|_, t| t.expire_ms > *now_ms);
                self.revoked.retain(|_, &mut at| at > *now_ms);
            }
        }
    }

    fn put_credential(&mut self, c: &DeviceCredential) {
        if let Some(old) = self.credentials.insert(c.client_id.clone(), c.clone()) {
            self.credential_keys.remove(&old.key_id);
        }
        self.credential_keys
            .insert(c.key_id.clone(), c.client_id.clone());
    }

    /// A copy for a shard: everything but the issued tokens.
    pub fn for_shard(&self) -> Registry {
        let mut copy = Registry {
            instance_id: self.instance_id.clone(),
            access_keys: self.access_keys.clone(),
            parent_topics: self.parent_topics.clone(),
            group_ids: self.group_ids.clone(),
            credentials: self.credentials.clone(),
            revoked: self.revoked.clone(),
            custom: self.custom.clone(),
            ..Registry::default()
        };
        copy.reindex();
        copy
    }
}

fn stamp(at_ms: u64) -> Stamp {
    Stamp {
        create_ms: at_ms,
        update_ms: at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quotas = Quotas {
        parent_topics_max: 2,
        group_ids_max: 10,
        credentials_max: 10,
        tokens_max: 10,
        custom_identities_max: 10,
        custom_permissions_max: 10,
        rules_max: 10,
    };

    fn applied(r: &mut Registry, c: Change) -> Result<(), RegistryError> {
        r.check(&c, &Q)?;
        r.apply(&c);
        Ok(())
    }

    #[test]
    fn parent_topics_are_checked_and_capped() {
        let mut r = Registry::default();
        let create = |name: &str| Change::CreateParentTopic {
            name: name.into(),
            at_ms: 1,
        };
        assert_eq!(applied(&mut r, create("devices")), Ok(()));
        assert!(matches!(
            applied(&mut r, create("devices")),
            Err(RegistryError::Exists(..))
        ));
        assert!(matches!(
            applied(&mut r, create("a.b")),
            Err(RegistryError::Invalid(_))
        ));
        assert_eq!(applied(&mut r, create("alerts")), Ok(()));
        assert!(matches!(
            applied(&mut r, create("third")),
            Err(RegistryError::Quota(_))
        ));
        let delete = Change::DeleteParentTopic {
            name: "nope".into(),
        };
        assert!(matches!(
            applied(&mut r, delete),
            Err(RegistryError::NotFound(..))
        ));
    }

    #[test]
    fn credentials_need_their_group_and_are_found_by_key() {
        let mut r = Registry::default();
        let cred = |key: &str| DeviceCredential {
            client_id: "GID_sensor@@@d1".into(),
            key_id: key.into(),
            secret: "s".into(),
            create_ms: 1,
            update_ms: 1,
        };
        assert!(matches!(
            applied(&mut r, Change::PutCredential(cred("k1"))),
            Err(RegistryError::NotFound("Group ID", _))
        ));
        applied(
            &mut r,
            Change::CreateGroupId {
                id: "GID_sensor".into(),
                at_ms: 1,
            },
        )
        .expect("group");
        applied(&mut r, Change::PutCredential(cred("k1"))).expect("register");
        assert_eq!(
            r.credential_by_key("k1").map(|c| c.client_id.as_str()),
            Some("GID_sensor@@@d1")
        );
        applied(&mut r, Change::PutCredential(cred("k2"))).expect("refresh");
        assert!(
            r.credential_by_key("k1").is_none(),
            "a refreshed key replaces the old one"
        );
        applied(
            &mut r,
            Change::RemoveCredential {
                client_id: "GID_sensor@@@d1".into(),
            },
        )
        .expect("remove");
        assert!(r.credential_by_key("k2").is_none());
    }

    #[test]
    fn revocations_are_forgotten_after_expiry() {
        let mut r = Registry {
            keeps_issued: true,
            ..Registry::default()
        };
        let token = IssuedToken {
            access_key: "AK".into(),
            actions: Actions::R,
            resources: vec!["devices/#".into()],
            expire_ms: 100,
            issue_ms: 1,
        };
        applied(
            &mut r,
            Change::IssueToken {
                id: "t".into(),
                token,
            },
        )
        .expect("issue");
        assert_eq!(r.tokens.len(), 1);
        applied(
            &mut r,
            Change::RevokeToken {
                id: "t".into(),
                expire_ms: 100,
            },
        )
        .expect("revoke");
        assert!(r.is_revoked("t"));
        applied(&mut r, Change::Prune { now_ms: 100 }).expect("prune");
        assert!(!r.is_revoked("t"));
    }
}
