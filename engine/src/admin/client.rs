//! `ringmq api`: one OpenAPI request, signed with an access key (RPC v1
//! HMAC-SHA1, as the older SDKs sign), sent to the admin endpoint; the
//! JSON answer is returned as is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha1::Sha1;

use super::openapi::sign::{canonical_query, encode};
use super::openapi::VERSION;
use crate::core::trace::time::format_utc;

/// An answer: HTTP status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body (JSON).
    pub body: String,
}

/// Sends `action` with `params` to `endpoint` (`host:port`), signed with
/// access key `key_id` / `secret`.
pub fn call(
    endpoint: &str,
    key_id: &str,
    secret: &str,
    action: &str,
    params: &[(String, String)],
) -> Result<Reply, String> {
    let query = signed_query(key_id, secret, action, params);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(send(endpoint, &query, action))
}

/// The query string of `action` with `params`, the common parameters
/// (fresh nonce, current timestamp) and the RPC v1 signature.
pub fn signed_query(
    key_id: &str,
    secret: &str,
    action: &str,
    params: &[(String, String)],
) -> String {
    let now = (crate::instance::registrar::now_ms() / 1000) as i64;
    let nonce = crate::instance::registrar::hex_id();
    let mut all: Vec<(String, String)> = params.to_vec();
    for (k, v) in [
        ("Action", action.to_owned()),
        ("Version", VERSION.to_owned()),
        ("Format", "JSON".to_owned()),
        ("AccessKeyId", key_id.to_owned()),
        ("SignatureMethod", "HMAC-SHA1".to_owned()),
        ("SignatureVersion", "1.0".to_owned()),
        ("SignatureNonce", nonce),
        ("Timestamp", format_utc(now)),
    ] {
        all.push((k.to_owned(), v));
    }
    let query = canonical_query(all.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let to_sign = format!("POST&{}&{}", encode("/", true), encode(&query, true));
    let signature = match Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()) {
        Ok(mac) => STANDARD.encode(mac.chain_update(to_sign.as_bytes()).finalize().into_bytes()),
        Err(_) => String::new(),
    };
    format!("{query}&Signature={}", encode(&signature, true))
}

async fn send(endpoint: &str, query: &str, action: &str) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::post(format!("/?{query}"))
        .header("host", endpoint)
        .header("x-acs-action", action)
        .header("x-acs-version", VERSION)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
