//! The owner of the instance registry, outside the shards. Every change
//! goes through [`Registrar`]: checked against the product's rules and
//! quotas, appended to the registry's journal and synced (so a change its
//! caller heard of survives `kill -9`), then sent to every shard over the
//! control plane, which applies it to its own copy. One lock orders the
//! changes; it is never taken on the data path.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::bridge::{ApplyChange, Proposals};
use crate::config::Config;
use crate::core::aliyun::custom::{CustomAuth, CustomChange};
use crate::core::aliyun::names;
use crate::core::aliyun::registry::{
    Change, DeviceCredential, IssuedToken, Registry, RegistryError, Stamp,
};
use crate::core::aliyun::token::{self, Claims, TokenError};
use crate::core::aliyun::{AliyunConfig, TokenRequest};
use crate::shard::Controls;
use crate::store::registry::RegistryStore;

mod rules;

/// How long a change waits for the shards to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired tokens and revocations are forgotten.
const PRUNE_PERIOD_MS: u64 = 3_600_000;

/// The registry loaded and seeded from the config, before the shards run.
#[derive(Debug)]
pub struct Prepared {
    registry: Registry,
    store: Option<RegistryStore>,
}

/// The registry's owner.
#[derive(Debug)]
pub struct Registrar {
    inner: Mutex<Inner>,
    controls: Controls,
    config: AliyunConfig,
    /// In a cluster: changes go through the cluster's registry stream.
    cluster: OnceLock<Proposals>,
    /// `[nats]` and the config file's rules, which rules created through
    /// the OpenAPI join.
    rules: rules::Settings,
    /// Where inflow rules created and deleted go (the NATS bridge).
    inflow: OnceLock<tokio::sync::mpsc::UnboundedSender<crate::bridge::RuleChange>>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    store: Option<RegistryStore>,
    pruned_at_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Prepared {
    /// Opens the registry under the data directory (in memory only when
    /// storage is off) and creates what the config names: the instance
    /// id, its access keys, parent topics and Group IDs.
    pub fn open(config: &Config) -> Result<Prepared, String> {
        let dir = config.data_dir.join("registry");
        let (registry, store) = match config.storage.enabled {
            true => {
                let (store, loaded) = RegistryStore::open(&dir)
                    .map_err(|e| format!("cannot open the registry in {}: {e}", dir.display()))?;
                if loaded.torn_bytes > 0 {
                    tracing::warn!(bytes = loaded.torn_bytes, "registry journal: torn tail cut");
                }
                (loaded.registry, Some(store))
            }
            false => {
                let mut registry = Registry::default();
                registry.keeps_issued = true;
                (registry, None)
            }
        };
        let mut inner = Inner {
            registry,
            store,
            pruned_at_ms: 0,
        };
        for change in seed_changes(&config.aliyun, &inner.registry) {
            inner.commit(&change).map_err(|e| e.to_string())?;
        }
        let r = &inner.registry;
        tracing::info!(
            instance = %r.instance_id,
            access_keys = r.access_keys.len(),
            parent_topics = r.parent_topics.len(),
            group_ids = r.group_ids.len(),
            device_credentials = r.credentials.len(),
            "registry loaded"
        );
        Ok(Prepared {
            registry: inner.registry,
            store: inner.store,
        })
    }

    /// The registry as the shards start with it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// What the config asks for that the registry does not hold yet.
fn seed_changes(c: &AliyunConfig, r: &Registry) -> Vec<Change> {
    let at_ms = now_ms();
    let mut out = Vec::new();
    if r.instance_id != c.instance_id {
        out.push(Change::SetInstance {
            id: c.instance_id.clone(),
        });
    }
    for k in &c.access_keys {
        if r.access_keys.get(&k.id) != Some(&k.secret) {
            let (id, secret) = (k.id.clone(), k.secret.clone());
            out.push(Change::PutAccessKey { id, secret });
        }
    }
    for name in c
        .parent_topics
        .iter()
        .filter(|t| !r.parent_topics.contains_key(*t))
    {
        let name = name.clone();
        out.push(Change::CreateParentTopic { name, at_ms });
    }
    for id in c.group_ids.iter().filter(|g| !r.group_ids.contains_key(*g)) {
        let id = id.clone();
        out.push(Change::CreateGroupId { id, at_ms });
    }
    out
}

impl Inner {
    /// Makes `change` durable and applies it to the owner's copy.
    fn commit(&mut self, change: &Change) -> Result<(), RegistryError> {
        if let Some(store) = self.store.as_mut() {
            store.append(change).map_err(|e| {
                RegistryError::Unavailable(format!("cannot write the registry: {e}"))
            })?;
        }
        self.registry.apply(change);
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.fold_if_due(&self.registry) {
                tracing::warn!("cannot fold the registry journal into a snapshot: {e}");
            }
        }
        Ok(())
    }
}

impl Registrar {
    /// The owner of `prepared`, sending changes over `controls`.
    pub fn new(prepared: Prepared, controls: Controls, config: &Config) -> Registrar {
        let rules = rules::Settings {
            nats: config.nats.clone(),
            from_config: config.rules.clone(),
        };
        let config = config.aliyun.clone();
        Registrar {
            inner: Mutex::new(Inner {
                registry: prepared.registry,
                store: prepared.store,
                pruned_at_ms: now_ms(),
            }),
            controls,
            config,
            cluster: OnceLock::new(),
            rules,
            inflow: OnceLock::new(),
        }
    }

    /// From now on changes are proposed to the cluster through `proposals`
    /// and applied, on every node, in the order of its registry stream.
    pub fn replicate_through(&self, proposals: Proposals) {
        let _ = self.cluster.set(proposals);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock left a consistent registry: each
        // change is applied whole or not at all.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `change`: in a cluster, proposes it and returns its outcome
    /// once this node applied it in the cluster's order (a change refused
    /// here is not proposed; forgetting expired tokens stays local).
    fn change(&self, change: Change) -> Result<(), RegistryError> {
        match self.cluster.get() {
            Some(proposals) if !matches!(change, Change::Prune { .. }) => {
                self.lock().registry.check(&change, &self.config.quotas())?;
                proposals.propose(change, 2 * APPLY_TIMEOUT)
            }
            _ => self.apply_checked(change),
        }
    }

    /// Checks `change`, makes it durable, and has every shard apply it.
    fn apply_checked(&self, change: Change) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        inner.registry.check(&change, &self.config.quotas())?;
        inner.commit(&change)?;
        // Sent under the lock: every shard gets the changes in one order.
        let rules = self.rules_changed(&change, &inner.registry);
        let job = move |broker: &mut crate::core::Broker, _| {
            broker.apply_registry(&change);
            if let Some((outflow, status)) = &rules {
                broker.set_rules(outflow.clone(), status.clone());
            }
        };
        if let Err(e) = self.controls.call_all(job, APPLY_TIMEOUT) {
            tracing::warn!("registry change stored but not yet applied by every shard: {e}");
        }
        Ok(())
    }

    /// A copy of the registry as it stands.
    pub fn snapshot(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The instance id.
    pub fn instance_id(&self) -> String {
        self.lock().registry.instance_id.clone()
    }

    /// The secret of access key `id`.
    pub fn access_key_secret(&self, id: &str) -> Option<String> {
        self.lock().registry.access_keys.get(id).cloned()
    }

    /// Adds or replaces an access key.
    pub fn put_access_key(&self, id: &str, secret: &str) -> Result<(), RegistryError> {
        let (id, secret) = (id.to_owned(), secret.to_owned());
        self.change(Change::PutAccessKey { id, secret })
    }

    /// Removes an access key (its tokens stop verifying).
    pub fn remove_access_key(&self, id: &str) -> Result<(), RegistryError> {
        self.change(Change::RemoveAccessKey { id: id.to_owned() })
    }

    /// Creates a parent topic.
    pub fn create_parent_topic(&self, name: &str) -> Result<(), RegistryError> {
        let (name, at_ms) = (name.to_owned(), now_ms());
        self.change(Change::CreateParentTopic { name, at_ms })
    }

    /// Deletes a parent topic: publishing and subscribing under it are
    /// refused from now on.
    pub fn delete_parent_topic(&self, name: &str) -> Result<(), RegistryError> {
        self.change(Change::DeleteParentTopic {
            name: name.to_owned(),
        })
    }

    /// Parent topics with their stamps.
    pub fn list_parent_topics(&self) -> Vec<(String, Stamp)> {
        let inner = self.lock();
        let all = inner.registry.parent_topics.iter();
        all.map(|(n, s)| (n.clone(), *s)).collect()
    }

    /// Creates a Group ID.
    pub fn create_group_id(&self, id: &str) -> Result<(), RegistryError> {
        let (id, at_ms) = (id.to_owned(), now_ms());
        self.change(Change::CreateGroupId { id, at_ms })
    }

    /// Deletes a Group ID: its clients can no longer connect.
    pub fn delete_group_id(&self, id: &str) -> Result<(), RegistryError> {
        self.change(Change::DeleteGroupId { id: id.to_owned() })
    }

    /// Group IDs with their stamps.
    pub fn list_group_ids(&self) -> Vec<(String, Stamp)> {
        let inner = self.lock();
        let all = inner.registry.group_ids.iter();
        all.map(|(n, s)| (n.clone(), *s)).collect()
    }

    /// Registers a device credential for `client_id`, or returns the one
    /// it has (RegisterDeviceCredential).
    pub fn register_device_credential(
        &self,
        client_id: &str,
    ) -> Result<DeviceCredential, RegistryError> {
        if let Some(c) = self.lock().registry.credentials.get(client_id) {
            return Ok(c.clone());
        }
        self.new_credential(client_id, None)
    }

    /// The device credential of `client_id`.
    pub fn get_device_credential(
        &self,
        client_id: &str,
    ) -> Result<DeviceCredential, RegistryError> {
        let inner = self.lock();
        inner
            .registry
            .credentials
            .get(client_id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound("device credential", client_id.to_owned()))
    }

    /// Gives `client_id` a new key pair (RefreshDeviceCredential); the old
    /// one stops working.
    pub fn refresh_device_credential(
        &self,
        client_id: &str,
    ) -> Result<DeviceCredential, RegistryError> {
        let old = self.get_device_credential(client_id)?;
        self.new_credential(client_id, Some(old.create_ms))
    }

    fn new_credential(
        &self,
        client_id: &str,
        created: Option<u64>,
    ) -> Result<DeviceCredential, RegistryError> {
        let now = now_ms();
        let credential = DeviceCredential {
            client_id: client_id.to_owned(),
            key_id: format!("DC.{}", random_text()),
            secret: format!("DC.{}", random_text()),
            create_ms: created.unwrap_or(now),
            update_ms: now,
        };
        self.change(Change::PutCredential(credential.clone()))?;
        Ok(credential)
    }

    /// Changes the custom-auth identities or permissions.
    pub fn change_custom(&self, change: CustomChange) -> Result<(), RegistryError> {
        self.change(Change::Custom(change))
    }

    /// Reads the custom-auth tables (under the registry's lock: keep `f`
    /// short).
    pub fn with_custom<R>(&self, f: impl FnOnce(&CustomAuth) -> R) -> R {
        f(&self.lock().registry.custom)
    }

    /// Removes the device credential of `client_id`.
    pub fn unregister_device_credential(&self, client_id: &str) -> Result<(), RegistryError> {
        self.change(Change::RemoveCredential {
            client_id: client_id.to_owned(),
        })
    }

    /// Client ids of `group_id` with a device credential, in order.
    pub fn list_device_credential_client_ids(&self, group_id: &str) -> Vec<String> {
        let prefix = format!("{group_id}{}", names::GROUP_SEPARATOR);
        let inner = self.lock();
        let ids = inner.registry.credentials.keys();
        ids.filter(|c| c.starts_with(&prefix)).cloned().collect()
    }

    /// Issues a token (ApplyToken): `resources` are topic filters (at most
    /// `token_resources_max`), `actions` `R`, `W` or `R,W`, `expire_ms` an
    /// absolute time at least `token_life_secs_min` ahead (a later one is
    /// cut to `token_life_secs_max`). Signed with `access_key`'s secret.
    pub fn apply_token(
        &self,
        access_key: &str,
        resources: &[String],
        actions: &str,
        expire_ms: u64,
    ) -> Result<String, RegistryError> {
        let claims = self.claims(access_key, resources, actions, expire_ms)?;
        let secret = self
            .access_key_secret(access_key)
            .ok_or_else(|| RegistryError::NotFound("access key", access_key.to_owned()))?;
        let issued = IssuedToken {
            access_key: claims.access_key.clone(),
            actions: claims.actions,
            resources: claims.resources.clone(),
            expire_ms: claims.expire_ms,
            issue_ms: now_ms(),
        };
        let token = token::sign(&claims, &secret);
        self.prune_if_due();
        self.change(Change::IssueToken {
            id: claims.id,
            token: issued,
        })?;
        Ok(token)
    }

    fn claims(
        &self,
        access_key: &str,
        resources: &[String],
        actions: &str,
        expire_ms: u64,
    ) -> Result<Claims, RegistryError> {
        let request = TokenRequest {
            access_key,
            resources,
            actions,
            expire_ms,
        };
        let instance = self.instance_id();
        request.claims(&self.config, &instance, now_ms(), hex_id())
    }

    /// Whether `token` is valid now (QueryToken).
    pub fn query_token(&self, token: &str) -> bool {
        self.verify(token).is_ok()
    }

    fn verify(&self, text: &str) -> Result<Claims, TokenError> {
        let inner = self.lock();
        let r = &inner.registry;
        token::verify(
            text,
            &r.instance_id,
            now_ms(),
            |ak| r.access_keys.get(ak).cloned(),
            |id| r.is_revoked(id),
        )
    }

    /// Revokes `token` (RevokeToken): connections holding it get
    /// `$SYS/tokenInvalidNotice` (code 3) and are closed, and it no longer
    /// signs in. Revoking an expired or revoked token changes nothing.
    pub fn revoke_token(&self, token: &str) -> Result<(), RegistryError> {
        let claims = match self.verify(token) {
            Ok(claims) => claims,
            Err(TokenError::Expired | TokenError::Revoked) => return Ok(()),
            Err(e) => return Err(RegistryError::Invalid(format!("Token: {e}"))),
        };
        self.prune_if_due();
        self.change(Change::RevokeToken {
            id: claims.id,
            expire_ms: claims.expire_ms,
        })
    }

    /// Forgets expired tokens and revocations, once an hour.
    fn prune_if_due(&self) {
        let now = now_ms();
        let due = {
            let mut inner = self.lock();
            let due = now.saturating_sub(inner.pruned_at_ms) >= PRUNE_PERIOD_MS;
            if due {
                inner.pruned_at_ms = now;
            }
            due
        };
        if due {
            if let Err(e) = self.change(Change::Prune { now_ms: now }) {
                tracing::warn!("registry prune failed: {e}");
            }
        }
    }
}

/// 22 characters of base64url from 16 random bytes.
fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// 32 hex digits from 16 random bytes.
pub fn hex_id() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ApplyChange for Registrar {
    fn apply_change(&self, change: Change) -> Result<(), RegistryError> {
        self.apply_checked(change)
    }
}
