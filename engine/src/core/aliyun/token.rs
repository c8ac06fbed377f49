//! Tokens: ringmq issues its own, with the product's ApplyToken semantics
//! (topic filters, actions R / W / R,W, an absolute expiry). A token is
//! self-contained: `base64url(claims).base64url(HMAC-SHA256(secret, …))`,
//! signed with the secret of the access key that applied for it, so any
//! shard checks it without asking anyone; revocation is the registry's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actions {
    /// Subscribe.
    R,
    /// Publish.
    W,
    /// Both.
    RW,
}

impl Actions {
    /// From ApplyToken's `Actions` (`R`, `W`, `R,W`; also `W,R`, `RW`).
    pub fn parse(text: &str) -> Option<Actions> {
        match text.trim() {
            "R" => Some(Actions::R),
            "W" => Some(Actions::W),
            "R,W" | "W,R" | "RW" => Some(Actions::RW),
            _ => None,
        }
    }

    /// Whether these actions include subscribing.
    pub fn read(self) -> bool {
        matches!(self, Actions::R | Actions::RW)
    }

    /// Whether these actions include publishing.
    pub fn write(self) -> bool {
        matches!(self, Actions::W | Actions::RW)
    }

    /// Whether these actions include everything `other` asks for.
    pub fn grants(self, other: Actions) -> bool {
        (!other.read() || self.read()) && (!other.write() || self.write())
    }

    /// As the product writes it in notices and answers: `R`, `W`, `RW`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actions::R => "R",
            Actions::W => "W",
            Actions::RW => "RW",
        }
    }

    /// As ApplyToken takes it: `R`, `W`, `R,W`.
    pub fn as_api_str(self) -> &'static str {
        match self {
            Actions::R => "R",
            Actions::W => "W",
            Actions::RW => "R,W",
        }
    }
}

/// What a token says, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Unique id of the token (revocation names it).
    pub id: String,
    /// The instance it is for.
    pub instance: String,
    /// The access key that applied for it (and whose secret signs it).
    pub access_key: String,
    /// What it allows.
    pub actions: Actions,
    /// Topic filters it covers.
    pub resources: Vec<String>,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expire_ms: u64,
}

/// Why a token is not accepted; the discriminant is the code of
/// `$SYS/tokenInvalidNotice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all.
    #[error("malformed token")]
    Malformed = 1,
    /// Past its expiry.
    #[error("token expired")]
    Expired = 2,
    /// Revoked through the registry.
    #[error("token revoked")]
    Revoked = 3,
    /// Issued for another instance.
    #[error("token for another instance")]
    ResourceMismatch = 4,
    /// Used for an action it does not grant.
    #[error("token does not grant this action")]
    ActionMismatch = 5,
    /// The signature does not verify (or its access key is unknown).
    #[error("bad token signature")]
    BadSignature = 8,
}

impl TokenError {
    /// The code of `$SYS/tokenInvalidNotice`.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Signs `claims` with `secret`: the token string.
pub fn sign(claims: &Claims, secret: &str) -> String {
    let body = serde_json::to_vec(claims).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(body);
    let mac = mac(secret).chain_update(body.as_bytes()).finalize();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.into_bytes()))
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
}

/// The claims of `token` without checking its signature: which access key
/// signed it. `None` if it does not parse.
pub fn peek(token: &str) -> Option<Claims> {
    let (body, _) = token.split_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Checks `token` for `instance` at `now_ms`: its signature with the
/// secret `secret_of` gives for its access key (constant-time compare),
/// its instance, its expiry, and `revoked`.
pub fn verify(
    token: &str,
    instance: &str,
    now_ms: u64,
    secret_of: impl FnOnce(&str) -> Option<String>,
    revoked: impl FnOnce(&str) -> bool,
) -> Result<Claims, TokenError> {
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let claims = peek(token).ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let secret = secret_of(&claims.access_key).ok_or(TokenError::BadSignature)?;
    mac(&secret)
        .chain_update(body.as_bytes())
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if claims.instance != instance {
        return Err(TokenError::ResourceMismatch);
    }
    if revoked(&claims.id) {
        return Err(TokenError::Revoked);
    }
    if claims.expire_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// What a connection signed in with a token may do: the tokens it holds
/// for reading and for writing (one token may be both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The token used to subscribe.
    pub read: Option<Held>,
    /// The token used to publish.
    pub write: Option<Held>,
}

/// One token a connection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its claims.
    pub claims: Claims,
    /// How the client presented it (`R`, `W` or `RW`).
    pub kind: Actions,
    /// `$SYS/tokenExpireNotice` was sent for it.
    pub noticed: bool,
}

impl Grant {
    /// Puts `claims`, presented as `kind`, in place of what the connection
    /// held for that kind. Fails when the token does not grant `kind`.
    pub fn put(&mut self, claims: Claims, kind: Actions) -> Result<(), TokenError> {
        if !claims.actions.grants(kind) {
            return Err(TokenError::ActionMismatch);
        }
        let held = Held {
            claims,
            kind,
            noticed: false,
        };
        if kind.read() {
            self.read = Some(held.clone());
        }
        if kind.write() {
            self.write = Some(held);
        }
        Ok(())
    }

    /// Whether the write token lets the client publish to `topic`.
    pub fn can_publish(&self, topic: &str) -> bool {
        self.write.as_ref().is_some_and(|h| {
            h.claims
                .resources
                .iter()
                .any(|r| ringmq_protocol::topic::matches(r, topic))
        })
    }

    /// Whether the read token covers every topic of `filter`.
    pub fn can_subscribe(&self, filter: &str) -> bool {
        self.read.as_ref().is_some_and(|h| {
            h.claims
                .resources
                .iter()
                .any(|r| ringmq_protocol::topic::covers(r, filter))
        })
    }

    /// Whether one token (presented as `RW`) stands for both.
    fn one_token(&self) -> bool {
        match (&self.read, &self.write) {
            (Some(r), Some(w)) => r.claims.id == w.claims.id,
            _ => false,
        }
    }

    /// The tokens held, once each.
    pub fn held(&self) -> impl Iterator<Item = &Held> {
        let same = self.one_token();
        self.read
            .iter()
            .chain(self.write.iter().filter(move |_| !same))
    }

    /// The tokens held, once each, mutably.
    pub fn held_mut(&mut self) -> impl Iterator<Item = &mut Held> {
        let same = self.one_token();
        self.read
            .iter_mut()
            .chain(self.write.iter_mut().filter(move |_| !same))
    }
}

/// Splits a Token-mode password, `R|t1|W|t2` or `RW|t`, into its pairs.
pub fn parse_password(password: &str) -> Result<Vec<(Actions, &str)>, TokenError> {
    let parts: Vec<&str> = password.split('|').collect();
    if parts.is_empty() || parts.len() % 2 != 0 {
        return Err(TokenError::Malformed);
    }
    parts
        .chunks(2)
        .map(|pair| match Actions::parse(pair[0]) {
            Some(kind) if !pair[0].contains(',') && !pair[1].is_empty() => Ok((kind, pair[1])),
            _ => Err(TokenError::Malformed),
        })
        .collect()
}

/// What ApplyToken asks for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The access key applying (its secret signs the token).
    pub access_key: &'a str,
    /// Topic filters.
    pub resources: &'a [String],
    /// `R`, `W` or `R,W`.
    pub actions: &'a str,
    /// Absolute expiry, in ms since the Unix epoch.
    pub expire_ms: u64,
}

impl TokenRequest<'_> {
    /// The claims of the token, checked against the product's rules:
    /// 1 to `token_resources_max` valid filters, actions `R`, `W` or
    /// `R,W`, an expiry at least `token_life_secs_min` after `now_ms` (a
    /// later one than `token_life_secs_max` is cut to it).
    pub fn claims(
        &self,
        c: &super::AliyunConfig,
        instance: &str,
        now_ms: u64,
        id: String,
    ) -> Result<Claims, super::registry::RegistryError> {
        let invalid = super::registry::RegistryError::Invalid;
        let text = self.actions;
        let actions = Actions::parse(text)
            .filter(|_| text != "RW")
            .ok_or_else(|| invalid(format!("Actions: {text}: R, W or R,W")))?;
        let max = c.token_resources_max;
        if self.resources.is_empty() || self.resources.len() > max {
            return Err(invalid(format!("Resources: 1 to {max} topic filters")));
        }
        for r in self.resources {
            super::names::check_filter(r, c.topic_chars_max)
                .map_err(|e| invalid(format!("Resources: {r}: {e}")))?;
        }
        if self.expire_ms < now_ms + c.token_life_secs_min * 1000 {
            let min = c.token_life_secs_min;
            return Err(invalid(format!("ExpireTime: at least {min} s ahead")));
        }
        let mut resources = self.resources.to_vec();
        resources.sort();
        resources.dedup();
        Ok(Claims {
            id,
            instance: instance.to_owned(),
            access_key: self.access_key.to_owned(),
            actions,
            resources,
            expire_ms: self.expire_ms.min(now_ms + c.token_life_secs_max * 1000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expire_ms: u64) -> Claims {
        Claims {
            id: "t1".into(),
            instance: "mqtt-cn-local".into(),
            access_key: "AK".into(),
            actions: Actions::R,
            resources: vec!["devices/#".into(), "alerts/+/x".into()],
            expire_ms,
        }
    }

    fn check(token: &str, now: u64) -> Result<Claims, TokenError> {
        verify(
            token,
            "mqtt-cn-local",
            now,
            |ak| (ak == "AK").then(|| "secret".to_owned()),
            |id| id == "gone",
        )
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = sign(&claims(2_000), "secret");
        assert_eq!(check(&t, 1_999), Ok(claims(2_000)));
        assert_eq!(check(&t, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_forged_or_foreign_token_is_refused() {
        let t = sign(&claims(2_000), "other secret");
        assert_eq!(check(&t, 1), Err(TokenError::BadSignature));
        let mut c = claims(2_000);
        c.access_key = "unknown".into();
        assert_eq!(check(&sign(&c, "secret"), 1), Err(TokenError::BadSignature));
        let mut c = claims(2_000);
        c.instance = "elsewhere".into();
        assert_eq!(
            check(&sign(&c, "secret"), 1),
            Err(TokenError::ResourceMismatch)
        );
        let mut c = claims(2_000);
        c.id = "gone".into();
        assert_eq!(check(&sign(&c, "secret"), 1), Err(TokenError::Revoked));
        assert_eq!(check("garbage", 1), Err(TokenError::Malformed));
        // A body changed after signing.
        let t = sign(&claims(2_000), "secret");
        let forged = sign(&claims(9_000), "x");
        let mixed = format!(
            "{}.{}",
            forged.split('.').next().unwrap_or(""),
            t.split('.').nth(1).unwrap_or("")
        );
        assert_eq!(check(&mixed, 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn passwords_pair_types_and_tokens() {
        assert_eq!(
            parse_password("R|a|W|b"),
            Ok(vec![(Actions::R, "a"), (Actions::W, "b")])
        );
        assert_eq!(parse_password("RW|a"), Ok(vec![(Actions::RW, "a")]));
        assert_eq!(parse_password("R|a|W"), Err(TokenError::Malformed));
        assert_eq!(parse_password("X|a"), Err(TokenError::Malformed));
        assert_eq!(parse_password("R,W|a"), Err(TokenError::Malformed));
    }

    #[test]
    fn a_grant_allows_only_its_resources_and_actions() {
        let mut g = Grant::default();
        assert_eq!(
            g.put(claims(1), Actions::W),
            Err(TokenError::ActionMismatch)
        );
        assert_eq!(g.put(claims(1), Actions::R), Ok(()));
        assert!(g.can_subscribe("devices/a/+"));
        assert!(g.can_subscribe("alerts/1/x"));
        assert!(!g.can_subscribe("alerts/#"));
        assert!(!g.can_publish("devices/a"), "an R token does not publish");
        let mut w = claims(1);
        w.actions = Actions::RW;
        w.id = "t2".into();
        assert_eq!(g.put(w, Actions::W), Ok(()));
        assert!(g.can_publish("devices/a"));
        assert!(!g.can_publish("other/a"));
        assert_eq!(g.held().count(), 2);
    }
}
