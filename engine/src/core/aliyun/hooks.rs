//! Where the profile's rules meet the broker: CONNECT, PUBLISH and
//! SUBSCRIBE checks, `$SYS/uploadToken`, token expiry and revocation, and
//! registry changes arriving from the control plane.

use std::net::SocketAddr;
use std::time::Instant;

use ringmq_protocol::{Connect, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};
use serde::Deserialize;

use super::custom::Subject;
use super::names::{Filter, Topic};
use super::registry::Change;
use super::signin::SignedIn;
use super::token::{Actions, Grant, TokenError};
use crate::core::broker::{Broker, ConnId};
use crate::core::trace::Info;

/// The topic a client publishes a new token to.
pub const UPLOAD_TOKEN_TOPIC: &str = "$SYS/uploadToken";

/// What a connection of the profile carries besides MQTT's own state.
#[derive(Debug, Clone, Default)]
pub struct LinkAliyun {
    /// What its tokens allow (Token mode); `None`: everything the rules
    /// allow.
    pub grant: Option<Grant>,
    /// Signed in with a custom identity: its permissions decide what it
    /// may publish and subscribe.
    pub custom: Option<Subject>,
    /// The client's address, for online/offline events.
    pub peer: Option<SocketAddr>,
}

/// Where an accepted PUBLISH goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::core) enum PublishTo {
    /// To its subscribers.
    Subscribers,
    /// To one client (P2P), subscribed or not.
    Client(Box<str>),
}

/// A PUBLISH the rules refused, and how.
struct Refusal {
    code: ReasonCode,
    why: String,
    info: Info,
    /// Whether a v5 QoS 1/2 PUBLISH gets a negative acknowledgement
    /// instead of the connection closing.
    acked: bool,
}

/// `$SYS/uploadToken`'s payload.
#[derive(Debug, Deserialize)]
struct Upload {
    token: String,
    #[serde(rename = "type")]
    kind: String,
}

impl Broker {
    /// The profile's CONNECT rules: the client id, then the sign-in. A
    /// refusal carries the CONNACK code and what the trace says.
    pub(in crate::core) fn aliyun_connect(
        &self,
        c: &Connect,
        now: Instant,
    ) -> Result<SignedIn, (ReasonCode, Info)> {
        let Some(a) = self.aliyun.as_deref() else {
            return Ok(SignedIn::default());
        };
        let client = c.client_id.as_str();
        if let Err(why) = a.check_client_id(client) {
            tracing::info!(client, "CONNECT refused: {why}");
            return Err((ReasonCode::ClientIdentifierNotValid, Info::InvalidParam));
        }
        let signed = a.sign_in(c, self.unix_millis(now)).map_err(|e| {
            // The client learns only "not authorized"; the log says why.
            tracing::info!(client, "CONNECT refused: not authorized: {e}");
            (ReasonCode::NotAuthorized, Info::NotAuthorized)
        })?;
        if let Some(will) = &c.will {
            if let Err(why) = a.check_topic(will.topic.as_str()) {
                tracing::info!(client, "CONNECT refused: Will topic: {why}");
                return Err((ReasonCode::TopicNameInvalid, Info::InvalidParam));
            }
        }
        if let (Some(g), Some(will)) = (&signed.grant, &c.will) {
            if !g.can_publish(will.topic.as_str()) {
                tracing::info!(
                    client,
                    "CONNECT refused: the Will topic is outside the W token"
                );
                return Err((ReasonCode::NotAuthorized, Info::ResourceAuthFailed));
            }
        }
        if let (Some(who), Some(will)) = (&signed.custom, &c.will) {
            if !a.registry.custom.allows(who, will.topic.as_str(), false) {
                tracing::info!(
                    client,
                    "CONNECT refused: no custom permission to publish the Will"
                );
                return Err((ReasonCode::NotAuthorized, Info::ResourceAuthFailed));
            }
        }
        Ok(signed)
    }

    /// The profile's PUBLISH rules. `None`: refused (acknowledged or the
    /// connection closed) or handled here (`$SYS/uploadToken`).
    pub(in crate::core) fn aliyun_publish(
        &mut self,
        id: ConnId,
        p: &Publish,
        topic: &str,
        now: Instant,
    ) -> Option<PublishTo> {
        let a = self.aliyun.as_deref()?;
        if topic == UPLOAD_TOKEN_TOPIC {
            self.upload_token(id, p, now);
            return None;
        }
        let max = a.config.payload_bytes_max;
        let checked = match a.check_topic(topic) {
            _ if p.payload.len() > max => Err(Refusal {
                code: ReasonCode::PacketTooLarge,
                why: format!(
                    "payload of {} bytes over payload_bytes_max ({max})",
                    p.payload.len()
                ),
                info: Info::InvalidParam,
                acked: false,
            }),
            Ok(t) => self
                .token_allows(id, topic)
                .and_then(|()| self.custom_allows(id, topic, false))
                .map(|()| t),
            Err(why) => Err(Refusal {
                code: ReasonCode::TopicNameInvalid,
                why: format!("topic {topic}: {why}"),
                info: Info::InvalidParam,
                acked: true,
            }),
        };
        match checked {
            Ok(Topic::Plain { .. }) => Some(PublishTo::Subscribers),
            Ok(Topic::P2p { target, .. }) => Some(PublishTo::Client(target.into())),
            Err(r) => {
                self.refuse_publish(id, p.qos, p.packet_id, r);
                None
            }
        }
    }

    /// Whether the connection's W token (if it signed in with tokens)
    /// covers `topic`.
    fn token_allows(&self, id: ConnId, topic: &str) -> Result<(), Refusal> {
        let Some(grant) = self.grant(id) else {
            return Ok(());
        };
        let code = match &grant.write {
            None => TokenError::ActionMismatch,
            Some(_) if grant.can_publish(topic) => return Ok(()),
            Some(_) => TokenError::ResourceMismatch,
        };
        Err(Refusal {
            code: ReasonCode::NotAuthorized,
            why: format!("PUBLISH to {topic}: {code} (token code {})", code.code()),
            info: Info::ResourceAuthFailed,
            acked: true,
        })
    }

    /// Whether a client signed in with a custom identity has the
    /// permission to publish to `topic` (or subscribe to it, `subscribe`).
    fn custom_allows(&self, id: ConnId, topic: &str, subscribe: bool) -> Result<(), Refusal> {
        let link = self.session(id).and_then(|s| s.link.as_ref());
        let who = link.and_then(|l| l.aliyun.as_ref()?.custom.as_ref());
        let (Some(who), Some(a)) = (who, self.aliyun.as_deref()) else {
            return Ok(());
        };
        if a.registry.custom.allows(who, topic, subscribe) {
            return Ok(());
        }
        Err(Refusal {
            code: ReasonCode::NotAuthorized,
            why: format!("{topic}: no custom permission allows it"),
            info: Info::ResourceAuthFailed,
            acked: true,
        })
    }

    fn grant(&self, id: ConnId) -> Option<&Grant> {
        let link = self.session(id)?.link.as_ref()?;
        link.aliyun.as_ref()?.grant.as_ref()
    }

    /// Refuses a PUBLISH: a v5 QoS 1/2 one may get a negative
    /// acknowledgement; otherwise the connection closes (v5: DISCONNECT
    /// with the code). Nothing of it is delivered.
    fn refuse_publish(&mut self, id: ConnId, qos: QoS, pid: Option<PacketId>, r: Refusal) {
        self.stats.publishes_refused += 1;
        let v5 = self.version(id) == Some(ProtocolVersion::V5);
        if let (true, true, Some(pid)) = (r.acked && v5, qos != QoS::AtMostOnce, pid) {
            tracing::info!(code = ?r.code, "PUBLISH refused: {}", r.why);
            return self.negative_ack(id, qos, pid, r.code);
        }
        if r.info == Info::ResourceAuthFailed {
            self.token_notice_write_refusal(id);
        }
        self.set_close_info(id, r.info);
        self.fail(id, r.code, &r.why);
    }

    /// Before a connection closes for a PUBLISH outside its token:
    /// `$SYS/tokenInvalidNotice` with code 5 (no W token) or 4.
    fn token_notice_write_refusal(&mut self, id: ConnId) {
        let Some(grant) = self.grant(id) else {
            return;
        };
        let (code, kind) = match &grant.write {
            None => (TokenError::ActionMismatch, Actions::W),
            Some(h) => (TokenError::ResourceMismatch, h.kind),
        };
        self.send_invalid_notice(id, code, kind);
    }

    /// `$SYS/uploadToken`: a connected Token-mode client replaces one of
    /// its tokens (the PUBLISH is acknowledged first, as the product
    /// does). A token that does not verify gets `$SYS/tokenInvalidNotice`
    /// and the connection closes. A client that signed in another way has
    /// no token to replace: the upload is ignored.
    fn upload_token(&mut self, id: ConnId, p: &Publish, now: Instant) {
        self.ack_publish(id, p.qos, p.packet_id, ReasonCode::Success, false);
        if self.grant(id).is_none() {
            tracing::info!("uploadToken from a client that did not sign in with tokens: ignored");
            return;
        }
        let now_ms = self.unix_millis(now);
        match self.replace_token(id, &p.payload, now_ms) {
            Ok(kind) => tracing::debug!("uploadToken: {} token replaced", kind.as_str()),
            Err((e, kind, why)) => self.invalidate(id, e, kind, why),
        }
    }

    /// Verifies an uploaded `{"token","type"}` and puts it in connection
    /// `id`'s grant.
    fn replace_token(
        &mut self,
        id: ConnId,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Actions, (TokenError, Actions, &'static str)> {
        let malformed = |why| (TokenError::Malformed, Actions::RW, why);
        let up: Upload =
            serde_json::from_slice(payload).map_err(|_| malformed("uploadToken: not JSON"))?;
        let kind = Actions::parse(&up.kind)
            .filter(|_| !up.kind.contains(','))
            .ok_or(malformed("uploadToken: bad type"))?;
        let a = self.aliyun.as_deref().ok_or(malformed("uploadToken"))?;
        let claims = a
            .verify_token(&up.token, now_ms)
            .map_err(|e| (e, kind, "uploadToken"))?;
        if self
            .signed_in_key(id)
            .is_some_and(|k| k != claims.access_key)
        {
            let why = "uploadToken: a token of another access key";
            return Err((TokenError::BadSignature, kind, why));
        }
        let link = self.session_mut(id).and_then(|s| s.link.as_mut());
        let grant = link.and_then(|l| l.aliyun.as_mut()?.grant.as_mut());
        let grant = grant.ok_or(malformed("uploadToken"))?;
        grant
            .put(claims, kind)
            .map_err(|e| (e, kind, "uploadToken"))?;
        Ok(kind)
    }

    /// The access key a Token-mode connection signed in with.
    fn signed_in_key(&self, id: ConnId) -> Option<String> {
        let grant = self.grant(id)?;
        let held = grant.held().next()?;
        Some(held.claims.access_key.clone())
    }

    /// Sends `$SYS/tokenInvalidNotice` and closes connection `id`.
    pub(in crate::core) fn invalidate(
        &mut self,
        id: ConnId,
        error: TokenError,
        kind: Actions,
        why: &str,
    ) {
        self.stats.tokens_invalidated += 1;
        self.send_invalid_notice(id, error, kind);
        self.set_close_info(id, Info::NotAuthorized);
        let why = format!("{why}: {error} (tokenInvalidNotice code {})", error.code());
        self.fail(id, ReasonCode::NotAuthorized, &why);
    }

    /// The profile's SUBSCRIBE rules for one filter: `Ok(true)` to store
    /// it, `Ok(false)` to grant it without storing (P2P filters), or the
    /// SUBACK code (0x80: the product's only failure code).
    pub(in crate::core) fn aliyun_subscribe(
        &mut self,
        id: ConnId,
        filter: &str,
    ) -> Result<bool, ReasonCode> {
        let Some(a) = self.aliyun.as_deref() else {
            return Ok(true);
        };
        let plain = ringmq_protocol::topic::parse_shared(filter).map_or(filter, |s| s.filter);
        let refuse = |why: &str| {
            tracing::info!(filter, "SUBSCRIBE refused: {why}");
            Err(ReasonCode::UnspecifiedError)
        };
        let kind = match a.check_filter(plain) {
            Ok(kind) => kind,
            Err(why) => return refuse(&why),
        };
        if let Some(grant) = self.grant(id) {
            if !grant.can_subscribe(plain) {
                self.stats.denied += 1;
                return refuse("outside the connection's R token");
            }
        }
        if let Err(r) = self.custom_allows(id, plain, true) {
            self.stats.denied += 1;
            return refuse(&r.why);
        }
        Ok(!matches!(kind, Filter::P2p { .. }))
    }

    /// Applies a registry change from the control plane to this shard's
    /// copy; a revoked token's holders are told and disconnected.
    pub fn apply_registry(&mut self, change: &Change) {
        let Some(a) = self.aliyun.as_deref_mut() else {
            return;
        };
        a.registry.apply(change);
        if let Change::RevokeToken { id, .. } = change {
            let holders = self.holders_of(|h| h.claims.id == *id);
            for (conn, kind, _) in holders {
                self.invalidate(conn, TokenError::Revoked, kind, "token revoked");
            }
        }
    }

    /// Connections holding a token that `pick` selects, with how they
    /// hold it and when it expires.
    fn holders_of(
        &self,
        mut pick: impl FnMut(&super::token::Held) -> bool,
    ) -> Vec<(ConnId, Actions, u64)> {
        let mut out = Vec::new();
        for (slot, s) in self.sessions.iter().enumerate() {
            let link = s.as_ref().and_then(|s| s.link.as_ref());
            // A connection already closing has been told.
            let Some(link) = link.filter(|l| !l.tx.is_closing()) else {
                continue;
            };
            let grant = link.aliyun.as_ref().and_then(|a| a.grant.as_ref());
            if let Some(h) = grant.and_then(|g| g.held().find(|h| pick(h))) {
                let conn = ConnId {
                    session: slot as u32,
                    generation: link.generation,
                };
                out.push((conn, h.kind, h.claims.expire_ms));
            }
        }
        out
    }

    /// Token expiry: `$SYS/tokenExpireNotice` once, `token_expire_notice_secs`
    /// before a token expires; at expiry `$SYS/tokenInvalidNotice` (code 2)
    /// and the connection closes.
    pub(in crate::core) fn check_tokens(&mut self, now: Instant) {
        let Some(a) = self.aliyun.as_deref() else {
            return;
        };
        let window = a.config.token_expire_notice_secs.saturating_mul(1000);
        let now_ms = self.unix_millis(now);
        // One pass: a token expired, or one due for its notice.
        let due = |h: &super::token::Held| {
            h.claims.expire_ms <= now_ms || (!h.noticed && h.claims.expire_ms <= now_ms + window)
        };
        for (conn, kind, expire_ms) in self.holders_of(due) {
            match expire_ms <= now_ms {
                true => self.invalidate(conn, TokenError::Expired, kind, "token expired"),
                false => self.notice_expiry(conn, now_ms + window),
            }
        }
    }

    /// Sends `$SYS/tokenExpireNotice` for the tokens of `conn` expiring
    /// before `by_ms`, and marks them.
    fn notice_expiry(&mut self, conn: ConnId, by_ms: u64) {
        let mut expiring = Vec::new();
        let link = self.session_mut(conn).and_then(|s| s.link.as_mut());
        let grant = link
            .and_then(|l| l.aliyun.as_mut())
            .and_then(|a| a.grant.as_mut());
        for h in grant.into_iter().flat_map(|g| g.held_mut()) {
            if !h.noticed && h.claims.expire_ms <= by_ms {
                h.noticed = true;
                expiring.push((h.claims.expire_ms, h.kind));
            }
        }
        for (expire_ms, kind) in expiring {
            self.send_expire_notice(conn, expire_ms, kind);
        }
    }

    /// The protocol version of connection `id`.
    pub(in crate::core) fn version(&self, id: ConnId) -> Option<ProtocolVersion> {
        Some(self.session(id)?.link.as_ref()?.version)
    }

    /// What the trace says when connection `id` ends (first reason wins).
    pub(in crate::core) fn set_close_info(&mut self, id: ConnId, info: Info) {
        if let Some(link) = self.session_mut(id).and_then(|s| s.link.as_mut()) {
            link.end.get_or_insert(info);
        }
    }
}
