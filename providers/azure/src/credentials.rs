//! The operator's own Azure credentials, read from the mounted credentials secret
//! (`ProviderConfig::credentials_dir`) as the cloud credential operator writes it, and the adapter
//! that hands them to the Blob client.
//!
//! The secret holds one file per key: `azure_client_id`, `azure_tenant_id`, and either
//! `azure_client_secret` (a service principal with a client secret) or
//! `azure_federated_token_file` (Azure workload identity on token-based clusters: the file names
//! the projected service-account token exchanged for an Entra ID token), plus the cluster facts
//! `azure_subscription_id`, `azure_resourcegroup` and `azure_region`.
//!
//! For emulators and local runs (Azurite in `make demo` and the tests), a file
//! `azure_bearer_token` holding a pre-issued token is used as it is, before the other layouts;
//! the credential operator never writes it.
//!
//! The files are re-read before every use (a few bytes; kubelet swaps them atomically on
//! rotation). Unchanged content reuses the Entra ID credential built from it (and so its token
//! cache); changed content builds a new one, so a rotated secret is used at the next call without
//! restart. Errors name the missing file, never a value.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use parking_lot::Mutex;

use async_trait::async_trait;
use azure_core::{
    credentials::{AccessToken, Secret as SdkSecret, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{ClientOptions, HttpClient},
    time::OffsetDateTime,
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use mvo_core::{Credential, CredentialMaterial, CredentialSource, Error, Result, Secret};

use crate::cloud::AzureCloud;

/// File holding the application (client) ID.
pub const CLIENT_ID_FILE: &str = "azure_client_id";
/// File holding the client secret (service-principal layout).
pub const CLIENT_SECRET_FILE: &str = "azure_client_secret";
/// File holding the tenant ID.
pub const TENANT_ID_FILE: &str = "azure_tenant_id";
/// File naming the projected token to exchange (workload identity layout).
pub const FEDERATED_TOKEN_FILE: &str = "azure_federated_token_file";
/// File holding the subscription ID.
pub const SUBSCRIPTION_ID_FILE: &str = "azure_subscription_id";
/// File holding the cluster's resource group (the credential operator spells it without an
/// underscore between "resource" and "group"; service principal mode only).
pub const RESOURCE_GROUP_FILE: &str = "azure_resourcegroup";
/// File holding the region.
pub const REGION_FILE: &str = "azure_region";

/// File holding a pre-issued bearer token (emulators, local runs; never written by the
/// credential operator).
pub const BEARER_TOKEN_FILE: &str = "azure_bearer_token";

/// The Entra ID scope of Azure Storage (the same in every Azure cloud).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// What the mounted secret asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service principal with a client secret (long-lived).
    ClientSecret {
        /// The application (client) ID.
        client_id: String,
        /// The tenant.
        tenant_id: String,
    },
    /// A pre-issued token from [`BEARER_TOKEN_FILE`] (emulators, local runs).
    BearerToken,
    /// Azure workload identity: a projected service-account token exchanged for Entra ID tokens.
    WorkloadIdentity {
        /// The application (client) ID of the federated identity.
        client_id: String,
        /// The tenant.
        tenant_id: String,
        /// The projected token's path.
        token_file: PathBuf,
    },
}

/// Reads a file's trimmed content; `Ok(None)` when it does not exist or is blank.
fn read_trimmed(path: &Path) -> Result<Option<String>> {
    // std::fs on purpose: a few bytes on a tmpfs mount, not worth a blocking-pool hop.
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(Some(content.trim().to_owned()).filter(|c| !c.is_empty())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => {
            Err(Error::Unauthenticated { message: format!("cannot read {}: {}", path.display(), err.kind()) })
        }
    }
}

fn missing(dir: &Path, what: &str) -> Error {
    Error::Unauthenticated { message: format!("credentials in {} incomplete: missing {what}", dir.display()) }
}

/// The credential files of `dir`: the kind, and the client secret when there is one.
fn read_material(dir: &Path) -> Result<(CredentialKind, Option<Secret>)> {
    let file = |name: &str| read_trimmed(&dir.join(name));
    let client_id = file(CLIENT_ID_FILE)?.ok_or_else(|| missing(dir, &format!("file {CLIENT_ID_FILE}")))?;
    let tenant_id = file(TENANT_ID_FILE)?.ok_or_else(|| missing(dir, &format!("file {TENANT_ID_FILE}")))?;
    if let Some(secret) = file(CLIENT_SECRET_FILE)? {
        return Ok((CredentialKind::ClientSecret { client_id, tenant_id }, Some(Secret::new(secret))));
    }
    let Some(token_file) = file(FEDERATED_TOKEN_FILE)? else {
        return Err(missing(dir, &format!("file {CLIENT_SECRET_FILE} or {FEDERATED_TOKEN_FILE}")));
    };
    // A relative token path is relative to the mounted secret, like the file naming it.
    let token_file = dir.join(token_file);
    Ok((CredentialKind::WorkloadIdentity { client_id, tenant_id, token_file }, None))
}

/// One version of the secret's content and the Entra ID credential built from it.
#[derive(Debug)]
struct Loaded {
    kind: CredentialKind,
    secret: Option<Secret>,
    sdk: Arc<dyn TokenCredential>,
}

/// A [`CredentialSource`] over the operator's mounted Azure credentials secret.
#[derive(Debug)]
pub struct FileCredentialSource {
    dir: PathBuf,
    cloud: AzureCloud,
    http: Arc<dyn HttpClient>,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl FileCredentialSource {
    /// A source reading `dir`, asking `cloud`'s Entra ID authority through `http`.
    pub fn new(dir: impl Into<PathBuf>, cloud: AzureCloud, http: Arc<dyn HttpClient>) -> Self {
        FileCredentialSource { dir: dir.into(), cloud, http, loaded: Mutex::new(None) }
    }

    /// The kind of credentials the secret holds now.
    ///
    /// Errors: as [`CredentialSource::credential`].
    pub fn kind(&self) -> Result<CredentialKind> {
        Ok(self.load()?.kind.clone())
    }

    fn options(&self) -> ClientOptions {
        let mut options = crate::client::client_options(self.http.clone(), &[]);
        options.cloud = Some(Arc::new(self.cloud.configuration()));
        options
    }

    fn load(&self) -> Result<Arc<Loaded>> {
        if let Some(token) = read_trimmed(&self.dir.join(BEARER_TOKEN_FILE))? {
            return Ok(Arc::new(Loaded {
                kind: CredentialKind::BearerToken,
                secret: Some(Secret::new(token)),
                sdk: Arc::new(NoExchange),
            }));
        }
        let (kind, secret) = read_material(&self.dir)?;
        let mut cached = self.loaded.lock();
        if let Some(loaded) = cached.as_ref()
            && loaded.kind == kind
            && loaded.secret == secret
        {
            return Ok(loaded.clone());
        }
        let built: azure_core::Result<Arc<dyn TokenCredential>> = match (&kind, &secret) {
            (CredentialKind::ClientSecret { client_id, tenant_id }, Some(secret)) => {
                let options = ClientSecretCredentialOptions { client_options: self.options() };
                ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    SdkSecret::new(secret.expose().to_owned()),
                    Some(options),
                )
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            (CredentialKind::WorkloadIdentity { client_id, tenant_id, token_file }, _) => {
                let options = WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options: self.options() },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant_id.clone()),
                    token_file_path: Some(token_file.clone()),
                };
                WorkloadIdentityCredential::new(Some(options)).map(|c| c as Arc<dyn TokenCredential>)
            }
            (CredentialKind::ClientSecret { .. }, None) | (CredentialKind::BearerToken, _) => {
                return Err(missing(&self.dir, &format!("file {CLIENT_SECRET_FILE}")));
            }
        };
        // The SDK's message may quote an ID; it never quotes the secret. Say what kind it is.
        let sdk = built.map_err(|err| Error::Unauthenticated {
            message: format!("the credentials in {} are not usable: {err}", self.dir.display()),
        })?;
        let loaded = Arc::new(Loaded { kind, secret, sdk });
        *cached = Some(loaded.clone());
        Ok(loaded)
    }
}

/// The "credential" of a pre-issued token: nothing to exchange.
#[derive(Debug)]
struct NoExchange;

#[async_trait]
impl TokenCredential for NoExchange {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Err(azure_core::Error::with_message(ErrorKind::Credential, "a pre-issued token is not exchanged"))
    }
}

fn system_time(at: OffsetDateTime) -> SystemTime {
    SystemTime::from(at)
}

#[async_trait]
impl CredentialSource for FileCredentialSource {
    async fn credential(&self) -> Result<Arc<Credential>> {
        let loaded = self.load()?;
        if let (CredentialKind::BearerToken, Some(token)) = (&loaded.kind, &loaded.secret) {
            return Ok(Arc::new(Credential {
                material: CredentialMaterial::BearerToken(token.clone()),
                expires_at: None,
            }));
        }
        let token = loaded.sdk.get_token(&[STORAGE_SCOPE], None).await.map_err(|err| match err.kind() {
            // Entra ID unreachable or 5xx: try again later.
            ErrorKind::Io | ErrorKind::Connection => {
                Error::Unavailable { message: format!("cannot reach Entra ID: {err}") }
            }
            _ => Error::Unauthenticated { message: format!("Entra ID refused the credentials: {err}") },
        })?;
        Ok(Arc::new(Credential {
            material: CredentialMaterial::BearerToken(Secret::new(token.token.secret().to_owned())),
            expires_at: Some(system_time(token.expires_on)),
        }))
    }

    fn describe(&self) -> String {
        let dir = self.dir.display();
        match self.kind() {
            Ok(CredentialKind::ClientSecret { client_id, .. }) => {
                format!("Azure service principal {client_id} (client secret) from {dir}")
            }
            Ok(CredentialKind::WorkloadIdentity { client_id, token_file, .. }) => format!(
                "Azure workload identity {client_id} with the token {} from {dir}",
                token_file.display()
            ),
            Ok(CredentialKind::BearerToken) => {
                format!("pre-issued Azure bearer token from {dir}/{BEARER_TOKEN_FILE}")
            }
            Err(_) => format!("no usable Azure credentials yet in {dir}"),
        }
    }
}

/// Hands a [`CredentialSource`] to the Azure SDK as a [`TokenCredential`], so every request is
/// signed with what the source yields now (rotation without restart).
#[derive(Debug, Clone)]
pub struct SdkCredential(pub Arc<dyn CredentialSource>);

#[async_trait]
impl TokenCredential for SdkCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // A core error rides along as the source, so the provider's error mapping finds it again.
        let credential =
            self.0.credential().await.map_err(|err| azure_core::Error::new(ErrorKind::Credential, err))?;
        match &credential.material {
            CredentialMaterial::BearerToken(token) => {
                let expires = credential.expires_at.map(OffsetDateTime::from).unwrap_or_else(|| {
                    // A token without a stated expiry is treated as short-lived.
                    OffsetDateTime::now_utc() + std::time::Duration::from_secs(300)
                });
                Ok(AccessToken::new(token.expose().to_owned(), expires))
            }
            _ => Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "the Azure provider needs a bearer token credential",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> mvo_testkit::ScratchDir {
        let dir = mvo_testkit::ScratchDir::new("mvo-azure-cred").expect("dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write");
        }
        dir
    }

    #[test]
    fn layouts_are_told_apart_and_missing_files_named() {
        let d = dir(&[(CLIENT_ID_FILE, "app\n"), (TENANT_ID_FILE, "tenant"), (CLIENT_SECRET_FILE, "s3cr3t")]);
        let (kind, secret) = read_material(&d).expect("client secret");
        assert_eq!(
            kind,
            CredentialKind::ClientSecret { client_id: "app".into(), tenant_id: "tenant".into() }
        );
        assert_eq!(secret.map(|s| s.expose().to_owned()), Some("s3cr3t".into()));

        let d =
            dir(&[(CLIENT_ID_FILE, "app"), (TENANT_ID_FILE, "tenant"), (FEDERATED_TOKEN_FILE, "/var/run/t")]);
        let (kind, secret) = read_material(&d).expect("workload identity");
        assert!(
            matches!(kind, CredentialKind::WorkloadIdentity { ref token_file, .. } if token_file == Path::new("/var/run/t"))
        );
        assert!(secret.is_none());

        let d = dir(&[(CLIENT_ID_FILE, "app"), (TENANT_ID_FILE, "tenant")]);
        let err = read_material(&d).expect_err("neither");
        assert!(
            err.to_string().contains(CLIENT_SECRET_FILE) && err.to_string().contains(FEDERATED_TOKEN_FILE),
            "{err}"
        );
        let err = read_material(&dir(&[])).expect_err("empty");
        assert!(
            matches!(err, Error::Unauthenticated { .. }) && err.to_string().contains(CLIENT_ID_FILE),
            "{err}"
        );
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }
}
