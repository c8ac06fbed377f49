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
use sha1::Sha1;

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
