//! Conversions between S3's wire types and the cloud-neutral bucket settings of `mvo-core`, in
//! both directions: what a bucket reports, and the exact request bodies the provider writes.
//!
//! Pure functions only; the store decides when to call them.

use aws_sdk_s3::{
    error::BuildError,
    types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration,
        LifecycleRule as S3Rule, LifecycleRuleFilter, PublicAccessBlockConfiguration, ServerSideEncryption,
        ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag,
        Tagging,
    },
};
use mvo_core::{Encryption, Error, LifecycleAction, LifecycleRule, PublicAccessBlock, Tags};

use crate::PLATFORM;

/// An SDK builder refused a request body we built: a bug in this module, reported as such.
pub(crate) fn build_error(err: BuildError) -> Error {
    Error::Provider { provider: PLATFORM, source: Box::new(err) }
}

/// The encryption a bucket reports, and whether it is in the exact form the operator writes
/// (SSE-KMS without the bucket key, or DSSE, reads as the same key but is still drift).
pub(crate) fn encryption_from(
    config: Option<&ServerSideEncryptionConfiguration>,
) -> (Option<Encryption>, bool) {
    let Some(rule) = config.and_then(|c| c.rules().first()) else {
        return (None, true);
    };
    let Some(default) = rule.apply_server_side_encryption_by_default() else {
        return (None, true);
    };
    match default.sse_algorithm() {
        ServerSideEncryption::Aes256 => (Some(Encryption::ProviderManaged), true),
        ServerSideEncryption::AwsKms => {
            let key = default.kms_master_key_id().unwrap_or_default().to_owned();
            (Some(Encryption::Kms { key }), rule.bucket_key_enabled() == Some(true))
        }
        other => {
            let key = format!("{}:{}", other.as_str(), default.kms_master_key_id().unwrap_or_default());
            (Some(Encryption::Kms { key }), false)
        }
    }
}

/// The default-encryption configuration for `encryption`: AES256, or aws:kms with the key and the
/// bucket key enabled (fewer KMS calls, lower cost).
pub(crate) fn encryption_to(encryption: &Encryption) -> Result<ServerSideEncryptionConfiguration, Error> {
    let (default, bucket_key) = match encryption {
        Encryption::ProviderManaged => {
            (ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256), None)
        }
        Encryption::Kms { key } => (
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(key),
            Some(true),
        ),
    };
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(default.build().map_err(build_error)?)
        .set_bucket_key_enabled(bucket_key)
        .build();
    ServerSideEncryptionConfiguration::builder().rules(rule).build().map_err(build_error)
}

/// The public access block a bucket reports; unset flags are false.
pub(crate) fn public_access_from(config: Option<&PublicAccessBlockConfiguration>) -> PublicAccessBlock {
    let flag = |f: fn(&PublicAccessBlockConfiguration) -> Option<bool>| config.and_then(f).unwrap_or(false);
    PublicAccessBlock {
        block_public_acls: flag(PublicAccessBlockConfiguration::block_public_acls),
        ignore_public_acls: flag(PublicAccessBlockConfiguration::ignore_public_acls),
        block_public_policy: flag(PublicAccessBlockConfiguration::block_public_policy),
        restrict_public_buckets: flag(PublicAccessBlockConfiguration::restrict_public_buckets),
    }
}

/// All four flags set.
pub(crate) fn public_access_all_blocked() -> PublicAccessBlockConfiguration {
    PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build()
}

/// The object prefix a rule covers, wherever S3 put it (filter, `And` operator, legacy field).
fn rule_prefix(rule: &S3Rule) -> String {
    let filter = rule.filter();
    filter
        .and_then(LifecycleRuleFilter::prefix)
        .or_else(|| filter.and_then(LifecycleRuleFilter::and).and_then(|a| a.prefix()))
        // Rules written before filters existed carry the prefix at the top level; still read it.
        .or_else(|| {
            #[allow(deprecated)]
            rule.prefix()
        })
        .unwrap_or_default()
        .to_owned()
}

/// A rule in the neutral shape; `None` for rules whose action the neutral shape cannot express
/// (transitions only, dated expiry): those are foreign by construction and kept verbatim anyway.
pub(crate) fn rule_from(rule: &S3Rule) -> Option<LifecycleRule> {
    let action = if let Some(days) = rule.expiration().and_then(LifecycleExpiration::days) {
        LifecycleAction::Expire { days: u32::try_from(days).ok()? }
    } else if let Some(days) = rule
        .abort_incomplete_multipart_upload()
        .and_then(AbortIncompleteMultipartUpload::days_after_initiation)
    {
        LifecycleAction::AbortIncompleteUpload { days: u32::try_from(days).ok()? }
    } else {
        return None;
    };
    Some(LifecycleRule {
        id: rule.id().unwrap_or_default().to_owned(),
        prefix: rule_prefix(rule),
        action,
        enabled: *rule.status() == ExpirationStatus::Enabled,
    })
}

/// The S3 form of a neutral rule (used for the managed rules and for foreign rules set by tests).
pub(crate) fn rule_to(rule: &LifecycleRule) -> Result<S3Rule, Error> {
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    let builder = S3Rule::builder()
        .id(&rule.id)
        .filter(LifecycleRuleFilter::builder().prefix(&rule.prefix).build())
        .status(if rule.enabled { ExpirationStatus::Enabled } else { ExpirationStatus::Disabled });
    let builder = match rule.action {
        LifecycleAction::Expire { days: d } => {
            builder.expiration(LifecycleExpiration::builder().days(days(d)).build())
        }
        LifecycleAction::AbortIncompleteUpload { days: d } => builder.abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(days(d)).build(),
        ),
    };
    builder.build().map_err(build_error)
}

/// A lifecycle configuration of `rules`.
pub(crate) fn lifecycle_to(rules: Vec<S3Rule>) -> Result<BucketLifecycleConfiguration, Error> {
    BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().map_err(build_error)
}

/// Tags as a map.
pub(crate) fn tags_from(tags: &[Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
}

/// A tagging body of `tags`.
pub(crate) fn tags_to(tags: &Tags) -> Result<Tagging, Error> {
    let tag_set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(build_error))
        .collect::<Result<Vec<_>, _>>()?;
    Tagging::builder().set_tag_set(Some(tag_set)).build().map_err(build_error)
}

/// The region a GetBucketLocation answer means: empty is us-east-1 and `EU` is eu-west-1 (both
/// legacy spellings S3 still returns).
pub(crate) fn region_of_location(location: Option<&str>) -> String {
    match location.unwrap_or_default() {
        "" => "us-east-1".to_owned(),
        "EU" => "eu-west-1".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use mvo_core::{BucketSpec, Owner};

    use super::*;

    #[test]
    fn managed_rules_round_trip() {
        let spec = BucketSpec {
            name: "b".into(),
            region: "eu-west-1".into(),
            owner: Owner::new("c"),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(30),
            applied_retention_days: None,
        };
        for rule in spec.managed_lifecycle() {
            let s3 = rule_to(&rule).expect("valid rule");
            assert_eq!(rule_from(&s3), Some(rule));
        }
    }

    #[test]
    fn encryption_round_trips_and_kms_needs_the_bucket_key() {
        for enc in [Encryption::ProviderManaged, Encryption::Kms { key: "arn:aws:kms:k".into() }] {
            let config = encryption_to(&enc).expect("valid");
            assert_eq!(encryption_from(Some(&config)), (Some(enc), true));
        }
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id("k")
            .build()
            .expect("valid");
        let rule =
            ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(default).build();
        let config = ServerSideEncryptionConfiguration::builder().rules(rule).build().expect("valid");
        assert_eq!(encryption_from(Some(&config)), (Some(Encryption::Kms { key: "k".into() }), false));
        assert_eq!(encryption_from(None), (None, true));
    }

    #[test]
    fn legacy_locations_are_normalised() {
        assert_eq!(region_of_location(None), "us-east-1");
        assert_eq!(region_of_location(Some("")), "us-east-1");
        assert_eq!(region_of_location(Some("EU")), "eu-west-1");
        assert_eq!(region_of_location(Some("ap-south-1")), "ap-south-1");
    }

    #[test]
    fn unset_public_access_flags_are_false() {
        assert_eq!(public_access_from(None), PublicAccessBlock::default());
        assert!(public_access_from(Some(&public_access_all_blocked())).is_fully_blocked());
    }
}
