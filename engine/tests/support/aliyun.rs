//! The Alibaba Cloud profile for core tests: a broker with the issue's
//! example instance (parent topics `devices` and `alerts`, Group IDs
//! `GID_sensor` and `GID_app`, one access key), and signed CONNECTs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_engine::core::aliyun::registry::{Change, Registry};
use ringmq_engine::core::aliyun::signin::signature;
use ringmq_engine::core::aliyun::token::{self, Actions, Claims};
use ringmq_engine::core::aliyun::{AccessKey, Aliyun, AliyunConfig};
use ringmq_engine::core::auth::Auth;
use ringmq_engine::core::trace::Traces;
use ringmq_engine::core::{Broker, Limits};
use ringmq_protocol::{Connect, MqttString, ProtocolVersion};

use super::client::connect_packet;

pub const INSTANCE: &str = "mqtt-cn-local";
pub const AK: &str = "LTAI5tLocalKey";
pub const SECRET: &str = "LocalSecret0123456789abcd";
/// The wall clock of the tests: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

pub fn config() -> AliyunConfig {
    AliyunConfig {
        instance_id: INSTANCE.into(),
        parent_topics: vec!["devices".into(), "alerts".into()],
        group_ids: vec!["GID_sensor".into(), "GID_app".into()],
        access_keys: vec![AccessKey {
            id: AK.into(),
            secret: SECRET.into(),
        }],
        ..AliyunConfig::default()
    }
}

/// The registry the config above seeds.
pub fn registry() -> Registry {
    let c = config();
    let mut r = Registry::default();
    r.apply(&Change::SetInstance { id: c.instance_id });
    for k in c.access_keys {
        r.apply(&Change::PutAccessKey {
            id: k.id,
            secret: k.secret,
        });
    }
    for name in c.parent_topics {
        r.apply(&Change::CreateParentTopic { name, at_ms: 1 });
    }
    for id in c.group_ids {
        r.apply(&Change::CreateGroupId { id, at_ms: 1 });
    }
    r
}

/// Shard `shard` of `shards` in the aliyun profile, traces on, its wall
/// clock at `EPOCH_MS` at `now`.
pub fn aliyun_shard(shard: usize, shards: usize, now: Instant) -> Broker {
    let mut b = Broker::new(shard, shards, Limits::default(), Auth::default(), now);
    b.aliyun = Some(Box::new(Aliyun::new(config(), registry())));
    b.traces = Traces::new(10_000, 3 * 24 * 3_600_000);
    b.set_wall_clock(now, EPOCH_MS);
    b.trace_offset_minutes = 480;
    b
}

pub fn aliyun_broker(now: Instant) -> Broker {
    aliyun_shard(0, 1, now)
}

/// A CONNECT signed in Signature mode.
pub fn signed(client_id: &str, v: ProtocolVersion, clean: bool) -> Connect {
    let mut c = connect_packet(client_id, v, clean);
    c.username = Some(MqttString::new(format!("Signature|{AK}|{INSTANCE}")).expect("user"));
    c.password = Some(Bytes::from(signature(SECRET, client_id)));
    c
}

/// A token for `resources` and `actions`, valid `life` from `EPOCH_MS`.
pub fn token(resources: &[&str], actions: Actions, life: Duration, id: &str) -> String {
    let claims = Claims {
        id: id.into(),
        instance: INSTANCE.into(),
        access_key: AK.into(),
        actions,
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        expire_ms: EPOCH_MS + life.as_millis() as u64,
    };
    token::sign(&claims, SECRET)
}

/// A CONNECT in Token mode with `password` (`R|t`, `RW|t`, …).
pub fn with_tokens(client_id: &str, v: ProtocolVersion, password: &str) -> Connect {
    let mut c = connect_packet(client_id, v, true);
    c.username = Some(MqttString::new(format!("Token|{AK}|{INSTANCE}")).expect("user"));
    c.password = Some(Bytes::from(password.to_owned()));
    c
}
