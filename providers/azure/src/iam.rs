//! The operator's own least-privilege Azure permissions: exactly the Blob service calls this
//! provider makes (container create, read, metadata writes, listing, the blob service
//! properties of the delete retention policy), and nothing that deletes or reads blob data.
//!
//! [`permission_of`] maps an operation name (as [`crate::CallCounter`] records it) to its Azure
//! RBAC action; tests check that every operation the provider performs is covered.

use serde_json::{Value, json};

use crate::metering::{
    CREATE_CONTAINER, GET_BLOB_SERVICE_PROPERTIES, GET_CONTAINER_PROPERTIES, LIST_CONTAINERS,
    SET_BLOB_SERVICE_PROPERTIES, SET_CONTAINER_METADATA,
};

/// Reading containers: properties, metadata, listing.
pub(crate) const CONTAINERS_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/read";
/// Creating containers and writing their metadata.
pub(crate) const CONTAINERS_WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/write";
/// Reading the blob service properties (delete retention policy).
pub(crate) const BLOB_SERVICES_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/read";
/// Writing the blob service properties (delete retention policy).
pub(crate) const BLOB_SERVICES_WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/write";

/// Operation name -> Azure RBAC action, for every Blob service operation the provider calls.
pub const BLOB_OPERATIONS: &[(&str, &str)] = &[
    (GET_CONTAINER_PROPERTIES, CONTAINERS_READ),
    (CREATE_CONTAINER, CONTAINERS_WRITE),
    (SET_CONTAINER_METADATA, CONTAINERS_WRITE),
    (LIST_CONTAINERS, CONTAINERS_READ),
    (GET_BLOB_SERVICE_PROPERTIES, BLOB_SERVICES_READ),
    (SET_BLOB_SERVICE_PROPERTIES, BLOB_SERVICES_WRITE),
];

/// The Azure action an operation needs; `None` for an operation the provider does not call.
pub fn permission_of(operation: &str) -> Option<&'static str> {
    BLOB_OPERATIONS.iter().find(|(op, _)| *op == operation).map(|(_, action)| *action)
}

/// Every action the operator needs, sorted.
pub fn operator_permissions() -> Vec<&'static str> {
    let mut actions: Vec<&'static str> = BLOB_OPERATIONS.iter().map(|(_, a)| *a).collect();
    actions.sort_unstable();
    actions.dedup();
    actions
}

/// The operator's CredentialsRequest `spec.providerSpec`: a custom role of exactly
/// [`operator_permissions`] (no built-in role grants container writes without deletes), no data
/// permissions (the operator never reads or writes a blob) and no role bindings.
pub fn operator_provider_spec() -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "AzureProviderSpec",
        "roleBindings": [],
        "permissions": operator_permissions(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_exactly_the_container_and_service_calls_without_delete() {
        assert_eq!(
            operator_permissions(),
            [
                "Microsoft.Storage/storageAccounts/blobServices/containers/read",
                "Microsoft.Storage/storageAccounts/blobServices/containers/write",
                "Microsoft.Storage/storageAccounts/blobServices/read",
                "Microsoft.Storage/storageAccounts/blobServices/write",
            ]
        );
        assert!(!operator_permissions().iter().any(|p| p.contains("delete") || p.contains("blobs/")));
        let spec = operator_provider_spec();
        assert_eq!(spec["kind"], "AzureProviderSpec");
        assert_eq!(spec["permissions"], json!(operator_permissions()));
        assert!(spec.get("dataPermissions").is_none());
        assert_eq!(permission_of("SetContainerMetadata"), Some(CONTAINERS_WRITE));
        assert_eq!(permission_of("SetContainerACL"), None, "public access is reported, never corrected");
        assert_eq!(permission_of("DeleteContainer"), None);
    }
}
