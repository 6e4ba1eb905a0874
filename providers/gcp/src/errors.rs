//! The one place where Google Cloud SDK errors become [`mvo_core::Error`] variants.
//!
//! Classification by gRPC status code first, HTTP status second, transport kind last:
//! PERMISSION_DENIED/403 -> `PermissionDenied` naming the IAM permission of the call,
//! NOT_FOUND/404 -> `NotFound`, RESOURCE_EXHAUSTED/429 -> `Throttled`,
//! UNAVAILABLE/DEADLINE_EXCEEDED/INTERNAL/ABORTED/5xx, timeouts and connection failures ->
//! `Unavailable`, UNAUTHENTICATED/401 and credential failures -> `Unauthenticated`,
//! FAILED_PRECONDITION/412 (our metageneration precondition: the bucket changed meanwhile) ->
//! `Unavailable`, so the next check re-reads and retries. ALREADY_EXISTS is not mapped here: the
//! store decides between "ours" and `AlreadyOwnedByOther` ([`is_conflict`]); the rest -> `Provider`.

use google_cloud_gax::error::{Error as GaxError, rpc::Code};
use mvo_core::Error;

use crate::PLATFORM;

/// What a failed call is about, for messages and the `PermissionDenied` operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// IAM permission the call needs, e.g. `storage.buckets.update`.
    pub permission: &'static str,
    /// The bucket, when the call is about one.
    pub bucket: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call about `bucket`.
    pub fn on(permission: &'static str, bucket: &'a str) -> Self {
        Call { permission, bucket: Some(bucket) }
    }

    /// A call about no particular bucket (listing).
    pub fn global(permission: &'static str) -> Self {
        Call { permission, bucket: None }
    }

    fn what(&self) -> String {
        match self.bucket {
            Some(bucket) => format!("{} on bucket {bucket:?}", self.permission),
            None => self.permission.to_owned(),
        }
    }
}

/// The gRPC status code of a service error.
pub(crate) fn code(err: &GaxError) -> Option<Code> {
    err.status().map(|s| s.code)
}

/// True for "the bucket name exists" (gRPC ALREADY_EXISTS, HTTP 409).
pub(crate) fn is_conflict(err: &GaxError) -> bool {
    code(err) == Some(Code::AlreadyExists) || (err.status().is_none() && err.http_status_code() == Some(409))
}

/// True for "no such bucket" (gRPC NOT_FOUND, HTTP 404).
pub(crate) fn is_not_found(err: &GaxError) -> bool {
    code(err) == Some(Code::NotFound) || (err.status().is_none() && err.http_status_code() == Some(404))
}

/// True for "not allowed" (gRPC PERMISSION_DENIED, HTTP 403).
pub(crate) fn is_denied(err: &GaxError) -> bool {
    code(err) == Some(Code::PermissionDenied)
        || (err.status().is_none() && err.http_status_code() == Some(403))
}

/// Classifies an SDK error into a core error variant.
pub(crate) fn map(err: GaxError, call: Call<'_>) -> Error {
    // Failures of our own credential source (missing file, malformed JSON) travel through the SDK
    // as a source; give the caller the original classification, naming the file or field.
    if let Some(core) = Error::from_source_chain(&err) {
        return core;
    }
    let what = call.what();
    if err.is_authentication() {
        return Error::Unauthenticated { message: format!("{what}: credentials unavailable: {err}") };
    }
    if let Some(status) = err.status() {
        let message = format!("{what}: {} {}", status.code.name(), status.message);
        if let Some(mapped) = classify_code(status.code, call, message) {
            return mapped;
        }
    } else if let Some(http) = err.http_status_code() {
        if let Some(mapped) = classify_http(http, call, format!("{what}: HTTP {http}")) {
            return mapped;
        }
    } else if err.is_timeout() || err.is_io() || err.is_connect() || err.is_transport() || err.is_exhausted()
    {
        return Error::Unavailable { message: format!("{what}: {err}") };
    }
    Error::Provider { provider: PLATFORM, source: Box::new(err) }
}

/// The variant for a gRPC status code; `None` for "anything else".
fn classify_code(code: Code, call: Call<'_>, message: String) -> Option<Error> {
    Some(match code {
        Code::PermissionDenied => Error::PermissionDenied { operation: call.permission.to_owned(), message },
        Code::NotFound => not_found(call, message),
        Code::ResourceExhausted => Error::Throttled { message },
        // The request is wrong in itself (an invalid label, a malformed field): sending it again
        // cannot succeed, so it is retried only at the resync.
        Code::InvalidArgument | Code::OutOfRange => {
            Error::Rejected { operation: call.permission.to_owned(), code: code.name().to_owned(), message }
        }
        Code::Unauthenticated => Error::Unauthenticated { message },
        // 412: the metageneration precondition failed; someone changed the bucket between our
        // read and our write. Retrying re-reads and recomputes the drift.
        Code::FailedPrecondition => {
            Error::Unavailable { message: format!("{message} (bucket changed meanwhile; will re-read)") }
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Aborted | Code::Unknown => {
            Error::Unavailable { message }
        }
        _ => return None,
    })
}

/// The variant for an HTTP status without a gRPC status; `None` for "anything else".
fn classify_http(http: u16, call: Call<'_>, message: String) -> Option<Error> {
    Some(match http {
        400 => Error::Rejected { operation: call.permission.to_owned(), code: "400".into(), message },
        401 => Error::Unauthenticated { message },
        403 => Error::PermissionDenied { operation: call.permission.to_owned(), message },
        404 => not_found(call, message),
        412 => Error::Unavailable { message: format!("{message} (bucket changed meanwhile; will re-read)") },
        429 => Error::Throttled { message },
        500..=599 => Error::Unavailable { message },
        _ => return None,
    })
}

fn not_found(call: Call<'_>, message: String) -> Error {
    match call.bucket {
        Some(bucket) => Error::bucket_not_found(bucket),
        None => Error::NotFound { what: message },
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_gax::error::{CredentialsError, rpc::Status};

    use super::*;

    fn service(code: Code) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message("m"))
    }

    fn class(code: Code) -> &'static str {
        map(service(code), Call::on("storage.buckets.get", "b")).category()
    }

    #[test]
    fn grpc_codes_map_to_variants() {
        assert_eq!(class(Code::PermissionDenied), "PermissionDenied");
        assert_eq!(class(Code::NotFound), "NotFound");
        assert_eq!(class(Code::ResourceExhausted), "Throttled");
        assert_eq!(class(Code::Unavailable), "Unavailable");
        assert_eq!(class(Code::DeadlineExceeded), "Unavailable");
        assert_eq!(class(Code::Internal), "Unavailable");
        assert_eq!(class(Code::Unauthenticated), "Unauthenticated");
        assert_eq!(class(Code::FailedPrecondition), "Unavailable");
        assert_eq!(class(Code::InvalidArgument), "RequestRejected");
        assert_eq!(class(Code::OutOfRange), "RequestRejected");
        assert_eq!(class(Code::AlreadyExists), "ProviderError");
    }

    #[test]
    fn metageneration_mismatch_is_retryable() {
        let err = map(service(Code::FailedPrecondition), Call::on("storage.buckets.update", "b"));
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("changed meanwhile"), "{err}");
    }

    #[test]
    fn http_statuses_map_to_variants() {
        let http = |status: u16| {
            let err = GaxError::http(status, Default::default(), Default::default());
            map(err, Call::on("storage.buckets.get", "b")).category()
        };
        assert_eq!(http(401), "Unauthenticated");
        assert_eq!(http(403), "PermissionDenied");
        assert_eq!(http(404), "NotFound");
        assert_eq!(http(412), "Unavailable");
        assert_eq!(http(429), "Throttled");
        assert_eq!(http(503), "Unavailable");
        assert_eq!(http(400), "RequestRejected");
    }

    #[test]
    fn permission_denied_names_the_iam_permission() {
        let err = map(service(Code::PermissionDenied), Call::on("storage.buckets.update", "b"));
        assert!(
            matches!(&err, Error::PermissionDenied { operation, .. } if operation == "storage.buckets.update"),
            "{err}"
        );
        let err = map(service(Code::NotFound), Call::on("storage.buckets.get", "gone"));
        assert_eq!(err.to_string(), "bucket \"gone\" not found");
    }

    #[test]
    fn conflicts_are_recognised_and_timeouts_are_unavailable() {
        assert!(is_conflict(&service(Code::AlreadyExists)));
        assert!(!is_conflict(&service(Code::NotFound)));
        assert!(is_not_found(&service(Code::NotFound)));
        assert!(is_denied(&service(Code::PermissionDenied)));
        let err = map(GaxError::timeout("deadline"), Call::global("storage.buckets.list"));
        assert_eq!(err.category(), "Unavailable");
    }

    #[test]
    fn credential_failures_are_unauthenticated_and_keep_the_core_message() {
        let core = Error::Unauthenticated { message: "missing file service_account.json".into() };
        let err = GaxError::authentication(CredentialsError::from_source(false, core));
        let mapped = map(err, Call::on("storage.buckets.get", "b"));
        assert_eq!(mapped.to_string(), "not authenticated: missing file service_account.json");
        let err = GaxError::authentication(CredentialsError::from_msg(true, "token endpoint down"));
        assert_eq!(map(err, Call::global("storage.buckets.list")).category(), "Unauthenticated");
    }
}
