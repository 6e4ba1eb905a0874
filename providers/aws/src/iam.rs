//! The operator's own least-privilege IAM policy: exactly the S3 calls this provider makes,
//! including the `Get*` reads of read-compare-write, and nothing that deletes.
//!
//! [`action_of`] maps an SDK operation name (as [`crate::CallCounter`] records it) to its IAM
//! action; tests check that every operation the provider performs is covered by
//! [`operator_statements`] and that the list has nothing extra.

use serde_json::{Value, json};

use crate::velero::Partition;

/// SDK operation name -> IAM action, for every S3 operation the provider calls.
pub const S3_OPERATIONS: &[(&str, &str)] = &[
    ("CreateBucket", "s3:CreateBucket"),
    ("ListBuckets", "s3:ListAllMyBuckets"),
    ("GetBucketLocation", "s3:GetBucketLocation"),
    ("GetBucketTagging", "s3:GetBucketTagging"),
    ("PutBucketTagging", "s3:PutBucketTagging"),
    ("GetBucketEncryption", "s3:GetEncryptionConfiguration"),
    ("PutBucketEncryption", "s3:PutEncryptionConfiguration"),
    ("GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock"),
    ("PutPublicAccessBlock", "s3:PutBucketPublicAccessBlock"),
    ("GetBucketLifecycleConfiguration", "s3:GetLifecycleConfiguration"),
    ("PutBucketLifecycleConfiguration", "s3:PutLifecycleConfiguration"),
    // HeadBucket is authorised as s3:ListBucket.
    ("HeadBucket", "s3:ListBucket"),
];

/// SDK operation name -> IAM action, for the STS operations the provider calls with the
/// operator's credentials: the account every bucket call pins as its expected owner.
pub const STS_OPERATIONS: &[(&str, &str)] = &[("GetCallerIdentity", "sts:GetCallerIdentity")];

/// The IAM action an SDK operation needs; `None` for an operation the provider does not call.
pub fn action_of(operation: &str) -> Option<&'static str> {
    S3_OPERATIONS.iter().chain(STS_OPERATIONS).find(|(op, _)| *op == operation).map(|(_, action)| *action)
}

/// The IAM action of an S3 operation the provider calls, for error messages.
pub(crate) fn action(operation: &'static str) -> &'static str {
    action_of(operation).unwrap_or(operation)
}

/// Every IAM action the operator needs, sorted.
pub fn operator_actions() -> Vec<&'static str> {
    let mut actions: Vec<&'static str> =
        S3_OPERATIONS.iter().chain(STS_OPERATIONS).map(|(_, action)| *action).collect();
    actions.sort_unstable();
    actions.dedup();
    actions
}

/// The operator's `AWSProviderSpec.statementEntries` for the partition: S3 bucket administration
/// on `arn:<partition>:s3:::*` (the bucket name is chosen at run time and recovery lists every
/// bucket), no DeleteBucket or object access; and `sts:GetCallerIdentity` (resource `*`, the
/// only form IAM accepts for it).
pub fn operator_statements(partition: Partition) -> Vec<Value> {
    let mut s3: Vec<&str> = S3_OPERATIONS.iter().map(|(_, action)| *action).collect();
    s3.sort_unstable();
    s3.dedup();
    let sts: Vec<&str> = STS_OPERATIONS.iter().map(|(_, action)| *action).collect();
    vec![
        json!({
            "effect": "Allow",
            "action": s3,
            "resource": format!("arn:{}:s3:::*", partition.as_str()),
        }),
        json!({"effect": "Allow", "action": sts, "resource": "*"}),
    ]
}

/// The operator's CredentialsRequest `spec.providerSpec` for the partition.
pub fn operator_provider_spec(partition: Partition) -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "AWSProviderSpec",
        "statementEntries": operator_statements(partition),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_list_exactly_the_issue_actions() {
        let expected = [
            "s3:CreateBucket",
            "s3:GetBucketLocation",
            "s3:GetBucketPublicAccessBlock",
            "s3:GetBucketTagging",
            "s3:GetEncryptionConfiguration",
            "s3:GetLifecycleConfiguration",
            "s3:ListAllMyBuckets",
            "s3:ListBucket",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutBucketTagging",
            "s3:PutEncryptionConfiguration",
            "s3:PutLifecycleConfiguration",
            "sts:GetCallerIdentity",
        ];
        assert_eq!(operator_actions(), expected);
        assert!(operator_actions().iter().all(|a| !a.contains("Delete") && !a.contains("Object")));
    }

    #[test]
    fn resources_carry_the_partition() {
        for (partition, arn) in [
            (Partition::Aws, "arn:aws:s3:::*"),
            (Partition::AwsCn, "arn:aws-cn:s3:::*"),
            (Partition::AwsUsGov, "arn:aws-us-gov:s3:::*"),
        ] {
            let spec = operator_provider_spec(partition);
            assert_eq!(spec["statementEntries"][0]["resource"], arn);
            assert_eq!(spec["kind"], "AWSProviderSpec");
        }
    }

    #[test]
    fn unknown_operations_have_no_action() {
        assert_eq!(action_of("DeleteBucket"), None);
        assert_eq!(action_of("HeadBucket"), Some("s3:ListBucket"));
    }
}
