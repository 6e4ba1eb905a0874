//! GCP provider: registers platform `GCP`, validates the cluster facts it needs (project and
//! region), and renders what Velero needs on GCP (location config, CredentialsRequest with the
//! predefined roles, plugin image, credentials wiring).
//!
//! GCS bucket operations and credential loading are not implemented yet: the object store and the
//! credential source answer `NotSupported` and the capabilities claim nothing.

use std::{collections::BTreeMap, sync::Arc};

use mvo_core::{
    Capabilities, CredentialSource, CredentialsWiring, LocationConfig, ObjectStore, Platform, ProviderConfig,
    Result, Unsupported,
};
use serde_json::json;

/// The platform name, as in `Infrastructure.status.platformStatus.type`.
pub const PLATFORM: &str = "GCP";

/// Pinned image of Velero's GCP plugin.
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-gcp:v1.13.0";

/// The roles Velero needs: disk snapshots, acting as its service account, bucket object access.
pub const VELERO_PREDEFINED_ROLES: [&str; 3] =
    ["roles/compute.storageAdmin", "roles/iam.serviceAccountUser", "roles/cloudmigration.storageaccess"];

const CREDENTIALS_MOUNT: &str = "/credentials";

/// The GCP platform of one cluster.
#[derive(Debug, Clone)]
pub struct GcpPlatform {
    project_id: String,
    region: String,
}

impl GcpPlatform {
    /// Builds the provider from cluster facts.
    ///
    /// Errors: [`mvo_core::Error::InvalidConfig`] when the project ID or region is missing.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        Ok(GcpPlatform {
            project_id: config.require_project_id()?.to_owned(),
            region: config.require_region()?.to_owned(),
        })
    }

    /// The project buckets live in.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Ok(Arc::new(Self::new(config)?))
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
        Capabilities::default()
    }

    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(Unsupported { provider: PLATFORM })
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        Arc::new(Unsupported { provider: PLATFORM })
    }

    fn location_config(&self, bucket: &str) -> LocationConfig {
        LocationConfig {
            provider: "gcp".into(),
            bucket: bucket.into(),
            backup_config: BTreeMap::new(),
            snapshot_config: BTreeMap::from([("project".to_owned(), self.project_id.clone())]),
        }
    }

    fn velero_credentials_request(&self, _bucket: &str) -> serde_json::Value {
        json!({
            "apiVersion": "cloudcredential.openshift.io/v1",
            "kind": "GCPProviderSpec",
            "predefinedRoles": VELERO_PREDEFINED_ROLES,
            "skipServiceCheck": true
        })
    }

    fn velero_plugin_image(&self) -> &str {
        VELERO_PLUGIN_IMAGE
    }

    fn velero_credentials(&self) -> CredentialsWiring {
        CredentialsWiring {
            mount_path: CREDENTIALS_MOUNT.into(),
            env: vec![(
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                format!("{CREDENTIALS_MOUNT}/service_account.json"),
            )],
        }
    }
}

mvo_core::register_provider!(PLATFORM, GcpPlatform::build);

#[cfg(test)]
mod tests {
    use mvo_core::Error;

    use super::*;

    fn config(project: Option<&str>, region: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            platform: PLATFORM.into(),
            project_id: project.map(Into::into),
            region: region.map(Into::into),
            ..Default::default()
        }
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
        let spec = platform.velero_credentials_request("b");
        assert_eq!(spec["kind"], "GCPProviderSpec");
        assert_eq!(spec["predefinedRoles"], json!(VELERO_PREDEFINED_ROLES));
        assert_eq!(
            platform.location_config("b").snapshot_config.get("project").map(String::as_str),
            Some("p")
        );
    }

    #[tokio::test]
    async fn unimplemented_operations_say_so() {
        let platform = GcpPlatform::new(&config(Some("p"), Some("us-central1"))).expect("valid");
        let err = platform.object_store().find_bucket(&mvo_core::Owner::new("c")).await.expect_err("stub");
        assert!(matches!(err, Error::NotSupported { provider: "GCP", .. }));
    }
}
