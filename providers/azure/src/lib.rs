//! Azure provider: registers platform `Azure` and implements it on Azure Blob Storage through the
//! official Azure SDK for Rust (`azure_storage_blob`, `azure_identity`, `azure_core`).
//!
//! - [`store`]: the Blob [`ObjectStore`] (SPEC 5.3: a private container in an existing storage
//!   account, owner marks as container metadata, read-compare-write of the metadata and the
//!   account's blob soft-delete retention, public access checked, recovery by metadata).
//! - [`credentials`]: the credential operator's Azure secret (service principal with a client
//!   secret, or workload identity with a federated token file), re-read on rotation and handed to
//!   the SDK as a `TokenCredential`.
//! - [`errors`]: the one mapping from SDK errors to [`mvo_core::Error`] variants.
//! - [`metering`]: [`CallCounter`] and the metered client wrapper every Blob call goes through.
//! - [`iam`]: the operator's own permissions; [`velero`]: what Velero needs on Azure.
//! - [`cloud`]: Azure clouds (public, US government, China) and name rules.
//! - `client`: the HTTPS client (rustls on ring, cluster proxy and CA bundle).
//!
//! Storage accounts are management-plane resources (no maintained Rust SDK): the operator does not
//! create them and cannot change account-level settings. It claims buckets and recovery; public
//! access (changeable with the account key only), default encryption (always on, key chosen by
//! the account), customer-managed keys, lifecycle management, versioning and minimum TLS are left
//! to the account ([`ACCOUNT_SETTINGS`]).

mod client;
pub mod cloud;
pub mod credentials;
mod errors;
pub mod iam;
pub mod metering;
pub mod spec;
mod store;
mod velero;

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::Policy;
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Capabilities, CredentialSource, CredentialsWiring, Error,
    LocationConfig, ObjectStore, Owner, Platform, ProviderConfig, Recovery, Result,
};

pub use client::install_crypto_provider;
pub use cloud::AzureCloud;
pub use credentials::{CredentialKind, FileCredentialSource, SdkCredential};
pub use metering::CallCounter;
pub use store::{SOFT_DELETE_RETENTION_DAYS, metadata_key, owner_metadata, tags_of};
pub use velero::{
    VELERO_CREDENTIALS_KEY, VELERO_DATA_PERMISSIONS, VELERO_PERMISSIONS, VELERO_PLUGIN_IMAGE, VeleroAzure,
    credentials_request_spec, credentials_request_spec_workload_identity, velero_credentials_file,
};

use crate::{metering::Blob, store::BlobStore};

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "Azure";

/// The settings enforced on every check, for `BucketReady`'s message.
pub const ENFORCED_SETTINGS: &str = "owner metadata and blob soft-delete retention of at least 7 days (corrected); \
     private container (created private, checked every pass, reported when public)";

/// The settings only the storage account's owner can change (management plane, or the account
/// key for a container's public access), for `BucketReady`'s message.
pub const ACCOUNT_SETTINGS: &str = "encryption keys, blob versioning, lifecycle management (backup expiry), \
     minimum TLS version, blob public access";

/// The provider's own settings: the storage account and where it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureSettings {
    /// The storage account the container lives in (not created by the operator).
    pub storage_account: Option<String>,
    /// The storage account's resource group; the cluster's (`platformStatus.azure.resourceGroupName`)
    /// when unset.
    pub resource_group: Option<String>,
    /// The cluster's Azure cloud (`platformStatus.azure.cloudName`).
    pub cloud: AzureCloud,
}

/// The Azure platform of one cluster.
#[derive(Debug, Clone)]
pub struct AzurePlatform {
    region: String,
    settings: AzureSettings,
    store: Arc<dyn ObjectStore>,
    credentials: Arc<dyn CredentialSource>,
    credentials_dir: std::path::PathBuf,
    counter: CallCounter,
}

impl AzurePlatform {
    /// Builds the provider from cluster facts and its settings, with credentials from
    /// `config.credentials_dir`.
    ///
    /// Errors: [`Error::InvalidConfig`] when the region is missing or the account name invalid.
    pub fn new(config: &ProviderConfig, settings: AzureSettings) -> Result<Self> {
        Self::builder(config).settings(settings).build()
    }

    /// A builder, for a given credential source, extra trusted CAs or SDK policies (tests).
    pub fn builder(config: &ProviderConfig) -> AzurePlatformBuilder {
        AzurePlatformBuilder {
            config: config.clone(),
            settings: AzureSettings::default(),
            credentials: None,
            extra_ca_pem: None,
            policies: Vec::new(),
        }
    }

    /// Counts of every Blob service call this provider made.
    pub fn call_counter(&self) -> &CallCounter {
        &self.counter
    }

    /// The provider's settings.
    pub fn settings(&self) -> &AzureSettings {
        &self.settings
    }

    /// The registry's constructor. Until the VeleroInstall spec section reaches providers, the
    /// storage account comes from `MVO_AZURE_STORAGE_ACCOUNT` (resource group
    /// `MVO_AZURE_RESOURCE_GROUP`, cloud `MVO_AZURE_CLOUD_NAME`).
    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        let var =
            |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let cloud_name = var("MVO_AZURE_CLOUD_NAME").unwrap_or_default();
        let cloud = AzureCloud::from_name(&cloud_name).ok_or_else(|| {
            Error::invalid_config(format!(
                "Azure cloud {cloud_name:?} is not supported; supported: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud"
            ))
        })?;
        let settings = AzureSettings {
            storage_account: var("MVO_AZURE_STORAGE_ACCOUNT"),
            resource_group: var("MVO_AZURE_RESOURCE_GROUP"),
            cloud,
        };
        Ok(Arc::new(Self::new(config, settings)?))
    }

    /// What Velero is told about the account; the subscription is read from the operator's
    /// credentials secret (the credential operator writes it there).
    fn velero_azure(&self) -> VeleroAzure {
        let subscription_id =
            std::fs::read_to_string(self.credentials_dir.join(credentials::SUBSCRIPTION_ID_FILE))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
        let resource_group = self.settings.resource_group.clone().or_else(|| {
            std::fs::read_to_string(self.credentials_dir.join(credentials::RESOURCE_GROUP_FILE))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
        VeleroAzure {
            storage_account: self.settings.storage_account.clone(),
            resource_group,
            subscription_id,
        }
    }
}

/// Builds an [`AzurePlatform`] with non-default parts.
#[derive(Debug)]
pub struct AzurePlatformBuilder {
    config: ProviderConfig,
    settings: AzureSettings,
    credentials: Option<Arc<dyn CredentialSource>>,
    extra_ca_pem: Option<Vec<u8>>,
    policies: Vec<Arc<dyn Policy>>,
}

impl AzurePlatformBuilder {
    /// The provider's settings (storage account, resource group, cloud).
    pub fn settings(mut self, settings: AzureSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Uses `source` (it must yield bearer tokens) instead of the mounted credentials secret.
    pub fn credential_source(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.credentials = Some(source);
        self
    }

    /// Trusts these PEM certificates too (a test endpoint's self-signed CA).
    pub fn trust_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_ca_pem = Some(pem.into());
        self
    }

    /// Adds a per-attempt SDK policy to the Blob client (tests inject faults through one).
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policies.push(policy);
        self
    }

    /// Builds the platform. Nothing is sent and no file is read until the first call.
    ///
    /// Errors: [`Error::InvalidConfig`] when the region is missing, the storage account name is
    /// not a valid one, or the endpoint is not a URL.
    pub fn build(self) -> Result<AzurePlatform> {
        let region = self.config.require_region()?.to_owned();
        let http = client::http_client(self.extra_ca_pem.as_deref())?;
        let credentials: Arc<dyn CredentialSource> = match self.credentials {
            Some(source) => source,
            None => Arc::new(FileCredentialSource::new(
                &self.config.credentials_dir,
                self.settings.cloud,
                http.clone(),
            )),
        };
        let counter = CallCounter::new();
        let store: Arc<dyn ObjectStore> = match &self.settings.storage_account {
            None => Arc::new(NoAccount),
            Some(account) => {
                if !cloud::is_valid_account_name(account) {
                    return Err(Error::invalid_config(format!(
                        "storage account name {account:?} is invalid: 3 to 24 lower-case letters and digits"
                    )));
                }
                let endpoint = match self.config.endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty())
                {
                    // Emulators and private endpoints serve accounts path-style under one host.
                    Some(endpoint) => format!("{}/{account}", endpoint.trim_end_matches('/')),
                    None => self.settings.cloud.blob_endpoint(account),
                };
                let service = client::blob_service(&endpoint, credentials.clone(), http, &self.policies)?;
                Arc::new(BlobStore::new(Blob::new(service, counter.clone()), region.clone()))
            }
        };
        Ok(AzurePlatform {
            region,
            settings: self.settings,
            store,
            credentials,
            credentials_dir: self.config.credentials_dir.clone(),
            counter,
        })
    }
}

/// The store while no storage account is configured: every bucket call names the setting.
#[derive(Debug, Clone, Copy)]
struct NoAccount;

impl NoAccount {
    fn refuse<T>() -> Result<T> {
        Err(Error::invalid_config(
            "no storage account configured for the Azure provider: set spec.azure.storageAccount of the \
             VeleroInstall (or MVO_AZURE_STORAGE_ACCOUNT on the operator); the operator does not create storage accounts",
        ))
    }
}

#[async_trait]
impl ObjectStore for NoAccount {
    async fn find_bucket(&self, _owner: &Owner) -> Result<Recovery> {
        Self::refuse()
    }

    async fn ensure_bucket(&self, _spec: &BucketSpec) -> Result<BucketReport> {
        Self::refuse()
    }

    async fn observe_bucket(&self, _name: &str) -> Result<BucketState> {
        Self::refuse()
    }
}

impl Platform for AzurePlatform {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            buckets: true,
            recovery: true,
            // Checked and reported, but only the account key can change it: not claimed.
            public_access_block: false,
            lifecycle_rules: false,
            default_encryption: false,
            kms: false,
            workload_identity: false,
        }
    }

    fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    fn location_config(&self, bucket: &str) -> LocationConfig {
        velero::location_config(&self.velero_azure(), bucket)
    }

    fn velero_credentials_request(&self, _bucket: &str) -> serde_json::Value {
        velero::credentials_request_spec()
    }

    fn velero_plugin_image(&self) -> &str {
        VELERO_PLUGIN_IMAGE
    }

    fn velero_credentials(&self) -> CredentialsWiring {
        velero::credentials_wiring()
    }

    fn call_counter(&self) -> Option<CallCounter> {
        Some(self.counter.clone())
    }
}

mvo_core::register_provider!(PLATFORM, AzurePlatform::build);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(region: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            platform: PLATFORM.into(),
            region: region.map(Into::into),
            credentials_dir: std::env::temp_dir().join(format!("mvo-azure-empty-{}", std::process::id())),
            ..Default::default()
        }
    }

    #[test]
    fn region_and_a_valid_account_are_required() {
        let err = AzurePlatform::new(&config(None), AzureSettings::default()).expect_err("no region");
        assert!(matches!(&err, Error::InvalidConfig { message } if message.contains("region")), "{err}");
        let bad = AzureSettings { storage_account: Some("Not-Valid".into()), ..Default::default() };
        let err = AzurePlatform::new(&config(Some("eastus")), bad).expect_err("bad account");
        assert!(err.to_string().contains("storage account name"), "{err}");
    }

    #[tokio::test]
    async fn without_an_account_every_bucket_call_names_the_field() {
        let platform = AzurePlatform::new(&config(Some("eastus")), AzureSettings::default()).expect("valid");
        let err = platform.object_store().find_bucket(&Owner::new("c")).await.expect_err("no account");
        assert!(
            matches!(&err, Error::InvalidConfig { message } if message.contains("spec.azure.storageAccount")),
            "{err}"
        );
        let missing = platform.capabilities().missing();
        assert_eq!(
            missing,
            ["lifecycle_rules", "public_access_block", "default_encryption", "kms", "workload_identity"]
        );
    }

    #[tokio::test]
    async fn missing_credentials_are_named() {
        let settings = AzureSettings { storage_account: Some("acct".into()), ..Default::default() };
        let platform = AzurePlatform::new(&config(Some("eastus")), settings).expect("valid");
        let err = platform.credential_source().credential().await.expect_err("no files");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
        assert!(err.to_string().contains(credentials::CLIENT_ID_FILE), "{err}");
        let err = platform.object_store().observe_bucket("c").await.expect_err("no credentials");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    }
}
