//! AWS provider: registers platform `AWS` and implements it on S3 and STS.
//!
//! - [`store`]: the S3 [`ObjectStore`] (read-compare-write enforcement of SPEC 5.1, creation,
//!   recovery by owner tags); [`settings`] converts between S3 wire types and core settings.
//! - [`credentials`]: the operator's credentials from the mounted secret (static keys, or web
//!   identity via STS), handed to the SDK through an adapter so rotation needs no restart.
//! - [`errors`]: the one mapping from SDK errors to [`mvo_core::Error`] variants.
//! - [`metering`]: [`CallCounter`], the interceptor that counts every cloud call by operation.
//! - [`iam`]: the operator's own least-privilege IAM statements; [`velero`]: what Velero needs on
//!   AWS (location config, CredentialsRequest in key and STS mode, plugin image, wiring).

mod client;
pub mod credentials;
mod errors;
pub mod iam;
pub mod metering;
mod settings;
mod store;
mod velero;

use std::sync::Arc;

use aws_sdk_s3::config::{Intercept, SharedInterceptor};
use mvo_core::{
    Capabilities, CredentialSource, FactsInput, ObjectStore, Platform, ProviderConfig, ProviderFacts,
    ProviderRegistration, Result, ShortLivedError, SpecFields, VeleroFacts, VeleroInput,
};

pub use credentials::{FileCredentialSource, SdkCredentials};
pub use metering::CallCounter;
pub use velero::{
    CLOUD_TOKEN_PATH, Partition, VELERO_PLUGIN_IMAGE, credentials_request_spec, credentials_request_spec_sts,
};

use crate::{client::ClientSettings, store::S3Store};

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "AWS";

/// The AWS platform of one cluster.
#[derive(Debug, Clone)]
pub struct AwsPlatform {
    region: String,
    store: Arc<S3Store>,
    credentials: Arc<dyn CredentialSource>,
    counter: CallCounter,
}

impl AwsPlatform {
    /// Builds the provider from cluster facts, with credentials from `config.credentials_dir`.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the region is missing.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A builder, for overriding the credential source or adding SDK interceptors.
    pub fn builder(config: &ProviderConfig) -> AwsPlatformBuilder {
        AwsPlatformBuilder { config: config.clone(), credentials: None, interceptors: Vec::new() }
    }

    /// The registry's constructor.
    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Ok(Arc::new(Self::new(config)?))
    }

    /// Counts of every S3/STS call this provider made.
    pub fn call_counter(&self) -> &CallCounter {
        &self.counter
    }
}

/// Builds an [`AwsPlatform`] with non-default parts.
#[derive(Debug)]
pub struct AwsPlatformBuilder {
    config: ProviderConfig,
    credentials: Option<Arc<dyn CredentialSource>>,
    interceptors: Vec<SharedInterceptor>,
}

impl AwsPlatformBuilder {
    /// Uses `source` instead of the mounted credentials secret (tests, development endpoints).
    pub fn credential_source(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.credentials = Some(source);
        self
    }

    /// Registers an extra interceptor on the S3 client (tests use one to inject faults).
    pub fn interceptor(mut self, interceptor: impl Intercept + 'static) -> Self {
        self.interceptors.push(SharedInterceptor::new(interceptor));
        self
    }

    /// Builds the platform.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the region is missing.
    pub fn build(self) -> Result<AwsPlatform> {
        let region = self.config.require_region()?.to_owned();
        let endpoint = self.config.endpoint.clone().filter(|e| !e.trim().is_empty());
        let counter = CallCounter::new();
        let settings = ClientSettings {
            region: region.clone(),
            endpoint,
            counter: counter.clone(),
            interceptors: self.interceptors,
        };
        let credentials = match self.credentials {
            Some(source) => source,
            None => Arc::new(FileCredentialSource::new(&self.config.credentials_dir, client::sts(&settings))),
        };
        let store = S3Store::new(
            client::s3(&settings, credentials.clone()),
            client::sts_signed(&settings, credentials.clone()),
            region.clone(),
        );
        Ok(AwsPlatform { region, store: Arc::new(store), credentials, counter })
    }
}

impl Platform for AwsPlatform {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn spec_fields(&self) -> SpecFields {
        SpecFields { kms_key: Some("kmsKeyID"), section: None }
    }

    fn object_store(&self, _section: &serde_json::Value) -> Result<Arc<dyn ObjectStore>> {
        Ok(self.store.clone())
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError> {
        velero::facts(&self.region, input)
    }

    fn call_counter(&self) -> Option<CallCounter> {
        Some(self.counter.clone())
    }
}

/// The facts AWS needs: the region, from `platformStatus.aws.region` or, on clusters that predate
/// it, the install-config's `platform.aws.region`.
fn read_facts(input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
    let region = input.field("region")?;
    Ok(ProviderFacts { complete: region.is_some(), region, ..Default::default() })
}

mvo_core::register_provider!(
    ProviderRegistration::new(PLATFORM, AwsPlatform::build).with_facts("aws", read_facts)
);

#[cfg(test)]
mod tests {
    use mvo_core::Error;

    use super::*;

    #[test]
    fn region_comes_from_the_platform_status_or_the_install_config() {
        let status = serde_json::json!({"region": "eu-west-1"});
        let install = serde_json::json!({"region": "us-east-2"});
        let read =
            |status, install| read_facts(&FactsInput { platform_status: status, install_config: install });
        let facts = read(Some(&status), Some(&install)).expect("facts");
        assert_eq!((facts.region.as_deref(), facts.complete), (Some("eu-west-1"), true));
        let facts = read(None, None).expect("facts");
        assert_eq!((facts.region, facts.complete), (None, false));
        assert_eq!(read(None, Some(&install)).expect("fallback").region.as_deref(), Some("us-east-2"));
        let wrong = serde_json::json!({"region": [1, 2]});
        assert!(read(None, Some(&wrong)).is_err());
    }

    #[test]
    fn region_is_required() {
        let config = ProviderConfig { platform: PLATFORM.into(), ..Default::default() };
        let err = AwsPlatform::new(&config).expect_err("no region");
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains("region"));
    }

    #[tokio::test]
    async fn every_capability_is_claimed_and_credentials_name_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("mvo-aws-empty-{}", std::process::id()));
        let config = ProviderConfig {
            platform: PLATFORM.into(),
            region: Some("us-east-1".into()),
            credentials_dir: dir,
            ..Default::default()
        };
        let platform = AwsPlatform::new(&config).expect("valid");
        assert_eq!(platform.capabilities(), Capabilities::ALL);
        let err = platform.credential_source().credential().await.expect_err("no files");
        assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
        assert!(err.to_string().contains("aws_access_key_id"), "{err}");
    }
}
