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
//! access (checked and reported, not corrected: see `store`), default encryption (always on, key chosen by
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

use parking_lot::Mutex;

use async_trait::async_trait;
use azure_core::http::{HttpClient, policies::Policy};
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Capabilities, CredentialSource, Error, FactsInput, ObjectStore,
    Owner, Platform, ProviderConfig, ProviderFacts, ProviderRegistration, Recovery, Result, SectionError,
    ShortLivedError, SpecFields, SpecSection, VeleroFacts, VeleroInput,
};
use serde_json::Value;

pub use client::install_crypto_provider;
pub use cloud::AzureCloud;
pub use credentials::{CredentialKind, FileCredentialSource, SdkCredential};
pub use metering::CallCounter;
pub use spec::AzureSpec;
pub use store::{SOFT_DELETE_RETENTION_DAYS, metadata_key, owner_metadata, tags_of};
pub use velero::{
    VELERO_CREDENTIALS_KEY, VELERO_DATA_PERMISSIONS, VELERO_PERMISSIONS, VELERO_PLUGIN_IMAGE, VeleroAzure,
    credentials_request_spec, credentials_request_spec_workload_identity, derived_credentials,
};

use crate::{metering::Blob, store::BlobStore};

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "Azure";
/// The name of the resource group fact in [`ProviderConfig::facts`].
pub const RESOURCE_GROUP_FACT: &str = "resource group";
/// The name of the cloud name fact in [`ProviderConfig::facts`].
pub const CLOUD_NAME_FACT: &str = "cloud name";

/// The settings enforced on every check, for `BucketReady`'s message.
pub const ENFORCED_SETTINGS: &str = "owner metadata and blob soft-delete retention of at least 7 days (corrected); \
     private container (created private, checked every pass, reported when public)";

/// The settings only the storage account's owner can change (management plane, or the account
/// key for a container's public access), for `BucketReady`'s message.
pub const ACCOUNT_SETTINGS: &str = "encryption keys, blob versioning, lifecycle management (backup expiry), \
     minimum TLS version, blob public access";

/// The provider's section of the VeleroInstall spec (`spec.azure`): its schema is merged into
/// the CRD, its value reaches [`Platform::object_store`] and [`Platform::velero`] every reconcile.
pub static SECTION: SpecSection = SpecSection {
    key: spec::SECTION_KEY,
    schema: |generator| generator.subschema_for::<AzureSpec>(),
    validate: |section| {
        spec::parse(section)
            .map(drop)
            .map_err(|invalid| SectionError { field: invalid.field, message: invalid.message })
    },
};

/// The provider's own settings, from the cluster facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureSettings {
    /// The cluster's resource group (`platformStatus.azure.resourceGroupName`); the storage
    /// account's unless the spec section names another.
    pub resource_group: Option<String>,
    /// The cluster's Azure cloud (`platformStatus.azure.cloudName`).
    pub cloud: AzureCloud,
}

/// The store of the storage account the spec section names, built on first use and rebuilt when
/// the account changes.
type AccountStore = Option<(String, Arc<BlobStore>)>;

/// The Azure platform of one cluster.
#[derive(Debug, Clone)]
pub struct AzurePlatform {
    region: String,
    settings: AzureSettings,
    endpoint: Option<String>,
    http: Arc<dyn HttpClient>,
    policies: Vec<Arc<dyn Policy>>,
    stores: Arc<Mutex<AccountStore>>,
    credentials: Arc<dyn CredentialSource>,
    credentials_dir: std::path::PathBuf,
    counter: CallCounter,
}

impl AzurePlatform {
    /// Builds the provider from cluster facts, with credentials from `config.credentials_dir`.
    ///
    /// Errors: [`Error::InvalidConfig`] when the region is missing or the cloud is not supported.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A builder, for a given credential source, extra trusted CAs or SDK policies (tests).
    pub fn builder(config: &ProviderConfig) -> AzurePlatformBuilder {
        AzurePlatformBuilder {
            config: config.clone(),
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

    /// The registry's constructor.
    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Ok(Arc::new(Self::new(config)?))
    }

    /// The store of `account`, reusing the client while the account stays the same.
    fn store_for(&self, account: &str) -> Result<Arc<BlobStore>> {
        let mut cached = self.stores.lock();
        if let Some((name, store)) = cached.as_ref()
            && name == account
        {
            return Ok(store.clone());
        }
        let endpoint = match self.endpoint.as_deref() {
            // Emulators and private endpoints serve accounts path-style under one host.
            Some(endpoint) => format!("{}/{account}", endpoint.trim_end_matches('/')),
            None => self.settings.cloud.blob_endpoint(account),
        };
        let service =
            client::blob_service(&endpoint, self.credentials.clone(), self.http.clone(), &self.policies)?;
        let store = Arc::new(BlobStore::new(Blob::new(service, self.counter.clone()), self.region.clone()));
        *cached = Some((account.to_owned(), store.clone()));
        Ok(store)
    }

    /// What Velero is told about the account; the subscription is read from the operator's
    /// credentials secret (the credential operator writes it there).
    fn velero_azure(&self, spec: &AzureSpec) -> VeleroAzure {
        let file = |name: &str| self.credentials_file(name);
        let cluster_resource_group =
            self.settings.resource_group.clone().or_else(|| file(credentials::RESOURCE_GROUP_FILE));
        VeleroAzure {
            storage_account: spec.storage_account.clone(),
            resource_group: spec.resource_group.clone().or_else(|| cluster_resource_group.clone()),
            cluster_resource_group,
            subscription_id: file(credentials::SUBSCRIPTION_ID_FILE),
        }
    }
}

impl AzurePlatform {
    /// A value of the operator's own credentials secret (mounted files).
    fn credentials_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.credentials_dir.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// Velero's federated identity on a token-based cluster: the client ID from the section,
    /// tenant and subscription from the section or else the operator's own credentials (the
    /// same tenant and subscription on a cluster installed with workload identity).
    fn workload_identity(&self, spec: &AzureSpec) -> std::result::Result<WorkloadIdentity, ShortLivedError> {
        let tenant = spec.tenant_id.clone().or_else(|| self.credentials_file(credentials::TENANT_ID_FILE));
        let subscription =
            spec.subscription_id.clone().or_else(|| self.credentials_file(credentials::SUBSCRIPTION_ID_FILE));
        match (spec.velero_client_id.clone(), tenant, subscription) {
            (Some(client_id), Some(tenant_id), Some(subscription_id)) => {
                Ok(WorkloadIdentity { client_id, tenant_id, subscription_id })
            }
            (client, tenant, subscription) => {
                let field = |name: &str| format!("spec.{}.{name}", spec::SECTION_KEY);
                let mut missing = Vec::new();
                if client.is_none() {
                    missing.push(field("veleroClientID"));
                }
                if tenant.is_none() {
                    missing.push(format!(
                        "{} (the operator's credentials have no {})",
                        field("tenantID"),
                        credentials::TENANT_ID_FILE
                    ));
                }
                if subscription.is_none() {
                    missing.push(format!(
                        "{} (the operator's credentials have no {})",
                        field("subscriptionID"),
                        credentials::SUBSCRIPTION_ID_FILE
                    ));
                }
                Err(ShortLivedError::MissingInSection(missing))
            }
        }
    }
}

/// The identity Velero's projected token is exchanged for under workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    /// The managed identity's (or app registration's) client ID.
    pub client_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The subscription of the cluster's disks.
    pub subscription_id: String,
}

/// Builds an [`AzurePlatform`] with non-default parts.
#[derive(Debug)]
pub struct AzurePlatformBuilder {
    config: ProviderConfig,
    credentials: Option<Arc<dyn CredentialSource>>,
    extra_ca_pem: Option<Vec<u8>>,
    policies: Vec<Arc<dyn Policy>>,
}

impl AzurePlatformBuilder {
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
    /// Errors: [`Error::InvalidConfig`] when the region is missing or the cloud not supported.
    pub fn build(self) -> Result<AzurePlatform> {
        let region = self.config.require_region()?.to_owned();
        let cloud_name = self.config.facts.get(CLOUD_NAME_FACT).map(String::as_str).unwrap_or_default();
        let cloud = AzureCloud::from_name(cloud_name).ok_or_else(|| {
            Error::invalid_config(format!(
                "Azure cloud {cloud_name:?} is not supported; supported: AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud"
            ))
        })?;
        let settings =
            AzureSettings { resource_group: self.config.facts.get(RESOURCE_GROUP_FACT).cloned(), cloud };
        let http = client::http_client(self.extra_ca_pem.as_deref())?;
        let credentials: Arc<dyn CredentialSource> = match self.credentials {
            Some(source) => source,
            None => Arc::new(FileCredentialSource::new(&self.config.credentials_dir, cloud, http.clone())),
        };
        let endpoint =
            self.config.endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned);
        Ok(AzurePlatform {
            region,
            settings,
            endpoint,
            http,
            policies: self.policies,
            stores: Arc::default(),
            credentials,
            credentials_dir: self.config.credentials_dir.clone(),
            counter: CallCounter::new(),
        })
    }
}

/// The store while no storage account is configured: every bucket call names the field.
#[derive(Debug, Clone, Copy)]
struct NoAccount;

impl NoAccount {
    fn refuse<T>() -> Result<T> {
        Err(Error::invalid_config(
            "no storage account for the Azure provider: set spec.azure.storageAccount of the VeleroInstall \
             (the operator does not create storage accounts)",
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

fn parse_section(section: &Value) -> Result<AzureSpec> {
    spec::parse(section)
        .map_err(|invalid| Error::invalid_config(format!("{}: {}", invalid.field, invalid.message)))
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
            // Checked and reported, not corrected (see the store module): not claimed.
            public_access_block: false,
            lifecycle_rules: false,
            default_encryption: false,
            kms: false,
            workload_identity: true,
        }
    }

    fn spec_fields(&self) -> SpecFields {
        // No shared KMS field: the account's encryption is the account owner's.
        SpecFields { kms_key: None, section: Some(&SECTION) }
    }

    fn object_store(&self, section: &Value) -> Result<Arc<dyn ObjectStore>> {
        match parse_section(section)?.storage_account {
            Some(account) => Ok(self.store_for(&account)?),
            None => Ok(Arc::new(NoAccount)),
        }
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError> {
        // The section was validated before this call; an unusable one yields no account.
        let spec = spec::parse(input.section).unwrap_or_default();
        let derived =
            velero::derived_credentials(self.settings.resource_group.as_deref(), self.settings.cloud);
        let (credentials_request, credentials) = match input.short_lived {
            None => (velero::credentials_request_spec(), velero::credentials_wiring(derived)),
            Some(_) => {
                let identity = self.workload_identity(&spec)?;
                (
                    velero::credentials_request_spec_workload_identity(
                        &identity.client_id,
                        &identity.tenant_id,
                        &identity.subscription_id,
                        &self.region,
                    ),
                    velero::workload_identity_wiring(derived, &identity),
                )
            }
        };
        Ok(VeleroFacts {
            plugin_image: VELERO_PLUGIN_IMAGE.to_owned(),
            location: velero::location_config(&self.velero_azure(&spec), input.bucket),
            credentials_request,
            credentials,
        })
    }

    fn call_counter(&self) -> Option<CallCounter> {
        Some(self.counter.clone())
    }
}

/// The facts Azure needs: the resource group and cloud name from `platformStatus.azure`, the
/// region from the install-config's `platform.azure` (OpenShift reports no region in
/// `platformStatus.azure`), each falling back to the install-config.
fn read_facts(input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
    let (group, cloud, region) =
        (input.field("resourceGroupName")?, input.field("cloudName")?, input.field("region")?);
    let mut facts =
        ProviderFacts { complete: region.is_some() && group.is_some(), region, ..Default::default() };
    facts.set(RESOURCE_GROUP_FACT, group);
    facts.set(CLOUD_NAME_FACT, cloud);
    Ok(facts)
}

mvo_core::register_provider!(
    ProviderRegistration::new(PLATFORM, AzurePlatform::build)
        .with_facts("azure", read_facts)
        .with_section(&SECTION)
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

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
    fn region_and_a_known_cloud_are_required() {
        let err = AzurePlatform::new(&config(None)).expect_err("no region");
        assert!(matches!(&err, Error::InvalidConfig { message } if message.contains("region")), "{err}");
        let mut stack = config(Some("eastus"));
        stack.facts.insert(CLOUD_NAME_FACT.into(), "AzureStackCloud".into());
        let err = AzurePlatform::new(&stack).expect_err("stack");
        assert!(err.to_string().contains("AzureStackCloud"), "{err}");
    }

    #[test]
    fn facts_come_from_platform_status_and_the_region_from_install_config() {
        let status = json!({"resourceGroupName": "rg", "cloudName": "AzureUSGovernmentCloud"});
        let first =
            read_facts(&FactsInput { platform_status: Some(&status), install_config: None }).expect("read");
        assert!(!first.complete, "no region in platformStatus.azure");
        let install = json!({"region": "usgovvirginia"});
        let second =
            read_facts(&FactsInput { platform_status: Some(&status), install_config: Some(&install) })
                .expect("read");
        assert!(second.complete);
        assert_eq!(second.region.as_deref(), Some("usgovvirginia"));
        assert_eq!(second.values.get(RESOURCE_GROUP_FACT).map(String::as_str), Some("rg"));
        let bad = json!({"resourceGroupName": 7});
        assert!(read_facts(&FactsInput { platform_status: Some(&bad), install_config: None }).is_err());
        let config = ProviderConfig { facts: second.values, ..config(second.region.as_deref()) };
        let platform = AzurePlatform::new(&config).expect("platform");
        assert_eq!(platform.settings().cloud, AzureCloud::UsGovernment);
    }

    #[tokio::test]
    async fn without_an_account_every_bucket_call_names_the_field() {
        let platform = AzurePlatform::new(&config(Some("eastus"))).expect("valid");
        let store = platform.object_store(&Value::Null).expect("store");
        let err = store.find_bucket(&Owner::new("c")).await.expect_err("no account");
        assert!(
            matches!(&err, Error::InvalidConfig { message } if message.contains("spec.azure.storageAccount")),
            "{err}"
        );
        let err = platform.object_store(&json!({"storageAccount": "Bad-Name"})).expect_err("bad section");
        assert!(err.to_string().contains("spec.azure.storageAccount"), "{err}");
        assert!((SECTION.validate)(&json!({"storageAccount": "Bad-Name"})).is_err());
        assert!((SECTION.validate)(&Value::Null).is_ok());
        let missing = platform.capabilities().missing();
        assert_eq!(missing, ["lifecycle_rules", "public_access_block", "default_encryption", "kms"]);
    }

    #[tokio::test]
    async fn missing_credentials_are_named() {
        let platform = AzurePlatform::new(&config(Some("eastus"))).expect("valid");
        let err = platform.credential_source().credential().await.expect_err("no files");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
        assert!(err.to_string().contains(credentials::CLIENT_ID_FILE), "{err}");
        let store = platform.object_store(&json!({"storageAccount": "acct"})).expect("store");
        let err = store.observe_bucket("c").await.expect_err("no credentials");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    }

    #[test]
    fn velero_gets_the_account_the_groups_and_the_plugin() {
        let mut config = config(Some("eastus"));
        config.facts.insert(RESOURCE_GROUP_FACT.into(), "cluster-rg".into());
        let platform = AzurePlatform::new(&config).expect("platform");
        let section = json!({"storageAccount": "veleroacct"});
        let facts = platform
            .velero(&VeleroInput { bucket: "c", section: &section, short_lived: None })
            .expect("facts");
        assert_eq!(facts.plugin_image, VELERO_PLUGIN_IMAGE);
        assert_eq!(
            facts.location.backup_config.get("storageAccount").map(String::as_str),
            Some("veleroacct")
        );
        assert_eq!(facts.location.backup_config.get("resourceGroup").map(String::as_str), Some("cluster-rg"));
        assert_eq!(facts.credentials_request["kind"], "AzureProviderSpec");
        assert_eq!(
            facts.credentials.secret_name(),
            mvo_core::velero::VELERO_DERIVED_CREDENTIALS_SECRET,
            "Velero mounts the rendered file"
        );
        let short = mvo_core::ShortLivedInput::default();
        let err = platform.velero(&VeleroInput { bucket: "c", section: &section, short_lived: Some(&short) });
        let Err(ShortLivedError::MissingInSection(missing)) = err else { panic!("{err:?}") };
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert_eq!(missing[0], "spec.azure.veleroClientID");
        assert!(missing[1].starts_with("spec.azure.tenantID (") && missing[1].contains("azure_tenant_id"));

        let (app, tenant, sub) = (
            "11111111-2222-3333-4444-555555555555",
            "66666666-7777-8888-9999-000000000000",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        );
        let section = json!({"storageAccount": "veleroacct", "veleroClientID": app, "tenantID": tenant, "subscriptionID": sub});
        let facts = platform
            .velero(&VeleroInput { bucket: "c", section: &section, short_lived: Some(&short) })
            .expect("workload identity");
        let request = &facts.credentials_request;
        assert_eq!(
            (
                &request["azureClientID"],
                &request["azureTenantID"],
                &request["azureSubscriptionID"],
                &request["azureRegion"]
            ),
            (&json!(app), &json!(tenant), &json!(sub), &json!("eastus"))
        );
        let env: BTreeMap<&str, &str> =
            facts.credentials.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env.get("AZURE_CLIENT_ID"), Some(&app));
        assert_eq!(env.get("AZURE_TENANT_ID"), Some(&tenant));
        assert_eq!(env.get("AZURE_FEDERATED_TOKEN_FILE"), Some(&mvo_core::velero::CLOUD_TOKEN_PATH));
        assert_eq!(env.get("AZURE_CREDENTIALS_FILE"), Some(&"/credentials/cloud"));
        assert!(
            facts.credentials.derived.is_some(),
            "subscription, group and cloud still come from the file"
        );
    }
}
