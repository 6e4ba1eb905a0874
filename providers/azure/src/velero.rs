//! What Velero needs on Azure: BSL/VSL config, the CredentialsRequest provider spec for Velero's
//! own access (a custom role of the disk/snapshot actions and the blob data actions; key mode and
//! workload identity), the plugin image, the credentials file Velero's Azure plugin reads and how
//! it reaches the container.

use std::collections::BTreeMap;

use mvo_core::{CredentialsWiring, LocationConfig};
use serde_json::{Value, json};

use crate::cloud::AzureCloud;

/// Pinned image of Velero's Azure plugin (the release paired with the pinned Velero v1.17).
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-microsoft-azure:v1.13.0";

/// Where the Velero credentials secret is mounted in the Velero container.
const CREDENTIALS_MOUNT: &str = "/credentials";
/// The secret key holding the dotenv file Velero's Azure plugin reads (`AZURE_CREDENTIALS_FILE`).
pub const VELERO_CREDENTIALS_KEY: &str = "cloud";

/// Management actions Velero's Azure plugin uses: managed-disk snapshots and restores.
pub const VELERO_PERMISSIONS: [&str; 8] = [
    "Microsoft.Compute/disks/beginGetAccess/action",
    "Microsoft.Compute/disks/endGetAccess/action",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/snapshots/delete",
    "Microsoft.Compute/snapshots/read",
    "Microsoft.Compute/snapshots/write",
    "Microsoft.Storage/storageAccounts/blobServices/containers/read",
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
    /// The subscription (from the credentials secret).
    pub subscription_id: Option<String>,
}

pub(crate) fn location_config(azure: &VeleroAzure, bucket: &str) -> LocationConfig {
    let mut backup_config = BTreeMap::new();
    let mut snapshot_config = BTreeMap::new();
    if let Some(group) = &azure.resource_group {
        backup_config.insert("resourceGroup".to_owned(), group.clone());
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

/// The dotenv file Velero's Azure plugin reads from `AZURE_CREDENTIALS_FILE`, rendered from the
/// keys the cloud credential operator writes into `velero-iam-credentials` (`azure_client_id`,
/// `azure_client_secret` or `azure_federated_token_file`, `azure_tenant_id`,
/// `azure_subscription_id`, `azure_resource_group`). Keys that are absent are left out.
pub fn velero_credentials_file(secret: &BTreeMap<String, String>, cloud: AzureCloud) -> String {
    let pairs = [
        ("AZURE_SUBSCRIPTION_ID", "azure_subscription_id"),
        ("AZURE_TENANT_ID", "azure_tenant_id"),
        ("AZURE_CLIENT_ID", "azure_client_id"),
        ("AZURE_CLIENT_SECRET", "azure_client_secret"),
        ("AZURE_FEDERATED_TOKEN_FILE", "azure_federated_token_file"),
        ("AZURE_RESOURCE_GROUP", "azure_resource_group"),
    ];
    let mut out = String::new();
    for (var, key) in pairs {
        if let Some(value) = secret.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            out.push_str(&format!("{var}={value}\n"));
        }
    }
    out.push_str(&format!("AZURE_CLOUD_NAME={}\n", cloud.name()));
    out
}

/// The secret is mounted at `/credentials`; the plugin reads the dotenv file under key
/// [`VELERO_CREDENTIALS_KEY`] through `AZURE_CREDENTIALS_FILE`.
pub(crate) fn credentials_wiring() -> CredentialsWiring {
    CredentialsWiring {
        mount_path: CREDENTIALS_MOUNT.into(),
        secret_key: VELERO_CREDENTIALS_KEY.into(),
        env: vec![("AZURE_CREDENTIALS_FILE".into(), format!("{CREDENTIALS_MOUNT}/{VELERO_CREDENTIALS_KEY}"))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_the_account_group_and_subscription() {
        let azure = VeleroAzure {
            storage_account: Some("veleroacct".into()),
            resource_group: Some("rg".into()),
            subscription_id: Some("sub".into()),
        };
        let config = location_config(&azure, "c");
        assert_eq!(config.provider, "azure");
        let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned();
        assert_eq!(get(&config.backup_config, "storageAccount").as_deref(), Some("veleroacct"));
        assert_eq!(get(&config.backup_config, "resourceGroup").as_deref(), Some("rg"));
        assert_eq!(get(&config.backup_config, "subscriptionId").as_deref(), Some("sub"));
        assert_eq!(get(&config.snapshot_config, "resourceGroup").as_deref(), Some("rg"));
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
            ("azure_resource_group".to_owned(), "rg".to_owned()),
            ("azure_region".to_owned(), "eastus".to_owned()),
        ]);
        let file = velero_credentials_file(&secret, AzureCloud::Public);
        assert_eq!(
            file,
            "AZURE_SUBSCRIPTION_ID=sub\nAZURE_TENANT_ID=t\nAZURE_CLIENT_ID=app\nAZURE_CLIENT_SECRET=s\n\
             AZURE_RESOURCE_GROUP=rg\nAZURE_CLOUD_NAME=AzurePublicCloud\n"
        );
        assert_eq!(credentials_wiring().env[0].1, "/credentials/cloud");
    }
}
