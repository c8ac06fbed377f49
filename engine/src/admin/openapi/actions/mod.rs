//! The actions: each takes the request's parameters and returns the
//! answer's fields (without `RequestId`) or the product's error. They run
//! on the admin runtime's blocking pool: registry changes wait for their
//! journal sync, queries for the shards.

mod custom_auth;
mod registry;
mod rules;
mod sessions;
mod traces;

use serde_json::{Map, Value};

use super::error::ApiError;
use super::params::Params;
use crate::admin::App;
use crate::instance::Registrar;

/// Answer fields.
pub type Fields = Map<String, Value>;

/// What an action gets.
#[derive(Debug)]
pub struct Call<'a> {
    /// The endpoint's state.
    pub app: &'a App,
    /// The registry's owner.
    pub registrar: &'a Registrar,
    /// The request's parameters.
    pub params: &'a Params,
    /// The access key that signed the request.
    pub access_key: &'a str,
}

type Action = fn(&Call<'_>) -> Result<Fields, ApiError>;

/// Every action served, by name.
const ACTIONS: &[(&str, Action)] = &[
    ("ApplyToken", registry::apply_token),
    ("QueryToken", registry::query_token),
    ("RevokeToken", registry::revoke_token),
    ("RegisterDeviceCredential", registry::register_credential),
    ("GetDeviceCredential", registry::get_credential),
    ("RefreshDeviceCredential", registry::refresh_credential),
    (
        "UnRegisterDeviceCredential",
        registry::unregister_credential,
    ),
    (
        "ListDeviceCredentialClientId",
        registry::list_credential_client_ids,
    ),
    ("CreateGroupId", registry::create_group_id),
    ("DeleteGroupId", registry::delete_group_id),
    ("ListGroupId", registry::list_group_ids),
    ("CreateTopic", registry::create_topic),
    ("DeleteTopic", registry::delete_topic),
    ("ListTopic", registry::list_topics),
    ("CreateRule", rules::create_rule),
    ("DeleteRule", rules::delete_rule),
    ("ListRule", rules::list_rules),
    ("QuerySessionByClientId", sessions::query_session),
    (
        "BatchQuerySessionByClientIds",
        sessions::batch_query_sessions,
    ),
    ("SendMessage", sessions::send_message),
    ("CloseConnection", sessions::close_connection),
    ("AddCustomAuthIdentity", custom_auth::add_identity),
    ("QueryCustomAuthIdentity", custom_auth::query_identities),
    ("UpdateCustomAuthIdentity", custom_auth::update_identity),
    ("DeleteCustomAuthIdentity", custom_auth::delete_identity),
    ("AddCustomAuthPermission", custom_auth::add_permission),
    ("QueryCustomAuthPermission", custom_auth::query_permissions),
    ("UpdateCustomAuthPermission", custom_auth::update_permission),
    ("DeleteCustomAuthPermission", custom_auth::delete_permission),
    ("QueryMqttTraceDevice", traces::device),
    ("QueryMqttTraceMessageOfClient", traces::message_of_client),
    ("QueryMqttTraceMessagePublish", traces::message_publish),
    ("QueryMqttTraceMessageSubscribe", traces::message_subscribe),
];

/// Names of every action served.
pub fn names() -> impl Iterator<Item = &'static str> {
    ACTIONS.iter().map(|(n, _)| *n)
}

/// Runs `action` for the request signed by `access_key`.
pub fn run(app: &App, action: &str, params: &Params, access_key: &str) -> Result<Fields, ApiError> {
    let Some((_, f)) = ACTIONS.iter().find(|(n, _)| *n == action) else {
        return Err(match action {
            "" => ApiError::missing("Action"),
            _ => ApiError::unknown_action(action),
        });
    };
    let Some(registrar) = app.handle.registrar() else {
        return Err(ApiError::unknown_action(action));
    };
    let call = Call {
        app,
        registrar,
        params,
        access_key,
    };
    check_instance(&call)?;
    f(&call)
}

/// Every action names the instance: it must be this one.
fn check_instance(call: &Call<'_>) -> Result<(), ApiError> {
    let given = call.params.required("InstanceId")?;
    if given != call.registrar.instance_id() {
        return Err(ApiError::new(
            404,
            "InstanceNotFound",
            format!("The instance {given} does not exist on this endpoint."),
        ));
    }
    Ok(())
}

/// Fields from `(name, value)` pairs.
fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The product's `Code`/`Message`/`Success` triple of a done change.
fn success() -> Fields {
    fields([
        ("Code", Value::from(200)),
        ("Message", Value::from("operation success.")),
        ("Success", Value::from(true)),
    ])
}
