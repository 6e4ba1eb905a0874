//! What Velero needs on GCP: BSL/VSL config, the CredentialsRequest provider spec for Velero's own
//! access (predefined roles; key mode and workload identity federation), the plugin image and how
//! the credentials reach the container.

use std::collections::BTreeMap;

use mvo_core::{CredentialsWiring, LocationConfig};
use serde_json::{Value, json};

/// Pinned image of Velero's GCP plugin.
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-gcp:v1.13.0";

/// The roles Velero needs: disk snapshots, acting as its service account, bucket object access.
pub const VELERO_PREDEFINED_ROLES: [&str; 3] =
    ["roles/compute.storageAdmin", "roles/iam.serviceAccountUser", "roles/cloudmigration.storageaccess"];

/// Where the projected service-account token is mounted in Velero's pod on WIF clusters
/// (`CredentialsRequest.spec.cloudTokenPath`).
pub const CLOUD_TOKEN_PATH: &str = "/var/run/secrets/openshift/serviceaccount/token";

/// Where the Velero credentials secret is mounted in the Velero container.
const CREDENTIALS_MOUNT: &str = "/credentials";

pub(crate) fn location_config(project_id: &str, bucket: &str) -> LocationConfig {
    LocationConfig {
        provider: "gcp".into(),
        bucket: bucket.into(),
        backup_config: BTreeMap::new(),
        snapshot_config: BTreeMap::from([("project".to_owned(), project_id.to_owned())]),
    }
}

/// Velero's `GCPProviderSpec` (key mode): the predefined roles.
pub fn credentials_request_spec() -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "GCPProviderSpec",
        "predefinedRoles": VELERO_PREDEFINED_ROLES,
        "skipServiceCheck": true
    })
}

/// Velero's `GCPProviderSpec` on workload identity federation clusters: the same roles, bound to
/// the Google service account `service_account_email` that Velero impersonates with its projected
/// token through the pool provider `audience`, so no long-lived key is minted. The
/// CredentialsRequest also needs `spec.cloudTokenPath` = [`CLOUD_TOKEN_PATH`].
pub fn credentials_request_spec_wif(service_account_email: &str, audience: &str) -> Value {
    let mut spec = credentials_request_spec();
    spec["serviceAccountEmail"] = Value::String(service_account_email.to_owned());
    spec["audience"] = Value::String(audience.to_owned());
    spec
}

pub(crate) fn credentials_wiring() -> CredentialsWiring {
    CredentialsWiring {
        mount_path: CREDENTIALS_MOUNT.into(),
        env: vec![(
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            format!("{CREDENTIALS_MOUNT}/service_account.json"),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wif_spec_adds_the_service_account_and_keeps_the_roles() {
        let spec = credentials_request_spec_wif(
            "velero@p.iam.gserviceaccount.com",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov",
        );
        assert_eq!(spec["kind"], "GCPProviderSpec");
        assert_eq!(spec["predefinedRoles"], json!(VELERO_PREDEFINED_ROLES));
        assert_eq!(spec["serviceAccountEmail"], "velero@p.iam.gserviceaccount.com");
        assert!(spec["audience"].as_str().is_some_and(|a| a.contains("workloadIdentityPools")));
        assert_eq!(CLOUD_TOKEN_PATH, "/var/run/secrets/openshift/serviceaccount/token");
    }
}
