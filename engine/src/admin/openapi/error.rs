//! The OpenAPI's errors as the product reports them: an HTTP status and a
//! JSON body with `Code`, `Message` and `RequestId`. The official SDKs turn
//! such an answer into an exception whose `code` is `Code`.

use crate::core::aliyun::registry::RegistryError;
use crate::shard::NoAnswer;

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The product's error code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A mandatory parameter is absent.
    pub fn missing(name: &str) -> ApiError {
        ApiError::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    /// A parameter is malformed or out of range.
    pub fn invalid(name: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid: {why}"),
        )
    }

    /// The action is not one this endpoint serves.
    pub fn unknown_action(action: &str) -> ApiError {
        ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api is not found, please check your url and method: {action}"),
        )
    }

    /// Too many requests at once.
    pub fn throttled() -> ApiError {
        ApiError::new(
            400,
            "Throttling",
            "Request was denied due to request throttling.",
        )
    }

    /// The shards did not answer in time.
    pub fn unavailable(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("The request has failed due to a temporary failure of the server: {why}"),
        )
    }
}

impl From<NoAnswer> for ApiError {
    fn from(e: NoAnswer) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let message = e.to_string();
        match e {
            RegistryError::Invalid(_) => ApiError::new(400, "InvalidParameter", message),
            RegistryError::NotFound(what, _) => {
                ApiError::new(404, &format!("{}.NotFound", camel(what)), message)
            }
            RegistryError::Exists(what, _) => {
                ApiError::new(400, &format!("{}.AlreadyExists", camel(what)), message)
            }
            RegistryError::Quota(_) => ApiError::new(400, "Quota.Exceeded", message),
            RegistryError::Unavailable(_) => ApiError::new(503, "ServiceUnavailable", message),
        }
    }
}

/// `parent topic` → `ParentTopic`, `Group ID` → `GroupId`.
fn camel(what: &str) -> String {
    what.split([' ', '-', '_'])
        .map(|w| {
            let w = match w.chars().all(|c| c.is_ascii_uppercase()) {
                true => w.to_ascii_lowercase(),
                false => w.to_owned(),
            };
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_keep_the_product_codes() {
        let e = ApiError::from(RegistryError::NotFound("Group ID", "GID_x".into()));
        assert_eq!((e.status, e.code.as_str()), (404, "GroupId.NotFound"));
        let e = ApiError::from(RegistryError::Quota("25 parent topics".into()));
        assert_eq!((e.status, e.code.as_str()), (400, "Quota.Exceeded"));
    }
}
