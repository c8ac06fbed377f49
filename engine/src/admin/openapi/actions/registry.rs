//! Actions on the instance registry: tokens, device credentials, Group
//! IDs and parent topics. Each change is made durable by the registrar
//! before the answer.

use serde_json::{json, Value};

use super::{fields, Call, Fields};
use crate::admin::openapi::error::ApiError;
use crate::core::aliyun::registry::{DeviceCredential, Stamp};

/// Items a ListDeviceCredentialClientId page holds at most.
const CLIENT_ID_PAGE_MAX: usize = 100;

/// ApplyToken (`Resources` comma list, `Actions`, `ExpireTime` in ms) →
/// `Token`, signed with the access key that signed the request.
pub(super) fn apply_token(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let resources: Vec<String> = p
        .required("Resources")?
        .split(',')
        .map(|r| r.trim().to_owned())
        .collect();
    let actions = p.required("Actions")?;
    let expire = p.required_int("ExpireTime")?;
    let expire = u64::try_from(expire).map_err(|_| ApiError::invalid("ExpireTime", "negative"))?;
    let token = call
        .registrar
        .apply_token(call.access_key, &resources, actions, expire)?;
    Ok(fields([("Token", Value::from(token))]))
}

/// QueryToken → `TokenStatus` (true while valid).
pub(super) fn query_token(call: &Call<'_>) -> Result<Fields, ApiError> {
    let token = call.params.required("Token")?;
    let valid = call.registrar.query_token(token);
    Ok(fields([("TokenStatus", Value::from(valid))]))
}

/// RevokeToken: clients signed in with it are told and disconnected.
pub(super) fn revoke_token(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .revoke_token(call.params.required("Token")?)?;
    Ok(Fields::new())
}

fn credential(call: &Call<'_>, c: &DeviceCredential) -> Fields {
    let c = json!({
        "ClientId": c.client_id,
        "InstanceId": call.registrar.instance_id(),
        "DeviceAccessKeyId": c.key_id,
        "DeviceAccessKeySecret": c.secret,
        "CreateTime": c.create_ms,
        "UpdateTime": c.update_ms,
    });
    fields([("DeviceCredential", c)])
}

/// RegisterDeviceCredential → `DeviceCredential` (the existing one if
/// registered already).
pub(super) fn register_credential(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let c = call.registrar.register_device_credential(client_id)?;
    Ok(credential(call, &c))
}

/// GetDeviceCredential → `DeviceCredential`.
pub(super) fn get_credential(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let c = call.registrar.get_device_credential(client_id)?;
    Ok(credential(call, &c))
}

/// RefreshDeviceCredential → a new `DeviceCredential` (the old key stops
/// working).
pub(super) fn refresh_credential(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    let c = call.registrar.refresh_device_credential(client_id)?;
    Ok(credential(call, &c))
}

/// UnRegisterDeviceCredential.
pub(super) fn unregister_credential(call: &Call<'_>) -> Result<Fields, ApiError> {
    let client_id = call.params.required("ClientId")?;
    call.registrar.unregister_device_credential(client_id)?;
    Ok(Fields::new())
}

/// ListDeviceCredentialClientId (`GroupId`, `PageSize` ≤ 100, `PageNo`
/// or `NextToken`) → `DeviceCredentialClientIdList{ClientIdList,
/// NextToken, PageNo, PageSize, Total}`, numbers as strings like the
/// product's. `NextToken` is the next page's number.
pub(super) fn list_credential_client_ids(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let group = p.required("GroupId")?;
    let size = page_number(p.get("PageSize"), "PageSize")?.unwrap_or(CLIENT_ID_PAGE_MAX as u64);
    if size == 0 || size > CLIENT_ID_PAGE_MAX as u64 {
        return Err(ApiError::invalid("PageSize", "1 to 100"));
    }
    let page = match page_number(p.get("NextToken"), "NextToken")? {
        Some(n) => n,
        None => page_number(p.get("PageNo"), "PageNo")?.unwrap_or(1),
    }
    .max(1);
    let all = call.registrar.list_device_credential_client_ids(group);
    let size = size as usize;
    let start = (page as usize - 1).saturating_mul(size);
    let ids: Vec<&String> = all.iter().skip(start).take(size).collect();
    let more = start.saturating_add(size) < all.len();
    let next = if more {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let list = json!({
        "ClientIdList": ids,
        "NextToken": next,
        "PageNo": page.to_string(),
        "PageSize": size.to_string(),
        "Total": all.len().to_string(),
    });
    Ok(fields([("DeviceCredentialClientIdList", list)]))
}

fn page_number(v: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(name, "not a page number")),
    }
}

/// CreateGroupId.
pub(super) fn create_group_id(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .create_group_id(call.params.required("GroupId")?)?;
    Ok(Fields::new())
}

/// DeleteGroupId.
pub(super) fn delete_group_id(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .delete_group_id(call.params.required("GroupId")?)?;
    Ok(Fields::new())
}

/// ListGroupId → `Data[{GroupId, InstanceId, IndependentNaming,
/// CreateTime, UpdateTime, Tags}]`.
pub(super) fn list_group_ids(call: &Call<'_>) -> Result<Fields, ApiError> {
    let instance = call.registrar.instance_id();
    let data: Vec<Value> = call
        .registrar
        .list_group_ids()
        .into_iter()
        .map(|(id, s)| {
            json!({
                "GroupId": id,
                "InstanceId": instance,
                "IndependentNaming": true,
                "CreateTime": s.create_ms,
                "UpdateTime": s.update_ms,
                "Tags": [],
            })
        })
        .collect();
    Ok(fields([("Data", Value::from(data))]))
}

/// CreateTopic (`Topic`: a parent topic).
pub(super) fn create_topic(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .create_parent_topic(call.params.required("Topic")?)?;
    Ok(Fields::new())
}

/// DeleteTopic (`Topic`).
pub(super) fn delete_topic(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .delete_parent_topic(call.params.required("Topic")?)?;
    Ok(Fields::new())
}

/// ListTopic → `Data[{Topic, InstanceId, CreateTime, UpdateTime}]`.
pub(super) fn list_topics(call: &Call<'_>) -> Result<Fields, ApiError> {
    let instance = call.registrar.instance_id();
    let row = |(topic, s): (String, Stamp)| json!({"Topic": topic, "InstanceId": instance, "CreateTime": s.create_ms, "UpdateTime": s.update_ms});
    let data: Vec<Value> = call
        .registrar
        .list_parent_topics()
        .into_iter()
        .map(row)
        .collect();
    Ok(fields([("Data", Value::from(data))]))
}
