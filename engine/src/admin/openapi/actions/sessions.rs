//! Sessions and messages: online status, SendMessage, CloseConnection.
//! Each asks the client's home shard (or, for SendMessage, the topic's)
//! with one control-plane job.

use std::time::Duration;

use bytes::Bytes;
use ringmq_protocol::QoS;
use serde_json::{json, Value};

use super::{fields, success, Call, Fields};
use crate::admin::openapi::error::ApiError;
use crate::core::connect::home_shard;
use crate::core::message::msg_id_string;
use crate::core::operate::Publisher;

/// How long a job waits for its shard.
const SHARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Client ids BatchQuerySessionByClientIds takes at most.
const BATCH_CLIENT_IDS_MAX: usize = 10;

fn online(call: &Call<'_>, client_id: &str) -> Result<bool, ApiError> {
    let controls = call.app.handle.controls();
    let home = home_shard(client_id.as_bytes(), controls.shards());
    let id = client_id.to_owned();
    Ok(controls.call(home, move |b, _| b.is_online(&id), SHARD_TIMEOUT)?)
}

/// QuerySessionByClientId → `OnlineStatus`.
pub(super) fn query_session(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    Ok(fields([(
        "OnlineStatus",
        Value::from(online(call, client_id)?),
    )]))
}

/// BatchQuerySessionByClientIds (`ClientIdList.N`, at most 10) →
/// `OnlineStatusList[{ClientId, OnlineStatus}]`: one job per shard, each
/// answering for the ids whose home it is.
pub(super) fn batch_query_sessions(call: &Call<'_>) -> Result<Fields, ApiError> {
    let ids = call.params.list("ClientIdList")?;
    if ids.is_empty() {
        return Err(ApiError::missing("ClientIdList"));
    }
    if ids.len() > BATCH_CLIENT_IDS_MAX {
        return Err(ApiError::invalid(
            "ClientIdList",
            format!("at most {BATCH_CLIENT_IDS_MAX} client ids"),
        ));
    }
    let controls = call.app.handle.controls();
    let shards = controls.shards();
    let asked = ids.clone();
    let job = move |b: &mut crate::core::Broker, _| -> Vec<(usize, bool)> {
        let mine = asked.iter().enumerate();
        let mine = mine.filter(|(_, id)| home_shard(id.as_bytes(), shards) == b.shard());
        mine.map(|(i, id)| (i, b.is_online(id))).collect()
    };
    let mut online = vec![false; ids.len()];
    for (i, status) in controls.call_all(job, SHARD_TIMEOUT)?.into_iter().flatten() {
        online[i] = status;
    }
    let list: Vec<Value> = ids
        .iter()
        .zip(online)
        .map(|(id, status)| json!({"ClientId": id, "OnlineStatus": status}))
        .collect();
    Ok(fields([("OnlineStatusList", Value::from(list))]))
}

/// SendMessage (`MqttTopic`, `Payload` as given) → `MsgId`. The message
/// goes out at QoS 1 from the topic's home shard (so that messages sent to
/// one topic keep their order); a P2P topic reaches its client alone.
pub(super) fn send_message(call: &Call<'_>) -> Result<Fields, ApiError> {
    let topic = call.params.required("MqttTopic")?.to_owned();
    let payload = Bytes::from(call.params.required("Payload")?.to_owned());
    let controls = call.app.handle.controls();
    let shard = home_shard(topic.as_bytes(), controls.shards());
    let job = move |b: &mut crate::core::Broker, now| {
        let id = b.inject(Publisher::Operator, &topic, payload, QoS::AtLeastOnce, now)?;
        Ok::<_, crate::core::operate::InjectError>(msg_id_string(
            id,
            b.unix_millis(now),
            b.instance_tag,
        ))
    };
    let id = controls
        .call(shard, job, SHARD_TIMEOUT)?
        .map_err(|e| ApiError::invalid("MqttTopic", e))?;
    Ok(fields([("MsgId", Value::from(id))]))
}

/// CloseConnection: the client's connection is closed (its session, if
/// persistent, stays). A client that is not connected is not an error.
pub(super) fn close_connection(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let controls = call.app.handle.controls();
    let home = home_shard(client_id.as_bytes(), controls.shards());
    let id = client_id.to_owned();
    let closed = controls.call(home, move |b, _| b.close_client(&id), SHARD_TIMEOUT)?;
    let mut answer = success();
    if !closed {
        answer.insert(
            "Message".into(),
            Value::from("the client is not connected."),
        );
    }
    Ok(answer)
}
