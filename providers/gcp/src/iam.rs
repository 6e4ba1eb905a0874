//! The operator's own least-privilege GCP permissions: exactly the `storage.buckets.*` calls this
//! provider makes (create, get, list, update) and nothing that deletes.
//!
//! [`permission_of`] maps an operation name (as [`crate::CallCounter`] records it) to its IAM
//! permission; tests check that every operation the provider performs is covered.

use serde_json::{Value, json};

use crate::metering::{CREATE_BUCKET, GET_BUCKET, LIST_BUCKETS, UPDATE_BUCKET};

/// Permission of GetBucket.
pub(crate) const GET: &str = "storage.buckets.get";
/// Permission of ListBuckets.
pub(crate) const LIST: &str = "storage.buckets.list";
/// Permission of CreateBucket.
pub(crate) const CREATE: &str = "storage.buckets.create";
/// Permission of UpdateBucket (labels, lifecycle, IAM configuration, encryption).
pub(crate) const UPDATE: &str = "storage.buckets.update";

/// Operation name -> IAM permission, for every GCS operation the provider calls.
pub const GCS_OPERATIONS: &[(&str, &str)] =
    &[(CREATE_BUCKET, CREATE), (GET_BUCKET, GET), (LIST_BUCKETS, LIST), (UPDATE_BUCKET, UPDATE)];

/// The IAM permission an operation needs; `None` for an operation the provider does not call.
pub fn permission_of(operation: &str) -> Option<&'static str> {
    GCS_OPERATIONS.iter().find(|(op, _)| *op == operation).map(|(_, permission)| *permission)
}

/// Every permission the operator needs, sorted.
pub fn operator_permissions() -> Vec<&'static str> {
    let mut permissions: Vec<&'static str> = GCS_OPERATIONS.iter().map(|(_, p)| *p).collect();
    permissions.sort_unstable();
    permissions.dedup();
    permissions
}

/// The operator's CredentialsRequest `spec.providerSpec`: a custom role of exactly
/// [`operator_permissions`] (no predefined role grants bucket updates without deletes).
pub fn operator_provider_spec() -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "GCPProviderSpec",
        "permissions": operator_permissions(),
        "skipServiceCheck": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_exactly_the_bucket_calls_without_delete() {
        assert_eq!(
            operator_permissions(),
            [
                "storage.buckets.create",
                "storage.buckets.get",
                "storage.buckets.list",
                "storage.buckets.update"
            ]
        );
        assert!(!operator_permissions().iter().any(|p| p.contains("delete")));
        assert_eq!(operator_provider_spec()["permissions"], json!(operator_permissions()));
        assert_eq!(permission_of("UpdateBucket"), Some("storage.buckets.update"));
        assert_eq!(permission_of("DeleteBucket"), None);
    }
}
