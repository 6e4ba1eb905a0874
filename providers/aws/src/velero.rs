//! What Velero needs on AWS: BSL/VSL config, the CredentialsRequest provider spec for Velero's
//! own least-privilege access, the plugin image and how the credentials reach the container.

use std::collections::BTreeMap;

use mvo_core::{
    CredentialsWiring, LocationConfig, ShortLivedError, ShortLivedField, ShortLivedInput, VeleroFacts,
    VeleroInput,
};
use serde_json::json;

/// Pinned image of Velero's AWS plugin.
pub const VELERO_PLUGIN_IMAGE: &str = "docker.io/velero/velero-plugin-for-aws:v1.13.0";

/// Where the Velero credentials secret is mounted in the Velero container.
const CREDENTIALS_MOUNT: &str = "/credentials";
/// The secret key the cloud credential operator writes the shared-credentials file under.
const CREDENTIALS_KEY: &str = "credentials";

/// An AWS partition, which decides the ARN prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Commercial regions.
    Aws,
    /// China regions (`cn-*`).
    AwsCn,
    /// GovCloud regions (`us-gov-*`).
    AwsUsGov,
}

impl Partition {
    /// The partition a region belongs to.
    pub fn of_region(region: &str) -> Self {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    /// The partition's ARN component.
    pub fn as_str(&self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }
}

pub(crate) fn location_config(region: &str, bucket: &str) -> LocationConfig {
    let region_config = BTreeMap::from([("region".to_owned(), region.to_owned())]);
    LocationConfig {
        provider: "aws".into(),
        bucket: bucket.into(),
        backup_config: region_config.clone(),
        snapshot_config: region_config,
    }
}

/// Velero's `AWSProviderSpec` (key mode) with exactly what Velero does: EBS volume/snapshot calls, object calls in
/// the bucket, listing the bucket.
pub fn credentials_request_spec(partition: Partition, bucket: &str) -> serde_json::Value {
    let bucket_arn = format!("arn:{}:s3:::{bucket}", partition.as_str());
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "AWSProviderSpec",
        "statementEntries": [
            {
                "effect": "Allow",
                "action": [
                    "ec2:DescribeVolumes",
                    "ec2:DescribeSnapshots",
                    "ec2:CreateTags",
                    "ec2:CreateVolume",
                    "ec2:CreateSnapshot",
                    "ec2:DeleteSnapshot"
                ],
                "resource": "*"
            },
            {
                "effect": "Allow",
                "action": [
                    "s3:GetObject",
                    "s3:DeleteObject",
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts"
                ],
                "resource": format!("{bucket_arn}/*")
            },
            {
                "effect": "Allow",
                "action": ["s3:ListBucket"],
                "resource": bucket_arn
            }
        ]
    })
}

/// Where the cloud credential operator's STS mode expects the projected service-account token
/// (`CredentialsRequest.spec.cloudTokenPath`).
pub const CLOUD_TOKEN_PATH: &str = mvo_core::velero::CLOUD_TOKEN_PATH;

/// The STS variant of [`credentials_request_spec`]: the same least-privilege statements plus the
/// IAM role Velero assumes with its projected token (`stsIAMRoleARN`), so the cloud credential
/// operator writes a role + token-file `credentials` file instead of minting long-lived keys.
/// The CredentialsRequest also needs `spec.cloudTokenPath` = [`CLOUD_TOKEN_PATH`].
pub fn credentials_request_spec_sts(partition: Partition, bucket: &str, role_arn: &str) -> serde_json::Value {
    let mut spec = credentials_request_spec(partition, bucket);
    spec["stsIAMRoleARN"] = serde_json::Value::String(role_arn.to_owned());
    spec
}

/// Everything Velero needs on AWS, with long-lived keys or on an STS cluster.
pub(crate) fn facts(region: &str, input: &VeleroInput<'_>) -> Result<VeleroFacts, ShortLivedError> {
    let (location, credentials_request) = match input.short_lived {
        None => (
            location_config(region, input.bucket),
            credentials_request_spec(Partition::of_region(region), input.bucket),
        ),
        Some(identity) => short_lived(region, input.bucket, identity)?,
    };
    Ok(VeleroFacts {
        plugin_image: VELERO_PLUGIN_IMAGE.into(),
        location,
        credentials_request,
        credentials: credentials_wiring(),
    })
}

/// Velero on an STS cluster: the CredentialsRequest names the role, and the BSL tells the AWS
/// plugin to read the shared config (`enableSharedConfig`), so the SDK follows the `role_arn` +
/// `web_identity_token_file` profile the credential operator writes instead of expecting keys.
fn short_lived(
    region: &str,
    bucket: &str,
    input: &ShortLivedInput,
) -> Result<(LocationConfig, serde_json::Value), ShortLivedError> {
    let role_arn = input
        .role_arn
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ShortLivedError::Missing(vec![ShortLivedField::RoleArn]))?;
    let mut location = location_config(region, bucket);
    // Only the BSL: the object store plugin documents the key; the volume snapshotter
    // validates its config keys, and its SDK reads the shared files on its own.
    location.backup_config.insert("enableSharedConfig".into(), "true".into());
    Ok((location, credentials_request_spec_sts(Partition::of_region(region), bucket, role_arn)))
}

/// The cloud credential operator writes a shared-credentials file under key `credentials` in both
/// key and STS modes, so pointing the SDK at that file covers both.
pub(crate) fn credentials_wiring() -> CredentialsWiring {
    CredentialsWiring {
        mount_path: CREDENTIALS_MOUNT.into(),
        secret_key: CREDENTIALS_KEY.into(),
        env: vec![("AWS_SHARED_CREDENTIALS_FILE".into(), format!("{CREDENTIALS_MOUNT}/{CREDENTIALS_KEY}"))],
        derived: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(Partition::of_region("eu-west-1"), Partition::Aws);
        assert_eq!(Partition::of_region("cn-northwest-1"), Partition::AwsCn);
        assert_eq!(Partition::of_region("us-gov-west-1"), Partition::AwsUsGov);
    }

    #[test]
    fn bucket_arns_carry_the_partition() {
        for (partition, prefix) in [
            (Partition::Aws, "arn:aws:"),
            (Partition::AwsCn, "arn:aws-cn:"),
            (Partition::AwsUsGov, "arn:aws-us-gov:"),
        ] {
            let spec = credentials_request_spec(partition, "bkt");
            let statements = spec["statementEntries"].as_array().expect("statements");
            assert_eq!(statements[1]["resource"], format!("{prefix}s3:::bkt/*"));
            assert_eq!(statements[2]["resource"], format!("{prefix}s3:::bkt"));
            assert_eq!(statements[0]["resource"], "*");
        }
    }

    #[test]
    fn velero_gets_no_bucket_administration() {
        let spec = credentials_request_spec(Partition::Aws, "bkt");
        let actions: Vec<&str> = spec["statementEntries"]
            .as_array()
            .expect("statements")
            .iter()
            .flat_map(|s| s["action"].as_array().expect("actions").iter().filter_map(|a| a.as_str()))
            .collect();
        assert!(actions.iter().all(|a| !a.contains("Bucket") || *a == "s3:ListBucket"), "{actions:?}");
    }

    #[test]
    fn sts_variant_carries_the_role_and_the_same_statements() {
        let role = "arn:aws-us-gov:iam::123456789012:role/velero";
        let spec = credentials_request_spec_sts(Partition::AwsUsGov, "bkt", role);
        assert_eq!(spec["stsIAMRoleARN"], role);
        assert_eq!(
            spec["statementEntries"],
            credentials_request_spec(Partition::AwsUsGov, "bkt")["statementEntries"]
        );
        assert_eq!(spec["statementEntries"][2]["resource"], "arn:aws-us-gov:s3:::bkt");
    }

    #[test]
    fn sts_needs_the_role_and_turns_on_the_shared_config() {
        let missing = short_lived("eu-west-1", "bkt", &ShortLivedInput::default()).expect_err("no role");
        assert_eq!(missing, ShortLivedError::Missing(vec![ShortLivedField::RoleArn]));
        let input = ShortLivedInput {
            role_arn: Some("arn:aws:iam::123456789012:role/velero".into()),
            ..Default::default()
        };
        let null = serde_json::Value::Null;
        let sts =
            facts("eu-west-1", &VeleroInput { bucket: "bkt", section: &null, short_lived: Some(&input) })
                .expect("sts");
        assert_eq!(sts.credentials_request["stsIAMRoleARN"], "arn:aws:iam::123456789012:role/velero");
        assert_eq!(sts.location.backup_config.get("enableSharedConfig").map(String::as_str), Some("true"));
        assert_eq!(sts.location.backup_config.get("region").map(String::as_str), Some("eu-west-1"));
        assert!(!sts.location.snapshot_config.contains_key("enableSharedConfig"));
        let keys = facts("eu-west-1", &VeleroInput { bucket: "bkt", section: &null, short_lived: None })
            .expect("keys");
        assert_eq!(keys.credentials_request, credentials_request_spec(Partition::Aws, "bkt"));
        assert_eq!(keys.plugin_image, VELERO_PLUGIN_IMAGE);
        assert_eq!(keys.credentials.env[0].1, "/credentials/credentials");
    }

    #[test]
    fn locations_carry_the_region() {
        let config = location_config("eu-west-1", "bkt");
        assert_eq!(config.provider, "aws");
        assert_eq!(config.backup_config.get("region").map(String::as_str), Some("eu-west-1"));
        assert_eq!(config.snapshot_config, config.backup_config);
    }
}
