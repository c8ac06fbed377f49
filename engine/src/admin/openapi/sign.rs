//! The two request signatures of the product's OpenAPI, verified against
//! the instance's access keys: ACS3-HMAC-SHA256 (current SDKs, in the
//! `Authorization` header) and RPC v1 HMAC-SHA1 (older SDKs, in the
//! `Signature` parameter). Both carry a timestamp, accepted within
//! `signature_window_secs` of the server's clock, and a nonce, accepted
//! once within that window.

use std::collections::{HashSet, VecDeque};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::params::Params;
use crate::core::trace::time::parse_utc;

/// The ACS3 algorithm's name, first in `Authorization`.
pub const ACS3: &str = "ACS3-HMAC-SHA256";

/// What a signature is checked against.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path (`/`).
    pub path: &'a str,
    /// Header value by lowercase name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    /// The query string's parameters (ACS3 signs these; a form body only
    /// through its hash).
    pub query: &'a Params,
    /// Query string and form parameters (RPC v1 signs them all).
    pub params: &'a Params,
    /// The raw body.
    pub body: &'a [u8],
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Checks signatures and remembers nonces.
#[derive(Debug)]
pub struct Verifier {
    window_secs: i64,
    nonces: Nonces,
}

impl Verifier {
    /// A verifier accepting timestamps within `window_secs` of now and
    /// remembering up to `nonces_max` nonces.
    pub fn new(window_secs: u64, nonces_max: usize) -> Verifier {
        Verifier {
            window_secs: i64::try_from(window_secs).unwrap_or(i64::MAX),
            nonces: Nonces::new(nonces_max),
        }
    }

    /// Verifies `req` at `now_secs`, with `secret` giving an access key's
    /// secret; returns the access key id that signed it.
    pub fn verify(
        &mut self,
        req: &Request<'_>,
        secret: impl Fn(&str) -> Option<String>,
        now_secs: i64,
    ) -> Result<String, ApiError> {
        let signed = match (req.header)("authorization") {
            Some(auth) => acs3(req, &auth, &secret)?,
            None => rpc_v1(req, &secret)?,
        };
        let at = parse_utc(&signed.timestamp).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        if (now_secs - at).abs() > self.window_secs {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                format!(
                    "Specified time stamp or date value is expired (more than {} s from the server's clock).",
                    self.window_secs
                ),
            ));
        }
        // A replay is refused by its timestamp once `at + window` has
        // passed: the nonce is kept until then.
        let until = at.max(now_secs).saturating_add(self.window_secs);
        self.nonces
            .remember(&signed.key_id, &signed.nonce, now_secs, until)?;
        Ok(signed.key_id)
    }
}

/// What a verified signature vouches for.
struct Signed {
    key_id: String,
    timestamp: String,
    nonce: String,
}

/// The gateway's message carries the server's string to sign after a
/// colon; the space after it keeps the older SDK from renaming the code.
fn mismatch(to_sign: &str) -> ApiError {
    ApiError::new(
        400,
        "SignatureDoesNotMatch",
        format!("Specified signature is not matched with our calculation. server string to sign is: {to_sign}"),
    )
}

fn unknown_key() -> ApiError {
    ApiError::new(
        404,
        "InvalidAccessKeyId.NotFound",
        "Specified access key is not found.",
    )
}

fn incomplete(why: &str) -> ApiError {
    ApiError::new(
        400,
        "IncompleteSignature",
        format!("The request signature does not conform to Aliyun standards: {why}"),
    )
}

/// `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
fn acs3(
    req: &Request<'_>,
    auth: &str,
    secret: &impl Fn(&str) -> Option<String>,
) -> Result<Signed, ApiError> {
    let rest = auth
        .strip_prefix(ACS3)
        .ok_or_else(|| incomplete("the algorithm is not ACS3-HMAC-SHA256"))?;
    let (mut key_id, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.trim().split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => key_id = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let key_id = key_id.ok_or_else(|| incomplete("no Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in [
        "host",
        "x-acs-action",
        "x-acs-date",
        "x-acs-signature-nonce",
    ] {
        if !names.contains(&required) {
            return Err(incomplete(&format!("{required} is not signed")));
        }
    }
    if let Some(absent) = names.iter().find(|n| (req.header)(n).is_none()) {
        return Err(incomplete(&format!(
            "signed header {absent} is absent or not ASCII"
        )));
    }
    let secret = secret(key_id).ok_or_else(unknown_key)?;
    let body_hash = hex::encode(Sha256::digest(req.body));
    let canonical = acs3_canonical(req, &names, signed_headers, &body_hash);
    let to_sign = format!(
        "{ACS3}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    if (req.header)("x-acs-content-sha256").is_some_and(|h| !h.eq_ignore_ascii_case(&body_hash)) {
        return Err(mismatch(&to_sign));
    }
    let expected = hex::decode(signature).map_err(|_| mismatch(&to_sign))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| mismatch(&to_sign))?;
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| mismatch(&to_sign))?;
    let header = |n: &str| (req.header)(n).unwrap_or_default();
    Ok(Signed {
        key_id: key_id.to_owned(),
        timestamp: header("x-acs-date"),
        nonce: header("x-acs-signature-nonce"),
    })
}

/// The ACS3 canonical request: method, path, sorted encoded query, the
/// signed headers in their listed order (`name:trimmed value` lines),
/// their list, and the body's SHA-256.
fn acs3_canonical(
    req: &Request<'_>,
    names: &[&str],
    signed_headers: &str,
    body_hash: &str,
) -> String {
    let mut out = format!("{}\n{}\n", req.method, req.path);
    out.push_str(&canonical_query(req.query.iter()));
    out.push('\n');
    for name in names {
        let value = (req.header)(name).unwrap_or_default();
        out.push_str(&format!("{name}:{}\n", value.trim()));
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(body_hash);
    out
}

/// RPC v1: `Signature` = base64 HMAC-SHA1(secret + "&", METHOD&%2F&
/// encoded sorted parameters without `Signature`).
fn rpc_v1(req: &Request<'_>, secret: &impl Fn(&str) -> Option<String>) -> Result<Signed, ApiError> {
    let p = req.params;
    let Some(signature) = p.get("Signature") else {
        return Err(ApiError::new(
            400,
            "MissingSignature",
            "The input parameter \"Signature\" that is mandatory for processing this request is not supplied.",
        ));
    };
    let key_id = p.required("AccessKeyId")?;
    let method = p.get("SignatureMethod").unwrap_or("HMAC-SHA1");
    if method != "HMAC-SHA1" {
        return Err(ApiError::new(
            400,
            "InvalidSignatureMethod",
            format!("Specified signature method {method} is not supported; use HMAC-SHA1."),
        ));
    }
    let secret = secret(key_id).ok_or_else(unknown_key)?;
    let query = canonical_query(p.iter().filter(|(k, _)| *k != "Signature"));
    let to_sign = format!(
        "{}&{}&{}",
        req.method,
        encode(req.path, true),
        encode(&query, true)
    );
    let expected = STANDARD.decode(signature).map_err(|_| mismatch(&to_sign))?;
    let key = format!("{secret}&");
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).map_err(|_| mismatch(&to_sign))?;
    mac.update(to_sign.as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| mismatch(&to_sign))?;
    Ok(Signed {
        key_id: key_id.to_owned(),
        timestamp: p.required("Timestamp")?.to_owned(),
        nonce: p.required("SignatureNonce")?.to_owned(),
    })
}

/// `k=v&…`, names and values percent-encoded, sorted by encoded name.
pub fn canonical_query<'a>(params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// RFC 3986 percent-encoding: letters, digits and `-_.~` stay, every
/// other byte becomes `%XX` (upper case); `/` stays unless `slash`.
pub fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Nonces whose request could still be replayed, as keyed 64-bit hashes
/// (a few tens of bytes each), in arrival order with the time each may be
/// forgotten (timestamps are near now, so that order is nearly theirs).
#[derive(Debug)]
struct Nonces {
    seen: HashSet<u64>,
    order: VecDeque<(i64, u64)>,
    max: usize,
    hasher: ahash::RandomState,
}

impl Nonces {
    fn new(max: usize) -> Nonces {
        Nonces {
            seen: HashSet::new(),
            order: VecDeque::new(),
            max,
            hasher: ahash::RandomState::new(),
        }
    }

    /// Accepts `nonce` of `key_id` once until `until` (when its request's
    /// timestamp is refused anyway); a replay before is
    /// `SignatureNonceUsed`.
    fn remember(
        &mut self,
        key_id: &str,
        nonce: &str,
        now: i64,
        until: i64,
    ) -> Result<(), ApiError> {
        if nonce.is_empty() {
            return Err(ApiError::missing("SignatureNonce"));
        }
        while let Some(&(forget_at, h)) = self.order.front() {
            if forget_at >= now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&h);
        }
        let h = self.hasher.hash_one((key_id, nonce));
        if self.seen.contains(&h) {
            return Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        if self.seen.len() >= self.max {
            return Err(ApiError::throttled());
        }
        self.seen.insert(h);
        self.order.push_back((until, h));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify_at(req: &Request<'_>, now: &str) -> Result<String, ApiError> {
        let now = parse_utc(now).expect("time");
        Verifier::new(900, 100).verify(req, |id| (id == "ak").then(|| "sk".to_owned()), now)
    }

    /// A request captured from `alibabacloud-onsmqtt20200420` 1.7.1.
    #[test]
    fn accepts_an_acs3_request_of_the_sdk() {
        let query = Params::parse(
            "ClientId=GID_a%40%40%40dev+1%2F%C3%A9%2A~%2B&InstanceId=mqtt-cn-x",
            None,
        );
        let headers = [
            ("accept", "application/json"),
            ("host", "127.0.0.1:18765"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-action", "QuerySessionByClientId"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("x-acs-date", "2026-11-30T07:52:56Z"),
            ("x-acs-signature-nonce", "74a8edc10fcceed233d30b307b2ab358"),
            ("x-acs-version", "2020-04-20"),
            ("authorization", "ACS3-HMAC-SHA256 Credential=ak,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=6ecc5f969faa80288c39fb4d9b944a2ca06497e24bc5aa994352f95c2bddcf87"),
        ];
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        };
        let req = Request {
            method: "POST",
            path: "/",
            header: &header,
            query: &query,
            params: &query,
            body: b"",
        };
        assert_eq!(verify_at(&req, "2026-11-30T07:53:00Z"), Ok("ak".into()));
        let late = verify_at(&req, "2026-11-30T08:10:00Z").map_err(|e| e.code);
        assert_eq!(late, Err("InvalidTimeStamp.Expired".into()));
        let tampered = Params::parse("ClientId=other&InstanceId=mqtt-cn-x", None);
        let req = Request {
            query: &tampered,
            params: &tampered,
            ..req
        };
        let e = verify_at(&req, "2026-11-30T07:53:00Z").expect_err("tampered");
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert!(
            e.message.contains("is: ACS3-HMAC-SHA256\n"),
            "{}",
            e.message
        );
    }

    /// A request captured from `aliyun-python-sdk-onsmqtt` 1.0.5.
    #[test]
    fn accepts_an_rpc_v1_request_of_the_older_sdk() {
        let query = Params::parse("ClientId=GID_a%40%40%40dev%201%2F%C3%A9%2A~%2B&InstanceId=mqtt-cn-x&Version=2020-04-20&Action=QuerySessionByClientId&Format=JSON&RegionId=cn-hangzhou&Timestamp=2026-11-30T07%3A52%3A10Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=f0fbf2e1f4dffefe21d1767993523067&AccessKeyId=ak&Signature=LNw4WSvdukFK52nOHSHVY48YhJ0%3D", None);
        let header = |_: &str| None;
        let req = Request {
            method: "POST",
            path: "/",
            header: &header,
            query: &query,
            params: &query,
            body: b"",
        };
        assert_eq!(verify_at(&req, "2026-11-30T07:52:30Z"), Ok("ak".into()));
        let get = Request {
            method: "GET",
            ..req
        };
        let e = verify_at(&get, "2026-11-30T07:52:30Z").map_err(|e| e.code);
        assert_eq!(
            e,
            Err("SignatureDoesNotMatch".into()),
            "the method is signed"
        );
    }

    #[test]
    fn encoding_keeps_only_unreserved_bytes() {
        assert_eq!(encode("a b*c~d/é", true), "a%20b%2Ac~d%2F%C3%A9");
        assert_eq!(encode("/", false), "/");
    }

    #[test]
    fn a_nonce_is_accepted_once_within_the_window() {
        let mut n = Nonces::new(10);
        assert!(n.remember("ak", "n1", 1000, 1900).is_ok());
        let e = n.remember("ak", "n1", 1001, 1901).expect_err("replay");
        assert_eq!(e.code, "SignatureNonceUsed");
        assert!(
            n.remember("other", "n1", 1001, 1901).is_ok(),
            "per access key"
        );
        assert!(
            n.remember("ak", "n1", 1901, 2801).is_ok(),
            "forgotten once its time is up"
        );
    }

    #[test]
    fn a_full_nonce_store_throttles() {
        let mut n = Nonces::new(2);
        assert!(n.remember("ak", "a", 0, 900).is_ok());
        assert!(n.remember("ak", "b", 0, 900).is_ok());
        let full = n.remember("ak", "c", 0, 900).map_err(|e| e.code);
        assert_eq!(full, Err("Throttling".into()));
        assert!(
            n.remember("ak", "c", 901, 1801).is_ok(),
            "room once they expire"
        );
    }
}
