//! What Velero needs on GCP: BSL/VSL config, the CredentialsRequest provider spec for Velero's own
//! access (predefined roles; key mode and workload identity federation), the plugin image and how
//! the credentials reach the container.

use std::collections::BTreeMap;

use mvo_core::{
    CredentialsWiring, LocationConfig, ShortLivedError, ShortLivedField, ShortLivedInput, VeleroFacts,
    VeleroInput,
};
use serde_json::{Value, json};

/// Pinned image of Velero's GCP plugin.
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-gcp:v1.13.0";

/// The roles Velero needs: disk snapshots, acting as its service account, bucket object access.
pub const VELERO_PREDEFINED_ROLES: [&str; 3] =
    ["roles/compute.storageAdmin", "roles/iam.serviceAccountUser", "roles/cloudmigration.storageaccess"];

/// Where the projected service-account token is mounted in Velero's pod on WIF clusters
/// (`CredentialsRequest.spec.cloudTokenPath`).
pub const CLOUD_TOKEN_PATH: &str = mvo_core::velero::CLOUD_TOKEN_PATH;

/// Where the Velero credentials secret is mounted in the Velero container.
const CREDENTIALS_MOUNT: &str = "/credentials";
/// The secret key the cloud credential operator writes the credentials JSON under (a key file,
/// or an `external_account` file on workload identity federation clusters).
const CREDENTIALS_KEY: &str = "service_account.json";

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

/// Everything Velero needs on GCP, with a key file or on a workload identity federation cluster.
pub(crate) fn facts(project_id: &str, input: &VeleroInput<'_>) -> Result<VeleroFacts, ShortLivedError> {
    let (location, credentials_request) = match input.short_lived {
        None => (location_config(project_id, input.bucket), credentials_request_spec()),
        Some(identity) => short_lived(project_id, input.bucket, identity)?,
    };
    Ok(VeleroFacts {
        plugin_image: VELERO_PLUGIN_IMAGE.into(),
        location,
        credentials_request,
        credentials: credentials_wiring(),
    })
}

/// Velero on a workload identity federation cluster: the CredentialsRequest names the service
/// account and pool provider, the credential operator writes an `external_account` file that
/// Google's client libraries read through `GOOGLE_APPLICATION_CREDENTIALS`, and the BSL names the
/// service account (`serviceAccount`): without a private key the GCP plugin signs download URLs
/// through that account instead.
fn short_lived(
    project_id: &str,
    bucket: &str,
    input: &ShortLivedInput,
) -> Result<(LocationConfig, Value), ShortLivedError> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (email, audience) = (given(&input.service_account_email), given(&input.audience));
    let (Some(email), Some(audience)) = (email.clone(), audience.clone()) else {
        let mut missing = Vec::new();
        if email.is_none() {
            missing.push(ShortLivedField::ServiceAccountEmail);
        }
        if audience.is_none() {
            missing.push(ShortLivedField::Audience);
        }
        return Err(ShortLivedError::Missing(missing));
    };
    let mut location = location_config(project_id, bucket);
    location.backup_config.insert("serviceAccount".into(), email.clone());
    Ok((location, credentials_request_spec_wif(&email, &audience)))
}

pub(crate) fn credentials_wiring() -> CredentialsWiring {
    CredentialsWiring {
        mount_path: CREDENTIALS_MOUNT.into(),
        secret_key: CREDENTIALS_KEY.into(),
        env: vec![(
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            format!("{CREDENTIALS_MOUNT}/{CREDENTIALS_KEY}"),
        )],
        derived: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wif_needs_email_and_audience_and_names_the_account_in_the_bsl() {
        let none = short_lived("p", "b", &ShortLivedInput::default()).expect_err("nothing given");
        assert_eq!(
            none,
            ShortLivedError::Missing(vec![ShortLivedField::ServiceAccountEmail, ShortLivedField::Audience])
        );
        let input = ShortLivedInput {
            service_account_email: Some("velero@p.iam.gserviceaccount.com".into()),
            audience: Some(
                "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/x/providers/y".into(),
            ),
            ..Default::default()
        };
        let (location, provider_spec) = short_lived("p", "b", &input).expect("wif");
        assert_eq!(provider_spec["serviceAccountEmail"], "velero@p.iam.gserviceaccount.com");
        assert_eq!(
            location.backup_config.get("serviceAccount").map(String::as_str),
            Some("velero@p.iam.gserviceaccount.com")
        );
        assert_eq!(location.snapshot_config.get("project").map(String::as_str), Some("p"));
    }

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
