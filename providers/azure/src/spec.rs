//! The Azure section of the `VeleroInstall` spec (`spec.azure`), owned by this provider: the
//! storage account the container lives in and its resource group, and on token-based clusters
//! the identity Velero's federated token is exchanged for. Its JSON schema is merged into
//! the CRD (so the API server refuses a bad account name) and its value reaches the provider on
//! every reconcile; [`validate`] checks again what a schema-less caller could pass.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cloud::{is_valid_account_name, is_valid_resource_group};

/// The field name under `spec`.
pub const SECTION_KEY: &str = "azure";

/// Azure only: where the backup container lives. The operator does not create storage accounts;
/// on an Azure cluster without `storageAccount`, BucketReady names this field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSpec {
    /// The storage account the backup container is created in (3 to 24 lower-case letters and
    /// digits). The operator does not create storage accounts: create it, then name it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 24), regex(pattern = r"^[a-z0-9]{3,24}$"))]
    pub storage_account: Option<String>,
    /// The storage account's resource group, when it is not the cluster's
    /// (`Infrastructure.status.platformStatus.azure.resourceGroupName`). Velero's
    /// BackupStorageLocation and VolumeSnapshotLocation name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 90), regex(pattern = r"^[-\w._()]*[-\w_()]$"))]
    pub resource_group: Option<String>,
    /// Token-based clusters only: the client ID of the managed identity (or app registration)
    /// Velero's federated token is exchanged for. The administrator creates it with a federated
    /// credential for `system:serviceaccount:openshift-velero:velero`, audience `openshift`.
    #[serde(rename = "veleroClientID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"))]
    pub velero_client_id: Option<String>,
    /// Token-based clusters only: the tenant of that identity, when it is not the one in the
    /// operator's own credentials.
    #[serde(rename = "tenantID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"))]
    pub tenant_id: Option<String>,
    /// Token-based clusters only: the subscription of the cluster's disks, when it is not the one
    /// in the operator's own credentials.
    #[serde(rename = "subscriptionID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"))]
    pub subscription_id: Option<String>,
}

/// Whether `value` is a GUID (`8-4-4-4-12` hex digits), the form of Entra ID and subscription IDs.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Why a section cannot be used: the JSON path of the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// E.g. `spec.azure.storageAccount`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Parses and checks `spec.azure` (`Value::Null` when absent).
pub fn parse(section: &Value) -> Result<AzureSpec, Invalid> {
    if section.is_null() {
        return Ok(AzureSpec::default());
    }
    let spec: AzureSpec = serde_json::from_value(section.clone())
        .map_err(|err| Invalid { field: format!("spec.{SECTION_KEY}"), message: err.to_string() })?;
    if let Some(account) = &spec.storage_account
        && !is_valid_account_name(account)
    {
        return Err(Invalid {
            field: format!("spec.{SECTION_KEY}.storageAccount"),
            message: format!(
                "{account:?} is not a storage account name: 3 to 24 lower-case letters and digits"
            ),
        });
    }
    if let Some(group) = &spec.resource_group
        && !is_valid_resource_group(group)
    {
        return Err(Invalid {
            field: format!("spec.{SECTION_KEY}.resourceGroup"),
            message: format!(
                "{group:?} is not a resource group name: 1 to 90 letters, digits, '_', '-', '.', '(', ')', not ending in '.'"
            ),
        });
    }
    for (name, value) in [
        ("veleroClientID", &spec.velero_client_id),
        ("tenantID", &spec.tenant_id),
        ("subscriptionID", &spec.subscription_id),
    ] {
        if let Some(value) = value
            && !is_guid(value)
        {
            return Err(Invalid {
                field: format!("spec.{SECTION_KEY}.{name}"),
                message: format!("{value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
            });
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sections_parse_and_bad_names_are_named() {
        assert_eq!(parse(&Value::Null), Ok(AzureSpec::default()));
        let spec =
            parse(&json!({"storageAccount": "veleroacct01", "resourceGroup": "rg-backups"})).expect("valid");
        assert_eq!(spec.storage_account.as_deref(), Some("veleroacct01"));
        let err = parse(&json!({"storageAccount": "Velero-Acct"})).expect_err("bad account");
        assert_eq!(err.field, "spec.azure.storageAccount");
        let err = parse(&json!({"resourceGroup": "rg."})).expect_err("bad group");
        assert_eq!(err.field, "spec.azure.resourceGroup");
        let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let spec = parse(&json!({"veleroClientID": id, "tenantID": id})).expect("GUIDs");
        assert_eq!(spec.velero_client_id.as_deref(), Some(id));
        let err = parse(&json!({"veleroClientID": "velero"})).expect_err("not a GUID");
        assert_eq!(err.field, "spec.azure.veleroClientID");
        let err = parse(&json!({"storageAcount": "typo"})).expect_err("unknown field");
        assert_eq!(err.field, "spec.azure");
    }
}
