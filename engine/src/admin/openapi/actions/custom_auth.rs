//! The custom-auth actions: identities (Add/Query/Update/Delete
//! CustomAuthIdentity) and permissions (Add/Query/Update/Delete
//! CustomAuthPermission). Queries page with `Size` (1–100) and
//! `NextToken` (the key to go on from, as returned).

use serde_json::{json, Value};

use super::{success, Call, Fields};
use crate::admin::openapi::error::ApiError;
use crate::core::aliyun::custom::{
    identity_key, permission_key, CustomChange, Effect, Identity, IdentityType, Permission, Permit,
    SignMode,
};

/// Results a query page holds at most.
const PAGE_SIZE_MAX: i64 = 100;

fn parse<T>(
    call: &Call<'_>,
    name: &str,
    f: fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<T, ApiError> {
    let v = call.params.required(name)?;
    f(v).ok_or_else(|| ApiError::invalid(name, format!("one of {allowed}")))
}

fn kind(call: &Call<'_>) -> Result<IdentityType, ApiError> {
    parse(call, "IdentityType", IdentityType::parse, "USER, CLIENT")
}

fn identity(call: &Call<'_>) -> Result<Identity, ApiError> {
    let p = call.params;
    Ok(Identity {
        kind: kind(call)?,
        username: p.required("Username")?.to_owned(),
        client_id: p
            .get("ClientId")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        secret: p.required("Secret")?.to_owned(),
        sign_mode: parse(call, "SignMode", SignMode::parse, "ORIGIN, SIGNED")?,
    })
}

/// AddCustomAuthIdentity.
pub(super) fn add_identity(call: &Call<'_>) -> Result<Fields, ApiError> {
    let identity = identity(call)?;
    call.registrar.change_custom(CustomChange::PutIdentity {
        identity,
        update: false,
    })?;
    Ok(success())
}

/// UpdateCustomAuthIdentity (secret and sign mode).
pub(super) fn update_identity(call: &Call<'_>) -> Result<Fields, ApiError> {
    let identity = identity(call)?;
    call.registrar.change_custom(CustomChange::PutIdentity {
        identity,
        update: true,
    })?;
    Ok(success())
}

/// DeleteCustomAuthIdentity (`Username`, or `ClientId` for CLIENT).
pub(super) fn delete_identity(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let kind = kind(call)?;
    let name = match kind {
        IdentityType::Client => p.required("ClientId")?,
        IdentityType::User => p.required("Username")?,
    };
    let key = identity_key(kind, name);
    call.registrar
        .change_custom(CustomChange::RemoveIdentity { key })?;
    Ok(success())
}

/// Size and NextToken of a query.
fn page(call: &Call<'_>) -> Result<(usize, String), ApiError> {
    let size = call.params.required_int("Size")?;
    if !(1..=PAGE_SIZE_MAX).contains(&size) {
        return Err(ApiError::invalid("Size", "1 to 100"));
    }
    let next = call.params.get("NextToken").unwrap_or("").to_owned();
    Ok((size as usize, next))
}

/// One page of `rows` (key, value) from key `next` on.
fn paged(rows: Vec<(String, Value)>, size: usize) -> Fields {
    let more = rows.len() > size;
    let next = match more {
        true => rows.get(size).map(|(k, _)| k.clone()).unwrap_or_default(),
        false => String::new(),
    };
    let results: Vec<Value> = rows.into_iter().take(size).map(|(_, v)| v).collect();
    let mut f = success();
    f.insert(
        "Data".into(),
        json!({"Results": results, "NextToken": next}),
    );
    f
}

/// QueryCustomAuthIdentity (filters: `Username`, `ClientId`,
/// `IdentityType`) → `Data{Results[{Username, ClientId, IdentityType,
/// Secret, SignMode}], NextToken}`.
pub(super) fn query_identities(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let (size, next) = page(call)?;
    let want = |name: &str| p.get(name).filter(|v| !v.is_empty());
    let (user, client) = (want("Username"), want("ClientId"));
    let kind = match want("IdentityType") {
        Some(_) => Some(kind(call)?),
        None => None,
    };
    let rows = call.registrar.with_custom(|c| {
        c.identities
            .range(next..)
            .filter(|(_, i)| kind.is_none_or(|k| k == i.kind))
            .filter(|(_, i)| user.is_none_or(|u| u == i.username))
            .filter(|(_, i)| client.is_none_or(|id| i.client_id.as_deref() == Some(id)))
            .take(size + 1)
            .map(|(k, i)| {
                let v = json!({
                    "Username": i.username,
                    "ClientId": i.client_id.clone().unwrap_or_default(),
                    "IdentityType": i.kind.as_str(),
                    "Secret": i.secret,
                    "SignMode": i.sign_mode.as_str(),
                });
                (k.clone(), v)
            })
            .collect()
    });
    Ok(paged(rows, size))
}

fn permission(call: &Call<'_>) -> Result<Permission, ApiError> {
    let p = call.params;
    Ok(Permission {
        kind: kind(call)?,
        identity: p.required("Identity")?.to_owned(),
        topic: p.required("Topic")?.to_owned(),
        effect: parse(call, "Effect", Effect::parse, "ALLOW, DENY")?,
        action: parse(call, "PermitAction", Permit::parse, "PUB, SUB, ALL")?,
    })
}

/// AddCustomAuthPermission.
pub(super) fn add_permission(call: &Call<'_>) -> Result<Fields, ApiError> {
    let permission = permission(call)?;
    call.registrar.change_custom(CustomChange::PutPermission {
        permission,
        update: false,
    })?;
    Ok(success())
}

/// UpdateCustomAuthPermission (effect and action).
pub(super) fn update_permission(call: &Call<'_>) -> Result<Fields, ApiError> {
    let permission = permission(call)?;
    call.registrar.change_custom(CustomChange::PutPermission {
        permission,
        update: true,
    })?;
    Ok(success())
}

/// DeleteCustomAuthPermission (`Identity`, `IdentityType`, `Topic`).
pub(super) fn delete_permission(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let key = permission_key(kind(call)?, p.required("Identity")?, p.required("Topic")?);
    call.registrar
        .change_custom(CustomChange::RemovePermission { key })?;
    Ok(success())
}

/// QueryCustomAuthPermission (filters: `Identity`, `IdentityType`,
/// `Topic`) → `Data{Results[{Identity, IdentityType, Topic, Effect,
/// PermitAction}], NextToken}`.
pub(super) fn query_permissions(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let (size, next) = page(call)?;
    let want = |name: &str| p.get(name).filter(|v| !v.is_empty());
    let (who, topic) = (want("Identity"), want("Topic"));
    let kind = match want("IdentityType") {
        Some(_) => Some(kind(call)?),
        None => None,
    };
    let rows = call.registrar.with_custom(|c| {
        c.permissions
            .range(next..)
            .filter(|(_, r)| kind.is_none_or(|k| k == r.kind))
            .filter(|(_, r)| who.is_none_or(|w| w == r.identity))
            .filter(|(_, r)| topic.is_none_or(|t| t == r.topic))
            .take(size + 1)
            .map(|(k, r)| {
                let v = json!({
                    "Identity": r.identity,
                    "IdentityType": r.kind.as_str(),
                    "Topic": r.topic,
                    "Effect": r.effect.as_str(),
                    "PermitAction": r.action.as_str(),
                });
                (k.clone(), v)
            })
            .collect()
    });
    Ok(paged(rows, size))
}
