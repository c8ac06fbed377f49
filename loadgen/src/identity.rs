//! Client ids and credentials, plain or Alibaba Cloud MQTT style.
//!
//! Alibaba's Signature mode: user name `Signature|<AccessKeyId>|<InstanceId>`,
//! password `base64(HMAC-SHA1(AccessKeySecret, ClientId))`, and client ids
//! `<GroupId>@@@<DeviceId>` of at most 64 characters.

use crate::cli::RunArgs;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Longest client id Alibaba accepts; plain ids stay under it too.
const CLIENT_ID_CHARS_MAX: usize = 64;

/// How every client of a run names itself and signs in.
#[derive(Debug, Clone)]
pub struct Identity {
    run_id: String,
    group_id: Option<String>,
    signature: Option<(String, String, String)>,
    username: Option<String>,
    password: Option<Bytes>,
}

impl Identity {
    /// From the command line; `run_id` keeps ids of concurrent runs apart.
    pub fn new(args: &RunArgs, run_id: &str) -> Identity {
        let signature = match (&args.access_key, &args.secret_key, &args.instance_id) {
            (Some(ak), Some(sk), Some(inst)) => Some((ak.clone(), sk.clone(), inst.clone())),
            _ => None,
        };
        Identity {
            run_id: run_id.to_owned(),
            group_id: args.group_id.clone(),
            signature,
            username: args.username.clone(),
            password: args.password.clone().map(Bytes::from),
        }
    }

    /// The id of client `i` of a role (`p`ublisher, `s`ubscriber, `c`onnection).
    pub fn client_id(&self, role: char, i: u32) -> String {
        let device = format!("lg{}{role}{i}", self.run_id);
        let id = match &self.group_id {
            Some(group) => format!("{group}@@@{device}"),
            None => device,
        };
        id.chars().take(CLIENT_ID_CHARS_MAX).collect()
    }

    /// User name and password for `client_id`.
    pub fn credentials(&self, client_id: &str) -> (Option<String>, Option<Bytes>) {
        match &self.signature {
            Some((ak, sk, instance)) => (
                Some(format!("Signature|{ak}|{instance}")),
                Some(Bytes::from(signature(sk, client_id))),
            ),
            None => (self.username.clone(), self.password.clone()),
        }
    }
}

/// `base64(HMAC-SHA1(secret, message))`.
pub fn signature(secret: &str, message: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_base64_hmac_sha1_of_the_client_id() {
        // RFC 2202 test case 2 for HMAC-SHA1, in base64.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }
}
