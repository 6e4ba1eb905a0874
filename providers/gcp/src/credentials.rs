//! The operator's own GCP credentials: `service_account.json` in the mounted credentials secret
//! (`ProviderConfig::credentials_dir`), either a service-account key or an `external_account`
//! (workload identity federation) configuration, and the adapter that hands them to the SDK.
//!
//! The file is re-read before every use (a few hundred bytes; kubelet swaps it atomically on
//! rotation). Unchanged content reuses the parsed credential and the SDK credentials built from it
//! (and so their token cache); changed content is parsed, classified and built again, so a rotated
//! key or configuration is used at the next call without restart. Errors name the missing file or
//! field, never a value.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;

use async_trait::async_trait;
use google_cloud_auth::{
    credentials::{CacheableResource, Credentials, CredentialsProvider, external_account, service_account},
    errors::CredentialsError,
};
use http::{Extensions, HeaderMap};
use mvo_core::{Credential, CredentialMaterial, CredentialSource, Error, Result, Secret};
use serde_json::Value;

use crate::client::install_crypto_provider;

/// The file holding the operator's GCP credentials in the mounted secret.
pub const SERVICE_ACCOUNT_FILE: &str = "service_account.json";

/// The fields each kind of credentials JSON must carry (as the SDK requires them).
const SERVICE_ACCOUNT_FIELDS: [&str; 4] = ["client_email", "private_key", "private_key_id", "project_id"];
const EXTERNAL_ACCOUNT_FIELDS: [&str; 3] = ["audience", "subject_token_type", "token_url"];

/// What kind of credentials the JSON holds, with the non-secret facts worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service-account key (long-lived private key).
    ServiceAccount {
        /// The service account's email.
        client_email: String,
    },
    /// A workload identity federation configuration (short-lived tokens from a projected token).
    ExternalAccount {
        /// The workload identity pool provider.
        audience: String,
        /// The service account impersonated, when the configuration names one.
        impersonation_url: Option<String>,
    },
}

fn unauthenticated(message: String) -> Error {
    Error::Unauthenticated { message }
}

fn string_field<'a>(json: &'a Value, field: &str, kind: &str) -> Result<&'a str> {
    json.get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| unauthenticated(format!("{SERVICE_ACCOUNT_FILE} ({kind}) is missing field {field}")))
}

/// Parses and classifies the content of `service_account.json`.
///
/// Errors: [`Error::Unauthenticated`] naming the file and the missing field, or the JSON position
/// of a syntax error; never a value from the file.
pub fn classify(content: &str) -> Result<(CredentialKind, Value)> {
    let json: Value = serde_json::from_str(content).map_err(|err| {
        // Only the position: serde's message could quote the content.
        unauthenticated(format!(
            "{SERVICE_ACCOUNT_FILE} is not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        ))
    })?;
    if !json.is_object() {
        return Err(unauthenticated(format!("{SERVICE_ACCOUNT_FILE} is not a JSON object")));
    }
    let kind = json
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| unauthenticated(format!("{SERVICE_ACCOUNT_FILE} is missing field type")))?;
    let classified = match kind {
        "service_account" => {
            for field in SERVICE_ACCOUNT_FIELDS {
                string_field(&json, field, kind)?;
            }
            CredentialKind::ServiceAccount {
                client_email: string_field(&json, "client_email", kind)?.to_owned(),
            }
        }
        "external_account" => {
            for field in EXTERNAL_ACCOUNT_FIELDS {
                string_field(&json, field, kind)?;
            }
            if !json.get("credential_source").is_some_and(Value::is_object) {
                return Err(unauthenticated(format!(
                    "{SERVICE_ACCOUNT_FILE} ({kind}) is missing field credential_source"
                )));
            }
            CredentialKind::ExternalAccount {
                audience: string_field(&json, "audience", kind)?.to_owned(),
                impersonation_url: json
                    .get("service_account_impersonation_url")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        }
        other => {
            return Err(unauthenticated(format!(
                "{SERVICE_ACCOUNT_FILE} has type {other:?}; expected service_account or external_account"
            )));
        }
    };
    Ok((classified, json))
}

/// The SDK credentials for a classified JSON document.
fn sdk_credentials(kind: &CredentialKind, json: Value) -> Result<Credentials> {
    let built = match kind {
        CredentialKind::ServiceAccount { .. } => service_account::Builder::new(json).build(),
        CredentialKind::ExternalAccount { .. } => external_account::Builder::new(json).build(),
    };
    built.map_err(|err| {
        // The builder's message may quote the document; say only what kind of problem it is.
        let problem = if err.is_missing_field() {
            "a required field is missing"
        } else if err.is_parsing() {
            "a field has the wrong format"
        } else if err.is_not_supported() {
            "the configuration asks for an unsupported feature"
        } else {
            "it could not be loaded"
        };
        unauthenticated(format!("{SERVICE_ACCOUNT_FILE} is not usable by the Google Cloud SDK: {problem}"))
    })
}

/// One parsed version of the file. The raw document is a [`Secret`]: a service-account key
/// holds a private key, and this struct is reachable from every `Debug` of the provider.
#[derive(Debug)]
struct Loaded {
    content: Secret,
    kind: CredentialKind,
    credential: Arc<Credential>,
    sdk: Credentials,
}

/// A [`CredentialSource`] over `service_account.json` in the mounted credentials secret.
#[derive(Debug)]
pub struct FileCredentialSource {
    path: PathBuf,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl FileCredentialSource {
    /// A source reading `dir/service_account.json`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        // JWT signing (service-account keys) and the token exchange need a crypto provider.
        install_crypto_provider();
        FileCredentialSource { path: dir.as_ref().join(SERVICE_ACCOUNT_FILE), loaded: Mutex::new(None) }
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of credentials the file holds now.
    ///
    /// Errors: as [`CredentialSource::credential`].
    pub fn kind(&self) -> Result<CredentialKind> {
        Ok(self.load()?.kind.clone())
    }

    fn load(&self) -> Result<Arc<Loaded>> {
        // std::fs on purpose: a few bytes on a tmpfs mount, not worth a blocking-pool hop.
        let content = match std::fs::read_to_string(&self.path) {
            Ok(content) => content,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(unauthenticated(format!(
                    "credentials in {} incomplete: missing file {SERVICE_ACCOUNT_FILE}",
                    self.path.parent().unwrap_or(&self.path).display()
                )));
            }
            Err(err) => {
                return Err(unauthenticated(format!("cannot read {}: {}", self.path.display(), err.kind())));
            }
        };
        let mut cached = self.loaded.lock();
        if let Some(loaded) = cached.as_ref()
            && loaded.content.expose() == content
        {
            return Ok(loaded.clone());
        }
        let (kind, json) = classify(&content)?;
        let sdk = sdk_credentials(&kind, json)?;
        let credential = Arc::new(Credential {
            material: CredentialMaterial::JsonDocument(Secret::new(content.clone())),
            // The SDK derives and refreshes short-lived tokens from the document itself.
            expires_at: None,
        });
        let loaded = Arc::new(Loaded { content: Secret::new(content), kind, credential, sdk });
        *cached = Some(loaded.clone());
        Ok(loaded)
    }

    /// SDK credentials that follow this source: every request re-checks the file.
    pub fn sdk_credentials(self: &Arc<Self>) -> Credentials {
        Credentials::from(SdkCredentials(self.clone()))
    }
}

#[async_trait]
impl CredentialSource for FileCredentialSource {
    async fn credential(&self) -> Result<Arc<Credential>> {
        Ok(self.load()?.credential.clone())
    }

    fn describe(&self) -> String {
        match self.kind() {
            Ok(CredentialKind::ServiceAccount { client_email }) => {
                format!("GCP service-account key for {client_email} from {}", self.path.display())
            }
            Ok(CredentialKind::ExternalAccount { audience, .. }) => {
                format!("GCP workload identity federation via {audience} from {}", self.path.display())
            }
            Err(_) => format!("no usable GCP credentials yet in {}", self.path.display()),
        }
    }
}

/// Hands a [`FileCredentialSource`] to the Google Cloud SDK: each request asks the source, which
/// re-reads the file, and uses the SDK credentials built from its current content.
#[derive(Debug, Clone)]
pub struct SdkCredentials(pub Arc<FileCredentialSource>);

impl CredentialsProvider for SdkCredentials {
    async fn headers(
        &self,
        extensions: Extensions,
    ) -> std::result::Result<CacheableResource<HeaderMap>, CredentialsError> {
        // Not transient: the file is fixed by a rotation, which the operator's backoff waits for.
        let loaded = self.0.load().map_err(|err| CredentialsError::from_source(false, err))?;
        loaded.sdk.headers(extensions).await
    }

    async fn universe_domain(&self) -> Option<String> {
        match self.0.load() {
            Ok(loaded) => loaded.sdk.universe_domain().await,
            Err(_) => Some("googleapis.com".to_owned()),
        }
    }
}
