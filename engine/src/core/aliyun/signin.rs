//! Sign-in modes of the product: the user name says which, the password
//! proves it.
//!
//! | mode | user name | password |
//! |---|---|---|
//! | Signature | `Signature|<AccessKeyId>|<InstanceId>` | `base64(HMAC-SHA1(secret, ClientId))` |
//! | Token | `Token|<AccessKeyId>|<InstanceId>` | `R|t1|W|t2`, `RW|t` |
//! | DeviceCredential | `DeviceCredential|<DeviceAccessKeyId>|<InstanceId>` | `base64(HMAC-SHA1(device secret, ClientId))` |
//! | legacy | `<AccessKeyId>` | `base64(HMAC-SHA1(secret, GroupId))` |

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ringmq_protocol::Connect;
use sha1::Sha1;

use super::custom::{CustomAuth, Lookup, Subject};
use super::names;
use super::token::{self, Grant, TokenError};
use super::Aliyun;

/// How a client signs in, from its user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// An instance access key signs the client id.
    Signature {
        /// AccessKeyId.
        key: &'a str,
        /// InstanceId.
        instance: &'a str,
    },
    /// Tokens in the password.
    Token {
        /// AccessKeyId.
        key: &'a str,
        /// InstanceId.
        instance: &'a str,
    },
    /// A per-device key signs the client id.
    DeviceCredential {
        /// DeviceAccessKeyId.
        key: &'a str,
        /// InstanceId.
        instance: &'a str,
    },
    /// An access key signs the Group ID (no instance id).
    Legacy {
        /// AccessKeyId.
        key: &'a str,
    },
}

impl<'a> Mode<'a> {
    /// The mode of `username`; `None` if it is none of them.
    pub fn parse(username: &'a str) -> Option<Mode<'a>> {
        let mut parts = username.split('|');
        let first = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        match (first, rest.as_slice()) {
            ("Signature", [key, instance]) => Some(Mode::Signature { key, instance }),
            ("Token", [key, instance]) => Some(Mode::Token { key, instance }),
            ("DeviceCredential", [key, instance]) => Some(Mode::DeviceCredential { key, instance }),
            (key, []) if !key.is_empty() => Some(Mode::Legacy { key }),
            _ => None,
        }
    }

    /// The name of the mode, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Signature { .. } => "Signature",
            Mode::Token { .. } => "Token",
            Mode::DeviceCredential { .. } => "DeviceCredential",
            Mode::Legacy { .. } => "legacy",
        }
    }
}

/// Whether `password` is `base64(HMAC-SHA1(secret, message))`; the MACs
/// are compared in constant time.
pub fn verify_signature(secret: &str, message: &str, password: &[u8]) -> bool {
    let Ok(given) = STANDARD.decode(password) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.chain_update(message.as_bytes())
        .verify_slice(&given)
        .is_ok()
}

/// `base64(HMAC-SHA1(secret, message))`: what a client sends as password.
pub fn signature(secret: &str, message: &str) -> String {
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    STANDARD.encode(mac.chain_update(message.as_bytes()).finalize().into_bytes())
}

/// Why a CONNECT did not sign in; the client only sees "not authorized".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// No user name (anonymous).
    #[error("no user name: anonymous clients are refused")]
    Anonymous,
    /// The user name is none of the modes.
    #[error("user name is no sign-in mode")]
    UnknownMode,
    /// The instance id is not this instance's.
    #[error("{0}: wrong instance id")]
    WrongInstance(&'static str),
    /// The access key (or device key) is not known.
    #[error("{0}: unknown access key")]
    UnknownKey(&'static str),
    /// The signature does not verify.
    #[error("{0}: bad signature")]
    BadSignature(&'static str),
    /// A device key used with another client id.
    #[error("DeviceCredential: the key belongs to another client id")]
    WrongDevice,
    /// A client id with a CLIENT identity, signed in with another user
    /// name.
    #[error("custom auth: the client id belongs to a CLIENT identity of another user name")]
    OtherIdentity,
    /// A token is not valid.
    #[error("Token: {0}")]
    Token(TokenError),
}

/// A client that signed in: what limits it beyond the profile's rules.
#[derive(Debug, Clone, Default)]
pub struct SignedIn {
    /// Its tokens (Token mode).
    pub grant: Option<Grant>,
    /// It signed in with a custom identity: its permissions decide.
    pub custom: Option<Subject>,
}

impl Aliyun {
    /// Signs a CONNECT in; a Token-mode client gets what its tokens grant.
    pub fn sign_in(&self, c: &Connect, now_ms: u64) -> Result<SignedIn, SignInError> {
        let username = c.username.as_ref().ok_or(SignInError::Anonymous)?;
        let password = c.password.as_deref().unwrap_or_default();
        let client_id = c.client_id.as_str();
        let r = &self.registry;
        match r.custom.identity(username.as_str(), client_id) {
            Lookup::Found(identity) => {
                return match CustomAuth::verify(identity, client_id, password) {
                    true => Ok(SignedIn {
                        grant: None,
                        custom: Some(identity.subject()),
                    }),
                    false => Err(SignInError::BadSignature("custom identity")),
                };
            }
            Lookup::Refused => return Err(SignInError::OtherIdentity),
            Lookup::None => {}
        }
        let mode = Mode::parse(username.as_str()).ok_or(SignInError::UnknownMode)?;
        let keys = |grant| {
            Ok(SignedIn {
                grant,
                custom: None,
            })
        };
        let instance_ok = |i: &str| i == r.instance_id;
        match mode {
            Mode::Signature { instance, .. }
            | Mode::Token { instance, .. }
            | Mode::DeviceCredential { instance, .. }
                if !instance_ok(instance) =>
            {
                Err(SignInError::WrongInstance(mode.name()))
            }
            Mode::Signature { key, .. } => {
                let secret = r
                    .access_keys
                    .get(key)
                    .ok_or(SignInError::UnknownKey("Signature"))?;
                match verify_signature(secret, client_id, password) {
                    true => keys(None),
                    false => Err(SignInError::BadSignature("Signature")),
                }
            }
            Mode::DeviceCredential { key, .. } => {
                let cred = r
                    .credential_by_key(key)
                    .ok_or(SignInError::UnknownKey("DeviceCredential"))?;
                if cred.client_id != client_id {
                    return Err(SignInError::WrongDevice);
                }
                match verify_signature(&cred.secret, client_id, password) {
                    true => keys(None),
                    false => Err(SignInError::BadSignature("DeviceCredential")),
                }
            }
            Mode::Legacy { key } => {
                let secret = r
                    .access_keys
                    .get(key)
                    .ok_or(SignInError::UnknownKey("legacy"))?;
                let group = client_id.split(names::GROUP_SEPARATOR).next().unwrap_or("");
                match verify_signature(secret, group, password) {
                    true => keys(None),
                    false => Err(SignInError::BadSignature("legacy")),
                }
            }
            Mode::Token { key, .. } => {
                if !r.access_keys.contains_key(key) {
                    return Err(SignInError::UnknownKey("Token"));
                }
                let password = std::str::from_utf8(password)
                    .map_err(|_| SignInError::Token(TokenError::Malformed))?;
                keys(Some(self.grant(key, password, now_ms)?))
            }
        }
    }

    /// The grant of a Token-mode password: every token must be valid and
    /// applied for by `key`.
    fn grant(&self, key: &str, password: &str, now_ms: u64) -> Result<Grant, SignInError> {
        let pairs = token::parse_password(password).map_err(SignInError::Token)?;
        let mut grant = Grant::default();
        for (kind, text) in pairs {
            let claims = self
                .verify_token(text, now_ms)
                .map_err(SignInError::Token)?;
            if claims.access_key != key {
                return Err(SignInError::Token(TokenError::BadSignature));
            }
            grant.put(claims, kind).map_err(SignInError::Token)?;
        }
        Ok(grant)
    }

    /// Checks a token against this instance's keys and revocations.
    pub fn verify_token(&self, text: &str, now_ms: u64) -> Result<token::Claims, TokenError> {
        let r = &self.registry;
        token::verify(
            text,
            &r.instance_id,
            now_ms,
            |ak| r.access_keys.get(ak).cloned(),
            |id| r.is_revoked(id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_select_the_mode() {
        assert_eq!(
            Mode::parse("Signature|AK|inst"),
            Some(Mode::Signature {
                key: "AK",
                instance: "inst"
            })
        );
        assert_eq!(
            Mode::parse("Token|AK|inst"),
            Some(Mode::Token {
                key: "AK",
                instance: "inst"
            })
        );
        assert_eq!(
            Mode::parse("DeviceCredential|DK|inst"),
            Some(Mode::DeviceCredential {
                key: "DK",
                instance: "inst"
            })
        );
        assert_eq!(Mode::parse("AK"), Some(Mode::Legacy { key: "AK" }));
        assert_eq!(Mode::parse("Signature|AK"), None);
        assert_eq!(Mode::parse("Other|AK|inst"), None);
        assert_eq!(Mode::parse(""), None);
    }

    #[test]
    fn signatures_are_hmac_sha1_in_base64() {
        // RFC 2202 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        assert!(verify_signature(
            "Jefe",
            "what do ya want for nothing?",
            b"7/zfauXrL6LSdBbV8YTfnCWafHk="
        ));
        assert!(!verify_signature(
            "Jefe",
            "what do ya want for nothing?",
            b"7/zfauXrL6LSdBbV8YTfnCWafHj="
        ));
        assert!(!verify_signature(
            "Jefe",
            "what do ya want for nothing?",
            b"not base64!"
        ));
    }
}
