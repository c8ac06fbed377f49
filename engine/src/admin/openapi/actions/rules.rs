//! CreateRule, DeleteRule and ListRule: the NATS bridge's rules managed
//! through the OpenAPI (the product manages its data flow rules in its
//! console; these actions are ringmq's, named in the API's style). A rule
//! is what a `[[rules]]` entry says, its fields as parameters:
//!
//! | parameter | `[[rules]]` key |
//! |---|---|
//! | `RuleName` | `name` |
//! | `Kind` | `kind`: `outflow`, `inflow` or `status` |
//! | `Source`, `Subject`, `Stream`, `Topic` | the same |
//! | `JetStream`, `AckAfterStored` | `jetstream`, `ack_after_stored` |
//! | `GroupId.N` | `group_ids` |

use serde_json::{json, Value};

use super::{fields, Call, Fields};
use crate::admin::openapi::error::ApiError;
use crate::bridge::{Rule, RuleKind};

/// CreateRule: the rule is in force on every shard (and node) when the
/// answer comes, and kept across restarts.
pub(super) fn create_rule(call: &Call<'_>) -> Result<Fields, ApiError> {
    let p = call.params;
    let kind = match p.required("Kind")? {
        "outflow" => RuleKind::Outflow,
        "inflow" => RuleKind::Inflow,
        "status" => RuleKind::Status,
        _ => return Err(ApiError::invalid("Kind", "one of outflow, inflow, status")),
    };
    let text = |name| p.get(name).unwrap_or_default().to_owned();
    let rule = Rule {
        name: p.required("RuleName")?.to_owned(),
        kind,
        group_ids: p.list("GroupId")?,
        source: text("Source"),
        subject: text("Subject"),
        stream: text("Stream"),
        topic: text("Topic"),
        jetstream: p.bool("JetStream")?.unwrap_or(false),
        ack_after_stored: p.bool("AckAfterStored")?.unwrap_or(false),
    };
    call.registrar.create_rule(rule)?;
    Ok(Fields::new())
}

/// DeleteRule (`RuleName`): only a rule created through the API.
pub(super) fn delete_rule(call: &Call<'_>) -> Result<Fields, ApiError> {
    call.registrar
        .delete_rule(call.params.required("RuleName")?)?;
    Ok(Fields::new())
}

/// ListRule → `Data[{RuleName, Kind, Source, Subject, Stream, Topic,
/// JetStream, AckAfterStored, GroupIds, FromConfig, CreateTime}]`.
pub(super) fn list_rules(call: &Call<'_>) -> Result<Fields, ApiError> {
    let data: Vec<Value> = call
        .registrar
        .list_rules()
        .into_iter()
        .map(|r| {
            let kind = serde_json::to_value(r.rule.kind).unwrap_or_default();
            json!({
                "RuleName": r.rule.name,
                "Kind": kind,
                "Source": r.rule.source,
                "Subject": r.rule.subject,
                "Stream": r.rule.stream,
                "Topic": r.rule.topic,
                "JetStream": r.rule.jetstream,
                "AckAfterStored": r.rule.ack_after_stored,
                "GroupIds": r.rule.group_ids,
                "FromConfig": r.stamp.is_none(),
                "CreateTime": r.stamp.map_or(0, |s| s.create_ms),
            })
        })
        .collect();
    Ok(fields([("Data", Value::from(data))]))
}
