//! The one seam for authentication and authorization. An [`Authenticator`]
//! decides each CONNECT; an [`Authorizer`] decides each PUBLISH and each
//! SUBSCRIBE filter. The default allows everything (a broker on loopback);
//! password and ACL files, and later the Alibaba Signature/Token modes, plug
//! in here.

use std::fmt;

use ringmq_protocol::{Connect, ReasonCode};

/// Who a connection is, as far as authorization cares.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The Client Identifier.
    pub client_id: &'a str,
    /// The User Name, if one was given.
    pub username: Option<&'a str>,
}

/// Decides whether a CONNECT is let in.
pub trait Authenticator: fmt::Debug {
    /// `Ok` to accept; `Err` with the CONNACK reason code otherwise
    /// (typically 0x86 Bad User Name or Password, or 0x87 Not Authorized).
    fn authenticate(&self, connect: &Connect) -> Result<(), ReasonCode>;
}

/// Decides what an accepted client may do.
pub trait Authorizer: fmt::Debug {
    /// Whether `who` may publish to `topic`.
    fn can_publish(&self, who: Principal<'_>, topic: &str) -> bool;
    /// Whether `who` may subscribe to `filter` (as written, `$share/` included).
    fn can_subscribe(&self, who: Principal<'_>, filter: &str) -> bool;
}

/// Lets everyone in and allows everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &Connect) -> Result<(), ReasonCode> {
        Ok(())
    }
}

impl Authorizer for AllowAll {
    fn can_publish(&self, _: Principal<'_>, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: Principal<'_>, _: &str) -> bool {
        true
    }
}

/// The authenticator and authorizer of one shard.
#[derive(Debug)]
pub struct Auth {
    /// Decides CONNECT.
    pub authenticator: Box<dyn Authenticator>,
    /// Decides PUBLISH and SUBSCRIBE.
    pub authorizer: Box<dyn Authorizer>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            authenticator: Box::new(AllowAll),
            authorizer: Box::new(AllowAll),
        }
    }
}
