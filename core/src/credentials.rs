//! Cloud credentials: what a provider's SDK client signs requests with, and where it comes from.
//!
//! Secret material is wrapped in [`Secret`], whose `Debug` and `Display` never print the value,
//! so a credential can travel through logs, errors and events without leaking (SPEC safety rule 6).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use crate::error::Result;

/// Refresh a cached credential when less than this remains before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A secret string. Formatting it prints `***`; only [`Secret::expose`] reveals the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for handing to an SDK. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The secret material of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialMaterial {
    /// An access key pair, with a session token when it is temporary (AWS, S3-compatible).
    AccessKey {
        /// Access key ID (not secret, but kept out of logs anyway by callers).
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token of temporary credentials.
        session_token: Option<Secret>,
    },
    /// An OAuth2 bearer token (GCP access token).
    BearerToken(Secret),
    /// A JSON credentials document the SDK resolves itself (GCP service-account key or
    /// external-account configuration).
    JsonDocument(Secret),
}

/// A credential with its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The secret material.
    pub material: CredentialMaterial,
    /// When the credential stops working; `None` for long-lived credentials.
    pub expires_at: Option<SystemTime>,
}

impl Credential {
    /// True when the credential expires within `margin` of `now` (or already has).
    pub fn expires_within(&self, margin: Duration, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now + margin)
    }
}

/// Where a provider gets the credential its SDK client uses.
///
/// Modelled on object_store's `CredentialProvider`.
///
/// Guarantees: implementations cache the credential, refresh it when less than
/// [`REFRESH_MARGIN`] remains, and re-read mounted files when they change, so rotation needs no
/// restart.
///
/// Errors: [`crate::Error::Unauthenticated`] when the material is missing or malformed (naming the
/// missing file or key, never a value); [`crate::Error::Unavailable`] when an exchange (e.g. STS)
/// fails transiently.
#[async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug + 'static {
    /// The current credential, refreshed if needed.
    async fn credential(&self) -> Result<Arc<Credential>>;

    /// A human description of where credentials come from (e.g. `web identity role from
    /// /var/run/secrets/...`), for startup logs. Contains no secret.
    fn describe(&self) -> String;
}

/// A fixed credential, for tests and development endpoints.
#[derive(Debug, Clone)]
pub struct StaticCredentialSource {
    credential: Arc<Credential>,
}

impl StaticCredentialSource {
    /// A source that always yields `credential`.
    pub fn new(credential: Credential) -> Self {
        StaticCredentialSource { credential: Arc::new(credential) }
    }

    /// A source of a long-lived access key pair.
    pub fn access_key(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self::new(Credential {
            material: CredentialMaterial::AccessKey {
                access_key_id: access_key_id.into(),
                secret_access_key: Secret::new(secret_access_key),
                session_token: None,
            },
            expires_at: None,
        })
    }
}

#[async_trait]
impl CredentialSource for StaticCredentialSource {
    async fn credential(&self) -> Result<Arc<Credential>> {
        Ok(self.credential.clone())
    }

    fn describe(&self) -> String {
        "static credentials".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format() {
        let cred = Credential {
            material: CredentialMaterial::AccessKey {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI"),
                session_token: Some(Secret::new("FwoGZXIvYXdzE")),
            },
            expires_at: None,
        };
        let printed = format!("{cred:?} {}", Secret::new("wJalrXUtnFEMI"));
        assert!(!printed.contains("wJalrXUtnFEMI"));
        assert!(!printed.contains("FwoGZXIvYXdzE"));
        assert!(printed.contains("***"));
    }

    #[test]
    fn expiry_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut cred =
            Credential { material: CredentialMaterial::BearerToken(Secret::new("t")), expires_at: None };
        assert!(!cred.expires_within(REFRESH_MARGIN, now));
        cred.expires_at = Some(now + Duration::from_secs(299));
        assert!(cred.expires_within(REFRESH_MARGIN, now));
        cred.expires_at = Some(now + Duration::from_secs(301));
        assert!(!cred.expires_within(REFRESH_MARGIN, now));
    }

    #[tokio::test]
    async fn static_source_yields_its_credential() {
        let source = StaticCredentialSource::access_key("id", "secret");
        let cred = source.credential().await.expect("static credential");
        assert!(
            matches!(&cred.material, CredentialMaterial::AccessKey { access_key_id, .. } if access_key_id == "id")
        );
    }
}
