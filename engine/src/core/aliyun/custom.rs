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

use super::registry::{Quotas, RegistryError};
use super::signin::verify_signature;

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
    pub fn check(&self, change: &CustomChange, q: &Quotas) -> Result<(), RegistryError> {
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
                if !update && self.identities.len() >= q.custom_identities_max {
                    let max = q.custom_identities_max;
                    return Err(RegistryError::Quota(format!("at most {max} identities")));
                }
            }
            CustomChange::PutPermission { permission, update } => {
                check_name("Identity", &permission.identity)?;
                check_name("Topic", &permission.topic)?;
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
                if !update && self.permissions.len() >= q.custom_permissions_max {
                    let max = q.custom_permissions_max;
                    return Err(RegistryError::Quota(format!("at most {max} permissions")));
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
    /// with: the client id's CLIENT identity if it has one (whose user
    /// name must then be `username`: a client id with a CLIENT identity
    /// signs in with it alone), else the user name's USER identity.
    pub fn identity(&self, username: &str, client_id: &str) -> Lookup<'_> {
        let client = self
            .identities
            .get(&identity_key(IdentityType::Client, client_id));
        match client {
            Some(c) if c.username == username => Lookup::Found(c),
            Some(_) => Lookup::Refused,
            None => self
                .identities
                .get(&identity_key(IdentityType::User, username))
                .map_or(Lookup::None, Lookup::Found),
        }
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

    /// Whether a client signed in with identity `who` may publish to
    /// `topic` (`subscribe` false) or subscribe to filter `topic`: one of
    /// the identity's ALLOW rules covers it and none of its DENY rules
    /// touches it. Only the rules of that identity count.
    pub fn allows(&self, who: &Subject, topic: &str, subscribe: bool) -> bool {
        let want = if subscribe { Permit::Sub } else { Permit::Pub };
        let prefix = format!("{}\n{}\n", who.kind.as_str(), who.name);
        let rules = self
            .permissions
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, p)| p)
            .filter(|p| p.kind == who.kind && *p.identity == *who.name)
            .filter(|p| p.action == Permit::All || p.action == want);
        let mut allowed = false;
        for p in rules {
            match p.effect {
                Effect::Deny if overlaps(&p.topic, topic) => return false,
                Effect::Allow if covers(&p.topic, topic, subscribe) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

/// What [`CustomAuth::identity`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The identity to sign in with.
    Found(&'a Identity),
    /// The client id has a CLIENT identity of another user name.
    Refused,
    /// No identity: another sign-in mode applies.
    None,
}

/// The identity a connection signed in with, whose rules apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// USER or CLIENT.
    pub kind: IdentityType,
    /// The user name (USER) or client id (CLIENT).
    pub name: Box<str>,
}

impl Identity {
    /// The subject a connection signed in with this identity is.
    pub fn subject(&self) -> Subject {
        let name = match self.kind {
            IdentityType::User => self.username.as_str(),
            IdentityType::Client => self.client_id.as_deref().unwrap_or(&self.username),
        };
        Subject {
            kind: self.kind,
            name: name.into(),
        }
    }
}

/// Names are keys: no control characters (the keys' separator is one).
fn check_name(what: &str, name: &str) -> Result<(), RegistryError> {
    match name.chars().any(char::is_control) {
        true => Err(RegistryError::Invalid(format!(
            "{what} holds a control character"
        ))),
        false => Ok(()),
    }
}

fn check_identity(i: &Identity) -> Result<(), RegistryError> {
    if i.username.is_empty() || i.secret.is_empty() {
        return Err(RegistryError::Invalid(
            "Username and Secret are needed".into(),
        ));
    }
    check_name("Username", &i.username)?;
    check_name("ClientId", i.client_id.as_deref().unwrap_or(""))?;
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

    const Q: Quotas = Quotas {
        parent_topics_max: 1,
        group_ids_max: 1,
        credentials_max: 1,
        tokens_max: 1,
        custom_identities_max: 10,
        custom_permissions_max: 10,
        rules_max: 1,
    };

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

    fn user(name: &str) -> Subject {
        Subject {
            kind: IdentityType::User,
            name: name.into(),
        }
    }

    fn put(c: &mut CustomAuth, p: Permission) -> Result<(), RegistryError> {
        let change = CustomChange::PutPermission {
            permission: p,
            update: false,
        };
        c.check(&change, &Q)?;
        c.apply(&change);
        Ok(())
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_without_a_rule() {
        let mut c = CustomAuth::default();
        let u = IdentityType::User;
        put(
            &mut c,
            perm(u, "u", "devices/#", Effect::Allow, Permit::All),
        )
        .expect("put");
        put(
            &mut c,
            perm(u, "u", "devices/secret", Effect::Deny, Permit::Sub),
        )
        .expect("put");
        assert!(c.allows(&user("u"), "devices/x", false));
        assert!(
            c.allows(&user("u"), "devices/secret", false),
            "the DENY is SUB only"
        );
        assert!(
            !c.allows(&user("u"), "devices/#", true),
            "the DENY touches devices/#"
        );
        assert!(c.allows(&user("u"), "devices/+/t", true));
        assert!(!c.allows(&user("u"), "alerts/x", false), "no rule: refused");
        assert!(!c.allows(&user("other"), "devices/x", false));
    }

    #[test]
    fn a_rule_of_one_identity_never_applies_to_another() {
        let mut c = CustomAuth::default();
        let all = |kind, who: &str| perm(kind, who, "#", Effect::Allow, Permit::All);
        put(&mut c, all(IdentityType::Client, "GID_a@@@1")).expect("put");
        put(&mut c, all(IdentityType::User, "dev-2")).expect("put");
        assert!(
            !c.allows(&user("GID_a@@@1"), "t", false),
            "a CLIENT rule is not a USER's"
        );
        assert!(
            !c.allows(&user("dev"), "t", false),
            "dev-2's rules are not dev's"
        );
        let sneaky = put(&mut c, all(IdentityType::User, "dev\nx"));
        assert!(
            matches!(sneaky, Err(RegistryError::Invalid(_))),
            "no control characters"
        );
        assert!(!c.allows(&user("dev"), "t", false));
    }

    #[test]
    fn a_client_id_with_a_client_identity_signs_in_with_it_alone() {
        let mut c = CustomAuth::default();
        let client = Identity {
            kind: IdentityType::Client,
            username: "dev".into(),
            client_id: Some("GID_a@@@1".into()),
            secret: "s1".into(),
            sign_mode: SignMode::Signed,
        };
        let other = Identity {
            kind: IdentityType::User,
            username: "intruder".into(),
            client_id: None,
            secret: "s2".into(),
            sign_mode: SignMode::Origin,
        };
        for identity in [client, other] {
            let change = CustomChange::PutIdentity {
                identity,
                update: false,
            };
            assert_eq!(c.check(&change, &Q), Ok(()));
            c.apply(&change);
        }
        let Lookup::Found(found) = c.identity("dev", "GID_a@@@1") else {
            panic!("the CLIENT identity");
        };
        assert_eq!(
            found.subject(),
            Subject {
                kind: IdentityType::Client,
                name: "GID_a@@@1".into()
            }
        );
        let sig = super::super::signin::signature("s1", "GID_a@@@1");
        assert!(CustomAuth::verify(found, "GID_a@@@1", sig.as_bytes()));
        assert_eq!(c.identity("intruder", "GID_a@@@1"), Lookup::Refused);
        let Lookup::Found(other) = c.identity("intruder", "GID_a@@@2") else {
            panic!("the USER identity");
        };
        assert!(CustomAuth::verify(other, "GID_a@@@2", b"s2"));
        assert!(!CustomAuth::verify(other, "GID_a@@@2", b"s1"));
        assert_eq!(c.identity("nobody", "GID_a@@@3"), Lookup::None);
    }

    #[test]
    fn adds_updates_and_deletes_are_checked() {
        let c = CustomAuth::default();
        let p = perm(IdentityType::User, "u", "a/#", Effect::Allow, Permit::Pub);
        let update = CustomChange::PutPermission {
            permission: p,
            update: true,
        };
        assert!(matches!(
            c.check(&update, &Q),
            Err(RegistryError::NotFound(..))
        ));
        let bad = perm(IdentityType::User, "u", "a/#/b", Effect::Allow, Permit::Pub);
        let bad = CustomChange::PutPermission {
            permission: bad,
            update: false,
        };
        assert!(matches!(c.check(&bad, &Q), Err(RegistryError::Invalid(_))));
        assert!(overlaps("a/+/c", "a/b/#") && !overlaps("a/b", "a/c") && overlaps("a/#", "a"));
    }
}
