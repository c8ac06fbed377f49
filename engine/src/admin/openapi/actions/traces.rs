//! The four trace queries. Times are milliseconds since the Unix epoch;
//! pages count from 1 and hold 1–100 items.

use serde::Serialize;
use serde_json::Value;

use super::{Call, Fields};
use crate::admin::openapi::error::ApiError;
use crate::core::trace::answer::{Paging, PAGE_SIZE_MAX};

fn range(call: &Call<'_>) -> Result<(u64, u64), ApiError> {
    let p = call.params;
    let begin = p.required_int("BeginTime")?;
    let end = p.required_int("EndTime")?;
    if begin < 0 || end < begin {
        return Err(ApiError::invalid(
            "EndTime",
            "BeginTime ≤ EndTime, both ≥ 0",
        ));
    }
    Ok((begin as u64, end as u64))
}

fn paging(call: &Call<'_>) -> Result<Paging, ApiError> {
    let p = call.params;
    let current = p.required_int("CurrentPage")?;
    let size = p.required_int("PageSize")?;
    if current < 1 {
        return Err(ApiError::invalid("CurrentPage", "at least 1"));
    }
    if !(1..=i64::from(PAGE_SIZE_MAX)).contains(&size) {
        return Err(ApiError::invalid("PageSize", "1 to 100"));
    }
    Ok(Paging {
        current_page: u32::try_from(current).unwrap_or(u32::MAX),
        page_size: size as u32,
        reverse: p.bool("Reverse")?.unwrap_or(false),
    })
}

fn to_fields(answer: impl Serialize) -> Result<Fields, ApiError> {
    match serde_json::to_value(answer) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::new(
            500,
            "InternalError",
            "cannot encode the answer",
        )),
    }
}

/// QueryMqttTraceDevice.
pub(super) fn device(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let (begin, end) = range(call)?;
    let handle = &call.app.handle;
    to_fields(handle.trace_device(client_id, begin, end, paging(call)?)?)
}

/// QueryMqttTraceMessageOfClient.
pub(super) fn message_of_client(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let (begin, end) = range(call)?;
    let handle = &call.app.handle;
    to_fields(handle.trace_message_of_client(client_id, begin, end, paging(call)?)?)
}

/// QueryMqttTraceMessagePublish.
pub(super) fn message_publish(call: &Call<'_>) -> Result<Fields, ApiError> {
    let msg_id = call.params.required("MsgId")?;
    let (begin, end) = range(call)?;
    to_fields(call.app.handle.trace_message_publish(msg_id, begin, end)?)
}

/// QueryMqttTraceMessageSubscribe (all receivers, or `ClientId`).
pub(super) fn message_subscribe(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let msg_id = p.required("MsgId")?;
    let client_id = p.get("ClientId").filter(|c| !c.is_empty());
    let (begin, end) = range(call)?;
    let handle = &call.app.handle;
    to_fields(handle.trace_message_subscribe(msg_id, client_id, begin, end, paging(call)?)?)
}
