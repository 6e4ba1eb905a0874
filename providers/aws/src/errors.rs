//! The one place where AWS SDK errors become [`mvo_core::Error`] variants.
//!
//! Everything else in the provider calls [`map`] (or [`map_with`] to treat a "not configured" code
//! as a value first) and never matches on SDK error types, so the classification rules live here:
//! AccessDenied/403 -> `PermissionDenied`, NoSuchBucket/404 -> `NotFound`, throttling and 503 ->
//! `Throttled`, other 5xx, timeouts and dispatch failures -> `Unavailable`, rejected credentials ->
//! `Unauthenticated`, BucketAlreadyExists -> `AlreadyOwnedByOther`, requests S3 refuses as such
//! (invalid argument or tag, malformed body, a bucket in another region, any other 4xx) ->
//! `Rejected`, the rest -> `Provider`.

use aws_sdk_s3::{
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
};
use mvo_core::Error;

use crate::PLATFORM;

/// Error codes meaning the credentials themselves were rejected.
const UNAUTHENTICATED_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "InvalidIdentityToken",
    "IDPCommunicationError",
];

/// Error codes of a cloud asking us to back off.
const THROTTLING_CODES: &[&str] =
    &["SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"];

/// Error codes of a refusal for lack of permission.
const DENIED_CODES: &[&str] = &["AccessDenied", "AccessDeniedException", "AllAccessDisabled"];

/// Error codes of transient server-side trouble that is not throttling.
const UNAVAILABLE_CODES: &[&str] = &["InternalError", "ServiceUnavailable", "RequestTimeout"];

/// Error codes of a request that is wrong in itself: sending it again cannot succeed.
const REJECTED_CODES: &[&str] = &[
    "InvalidArgument",
    "InvalidRequest",
    "MalformedXML",
    "InvalidTag",
    "BadRequest",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "InvalidLocationConstraint",
    "InvalidBucketName",
    "InvalidEncryptionAlgorithmError",
    "KMS.NotFoundException",
    "KMS.DisabledException",
    "MalformedPolicy",
    "EntityTooLarge",
];

/// Error codes of a 4xx that is transient (a conflicting operation on the bucket is running).
const CONFLICT_CODES: &[&str] = &["OperationAborted", "RequestTimeTooSkewed"];

/// What a failed call is about, for messages and the `PermissionDenied` operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// IAM action of the call, e.g. `s3:PutBucketTagging`.
    pub action: &'static str,
    /// The bucket, when the call is about one.
    pub bucket: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call about `bucket`.
    pub fn on(action: &'static str, bucket: &'a str) -> Self {
        Call { action, bucket: Some(bucket) }
    }

    /// A call about no particular bucket (ListBuckets, STS).
    pub fn global(action: &'static str) -> Self {
        Call { action, bucket: None }
    }
}

/// The service error's code, when the cloud sent one and the call failed with a service error.
pub(crate) fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

/// Like [`map`], but a service error whose code is `absent` (e.g. `NoSuchTagSet`) yields
/// `Ok(None)`: S3 reports an unconfigured setting as a 404 with a setting-specific code.
pub(crate) fn map_with<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    absent: &str,
    call: Call<'_>,
) -> mvo_core::Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if code(&err) == Some(absent) => Ok(None),
        Err(err) => Err(map(err, call)),
    }
}

/// Classifies an SDK error into a core error variant.
pub(crate) fn map<E>(err: SdkError<E, HttpResponse>, call: Call<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A failure of our own credential source travels through the SDK as a boxed source; give the
    // caller the original classification (e.g. Unauthenticated naming the missing file).
    if let Some(core) = Error::from_source_chain(&err) {
        return core;
    }
    let what = call.bucket.map(|b| format!("{} on bucket {b:?}", call.action));
    let what = what.unwrap_or_else(|| call.action.to_owned());
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default().to_owned();
            let detail = service.err().message().unwrap_or(&code).to_owned();
            let message = format!("{what}: {}", if detail.is_empty() { status.to_string() } else { detail });
            classify(&code, status, call, message).unwrap_or_else(|| provider(err))
        }
        SdkError::TimeoutError(_) => Error::Unavailable { message: format!("{what}: timed out") },
        SdkError::DispatchFailure(failure) => {
            let kind = if failure.is_timeout() {
                "timed out"
            } else if failure.is_io() {
                "connection failed"
            } else {
                "request could not be sent"
            };
            Error::Unavailable { message: format!("{what}: {kind}") }
        }
        // A response that could not be read is most often a connection cut mid-body.
        SdkError::ResponseError(_) => Error::Unavailable { message: format!("{what}: unreadable response") },
        _ => provider(err),
    }
}

/// The variant for a service error code and HTTP status; `None` for "anything else".
fn classify(code: &str, status: u16, call: Call<'_>, message: String) -> Option<Error> {
    let has = |codes: &[&str]| codes.contains(&code);
    Some(if has(UNAUTHENTICATED_CODES) {
        Error::Unauthenticated { message }
    } else if code == "BucketAlreadyExists" {
        Error::AlreadyOwnedByOther { bucket: call.bucket.unwrap_or_default().to_owned() }
    } else if has(DENIED_CODES) || (code.is_empty() && status == 403) {
        Error::PermissionDenied { operation: call.action.to_owned(), message }
    } else if code == "NoSuchBucket" || status == 404 {
        match call.bucket {
            Some(bucket) => Error::bucket_not_found(bucket),
            None => Error::NotFound { what: message },
        }
    } else if has(THROTTLING_CODES) || status == 429 || status == 503 {
        // S3 signals "back off" with 503 SlowDown; any 503 is treated the same way.
        Error::Throttled { message }
    } else if has(UNAVAILABLE_CODES) || status >= 500 || has(CONFLICT_CODES) {
        Error::Unavailable { message }
    } else if status == 403 {
        Error::PermissionDenied { operation: call.action.to_owned(), message }
    } else if has(REJECTED_CODES) || matches!(status, 301 | 307 | 400..=499) {
        let code = if code.is_empty() { status.to_string() } else { code.to_owned() };
        let message = if matches!(status, 301 | 307) || code == "PermanentRedirect" {
            format!("{message} (the bucket is in another region than the cluster)")
        } else {
            message
        };
        Error::Rejected { operation: call.action.to_owned(), code, message }
    } else {
        return None;
    })
}

fn provider<E>(err: SdkError<E, HttpResponse>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Provider { provider: PLATFORM, source: Box::new(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: &str, status: u16) -> Option<&'static str> {
        let call = Call::on("s3:GetBucketTagging", "b");
        classify(code, status, call, "m".into()).map(|e| e.category())
    }

    #[test]
    fn codes_and_statuses_map_to_variants() {
        assert_eq!(class("AccessDenied", 403), Some("PermissionDenied"));
        assert_eq!(class("", 403), Some("PermissionDenied"));
        assert_eq!(class("NoSuchBucket", 404), Some("NotFound"));
        assert_eq!(class("", 404), Some("NotFound"));
        assert_eq!(class("SlowDown", 503), Some("Throttled"));
        assert_eq!(class("Throttling", 400), Some("Throttled"));
        assert_eq!(class("", 429), Some("Throttled"));
        assert_eq!(class("InternalError", 500), Some("Unavailable"));
        assert_eq!(class("", 502), Some("Unavailable"));
        assert_eq!(class("InvalidAccessKeyId", 403), Some("Unauthenticated"));
        assert_eq!(class("SignatureDoesNotMatch", 403), Some("Unauthenticated"));
        assert_eq!(class("ExpiredToken", 400), Some("Unauthenticated"));
        assert_eq!(class("BucketAlreadyExists", 409), Some("AlreadyOwnedByOther"));
        assert_eq!(class("MalformedXML", 400), Some("RequestRejected"));
        assert_eq!(class("InvalidArgument", 400), Some("RequestRejected"));
        assert_eq!(class("InvalidTag", 400), Some("RequestRejected"));
        assert_eq!(class("BadRequest", 400), Some("RequestRejected"));
        assert_eq!(class("PermanentRedirect", 301), Some("RequestRejected"));
        assert_eq!(class("", 301), Some("RequestRejected"));
        assert_eq!(class("", 400), Some("RequestRejected"));
        assert_eq!(class("OperationAborted", 409), Some("Unavailable"), "a conflicting operation passes");
        assert_eq!(class("", 302), None);
        let err = classify("PermanentRedirect", 301, Call::on("s3:GetBucketTagging", "b"), "m".into());
        assert!(!err.as_ref().is_some_and(Error::is_retryable), "not retried fast");
        assert!(err.expect("classified").to_string().contains("another region"));
    }

    #[test]
    fn permission_denied_names_the_iam_action() {
        let err = classify("AccessDenied", 403, Call::on("s3:PutBucketTagging", "b"), "no".into());
        assert!(
            matches!(err, Some(Error::PermissionDenied { ref operation, .. }) if operation == "s3:PutBucketTagging")
        );
    }

    #[test]
    fn core_errors_survive_the_sdk() {
        let inner = Error::Unauthenticated { message: "missing file aws_access_key_id".into() };
        let wrapped = aws_credential_types::provider::error::CredentialsError::provider_error(inner);
        let found = Error::from_source_chain(&wrapped).expect("core error in chain");
        assert_eq!(found.to_string(), "not authenticated: missing file aws_access_key_id");
    }
}
