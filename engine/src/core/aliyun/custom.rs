//! The product's custom authentication: identities (a user name, or a
//! client id, with a secret) that sign in without access keys, and
//! permissions (ALLOW / DENY, PUB / SUB / ALL, per identity and topic
//! filter) that decide what such a client may publish and subscribe.
//!
//! A client signs in with a custom identity when its user name is one:
//! the CLIENT identity of its client id (whose user name must match) or
//! a USER identity. The password is the secret (`ORIGIN`) or
//! `base64(HMAC-SHA1(secret, clientId))` (`SIGNED`). Its PUBLISH and
//! SUBSCRIBE then need an ALLOW permission of its user name or client id
//! that covers the topic, and no DENY permission that touches it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::registry::RegistryError;
use super::signin::verify_signature;

/// Identities an instance holds at most.
pub const IDENTITIES_MAX: usize = 100_000;
/// Permissions an instance holds at most.
pub const PERMISSIONS_MAX: usize = 100_000;

macro_rules! api_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Its name in the OpenAPI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            /// From its name in the OpenAPI (any case).
            pub fn parse(s: &str) -> Option<$name> {
                $(if s.eq_ignore_ascii_case($s) { return Some($name::$v); })+
                None
            }
        }
    };
}

api_enum!(
    /// Whom an identity or permission names.
    IdentityType {
        /// A user name.
        User = "USER",
        /// A client id.
        Client = "CLIENT",
    }
);
api_enum!(
    /// How the password proves the secret.
    SignMode {
        /// The password is the secret.
        Origin = "ORIGIN",
        /// The password is `base64(HMAC-SHA1(secret, clientId))`.
        Signed = "SIGNED",
    }
);
api_enum!(
    /// Allow or deny.
    Effect {
        /// Allows what it covers.
        Allow = "ALLOW",
        /// Denies what it touches; wins over ALLOW.
        Deny = "DENY",
    }
);
api_enum!(
    /// What a permission is about.
    Permit {
        /// PUBLISH.
        Pub = "PUB",
        /// SUBSCRIBE.
        Sub = "SUB",
        /// Both.
        All = "ALL",
    }
);

/// An identity (AddCustomAuthIdentity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// USER or CLIENT.
    pub kind: IdentityType,
    /// The user name a client signs in with.
    pub username: String,
    /// The client id (CLIENT identities).
    pub client_id: Option<String>,
    /// The secret.
    pub secret: String,
    /// How the password proves it.
    pub sign_mode: SignMode,
}

impl Identity {
    /// Its key: the user name or the client id, by kind.
    pub fn key(&self) -> String {
        let name = match self.kind {
            IdentityType::User => &self.username,
            IdentityType::Client => self.client_id.as_ref().unwrap_or(&self.username),
        };
        identity_key(self.kind, name)
    }
}

/// The key of identity `name` of `kind`.
pub fn identity_key(kind: IdentityType, name: &str) -> String {
    format!("{}\n{name}", kind.as_str())
}

/// A permission (AddCustomAuthPermission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// USER or CLIENT.
    pub kind: IdentityType,
    /// The user name or client id.
    pub identity: String,
    /// A topic filter (wildcards allowed).
    pub topic: String,
    /// ALLOW or DENY.
    pub effect: Effect,
    /// PUB, SUB or ALL.
    pub action: Permit,
}

impl Permission {
    /// Its key: kind, identity, topic.
    pub fn key(&self) -> String {
        permission_key(self.kind, &self.identity, &self.topic)
    }
}

/// The key of the permission of `identity` on `topic`.
pub fn permission_key(kind: IdentityType, identity: &str, topic: &str) -> String {
    format!("{}\n{identity}\n{topic}", kind.as_str())
}

/// The identities and permissions of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomAuth {
    /// Identities by key.
    pub identities: BTreeMap<String, Identity>,
    /// Permissions by key.
    pub permissions: BTreeMap<String, Permission>,
}

/// A change of the custom-auth tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomChange {
    /// Adds (`update` false) or updates an identity.
    PutIdentity {
        /// The identity.
        identity: Identity,
        /// It must exist already.
        update: bool,
    },
    /// Deletes an identity (and its permissions stay until deleted).
    RemoveIdentity {
        /// Its key.
        key: String,
    },
    /// Adds (`update` false) or updates a permission.
    PutPermission {
        /// The permission.
        permission: Permission,
        /// It must exist already.
        update: bool,
    },
    /// Deletes a permission.
    RemovePermission {
        /// Its key.
        key: String,
    },
}

impl CustomAuth {
    /// Refuses a change that does not fit.
    pub fn check(&self, change: &CustomChange) -> Result<(), RegistryError> {
        let exists = |what: &'static str, known: bool, update: bool, key: &str| {
            let name = key.replace('\n', " ");
            match (known, update) {
                (true, false) => Err(RegistryError::Exists(what, name)),
                (false, true) => Err(RegistryError::NotFound(what, name)),
                _ => Ok(()),
            }
        };
        match change {
            CustomChange::PutIdentity { identity, update } => {
                check_identity(identity)?;
                let key = identity.key();
                exists(
                    "custom identity",
                    self.identities.contains_key(&key),
                    *update,
                    &key,
                )?;
                if !update && self.identities.len() >= IDENTITIES_MAX {
                    return Err(RegistryError::Quota(format!(
                        "at most {IDENTITIES_MAX} identities"
                    )));
                }
            }
            CustomChange::PutPermission { permission, update } => {
                if ringmq_protocol::TopicFilter::new(permission.topic.as_str()).is_err() {
                    return Err(RegistryError::Invalid(format!(
                        "Topic {} is no topic filter",
                        permission.topic
                    )));
                }
                let key = permission.key();
                exists(
                    "custom permission",
                    self.permissions.contains_key(&key),
                    *update,
                    &key,
                )?;
                if !update && self.permissions.len() >= PERMISSIONS_MAX {
                    return Err(RegistryError::Quota(format!(
                        "at most {PERMISSIONS_MAX} permissions"
                    )));
                }
            }
            CustomChange::RemoveIdentity { key } => {
                exists(
                    "custom identity",
                    self.identities.contains_key(key),
                    true,
                    key,
                )?;
            }
            CustomChange::RemovePermission { key } => {
                exists(
                    "custom permission",
                    self.permissions.contains_key(key),
                    true,
                    key,
                )?;
            }
        }
        Ok(())
    }

    /// Makes a checked change.
    pub fn apply(&mut self, change: &CustomChange) {
        match change {
            CustomChange::PutIdentity { identity, .. } => {
                self.identities.insert(identity.key(), identity.clone());
            }
            CustomChange::RemoveIdentity { key } => {
                self.identities.remove(key);
            }
            CustomChange::PutPermission { permission, .. } => {
                self.permissions
                    .insert(permission.key(), permission.clone());
            }
            CustomChange::RemovePermission { key } => {
                self.permissions.remove(key);
            }
        }
    }

    /// The identity a CONNECT with `username` and `client_id` signs in
    /// with, if any: the client id's CLIENT identity, else the user
    /// name's USER identity.
    pub fn identity(&self, username: &str, client_id: &str) -> Option<&Identity> {
        let client = self
            .identities
            .get(&identity_key(IdentityType::Client, client_id));
        if let Some(c) = client.filter(|c| c.username == username) {
            return Some(c);
        }
        self.identities
            .get(&identity_key(IdentityType::User, username))
    }

    /// Whether `password` proves `identity` for `client_id`.
    pub fn verify(identity: &Identity, client_id: &str, password: &[u8]) -> bool {
        match identity.sign_mode {
            SignMode::Origin => {
                use subtle_eq::eq;
                eq(identity.secret.as_bytes(), password)
            }
            SignMode::Signed => verify_signature(&identity.secret, client_id, password),
        }
    }

    /// Whether a client signed in as `username` with `client_id` may
    /// publish to `topic` (`subscribe` false) or subscribe to filter
    /// `topic`: an ALLOW that covers it and no DENY that touches it.
    pub fn allows(&self, username: &str, client_id: &str, topic: &str, subscribe: bool) -> bool {
        let want = if subscribe { Permit::Sub } else { Permit::Pub };
        let mut allowed = false;
        for (kind, name) in [
            (IdentityType::User, username),
            (IdentityType::Client, client_id),
        ] {
            let prefix = format!("{}\n{name}\n", kind.as_str());
            let rules = self
                .permissions
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix));
            for (_, p) in rules {
                if p.action != Permit::All && p.action != want {
                    continue;
                }
                match p.effect {
                    Effect::Deny if overlaps(&p.topic, topic) => return false,
                    Effect::Allow if covers(&p.topic, topic, subscribe) => allowed = true,
                    _ => {}
                }
            }
        }
        allowed
    }
}

fn check_identity(i: &Identity) -> Result<(), RegistryError> {
    if i.username.is_empty() || i.secret.is_empty() {
        return Err(RegistryError::Invalid(
            "Username and Secret are needed".into(),
        ));
    }
    if i.username.contains('|') {
        return Err(RegistryError::Invalid(
            "Username must not contain '|' (the sign-in modes use it)".into(),
        ));
    }
    if i.kind == IdentityType::Client && i.client_id.as_deref().is_none_or(str::is_empty) {
        return Err(RegistryError::Invalid(
            "a CLIENT identity needs ClientId".into(),
        ));
    }
    Ok(())
}

/// Whether rule `rule` covers a topic (publish) or a whole filter
/// (subscribe).
fn covers(rule: &str, topic: &str, subscribe: bool) -> bool {
    match subscribe {
        true => ringmq_protocol::topic::covers(rule, topic),
        false => ringmq_protocol::topic::matches(rule, topic),
    }
}

/// Whether two filters (or a filter and a topic) match a common topic.
fn overlaps(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            _ => return false,
        }
    }
}

/// Equality in time independent of where the inputs differ.
mod subtle_eq {
    pub(super) fn eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(
        kind: IdentityType,
        who: &str,
        topic: &str,
        effect: Effect,
        action: Permit,
    ) -> Permission {
        Permission {
            kind,
            identity: who.into(),
            topic: topic.into(),
            effect,
            action,
        }
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_without_a_rule() {
        let mut c = CustomAuth::default();
        for p in [
            perm(
                IdentityType::User,
                "u",
                "devices/#",
                Effect::Allow,
                Permit::All,
            ),
            perm(
                IdentityType::Client,
                "GID_a@@@1",
                "devices/secret",
                Effect::Deny,
                Permit::Sub,
            ),
        ] {
            c.apply(&CustomChange::PutPermission {
                permission: p,
                update: false,
            });
        }
        assert!(c.allows("u", "GID_a@@@1", "devices/x", false));
        assert!(
            c.allows("u", "GID_a@@@1", "devices/secret", false),
            "DENY is SUB only"
        );
        assert!(
            !c.allows("u", "GID_a@@@1", "devices/#", true),
            "the DENY touches devices/#"
        );
        assert!(c.allows("u", "GID_a@@@1", "devices/+/t", true));
        assert!(
            !c.allows("u", "GID_a@@@1", "alerts/x", false),
            "no rule: refused"
        );
        assert!(!c.allows("other", "GID_a@@@2", "devices/x", false));
    }

    #[test]
    fn identities_sign_in_by_client_id_or_user_name() {
        let mut c = CustomAuth::default();
        let client = Identity {
            kind: IdentityType::Client,
            username: "dev".into(),
            client_id: Some("GID_a@@@1".into()),
            secret: "s1".into(),
            sign_mode: SignMode::Signed,
        };
        let user = Identity {
            kind: IdentityType::User,
            client_id: None,
            secret: "s2".into(),
            sign_mode: SignMode::Origin,
            ..client.clone()
        };
        for identity in [client, user] {
            let change = CustomChange::PutIdentity {
                identity,
                update: false,
            };
            assert_eq!(c.check(&change), Ok(()));
            c.apply(&change);
        }
        let found = c.identity("dev", "GID_a@@@1").expect("client identity");
        assert_eq!(found.kind, IdentityType::Client);
        let sig = super::super::signin::signature("s1", "GID_a@@@1");
        assert!(CustomAuth::verify(found, "GID_a@@@1", sig.as_bytes()));
        let other = c.identity("dev", "GID_a@@@2").expect("user identity");
        assert!(CustomAuth::verify(other, "GID_a@@@2", b"s2"));
        assert!(!CustomAuth::verify(other, "GID_a@@@2", b"s1"));
    }

    #[test]
    fn adds_updates_and_deletes_are_checked() {
        let c = CustomAuth::default();
        let p = perm(IdentityType::User, "u", "a/#", Effect::Allow, Permit::Pub);
        let update = CustomChange::PutPermission {
            permission: p.clone(),
            update: true,
        };
        assert!(matches!(c.check(&update), Err(RegistryError::NotFound(..))));
        let bad = CustomChange::PutPermission {
            permission: perm(IdentityType::User, "u", "a/#/b", Effect::Allow, Permit::Pub),
            update: false,
        };
        assert!(matches!(c.check(&bad), Err(RegistryError::Invalid(_))));
        assert!(overlaps("a/+/c", "a/b/#") && !overlaps("a/b", "a/c") && overlaps("a/#", "a"));
    }
}
