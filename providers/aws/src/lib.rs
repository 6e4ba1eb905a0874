//! AWS provider: registers platform `AWS`, validates the cluster facts it needs (a region), and
//! renders what Velero needs on AWS (location config, least-privilege CredentialsRequest with
//! partition-aware ARNs, plugin image, credentials wiring).
//!
//! S3 bucket operations and STS credentials are not implemented yet: the object store and the
//! credential source answer `NotSupported` and the capabilities claim nothing.

mod velero;

use std::sync::Arc;

use mvo_core::{
    Capabilities, CredentialSource, CredentialsWiring, LocationConfig, ObjectStore, Platform, ProviderConfig,
    Result, Unsupported,
};

pub use velero::{Partition, VELERO_PLUGIN_IMAGE};

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "AWS";

/// The AWS platform of one cluster.
#[derive(Debug, Clone)]
pub struct AwsPlatform {
    region: String,
}

impl AwsPlatform {
    /// Builds the provider from cluster facts.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the region is missing.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        Ok(AwsPlatform { region: config.require_region()?.to_owned() })
    }

    /// The registry's constructor.
    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Ok(Arc::new(Self::new(config)?))
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
        Capabilities::default()
    }

    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(Unsupported { provider: PLATFORM })
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        Arc::new(Unsupported { provider: PLATFORM })
    }

    fn location_config(&self, bucket: &str) -> LocationConfig {
        velero::location_config(&self.region, bucket)
    }

    fn velero_credentials_request(&self, bucket: &str) -> serde_json::Value {
        velero::credentials_request_spec(Partition::of_region(&self.region), bucket)
    }

    fn velero_plugin_image(&self) -> &str {
        VELERO_PLUGIN_IMAGE
    }

    fn velero_credentials(&self) -> CredentialsWiring {
        velero::credentials_wiring()
    }
}

mvo_core::register_provider!(PLATFORM, AwsPlatform::build);

#[cfg(test)]
mod tests {
    use mvo_core::Error;

    use super::*;

    #[test]
    fn region_is_required() {
        let config = ProviderConfig { platform: PLATFORM.into(), ..Default::default() };
        let err = AwsPlatform::new(&config).expect_err("no region");
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains("region"));
    }

    #[tokio::test]
    async fn unimplemented_operations_say_so() {
        let config = ProviderConfig {
            platform: PLATFORM.into(),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let platform = AwsPlatform::new(&config).expect("valid");
        assert_eq!(platform.capabilities(), Capabilities::default());
        let err = platform.object_store().observe_bucket("b").await.expect_err("not implemented");
        assert!(matches!(err, Error::NotSupported { provider: "AWS", .. }));
    }
}
