//! The one place where Google Cloud SDK errors become [`mvo_core::Error`] variants.
//!
//! Classification by gRPC status code first, HTTP status second, transport kind last:
//! PERMISSION_DENIED/403 -> `PermissionDenied` naming the IAM permission of the call,
//! NOT_FOUND/404 -> `NotFound`, RESOURCE_EXHAUSTED/429 -> `Throttled`,
//! UNAVAILABLE/DEADLINE_EXCEEDED/INTERNAL/ABORTED/5xx, timeouts and connection failures ->
//! `Unavailable`, UNAUTHENTICATED/401 and credential failures -> `Unauthenticated`,
//! FAILED_PRECONDITION/412 (our metageneration precondition: the bucket changed meanwhile) ->
//! `Unavailable`, so the next check re-reads and retries; the rest -> `Provider`.
//!
//! Cloud KMS refusals of a call that sets a default key are not the operator's permissions: a
//! PERMISSION_DENIED mentioning Cloud KMS means the project's Cloud Storage service agent may not
//! use the key, an INVALID_ARGUMENT mentioning it that the key cannot serve the bucket's location.
//! Both -> `EncryptionKeyUnusable`, naming the key and the service agent.
//!
//! CreateBucket is special ([`is_create_conflict`]): over gRPC a taken name is
//! FAILED_PRECONDITION (ALREADY_EXISTS/409 over HTTP), and so is an organisation-policy refusal.
//! The store re-reads the name to tell them apart; [`create_conflict_without_bucket`] says what
//! the failure means when the name does not exist.

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
    /// The default KMS key the call sets, if any.
    pub kms_key: Option<&'a str>,
    /// The bucket's project as GCS reports it (`projects/<number>`), when known.
    pub project: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call about `bucket`.
    pub fn on(permission: &'static str, bucket: &'a str) -> Self {
        Call { permission, bucket: Some(bucket), kms_key: None, project: None }
    }

    /// A call about no particular bucket (listing).
    pub fn global(permission: &'static str) -> Self {
        Call { permission, bucket: None, kms_key: None, project: None }
    }

    /// The call sets `key` as default KMS key (empty: Google-managed, no key).
    pub fn setting_key(self, key: &'a str) -> Self {
        Call { kms_key: Some(key).filter(|k| !k.is_empty()), ..self }
    }

    /// The bucket belongs to `project` (`projects/<number>`, as GCS reports it).
    pub fn in_project(self, project: &'a str) -> Self {
        Call { project: Some(project).filter(|p| !p.is_empty()), ..self }
    }

    /// The Cloud Storage service agent that uses KMS keys for the bucket: by address when the
    /// project number is known (GCS reports `projects/<number>` on a bucket it has read).
    fn service_agent(&self) -> String {
        let number = self
            .project
            .and_then(|p| p.strip_prefix("projects/"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match number {
            Some(number) => {
                format!(
                    "the Cloud Storage service agent service-{number}@gs-project-accounts.iam.gserviceaccount.com"
                )
            }
            None => "the project's Cloud Storage service agent \
                     (service-<project number>@gs-project-accounts.iam.gserviceaccount.com)"
                .to_owned(),
        }
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

/// True when a CreateBucket failed because the name may exist: gRPC FAILED_PRECONDITION (what
/// GCS answers over gRPC for a taken name, but also for an organisation-policy refusal) or a
/// conflict. The caller must re-read the name to know which.
pub(crate) fn is_create_conflict(err: &GaxError) -> bool {
    is_conflict(err) || code(err) == Some(Code::FailedPrecondition)
}

/// What a CreateBucket that failed with [`is_create_conflict`] means when the name turns out not
/// to exist: after ALREADY_EXISTS/409 the bucket existed and vanished since (retryable); after
/// FAILED_PRECONDITION an organisation policy or the project's state refused the bucket as asked
/// (`Refused`, with the create's message, not retryable).
pub(crate) fn create_conflict_without_bucket(err: &GaxError, call: Call<'_>) -> Error {
    if is_conflict(err) {
        return Error::Unavailable {
            message: format!("{}: the bucket existed at create and vanished since; will retry", call.what()),
        };
    }
    let cloud = match err.status() {
        Some(status) => format!("{} {}", status.code.name(), status.message),
        None => err.to_string(),
    };
    Error::Refused { message: format!("{}: {cloud}", call.what()) }
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
        if let Some(mapped) = kms_refusal(status.code, &status.message, call, &message) {
            return mapped;
        }
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

/// `EncryptionKeyUnusable` when a call setting a KMS key was refused over that key.
fn kms_refusal(code: Code, cloud_message: &str, call: Call<'_>, message: &str) -> Option<Error> {
    let key = call.kms_key?;
    if !cloud_message.to_ascii_lowercase().contains("kms") {
        return None;
    }
    let agent = call.service_agent();
    let why = match code {
        Code::PermissionDenied => format!(
            "{agent} is not allowed to use it; grant it roles/cloudkms.cryptoKeyEncrypterDecrypter \
             on the key (the operator's own permissions are not the problem)"
        ),
        Code::InvalidArgument => format!(
            "the key must be in the bucket's location (and usable by {agent}); use a key of the \
             bucket's location in spec.storageBucket.kmsKeyName"
        ),
        _ => return None,
    };
    Some(Error::EncryptionKeyUnusable { key: key.to_owned(), message: format!("{why} ({message})") })
}

/// The variant for a gRPC status code; `None` for "anything else".
fn classify_code(code: Code, call: Call<'_>, message: String) -> Option<Error> {
    Some(match code {
        Code::PermissionDenied => Error::PermissionDenied { operation: call.permission.to_owned(), message },
        Code::NotFound => not_found(call, message),
        Code::ResourceExhausted => Error::Throttled { message },
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
        assert_eq!(class(Code::InvalidArgument), "ProviderError");
        assert_eq!(class(Code::AlreadyExists), "ProviderError");
    }

    #[test]
    fn metageneration_mismatch_is_retryable() {
        let err = map(service(Code::FailedPrecondition), Call::on("storage.buckets.update", "b"));
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("changed meanwhile"), "{err}");
    }

    fn status(code: Code, message: &str) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message(message))
    }

    const KEY: &str = "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k";

    #[test]
    fn kms_refusals_name_the_key_and_the_service_agent() {
        let denied = status(Code::PermissionDenied, "Permission denied on Cloud KMS key.");
        let call = Call::on("storage.buckets.update", "b").setting_key(KEY).in_project("projects/1234");
        let err = map(denied, call);
        assert!(matches!(&err, Error::EncryptionKeyUnusable { key, .. } if key == KEY), "{err}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("service-1234@gs-project-accounts.iam.gserviceaccount.com"), "{text}");
        assert!(text.contains(KEY), "{text}");

        let denied = status(Code::PermissionDenied, "Permission denied on Cloud KMS key.");
        let text = map(denied, Call::on("storage.buckets.create", "b").setting_key(KEY)).to_string();
        assert!(text.contains("the project's Cloud Storage service agent"), "{text}");

        let location = status(Code::InvalidArgument, "Cloud KMS key is in location \"us\"");
        let err = map(location, Call::on("storage.buckets.create", "b").setting_key(KEY));
        assert_eq!(err.category(), "EncryptionKeyUnusable", "{err}");
        assert!(err.to_string().contains("bucket's location"), "{err}");

        // Without a key in the call, or without KMS in the message, nothing changes.
        let plain = status(Code::PermissionDenied, "caller does not have storage.buckets.update");
        let call = Call::on("storage.buckets.update", "b").setting_key(KEY);
        assert_eq!(map(plain, call).category(), "PermissionDenied");
        let kms = status(Code::PermissionDenied, "Permission denied on Cloud KMS key.");
        assert_eq!(map(kms, Call::on("storage.buckets.update", "b")).category(), "PermissionDenied");
    }

    #[test]
    fn create_refusals_are_not_retryable_and_keep_the_cloud_message() {
        let policy = status(Code::FailedPrecondition, "violates constraints/gcp.restrictNonCmekServices");
        assert!(is_create_conflict(&policy));
        let err = create_conflict_without_bucket(&policy, Call::on("storage.buckets.create", "b"));
        assert!(matches!(err, Error::Refused { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("constraints/gcp.restrictNonCmekServices"), "{err}");
        // A real conflict whose bucket is gone by the re-read is a race, retried.
        let vanished = create_conflict_without_bucket(&service(Code::AlreadyExists), Call::on("c", "b"));
        assert!(matches!(vanished, Error::Unavailable { .. }) && vanished.is_retryable(), "{vanished}");
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
        assert_eq!(http(400), "ProviderError");
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
