//! The one error type every provider maps its cloud SDK errors into.
//!
//! Variants are semantic (what happened), never SDK-specific (how the cloud said it), so the
//! operator can decide on conditions, events and retries without knowing which cloud it talks to.

use std::error::Error as StdError;

/// Shorthand for results of provider operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of a provider operation, classified by meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named resource does not exist (a bucket deleted out of band, a missing key file).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `bucket "managed-velero-backups-…"`.
        what: String,
    },

    /// The bucket name is taken by another account, project or cluster; the caller must pick
    /// another name and never touch this bucket.
    #[error("bucket {bucket:?} is owned by someone else")]
    AlreadyOwnedByOther {
        /// The bucket name that is taken.
        bucket: String,
    },

    /// The cloud refused the call for lack of permission. Not retried quickly: a human has to
    /// grant the permission.
    #[error("permission denied for {operation}: {message}")]
    PermissionDenied {
        /// The cloud API operation that was refused, e.g. `s3:PutBucketTagging`.
        operation: String,
        /// The cloud's explanation.
        message: String,
    },

    /// The credentials are missing, malformed, expired or rejected.
    #[error("not authenticated: {message}")]
    Unauthenticated {
        /// What is wrong with the credentials. Never contains a secret value.
        message: String,
    },

    /// The cloud asked us to slow down.
    #[error("throttled by the cloud: {message}")]
    Throttled {
        /// The cloud's explanation.
        message: String,
    },

    /// The cloud is temporarily unable to answer (5xx, timeouts, connection failures).
    #[error("cloud temporarily unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },

    /// The provider was given configuration it cannot work with (missing region, bad key name).
    #[error("invalid configuration: {message}")]
    InvalidConfig {
        /// What is wrong, naming the field or file.
        message: String,
    },

    /// The cloud refused the request as asked for a reason no permission of the operator and no
    /// retry can fix: an organisation policy (a GCS project that requires customer-managed
    /// encryption, `constraints/gcp.restrictNonCmekServices`), or the project's state. Not retried
    /// quickly: a person must change the policy or the VeleroInstall spec.
    #[error("refused by the cloud: {message}")]
    Refused {
        /// The cloud's explanation, naming the policy or constraint when it does.
        message: String,
    },

    /// The storage service cannot use the customer-managed encryption key: the cloud's service
    /// identity lacks permission on the key (GCS: the project's Cloud Storage service agent
    /// needs `roles/cloudkms.cryptoKeyEncrypterDecrypter`), or the key is in a location the
    /// bucket cannot use. Not the operator's own permissions; not retried quickly.
    #[error("encryption key {key} cannot be used: {message}")]
    EncryptionKeyUnusable {
        /// The key's resource name or ARN.
        key: String,
        /// What is wrong and who must be granted what, naming the service identity.
        message: String,
    },

    /// The provider does not implement this operation (see [`crate::Capabilities`]).
    #[error("{operation} is not supported by the {provider} provider")]
    NotSupported {
        /// The operation that was asked for.
        operation: &'static str,
        /// The provider's platform name.
        provider: &'static str,
    },

    /// Any other failure of the cloud or its SDK, with the original error as source.
    #[error("{provider} provider error")]
    Provider {
        /// The provider's platform name.
        provider: &'static str,
        /// The SDK's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl Error {
    /// Whether retrying the same call soon (with backoff) may succeed.
    ///
    /// Throttling, temporary unavailability, rejected credentials (they are re-read from mounted
    /// files, so rotation fixes them) and unclassified provider errors are retryable. Permission,
    /// configuration, ownership, absence, refusals by policy, unusable encryption keys and
    /// unsupported operations need a change elsewhere first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Throttled { .. }
            | Error::Unavailable { .. }
            | Error::Unauthenticated { .. }
            | Error::Provider { .. } => true,
            Error::NotFound { .. }
            | Error::AlreadyOwnedByOther { .. }
            | Error::PermissionDenied { .. }
            | Error::InvalidConfig { .. }
            | Error::Refused { .. }
            | Error::EncryptionKeyUnusable { .. }
            | Error::NotSupported { .. } => false,
        }
    }

    /// A stable PascalCase name of the variant, used as metric label and Kubernetes event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NotFound",
            Error::AlreadyOwnedByOther { .. } => "AlreadyOwnedByOther",
            Error::PermissionDenied { .. } => "PermissionDenied",
            Error::Unauthenticated { .. } => "Unauthenticated",
            Error::Throttled { .. } => "Throttled",
            Error::Unavailable { .. } => "Unavailable",
            Error::InvalidConfig { .. } => "InvalidConfig",
            Error::Refused { .. } => "Refused",
            Error::EncryptionKeyUnusable { .. } => "EncryptionKeyUnusable",
            Error::NotSupported { .. } => "NotSupported",
            Error::Provider { .. } => "ProviderError",
        }
    }

    /// The first [`Error`] in `err`'s source chain, rebuilt (core errors are not `Clone`).
    ///
    /// Providers use it when a failure of their own [`crate::CredentialSource`] travels back
    /// through a cloud SDK as a boxed source: the caller gets the original classification (for
    /// example `Unauthenticated` naming the missing file). Variants a credential source has no
    /// business returning come back as `Unauthenticated` with their message.
    pub fn from_source_chain(err: &(dyn StdError + 'static)) -> Option<Error> {
        let mut next = Some(err);
        while let Some(current) = next {
            if let Some(core) = current.downcast_ref::<Error>() {
                return Some(core.rebuild());
            }
            next = current.source();
        }
        None
    }

    fn rebuild(&self) -> Error {
        match self {
            Error::Unauthenticated { message } => Error::Unauthenticated { message: message.clone() },
            Error::Unavailable { message } => Error::Unavailable { message: message.clone() },
            Error::Throttled { message } => Error::Throttled { message: message.clone() },
            Error::PermissionDenied { operation, message } => {
                Error::PermissionDenied { operation: operation.clone(), message: message.clone() }
            }
            Error::InvalidConfig { message } => Error::InvalidConfig { message: message.clone() },
            Error::NotFound { what } => Error::NotFound { what: what.clone() },
            other => Error::Unauthenticated { message: other.to_string() },
        }
    }

    /// Shorthand for [`Error::NotFound`] about a bucket.
    pub fn bucket_not_found(bucket: &str) -> Self {
        Error::NotFound { what: format!("bucket {bucket:?}") }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::InvalidConfig { message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let retryable = [
            Error::Throttled { message: "SlowDown".into() },
            Error::Unavailable { message: "503".into() },
            Error::Unauthenticated { message: "expired token".into() },
            Error::Provider { provider: "AWS", source: "connection reset".into() },
        ];
        let permanent = [
            Error::bucket_not_found("b"),
            Error::AlreadyOwnedByOther { bucket: "b".into() },
            Error::PermissionDenied { operation: "s3:PutBucketTagging".into(), message: "denied".into() },
            Error::invalid_config("region missing"),
            Error::Refused { message: "constraints/gcp.restrictNonCmekServices".into() },
            Error::EncryptionKeyUnusable { key: "k".into(), message: "service agent lacks access".into() },
            Error::NotSupported { operation: "ensure_bucket", provider: "GCP" },
        ];
        assert!(retryable.iter().all(Error::is_retryable));
        assert!(!permanent.iter().any(Error::is_retryable));
    }

    #[test]
    fn core_errors_are_found_in_a_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("sdk failed")]
        struct Sdk(#[source] Error);
        let wrapped = Sdk(Error::Unauthenticated { message: "missing file aws_access_key_id".into() });
        let found = Error::from_source_chain(&wrapped).expect("core error in chain");
        assert_eq!(found.to_string(), "not authenticated: missing file aws_access_key_id");
        let odd = Sdk(Error::AlreadyOwnedByOther { bucket: "b".into() });
        assert!(matches!(Error::from_source_chain(&odd), Some(Error::Unauthenticated { .. })));
        assert!(Error::from_source_chain(&std::fmt::Error).is_none());
    }

    #[test]
    fn messages_name_what_failed() {
        let err = Error::PermissionDenied { operation: "s3:GetBucketTagging".into(), message: "nope".into() };
        assert_eq!(err.to_string(), "permission denied for s3:GetBucketTagging: nope");
        assert_eq!(err.category(), "PermissionDenied");
        let err = Error::NotSupported { operation: "ensure_bucket", provider: "GCP" };
        assert_eq!(err.to_string(), "ensure_bucket is not supported by the GCP provider");
    }
}
