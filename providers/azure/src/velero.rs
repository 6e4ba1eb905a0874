//! What Velero needs on Azure: BSL/VSL config, the CredentialsRequest provider spec for Velero's
//! own access (a custom role of the disk/snapshot actions and the blob data actions; key mode and
//! workload identity), the plugin image, the credentials file Velero's Azure plugin reads and how
//! it reaches the container.

use std::collections::BTreeMap;

use mvo_core::{CredentialsWiring, DerivedCredentials, DerivedValue, LocationConfig};
use serde_json::{Value, json};

use crate::{cloud::AzureCloud, credentials};

/// Pinned image of Velero's Azure plugin (the release paired with the pinned Velero v1.17).
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-microsoft-azure:v1.13.0";

/// Where the Velero credentials secret is mounted in the Velero container.
const CREDENTIALS_MOUNT: &str = "/credentials";
/// The secret key holding the dotenv file Velero's Azure plugin reads (`AZURE_CREDENTIALS_FILE`).
pub const VELERO_CREDENTIALS_KEY: &str = "cloud";

/// Management actions Velero's Azure plugin uses: managed-disk snapshots and restores, the
/// storage account's properties.
pub const VELERO_PERMISSIONS: [&str; 9] = [
    "Microsoft.Compute/disks/beginGetAccess/action",
    "Microsoft.Compute/disks/endGetAccess/action",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/snapshots/delete",
    "Microsoft.Compute/snapshots/read",
    "Microsoft.Compute/snapshots/write",
    "Microsoft.Storage/storageAccounts/blobServices/containers/read",
    // The plugin looks up the account's blob endpoint (sovereign clouds, custom domains) with
    // ARM GetProperties; without it, it silently falls back to the public-cloud host name.
    "Microsoft.Storage/storageAccounts/read",
];

/// Blob data actions Velero uses in its container (backups, kopia repository): it reads, writes
/// and deletes objects it owns, through Entra ID (`useAAD`), so no account key is listed.
pub const VELERO_DATA_PERMISSIONS: [&str; 4] = [
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
];

/// What Velero is told about the storage account and the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VeleroAzure {
    /// The storage account holding the container.
    pub storage_account: Option<String>,
    /// The resource group of the storage account (the cluster's when unset).
    pub resource_group: Option<String>,
    /// The cluster's resource group: snapshots are taken there, next to the disks.
    pub cluster_resource_group: Option<String>,
    /// The subscription (from the credentials secret).
    pub subscription_id: Option<String>,
}

pub(crate) fn location_config(azure: &VeleroAzure, bucket: &str) -> LocationConfig {
    let mut backup_config = BTreeMap::new();
    let mut snapshot_config = BTreeMap::new();
    if let Some(group) = &azure.resource_group {
        backup_config.insert("resourceGroup".to_owned(), group.clone());
    }
    // Not the storage account's group: the snapshots' group needs Velero's disk permissions.
    if let Some(group) = &azure.cluster_resource_group {
        snapshot_config.insert("resourceGroup".to_owned(), group.clone());
    }
    if let Some(account) = &azure.storage_account {
        backup_config.insert("storageAccount".to_owned(), account.clone());
    }
    if let Some(subscription) = &azure.subscription_id {
        backup_config.insert("subscriptionId".to_owned(), subscription.clone());
        snapshot_config.insert("subscriptionId".to_owned(), subscription.clone());
    }
    // Blob access through Entra ID instead of listing the account key.
    backup_config.insert("useAAD".to_owned(), "true".to_owned());
    LocationConfig { provider: "azure".into(), bucket: bucket.into(), backup_config, snapshot_config }
}

/// Velero's `AzureProviderSpec`: a custom role of exactly what the plugin calls, no built-in
/// role binding (Contributor would let Velero delete the account).
pub fn credentials_request_spec() -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "AzureProviderSpec",
        "roleBindings": [],
        "permissions": VELERO_PERMISSIONS,
        "dataPermissions": VELERO_DATA_PERMISSIONS,
    })
}

/// The workload identity variant: the same role for the federated identity `client_id` of
/// `tenant_id`, so the credential operator writes a token-file secret instead of a client secret.
/// The CredentialsRequest also needs `spec.cloudTokenPath` = [`mvo_core::velero::CLOUD_TOKEN_PATH`].
pub fn credentials_request_spec_workload_identity(
    client_id: &str,
    tenant_id: &str,
    subscription_id: &str,
    region: &str,
) -> Value {
    let mut spec = credentials_request_spec();
    spec["azureClientID"] = Value::String(client_id.to_owned());
    spec["azureTenantID"] = Value::String(tenant_id.to_owned());
    spec["azureSubscriptionID"] = Value::String(subscription_id.to_owned());
    spec["azureRegion"] = Value::String(region.to_owned());
    spec
}

/// The credentials file Velero's Azure plugin reads from `AZURE_CREDENTIALS_FILE`, rendered by
/// the operator from the keys the cloud credential operator writes into `velero-iam-credentials`
/// (`azure_subscription_id`, `azure_tenant_id`, `azure_client_id`, and `azure_client_secret`
/// except under workload identity) plus the cluster's facts. `AZURE_RESOURCE_GROUP` is the
/// cluster's resource group (where the disks Velero snapshots are), which the plugin requires
/// even under workload identity; the credential operator writes it only with a client secret
/// (`azure_resourcegroup`), so the `Infrastructure` fact comes first.
pub fn derived_credentials(cluster_resource_group: Option<&str>, cloud: AzureCloud) -> DerivedCredentials {
    let key = |name: &str, key: &str| (name.to_owned(), DerivedValue::Key(key.to_owned()));
    let resource_group = match cluster_resource_group {
        Some(group) => DerivedValue::Fixed(group.to_owned()),
        None => DerivedValue::Key(credentials::RESOURCE_GROUP_FILE.to_owned()),
    };
    DerivedCredentials {
        lines: vec![
            key("AZURE_SUBSCRIPTION_ID", credentials::SUBSCRIPTION_ID_FILE),
            key("AZURE_TENANT_ID", credentials::TENANT_ID_FILE),
            key("AZURE_CLIENT_ID", credentials::CLIENT_ID_FILE),
            // Absent under workload identity: the plugin then takes the federated token file
            // named by the container's environment.
            (
                "AZURE_CLIENT_SECRET".to_owned(),
                DerivedValue::OptionalKey(credentials::CLIENT_SECRET_FILE.to_owned()),
            ),
            ("AZURE_RESOURCE_GROUP".to_owned(), resource_group),
            ("AZURE_CLOUD_NAME".to_owned(), DerivedValue::Fixed(cloud.name().to_owned())),
        ],
    }
}

/// The operator's rendered secret is mounted at `/credentials`; the plugin reads the file under
/// key [`VELERO_CREDENTIALS_KEY`] through `AZURE_CREDENTIALS_FILE`.
pub(crate) fn credentials_wiring(derived: DerivedCredentials) -> CredentialsWiring {
    CredentialsWiring {
        mount_path: CREDENTIALS_MOUNT.into(),
        secret_key: VELERO_CREDENTIALS_KEY.into(),
        env: vec![("AZURE_CREDENTIALS_FILE".into(), format!("{CREDENTIALS_MOUNT}/{VELERO_CREDENTIALS_KEY}"))],
        derived: Some(derived),
    }
}

/// Under workload identity the plugin finds no client secret in the file and, seeing
/// `AZURE_FEDERATED_TOKEN_FILE` in its environment, exchanges the projected token (audience
/// `openshift`, mounted by the operator at [`mvo_core::velero::CLOUD_TOKEN_PATH`]); Azure's
/// workload identity credential reads the client and tenant IDs from the process environment,
/// not from the file, so they are set there too (plain IDs, not secrets).
pub(crate) fn workload_identity_wiring(
    derived: DerivedCredentials,
    identity: &crate::WorkloadIdentity,
) -> CredentialsWiring {
    let mut wiring = credentials_wiring(derived);
    wiring.env.extend([
        ("AZURE_CLIENT_ID".to_owned(), identity.client_id.clone()),
        ("AZURE_TENANT_ID".to_owned(), identity.tenant_id.clone()),
        ("AZURE_FEDERATED_TOKEN_FILE".to_owned(), mvo_core::velero::CLOUD_TOKEN_PATH.to_owned()),
    ]);
    wiring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_the_account_group_and_subscription() {
        let azure = VeleroAzure {
            storage_account: Some("veleroacct".into()),
            resource_group: Some("rg".into()),
            cluster_resource_group: Some("cluster-rg".into()),
            subscription_id: Some("sub".into()),
        };
        let config = location_config(&azure, "c");
        assert_eq!(config.provider, "azure");
        let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned();
        assert_eq!(get(&config.backup_config, "storageAccount").as_deref(), Some("veleroacct"));
        assert_eq!(get(&config.backup_config, "resourceGroup").as_deref(), Some("rg"));
        assert_eq!(get(&config.backup_config, "subscriptionId").as_deref(), Some("sub"));
        assert_eq!(get(&config.snapshot_config, "resourceGroup").as_deref(), Some("cluster-rg"));
        assert!(!config.snapshot_config.contains_key("storageAccount"));
    }

    #[test]
    fn velero_gets_no_account_administration() {
        let spec = credentials_request_spec();
        assert_eq!(spec["roleBindings"], json!([]));
        let all: Vec<&str> =
            VELERO_PERMISSIONS.iter().chain(VELERO_DATA_PERMISSIONS.iter()).copied().collect();
        assert!(
            all.iter().all(|p| !p.contains("listkeys") && !p.contains("storageAccounts/write")),
            "{all:?}"
        );
        assert!(!all.iter().any(|p| p.ends_with("containers/delete")));
        let wi = credentials_request_spec_workload_identity("app", "tenant", "sub", "eastus");
        assert_eq!(wi["azureClientID"], "app");
        assert_eq!(wi["permissions"], spec["permissions"]);
    }

    #[test]
    fn credentials_file_is_rendered_from_the_credential_operators_keys() {
        let secret = BTreeMap::from([
            ("azure_client_id".to_owned(), "app".to_owned()),
            ("azure_client_secret".to_owned(), "s".to_owned()),
            ("azure_tenant_id".to_owned(), "t".to_owned()),
            ("azure_subscription_id".to_owned(), "sub".to_owned()),
            ("azure_resourcegroup".to_owned(), "rg".to_owned()),
            ("azure_region".to_owned(), "eastus".to_owned()),
        ]);
        let file = derived_credentials(None, AzureCloud::Public).render(&secret);
        assert_eq!(
            file.as_deref(),
            Ok("AZURE_SUBSCRIPTION_ID=sub\nAZURE_TENANT_ID=t\nAZURE_CLIENT_ID=app\nAZURE_CLIENT_SECRET=s\n\
                AZURE_RESOURCE_GROUP=rg\nAZURE_CLOUD_NAME=AzurePublicCloud\n")
        );
        let wiring = credentials_wiring(derived_credentials(None, AzureCloud::Public));
        assert_eq!(wiring.env[0].1, "/credentials/cloud");
        assert_eq!(wiring.secret_name(), mvo_core::velero::VELERO_DERIVED_CREDENTIALS_SECRET);
    }

    #[test]
    fn workload_identity_secrets_get_the_clusters_group_and_no_client_secret() {
        // What the credential operator writes for a federated identity: no secret, no group.
        let secret = BTreeMap::from([
            ("azure_client_id".to_owned(), "app".to_owned()),
            ("azure_tenant_id".to_owned(), "t".to_owned()),
            ("azure_subscription_id".to_owned(), "sub".to_owned()),
            ("azure_region".to_owned(), "eastus".to_owned()),
            (
                "azure_federated_token_file".to_owned(),
                "/var/run/secrets/openshift/serviceaccount/token".to_owned(),
            ),
        ]);
        let file = derived_credentials(Some("cluster-rg"), AzureCloud::China).render(&secret);
        assert_eq!(
            file.as_deref(),
            Ok("AZURE_SUBSCRIPTION_ID=sub\nAZURE_TENANT_ID=t\nAZURE_CLIENT_ID=app\n\
                AZURE_RESOURCE_GROUP=cluster-rg\nAZURE_CLOUD_NAME=AzureChinaCloud\n")
        );
        // Without the cluster fact the group must come from the secret, and is named when absent.
        let err = derived_credentials(None, AzureCloud::Public).render(&secret).expect_err("no group");
        assert_eq!(err, ["azure_resourcegroup"]);
    }
}
