//! GCP provider: registers platform `GCP` and implements it on GCS through the official
//! `google-cloud-storage` crate's `StorageControl` client (gRPC).
//!
//! - [`store`]: the GCS [`ObjectStore`] (SPEC 5.2: one read per check, one masked UpdateBucket
//!   for drift, creation with every setting, the 409 decision, recovery by owner labels);
//!   [`settings`] converts between GCS bucket metadata and core settings.
//! - [`credentials`]: `service_account.json` (service-account key or external account), re-read
//!   on rotation and handed to the SDK through an adapter.
//! - [`errors`]: the one mapping from SDK errors to [`mvo_core::Error`] variants.
//! - [`metering`]: [`CallCounter`] and the metered client wrapper every GCS call goes through.
//! - [`iam`]: the operator's own permissions; [`velero`]: what Velero needs on GCP (location
//!   config, CredentialsRequest with the predefined roles in key and WIF mode, plugin image, wiring).
//! - `client`: the real client, built on first use, with ring as rustls' crypto provider.
//!
//! Claims every capability: buckets, recovery, lifecycle rules, public access prevention,
//! default encryption (Google-managed or a default KMS key) and workload identity federation.

mod client;
pub mod credentials;
mod errors;
pub mod iam;
pub mod metering;
mod settings;
mod store;
mod velero;

use std::sync::Arc;

use google_cloud_storage::client::StorageControl;
use mvo_core::{
    Capabilities, CredentialSource, FactsInput, ObjectStore, Platform, ProviderConfig, ProviderFacts,
    ProviderRegistration, Result, ShortLivedError, SpecFields, TagStyle, VeleroFacts, VeleroInput,
};

pub use client::install_crypto_provider;
pub use credentials::{CredentialKind, FileCredentialSource, SERVICE_ACCOUNT_FILE, SdkCredentials};
pub use metering::CallCounter;
pub use velero::{
    CLOUD_TOKEN_PATH, VELERO_PLUGIN_IMAGE, VELERO_PREDEFINED_ROLES, credentials_request_spec,
    credentials_request_spec_wif,
};

use crate::{client::ClientSource, metering::Control, store::GcsStore};

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "GCP";
/// The name of the project fact in [`ProviderConfig::facts`] (and in the error naming it missing).
pub const PROJECT_ID_FACT: &str = "project ID";

/// The GCP platform of one cluster.
#[derive(Debug, Clone)]
pub struct GcpPlatform {
    project_id: String,
    region: String,
    store: Arc<GcsStore>,
    credentials: Arc<dyn CredentialSource>,
    counter: CallCounter,
}

impl GcpPlatform {
    /// Builds the provider from cluster facts, with credentials from `config.credentials_dir`.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the project ID or region is missing.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A builder, for giving a ready `StorageControl` client (tests) or another credential source.
    pub fn builder(config: &ProviderConfig) -> GcpPlatformBuilder {
        GcpPlatformBuilder { config: config.clone(), client: None, credentials: None }
    }

    /// The project buckets live in.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Counts of every GCS call this provider made.
    pub fn call_counter(&self) -> &CallCounter {
        &self.counter
    }

    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Ok(Arc::new(Self::new(config)?))
    }
}

/// Builds a [`GcpPlatform`] with non-default parts.
#[derive(Debug)]
pub struct GcpPlatformBuilder {
    config: ProviderConfig,
    client: Option<StorageControl>,
    credentials: Option<Arc<dyn CredentialSource>>,
}

impl GcpPlatformBuilder {
    /// Uses `client` for every GCS call instead of building the real one (tests pass a client made
    /// with `StorageControl::from_stub`).
    pub fn client(mut self, client: StorageControl) -> Self {
        self.client = Some(client);
        self
    }

    /// Reports `source` as the platform's credential source. The real client always signs with
    /// the mounted `service_account.json`; this only matters together with [`Self::client`].
    pub fn credential_source(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.credentials = Some(source);
        self
    }

    /// Builds the platform. Nothing is sent and no file is read until the first call.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the project ID or region is missing.
    pub fn build(self) -> Result<GcpPlatform> {
        let project_id = self.config.require(PROJECT_ID_FACT)?.to_owned();
        let region = self.config.require_region()?.to_owned();
        let endpoint = self.config.endpoint.clone().filter(|e| !e.trim().is_empty());
        let file_source = Arc::new(FileCredentialSource::new(&self.config.credentials_dir));
        let source = match self.client {
            Some(client) => ClientSource::Ready(client),
            None => ClientSource::lazy(file_source.sdk_credentials(), endpoint),
        };
        let credentials = self.credentials.unwrap_or(file_source);
        let counter = CallCounter::new();
        let store = GcsStore::new(Control::new(source, counter.clone()), project_id.clone(), region.clone());
        Ok(GcpPlatform { project_id, region, store: Arc::new(store), credentials, counter })
    }
}

impl Platform for GcpPlatform {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn tag_style(&self) -> TagStyle {
        TagStyle::Labels
    }

    fn spec_fields(&self) -> SpecFields {
        SpecFields { kms_key: Some("kmsKeyName"), section: None }
    }

    fn object_store(&self, _section: &serde_json::Value) -> Result<Arc<dyn ObjectStore>> {
        Ok(self.store.clone())
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError> {
        velero::facts(&self.project_id, input)
    }

    fn call_counter(&self) -> Option<CallCounter> {
        Some(self.counter.clone())
    }
}

/// The facts GCP needs: project ID and region, from `platformStatus.gcp` or, where it is silent,
/// the install-config's `platform.gcp`.
fn read_facts(input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
    let (project, region) = (input.field("projectID")?, input.field("region")?);
    let mut facts =
        ProviderFacts { complete: project.is_some() && region.is_some(), region, ..Default::default() };
    facts.set(PROJECT_ID_FACT, project);
    Ok(facts)
}

mvo_core::register_provider!(
    ProviderRegistration::new(PLATFORM, GcpPlatform::build).with_facts("gcp", read_facts)
);

#[cfg(test)]
mod tests {
    use mvo_core::Error;
    use serde_json::json;

    use super::*;

    fn config(project: Option<&str>, region: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            platform: PLATFORM.into(),
            facts: project.map(|p| (PROJECT_ID_FACT.to_owned(), p.to_owned())).into_iter().collect(),
            region: region.map(Into::into),
            credentials_dir: std::env::temp_dir().join(format!("mvo-gcp-empty-{}", std::process::id())),
            ..Default::default()
        }
    }

    #[test]
    fn facts_come_from_the_platform_status_then_the_install_config() {
        let status = json!({"projectID": "p1", "region": "europe-west4"});
        let install = json!({"projectID": "p2", "region": "us-central1"});
        let read =
            |status, install| read_facts(&FactsInput { platform_status: status, install_config: install });
        let facts = read(Some(&status), None).expect("facts");
        assert!(facts.complete);
        assert_eq!(facts.values.get(PROJECT_ID_FACT).map(String::as_str), Some("p1"));
        let partial = json!({"projectID": "p1"});
        assert!(!read(Some(&partial), None).expect("facts").complete);
        let merged = read(Some(&partial), Some(&install)).expect("facts");
        assert_eq!(
            (merged.values.get(PROJECT_ID_FACT).map(String::as_str), merged.region.as_deref()),
            (Some("p1"), Some("us-central1"))
        );
    }

    #[test]
    fn project_and_region_are_required() {
        let err = GcpPlatform::new(&config(None, Some("us-central1"))).expect_err("no project");
        assert!(matches!(&err, Error::InvalidConfig { message } if message.contains("project ID")), "{err}");
        let err = GcpPlatform::new(&config(Some("p"), None)).expect_err("no region");
        assert!(matches!(&err, Error::InvalidConfig { message } if message.contains("region")), "{err}");
    }

    #[test]
    fn velero_gets_the_predefined_roles() {
        let platform = GcpPlatform::new(&config(Some("p"), Some("us-central1"))).expect("valid");
        let input = VeleroInput { bucket: "b", section: &mvo_core::NO_SECTION, short_lived: None };
        let velero = platform.velero(&input).expect("key mode");
        assert_eq!(velero.credentials_request["kind"], "GCPProviderSpec");
        assert_eq!(velero.credentials_request["predefinedRoles"], json!(VELERO_PREDEFINED_ROLES));
        assert_eq!(velero.location.snapshot_config.get("project").map(String::as_str), Some("p"));
        assert_eq!(velero.plugin_image, VELERO_PLUGIN_IMAGE);
        assert_eq!(velero.credentials.env[0].1, "/credentials/service_account.json");
        assert_eq!(platform.tag_style(), TagStyle::Labels);
    }

    #[tokio::test]
    async fn every_capability_is_claimed_and_missing_credentials_are_named() {
        let platform = GcpPlatform::new(&config(Some("p"), Some("us-central1"))).expect("valid");
        assert_eq!(platform.capabilities(), Capabilities::ALL);
        let err = platform.credential_source().credential().await.expect_err("no file");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
        assert!(err.to_string().contains(SERVICE_ACCOUNT_FILE), "{err}");
    }

    #[tokio::test]
    async fn the_real_client_reports_missing_credentials_as_unauthenticated() {
        let platform = GcpPlatform::new(&config(Some("p"), Some("us-central1"))).expect("valid");
        let err = platform
            .object_store(&mvo_core::NO_SECTION)
            .expect("object store")
            .observe_bucket("b")
            .await
            .expect_err("no credentials file");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
        assert!(err.to_string().contains(SERVICE_ACCOUNT_FILE), "{err}");
    }
}
