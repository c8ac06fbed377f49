//! The product's OpenAPI (version 2020-04-20, RPC style), usable by
//! Alibaba's own SDKs with only the endpoint changed: the action from
//! `Action` or `x-acs-action`, parameters from the query string and a form
//! body, a signature (ACS3-HMAC-SHA256 or RPC v1 HMAC-SHA1) checked against
//! the instance's access keys, JSON answers with `RequestId`, and errors as
//! the product's HTTP status with `Code`, `Message`, `RequestId`. Served in
//! the aliyun profile (the access keys and the registry live there).

pub mod actions;
pub mod error;
pub mod params;
pub mod sign;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use serde_json::{json, Map, Value};

use self::actions::Fields;
use self::error::ApiError;
use self::params::Params;
use super::app::App;
use super::server::{answer, read_body, Answer};

/// The API version served.
pub const VERSION: &str = "2020-04-20";

/// Handles one OpenAPI request: the body is read here, the rest runs on
/// the blocking pool (the registry's lock and the shards may make it
/// wait; the runtime's thread never does).
pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return refused(&app, "", &e),
    };
    let worker = Arc::clone(&app);
    let handled = tokio::task::spawn_blocking(move || handle(&worker, &parts, &body)).await;
    let (action, result) = handled.unwrap_or_else(|e| {
        let e = ApiError::new(500, "InternalError", e.to_string());
        (String::new(), Err(e))
    });
    match result {
        Ok(fields) => {
            app.count(None);
            ok_answer(fields)
        }
        Err(e) => refused(&app, &action, &e),
    }
}

/// Logs and counts a refused request; its answer.
pub fn refused(app: &App, action: &str, e: &ApiError) -> Answer {
    app.count(Some(e));
    tracing::info!(action, code = %e.code, status = e.status, "OpenAPI request refused: {}", e.message);
    error_answer(e)
}

/// Parameters, signature, action; returns the action's name (for the log)
/// and its answer.
fn handle(app: &App, parts: &Parts, body: &[u8]) -> (String, Result<Fields, ApiError>) {
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let raw_query = parts.uri.query().unwrap_or("");
    let query = Params::parse(raw_query, None);
    let params = Params::parse(raw_query, is_form.then_some(body));
    let header = |name: &str| {
        let value = parts.headers.get(name)?;
        value.to_str().ok().map(str::to_owned)
    };
    let signed = sign::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        header: &header,
        query: &query,
        params: &params,
        body,
    };
    let hint = params
        .get("Action")
        .map(str::to_owned)
        .or_else(|| header("x-acs-action"));
    match authenticate(app, &signed) {
        Ok((key, action)) => {
            let answer = actions::run(app, &action, &params, &key);
            (action, answer)
        }
        Err(e) => (hint.unwrap_or_default(), Err(e)),
    }
}

/// The profile, the version, the signature and the action; returns the
/// access key that signed the request and the action it signed: ACS3
/// signs the `x-acs-action` header, RPC v1 the `Action` parameter.
fn authenticate(app: &App, req: &sign::Request<'_>) -> Result<(String, String), ApiError> {
    let Some(registrar) = app.handle.registrar() else {
        return Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "The OpenAPI is served in the aliyun profile only (profile = \"aliyun\").",
        ));
    };
    let version = req
        .params
        .get("Version")
        .map(str::to_owned)
        .or_else(|| (req.header)("x-acs-version"));
    if version.as_deref().is_some_and(|v| v != VERSION) {
        return Err(ApiError::new(
            400,
            "InvalidVersion",
            format!("Specified parameter Version is not valid; this endpoint serves {VERSION}."),
        ));
    }
    let now = (crate::instance::registrar::now_ms() / 1000) as i64;
    let secret = |id: &str| registrar.access_key_secret(id);
    let key = app.verifier().verify(req, secret, now)?;
    let action = match (req.header)("authorization") {
        Some(_) => {
            let signed = (req.header)("x-acs-action").unwrap_or_default();
            if req.params.get("Action").is_some_and(|a| a != signed) {
                return Err(ApiError::invalid(
                    "Action",
                    "differs from the signed x-acs-action",
                ));
            }
            signed
        }
        None => req.params.required("Action")?.to_owned(),
    };
    Ok((key, action))
}

/// A JSON answer: `fields` and a `RequestId`.
fn ok_answer(fields: Map<String, Value>) -> Answer {
    let mut body = fields;
    body.insert("RequestId".into(), Value::String(request_id()));
    answer(
        StatusCode::OK,
        "application/json;charset=utf-8",
        Value::Object(body).to_string(),
    )
}

/// An error answer: the product's status and JSON body.
pub fn error_answer(e: &ApiError) -> Answer {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({
        "RequestId": request_id(),
        "HostId": "ringmq",
        "Code": e.code,
        "Message": e.message,
    });
    answer(status, "application/json;charset=utf-8", body.to_string())
}

/// A fresh request id in the product's form (a UUID, upper case).
fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
