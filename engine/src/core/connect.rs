//! CONNECT: validation, authentication, session take-over and resumption,
//! and the CONNACK.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::properties::{ConnAckProperties, PublishProperties};
use ringmq_protocol::{
    ConnAck, Connect, LastWill, MqttString, Packet, ProtocolVersion, ReasonCode,
};

use super::aliyun::notices::Event;
use super::aliyun::signin::SignedIn;
use super::aliyun::LinkAliyun;
use super::auth::Principal;
use super::broker::{Broker, ConnId};
use super::message::Message;
use super::session::{Link, Session, SessionMap, Will};
use super::trace::{Action, Info, TraceName};
use super::tx::Tx;

/// Seeds of the client-id hash. Fixed, so that a client's home shard (and
/// its state on disk) is the same after a restart.
const HOME_SEEDS: [u64; 4] = [0x7269_6e67, 0x6d71_2d68, 0x6f6d_652d, 0x7368_6172];

/// The shard that owns the session of `client_id`.
pub fn home_shard(client_id: &[u8], shards: usize) -> usize {
    let hash =
        ahash::RandomState::with_seeds(HOME_SEEDS[0], HOME_SEEDS[1], HOME_SEEDS[2], HOME_SEEDS[3])
            .hash_one(client_id);
    (hash % shards.max(1) as u64) as usize
}

/// The outcome of [`Broker::check_connect`]: who signed in, or why not.
pub type Checked = Result<SignedIn, (ReasonCode, Info)>;

/// A connection the broker accepted.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The connection from now on.
    pub id: ConnId,
}

/// A CONNECT the broker refused: write `connack` (if any), then close.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The CONNACK carrying the reason, encoded.
    pub connack: Bytes,
}

/// A refusal for `version` with `code` (3.1.1 gets the closest return code).
pub fn refusal(version: ProtocolVersion, code: ReasonCode) -> Refused {
    let packet = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason_code: code,
        properties: ConnAckProperties::default(),
    }));
    let mut buf = BytesMut::with_capacity(8);
    let _ = packet.encode(version, &mut buf);
    Refused {
        connack: buf.freeze(),
    }
}

impl Broker {
    /// A new client identifier whose home is this shard (v5 Assigned Client
    /// Identifier; 3.1.1 clean sessions with an empty one).
    pub fn assign_client_id(&mut self) -> String {
        loop {
            let uid = self.new_uid();
            let id = format!("ringmq-{:x}-{:x}", self.shard, uid & ((1 << 56) - 1));
            if home_shard(id.as_bytes(), self.shards) == self.shard {
                return id;
            }
        }
    }

    /// Handles CONNECT on the client's home shard. `assigned` says the
    /// shard gave the client its identifier.
    pub fn connect(
        &mut self,
        connect: Connect,
        assigned: bool,
        now: Instant,
    ) -> Result<Accepted, Refused> {
        self.connect_from(connect, assigned, None, now)
    }

    /// [`Broker::connect`] of a client at address `peer`.
    pub fn connect_from(
        &mut self,
        connect: Connect,
        assigned: bool,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Accepted, Refused> {
        let checked = self.check_connect(&connect, assigned, now);
        self.connect_checked(connect, assigned, peer, checked, now)
    }

    /// [`Broker::connect_from`] with the outcome of
    /// [`Broker::check_connect`] (made before waiting for something, such
    /// as the session from another node).
    pub fn connect_checked(
        &mut self,
        connect: Connect,
        assigned: bool,
        peer: Option<SocketAddr>,
        checked: Checked,
        now: Instant,
    ) -> Result<Accepted, Refused> {
        let version = connect.protocol;
        let generation = self.next_generation;
        self.next_generation += 1;
        let signed = match checked {
            Ok(signed) => signed,
            Err((code, info)) => {
                self.stats.connects_refused += 1;
                self.stats.refused_by_code.add(code as u8);
                if info == Info::NotAuthorized {
                    self.stats.signins_refused += 1;
                }
                tracing::debug!(client = %connect.client_id.as_str(), ?code, "CONNECT refused");
                let name = self.traces.intern(&connect.client_id);
                self.trace_device(now, Action::Close, info, name, generation);
                self.traces.release(name);
                return Err(refusal(version, code));
            }
        };
        let (slot, session_present) = self.resume_or_create(&connect, now);
        let (mut link, props) = self.new_link(&connect, generation, assigned, now);
        if self.aliyun.is_some() {
            link.aliyun = Some(Box::new(LinkAliyun {
                grant: signed.grant,
                custom: signed.custom,
                peer,
            }));
        }
        let id = ConnId {
            session: slot,
            generation,
        };
        let expiry = self.granted_expiry(&connect);
        if let Some(session) = self.slot(slot) {
            session.link = Some(link);
            session.expiry_secs = expiry;
            session.expires_at = None;
            session.will_due = None;
            session.username = connect.username.as_ref().map(|u| u.detached());
        }
        self.log_session(slot, now);
        let connack = Packet::ConnAck(Box::new(ConnAck {
            // 3.1's CONNACK has no flags: the byte is reserved.
            session_present: session_present && !connect.v31,
            reason_code: ReasonCode::Success,
            properties: props,
        }));
        self.write(id, &connack);
        self.stats.connects += 1;
        tracing::debug!(client = %connect.client_id.as_str(), ?version, session_present, "connected");
        let name = self.slot(slot).map_or(TraceName::NONE, |s| s.trace_name);
        self.trace_device(now, Action::Connect, Info::Accepted, name, generation);
        let connected = super::cluster::Connected {
            client_id: connect.client_id.as_str().into(),
            at_millis: self.unix_millis(now),
            clean_start: connect.clean_start,
            persistent: expiry > 0,
        };
        self.cluster_connected(connected, generation);
        let client = connect.client_id.as_str();
        self.notify(Event::Connect, client, generation, peer, now);
        self.resend_inflight(id, now);
        self.drain(id, now);
        Ok(Accepted { id })
    }

    /// Records a device event in the trace store.
    pub(super) fn trace_device(
        &mut self,
        now: Instant,
        action: Action,
        info: Info,
        name: TraceName,
        generation: u64,
    ) {
        if self.traces.is_on() {
            let time_ms = self.unix_millis(now);
            self.traces.record(time_ms, action, info, name, generation);
        }
    }

    /// Whether CONNECT `c` may connect: its identifier, the session
    /// quota, its credentials, its Will.
    pub fn check_connect(&self, c: &Connect, assigned: bool, now: Instant) -> Checked {
        let invalid = |code| (code, Info::InvalidParam);
        let refuse = |code, why: &str| {
            tracing::info!(client = %c.client_id.as_str(), ?code, "CONNECT refused: {why}");
            Err(invalid(code))
        };
        if c.client_id.is_empty() && !assigned {
            let why = match c.v31 {
                true => "[MQTT 3.1 §3.1] a 3.1 client id has 1 to 23 characters",
                false => "[MQTT-3.1.3-8] an empty client id needs Clean Session",
            };
            return refuse(ReasonCode::ClientIdentifierNotValid, why);
        }
        if c.client_id.len() > self.limits.client_id_bytes_max {
            let why = "client id over client_id_bytes_max";
            return refuse(ReasonCode::ClientIdentifierNotValid, why);
        }
        let per_shard = self.limits.sessions_max.div_ceil(self.shards.max(1));
        if self.by_client.len() >= per_shard && !self.by_client.contains_key(&c.client_id) {
            tracing::warn!(
                sessions = self.by_client.len(),
                "sessions_max reached: CONNECT refused"
            );
            return Err(invalid(ReasonCode::QuotaExceeded));
        }
        if c.properties.authentication_method.is_some() {
            let why = "enhanced authentication is not supported";
            return refuse(ReasonCode::BadAuthenticationMethod, why);
        }
        if self.aliyun.is_some() {
            return self.aliyun_connect(c, now);
        }
        let checked = self.auth.authenticator.authenticate(c);
        let checked = checked.map_err(|code| (code, Info::NotAuthorized));
        let checked = checked.and_then(|()| self.check_will(c).map_err(invalid));
        if let Err((code, _)) = &checked {
            tracing::info!(client = %c.client_id.as_str(), ?code, "CONNECT refused");
        }
        checked.map(|()| SignedIn::default())
    }

    fn check_will(&self, c: &Connect) -> Result<(), ReasonCode> {
        let v311 = c.protocol == ProtocolVersion::V311;
        if let Some(will) = &c.will {
            if !self.topic_within_limits(will.topic.as_str()) {
                return Err(match v311 {
                    true => ReasonCode::UnspecifiedError,
                    false => ReasonCode::TopicNameInvalid,
                });
            }
            // A Will is a PUBLISH made later on the client's behalf: it
            // needs the same permission, checked now.
            let who = Principal {
                client_id: c.client_id.as_str(),
                username: c.username.as_ref().map(|u| u.as_str()),
            };
            if !self.auth.authorizer.can_publish(who, will.topic.as_str()) {
                return Err(ReasonCode::NotAuthorized);
            }
        }
        Ok(())
    }

    /// Whether a topic name or filter is within the configured length and
    /// depth.
    pub(super) fn topic_within_limits(&self, topic: &str) -> bool {
        topic.len() <= self.limits.topic_bytes_max
            && topic.bytes().filter(|&b| b == b'/').count() < self.limits.topic_levels_max
    }

    fn granted_expiry(&self, c: &Connect) -> u32 {
        match c.protocol {
            ProtocolVersion::V311 if c.clean_start => 0,
            ProtocolVersion::V311 => u32::MAX,
            ProtocolVersion::V5 => c.properties.session_expiry_interval.unwrap_or(0),
        }
        .min(self.limits.session_expiry_secs_max)
    }

    /// Finds the client's session, taking it over from an older connection,
    /// or starts a new one. Returns the slot and whether a session resumed.
    fn resume_or_create(&mut self, c: &Connect, now: Instant) -> (u32, bool) {
        if let Some(&slot) = self.by_client.get(&c.client_id) {
            // A session is resumed only by the user it was authorized for:
            // its subscriptions and messages were checked against that user.
            // One with a Session Expiry of 0 ends with the connection that
            // the take-over closes.
            let resumable = self.slot(slot).is_some_and(|s| {
                s.expiry_secs > 0
                    && s.username.as_ref().map(|u| u.as_str())
                        == c.username.as_ref().map(|u| u.as_str())
            });
            let resume = resumable && !c.clean_start;
            self.take_over(slot, resume, now);
            if resume {
                return (slot, true);
            }
            self.end_session(slot, now);
        }
        let uid = self.new_uid();
        // Its own copy: the CONNECT's bytes are not kept alive by the session.
        let mut session = Session::new(uid, c.client_id.detached());
        session.trace_name = self.traces.intern(&session.client_id);
        let slot = self.place_session(session);
        (slot, false)
    }

    /// Closes the connection attached to session `slot`, if any
    /// [MQTT-3.1.4-3]: v5 clients get DISCONNECT 0x8E. Its Will is
    /// published unless the session resumes and a Will Delay lets the new
    /// connection cancel it.
    pub(super) fn take_over(&mut self, slot: u32, resume: bool, now: Instant) {
        let Some(session) = self.slot(slot) else {
            return;
        };
        let Some(mut link) = session.link.take() else {
            return;
        };
        link.close_with(ReasonCode::SessionTakenOver);
        // The old connection's writer still has to flush that DISCONNECT.
        let old = ConnId {
            session: slot,
            generation: link.generation,
        };
        self.detached.insert(old, link.tx);
        self.stats.takeovers += 1;
        let client = session_client(self, slot);
        let name = self.slot(slot).map_or(TraceName::NONE, |s| s.trace_name);
        let info = Info::ClientIdConflict;
        self.trace_device(now, Action::Close, info, name, link.generation);
        let peer = link.aliyun.as_ref().and_then(|a| a.peer);
        self.notify(Event::TcpClean, client.as_str(), link.generation, peer, now);
        if let Some(will) = link.will.take().filter(|_| !link.graceful) {
            if will.delay_secs == 0 || !resume {
                self.publish_will(will.message, now);
            }
        }
    }

    fn new_link(
        &mut self,
        c: &Connect,
        generation: u64,
        assigned: bool,
        now: Instant,
    ) -> (Link, ConnAckProperties) {
        let v5 = c.protocol == ProtocolVersion::V5;
        let max = self.limits.keep_alive_secs_max;
        let capped = max != 0 && (c.keep_alive == 0 || c.keep_alive > max);
        // A 3.1.1 client cannot be told another keep-alive, so its own is kept.
        let keep_alive = if capped && v5 { max } else { c.keep_alive };
        let mut props = ConnAckProperties::default();
        if v5 {
            props.receive_maximum = std::num::NonZeroU16::new(self.limits.inflight_count_max);
            props.maximum_packet_size = std::num::NonZeroU32::new(self.limits.packet_bytes_max);
            props.topic_alias_maximum = Some(self.limits.topic_alias_max);
            if capped {
                props.server_keep_alive = Some(keep_alive);
            }
            if assigned {
                props.assigned_client_identifier = Some(c.client_id.clone());
            }
            let asked = c.properties.session_expiry_interval.unwrap_or(0);
            let granted = self.granted_expiry(c);
            if granted != asked {
                props.session_expiry_interval = Some(granted);
            }
        }
        let link = Link {
            generation,
            version: c.protocol,
            idle_max: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            last_rx: now,
            receive_max: c.properties.receive_maximum.map_or(u16::MAX, |n| n.get()),
            packet_bytes_max: c
                .properties
                .maximum_packet_size
                .map_or(u32::MAX, |n| n.get()),
            aliases_in: Vec::new(),
            aliases_out: SessionMap::default(),
            alias_out_max: match v5 {
                true => c
                    .properties
                    .topic_alias_maximum
                    .unwrap_or(0)
                    .min(self.limits.topic_alias_out_max),
                false => 0,
            },
            will: c.will.as_ref().map(|w| Box::new(will_message(w))),
            graceful: false,
            problem_info: c.properties.request_problem_information.unwrap_or(true),
            end: None,
            aliyun: None,
            tx: Tx::default(),
        };
        (link, props)
    }
}

/// The client id of session `slot` (shared bytes, no copy).
fn session_client(b: &mut Broker, slot: u32) -> MqttString {
    b.slot(slot)
        .map(|s| s.client_id.clone())
        .unwrap_or_default()
}

fn will_message(w: &LastWill) -> Will {
    let p = &w.properties;
    let properties = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Default::default()
    };
    let properties = (!properties.is_empty()).then(|| Box::new(properties));
    let message = Message {
        id: 0,
        topic: w.topic.clone(),
        payload: Bytes::copy_from_slice(&w.payload),
        qos: w.qos,
        retain: w.retain,
        properties,
        origin: 0,
        expires_at: None,
        encoded: Default::default(),
    };
    Will {
        message,
        delay_secs: p.will_delay_interval.unwrap_or(0),
    }
}

impl Broker {
    /// Resends every unacknowledged message of `id`'s session with DUP set,
    /// and PUBREL for those already received [MQTT-4.4.0-1].
    fn resend_inflight(&mut self, id: ConnId, now: Instant) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        if session.inflight.is_empty() {
            return;
        }
        let pending: Vec<_> = session
            .inflight
            .iter()
            .map(|m| (m.packet_id, m.released))
            .collect();
        for (packet_id, released) in pending {
            if released {
                self.write(id, &Packet::PubRel(ringmq_protocol::PubRel::new(packet_id)));
            } else {
                self.resend_publish(id, packet_id, now);
            }
        }
    }
}
