//! The one mapping from Azure SDK errors to [`mvo_core::Error`] variants.
//!
//! Azure Storage answers with an HTTP status and an `x-ms-error-code`: throttling is 503
//! `ServerBusy` (or 429), outages other 5xx and timeouts, a missing RBAC role 403
//! `AuthorizationPermissionMismatch`/`AuthorizationFailure`, bad or expired tokens 401 or 403
//! `AuthenticationFailed`/`InvalidAuthenticationInfo`. Failures of the provider's own credential
//! source travel through the SDK as a boxed source and come back with their classification.

use azure_core::error::ErrorKind;
use mvo_core::Error;

/// The operation being made, for messages: the Azure permission and the container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub permission: &'a str,
    pub container: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(crate) fn on(permission: &'a str, container: &'a str) -> Self {
        Call { permission, container: Some(container) }
    }

    pub(crate) fn global(permission: &'a str) -> Self {
        Call { permission, container: None }
    }

    fn describe(&self) -> String {
        match self.container {
            Some(container) => format!("{} on container {container:?}", self.permission),
            None => self.permission.to_owned(),
        }
    }
}

/// The HTTP status and service error code of an error, when the service answered.
pub(crate) fn status_and_code(err: &azure_core::Error) -> Option<(u16, &str)> {
    match err.kind() {
        ErrorKind::HttpResponse { status, error_code, .. } => {
            Some((u16::from(*status), error_code.as_deref().unwrap_or_default()))
        }
        _ => None,
    }
}

/// Classifies a service answer; `None` for one that has no better name than a provider error.
fn classify(status: u16, code: &str, call: Call<'_>, message: String) -> Error {
    let operation = call.describe();
    match (status, code) {
        (404, _) => Error::NotFound {
            what: match call.container {
                Some(container) => format!("container {container:?}"),
                None => operation,
            },
        },
        (401, _)
        | (403, "AuthenticationFailed" | "InvalidAuthenticationInfo" | "NoAuthenticationInformation") => {
            Error::Unauthenticated { message: format!("{operation}: {message}") }
        }
        (403, _) => Error::PermissionDenied { operation, message },
        (429, _) | (503, "ServerBusy") => Error::Throttled { message: format!("{operation}: {message}") },
        (409, "ContainerBeingDeleted") => Error::Unavailable {
            message: format!("{operation}: the container is still being deleted; try again shortly"),
        },
        (408, _) | (500..=599, _) => Error::Unavailable { message: format!("{operation}: {message}") },
        (_, code) => Error::Rejected {
            operation,
            code: if code.is_empty() { status.to_string() } else { code.to_owned() },
            message,
        },
    }
}

/// Maps an SDK error for `call`.
pub(crate) fn map(err: azure_core::Error, call: Call<'_>) -> Error {
    if let Some(core) = Error::from_source_chain(&err) {
        return core;
    }
    if let Some((status, code)) = status_and_code(&err) {
        let message = if code.is_empty() { format!("HTTP {status}") } else { code.to_owned() };
        return classify(status, code, call, message);
    }
    match err.kind() {
        ErrorKind::Io | ErrorKind::Connection => {
            Error::Unavailable { message: format!("{}: {err}", call.describe()) }
        }
        ErrorKind::Credential => Error::Unauthenticated { message: format!("{}: {err}", call.describe()) },
        _ => Error::Provider { provider: crate::PLATFORM, source: Box::new(err) },
    }
}

/// Whether `err` is the service saying the container does not exist.
pub(crate) fn is_not_found(err: &azure_core::Error) -> bool {
    matches!(status_and_code(err), Some((404, _)))
}

/// Whether `err` is the service saying the container already exists.
pub(crate) fn is_already_exists(err: &azure_core::Error) -> bool {
    matches!(status_and_code(err), Some((409, "ContainerAlreadyExists")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16, code: &str) -> Error {
        classify(status, code, Call::on("containers/write", "c"), "m".into())
    }

    #[test]
    fn statuses_map_to_meanings() {
        assert!(matches!(class(404, "ContainerNotFound"), Error::NotFound { .. }));
        assert!(matches!(class(403, "AuthorizationPermissionMismatch"), Error::PermissionDenied { .. }));
        assert!(matches!(class(403, "AuthenticationFailed"), Error::Unauthenticated { .. }));
        assert!(matches!(class(401, ""), Error::Unauthenticated { .. }));
        assert!(matches!(class(503, "ServerBusy"), Error::Throttled { .. }));
        assert!(matches!(class(429, ""), Error::Throttled { .. }));
        assert!(matches!(class(500, "InternalError"), Error::Unavailable { .. }));
        assert!(matches!(class(503, "ServiceUnavailable"), Error::Unavailable { .. }));
        assert!(matches!(class(409, "ContainerBeingDeleted"), Error::Unavailable { .. }));
        let rejected = class(400, "InvalidMetadata");
        assert!(matches!(&rejected, Error::Rejected { code, .. } if code == "InvalidMetadata"));
        assert!(!rejected.is_retryable());
        assert!(class(403, "AuthorizationFailure").to_string().contains("containers/write"));
    }

    #[test]
    fn core_errors_survive_the_sdk() {
        let inner = Error::Unauthenticated { message: "missing file azure_client_id".into() };
        let wrapped = azure_core::Error::new(ErrorKind::Credential, inner);
        let mapped = map(wrapped, Call::global("containers/read"));
        assert_eq!(mapped.to_string(), "not authenticated: missing file azure_client_id");
    }
}
