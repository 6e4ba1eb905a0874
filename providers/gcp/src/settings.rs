//! Conversions between GCS bucket metadata (`google_cloud_storage::model::Bucket`) and the
//! cloud-neutral settings of `mvo-core`, in both directions: what a bucket reports, the bucket a
//! create sends, and the one patch plus update mask that corrects drift.
//!
//! Mapping rules:
//! - encryption: a default KMS key is `Kms { key }`; no key is Google-managed
//!   (`ProviderManaged`): GCS always encrypts;
//! - public access: uniform bucket-level access -> the two ACL flags, public access prevention
//!   `enforced` -> the two policy flags;
//! - lifecycle: GCS rules have no IDs. A `Delete` rule whose only conditions are an age and
//!   `matches_prefix == ["backups/"]` is the managed "Backup Expiry" only when its age is one the
//!   operator applied or applies ([`BucketSpec::managed_expiry_ages`]): a user's own rule on
//!   `backups/` of another age is foreign and kept. Where no spec is at hand (reporting a
//!   bucket's state), the shape alone names it. An
//!   `AbortIncompleteMultipartUpload` rule with only an age is "Abort Incomplete Uploads"; every
//!   other rule is foreign, named `gcs-rule-<position>`, and written back verbatim;
//! - labels: as a map; the owner labels are sanitised ([`mvo_core::Owner::labels`]).
//!
//! Pure functions only; the store decides when to call them.

use std::collections::HashMap;

use google_cloud_storage::model::{
    Bucket,
    bucket::{
        Encryption as GcsEncryption, IamConfig, Lifecycle,
        iam_config::UniformBucketLevelAccess,
        lifecycle::{
            Rule,
            rule::{Action, Condition},
        },
    },
};
use mvo_core::{
    BucketSpec, BucketState, Encryption, LifecycleAction, LifecycleRule, PublicAccessBlock, Setting, Tags,
    bucket::{ABORT_UPLOADS_RULE_ID, BACKUP_EXPIRY_RULE_ID, BACKUPS_PREFIX},
    owner::{INFRASTRUCTURE_NAME_TAG, gcs_label},
};

/// Public access prevention value that blocks public access.
pub(crate) const PAP_ENFORCED: &str = "enforced";
/// GCS lifecycle action types the provider reads or writes.
const DELETE: &str = "Delete";
const ABORT_UPLOADS: &str = "AbortIncompleteMultipartUpload";
/// Prefix of the synthetic IDs of foreign rules.
pub(crate) const FOREIGN_RULE_ID_PREFIX: &str = "gcs-rule-";

/// The update-mask paths the provider writes, one per GCS field it corrects.
pub(crate) const PATH_KMS_KEY: &str = "encryption.default_kms_key";
pub(crate) const PATH_UBLA: &str = "iam_config.uniform_bucket_level_access";
pub(crate) const PATH_PAP: &str = "iam_config.public_access_prevention";
pub(crate) const PATH_LIFECYCLE: &str = "lifecycle";
pub(crate) const PATH_LABELS: &str = "labels";

/// The read mask of every GetBucket: exactly the fields [`observe`], [`patch`] and the store's
/// ownership check and update precondition use. GCS returns nothing else, so a field read here
/// but missing from the mask would read as unset (and as drift) in production.
pub(crate) const READ_MASK: [&str; 8] =
    ["bucket_id", "project", "metageneration", "location", "labels", "lifecycle", "iam_config", "encryption"];

/// The resource name of bucket `name` in the gRPC API.
pub(crate) fn resource(name: &str) -> String {
    format!("projects/_/buckets/{name}")
}

/// The short name of a bucket (`bucket_id`, or the last part of `name`).
pub(crate) fn short_name(bucket: &Bucket) -> String {
    if bucket.bucket_id.is_empty() {
        bucket.name.rsplit('/').next().unwrap_or_default().to_owned()
    } else {
        bucket.bucket_id.clone()
    }
}

/// The GCS location of a cluster region: GCS reports locations upper case.
pub(crate) fn location_of(region: &str) -> String {
    region.to_ascii_uppercase()
}

/// The bucket's labels, ordered.
pub(crate) fn labels(bucket: &Bucket) -> Tags {
    bucket.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The cluster a bucket's infrastructure label names, if any.
pub(crate) fn claimant(labels: &Tags) -> Option<&str> {
    labels.get(&gcs_label(INFRASTRUCTURE_NAME_TAG)).map(String::as_str)
}

fn ubla_enabled(bucket: &Bucket) -> bool {
    bucket.iam_config.as_ref().and_then(|i| i.uniform_bucket_level_access.as_ref()).is_some_and(|u| u.enabled)
}

fn pap_enforced(bucket: &Bucket) -> bool {
    bucket.iam_config.as_ref().is_some_and(|i| i.public_access_prevention == PAP_ENFORCED)
}

fn kms_key(bucket: &Bucket) -> &str {
    bucket.encryption.as_ref().map(|e| e.default_kms_key.as_str()).unwrap_or_default()
}

fn age(condition: &Condition) -> Option<u32> {
    condition.age_days.and_then(|d| u32::try_from(d).ok())
}

/// The managed rule a GCS rule is, if it is exactly one of the operator's shapes (and, for the
/// expiry rule, of one of `expiry_ages` when given).
fn managed_rule(rule: &Rule, expiry_ages: Option<&[u32]>) -> Option<LifecycleRule> {
    let action = rule.action.as_ref()?;
    let condition = rule.condition.as_ref()?;
    if !action.storage_class.is_empty() {
        return None;
    }
    let days = age(condition)?;
    // Only an age (and for expiry exactly the backups/ prefix): any other condition makes the
    // rule someone else's, to be kept as it is.
    let mut rest = condition.clone();
    rest.age_days = None;
    rest.matches_prefix.clear();
    if rest != Condition::default() {
        return None;
    }
    match action.r#type.as_str() {
        DELETE
            if condition.matches_prefix == [BACKUPS_PREFIX]
                && expiry_ages.is_none_or(|ages| ages.contains(&days)) =>
        {
            Some(LifecycleRule {
                id: BACKUP_EXPIRY_RULE_ID.into(),
                prefix: BACKUPS_PREFIX.into(),
                action: LifecycleAction::Expire { days },
                enabled: true,
            })
        }
        ABORT_UPLOADS if condition.matches_prefix.is_empty() => Some(LifecycleRule {
            id: ABORT_UPLOADS_RULE_ID.into(),
            prefix: String::new(),
            action: LifecycleAction::AbortIncompleteUpload { days },
            enabled: true,
        }),
        _ => None,
    }
}

/// A foreign rule in the neutral shape, when the shape can express it (age-based delete or abort
/// on at most one prefix); others are kept verbatim but not reported.
fn foreign_rule(position: usize, rule: &Rule) -> Option<LifecycleRule> {
    let action = rule.action.as_ref()?;
    let condition = rule.condition.as_ref()?;
    let days = age(condition)?;
    let action = match action.r#type.as_str() {
        DELETE => LifecycleAction::Expire { days },
        ABORT_UPLOADS => LifecycleAction::AbortIncompleteUpload { days },
        _ => return None,
    };
    let prefix = match condition.matches_prefix.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        _ => return None,
    };
    Some(LifecycleRule { id: format!("{FOREIGN_RULE_ID_PREFIX}{position}"), prefix, action, enabled: true })
}

/// A bucket as read: the neutral state plus the foreign lifecycle rules exactly as GCS returned
/// them, so they are written back with everything the neutral shape cannot carry.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub state: BucketState,
    pub foreign_rules: Vec<Rule>,
}

/// Reads a bucket into the neutral state; `spec`, when given, says which expiry rule is ours.
pub(crate) fn observe(bucket: &Bucket, spec: Option<&BucketSpec>) -> Observed {
    let ages = spec.map(BucketSpec::managed_expiry_ages);
    let mut lifecycle = Vec::new();
    let mut foreign_rules = Vec::new();
    let mut expiry_seen = false;
    for (position, rule) in bucket.lifecycle.iter().flat_map(|l| l.rule.iter()).enumerate() {
        // Only one rule can be ours: a second one of a managed age is someone else's copy.
        let managed = managed_rule(rule, ages.as_deref())
            .filter(|m| !(expiry_seen && matches!(m.action, LifecycleAction::Expire { .. })));
        if let Some(managed) = managed {
            expiry_seen |= matches!(managed.action, LifecycleAction::Expire { .. });
            lifecycle.push(managed);
        } else {
            lifecycle.extend(foreign_rule(position, rule));
            foreign_rules.push(rule.clone());
        }
    }
    let key = kms_key(bucket);
    let encryption =
        if key.is_empty() { Encryption::ProviderManaged } else { Encryption::Kms { key: key.to_owned() } };
    let (acls, policies) = (ubla_enabled(bucket), pap_enforced(bucket));
    let state = BucketState {
        name: short_name(bucket),
        region: bucket.location.clone(),
        encryption: Some(encryption),
        public_access: PublicAccessBlock {
            block_public_acls: acls,
            ignore_public_acls: acls,
            block_public_policy: policies,
            restrict_public_buckets: policies,
        },
        lifecycle,
        tags: labels(bucket),
    };
    Observed { state, foreign_rules }
}

/// The GCS form of a managed rule.
pub(crate) fn rule_to(rule: &LifecycleRule) -> Rule {
    let (kind, days) = match rule.action {
        LifecycleAction::Expire { days } => (DELETE, days),
        LifecycleAction::AbortIncompleteUpload { days } => (ABORT_UPLOADS, days),
    };
    let mut condition = Condition::default();
    condition.age_days = Some(i32::try_from(days).unwrap_or(i32::MAX));
    if !rule.prefix.is_empty() {
        condition.matches_prefix = vec![rule.prefix.clone()];
    }
    let mut action = Action::default();
    action.r#type = kind.into();
    let mut out = Rule::default();
    out.action = Some(action);
    out.condition = Some(condition);
    out
}

fn lifecycle(foreign: &[Rule], spec: &BucketSpec) -> Lifecycle {
    let mut lifecycle = Lifecycle::default();
    lifecycle.rule = foreign.to_vec();
    lifecycle.rule.extend(spec.managed_lifecycle().iter().map(rule_to));
    lifecycle
}

fn encryption(spec: &BucketSpec) -> GcsEncryption {
    let mut encryption = GcsEncryption::default();
    if let Encryption::Kms { key } = &spec.encryption {
        encryption.default_kms_key = key.clone();
    }
    encryption
}

fn hardened_iam() -> IamConfig {
    let mut ubla = UniformBucketLevelAccess::default();
    ubla.enabled = true;
    let mut iam = IamConfig::default();
    iam.uniform_bucket_level_access = Some(ubla);
    iam.public_access_prevention = PAP_ENFORCED.into();
    iam
}

fn label_map(tags: Tags) -> HashMap<String, String> {
    tags.into_iter().collect()
}

/// The bucket a create sends: every enforced setting in the one call, owner labels included, so
/// a crash right after creation still leaves a bucket recovery can find.
pub(crate) fn new_bucket(spec: &BucketSpec, project: &str) -> Bucket {
    let mut bucket = Bucket::default();
    bucket.project = format!("projects/{project}");
    bucket.location = location_of(&spec.region);
    bucket.labels = label_map(spec.owner.labels());
    bucket.iam_config = Some(hardened_iam());
    bucket.lifecycle = Some(lifecycle(&[], spec));
    if matches!(spec.encryption, Encryption::Kms { .. }) {
        bucket.encryption = Some(encryption(spec));
    }
    bucket
}

/// The patch and update-mask paths that correct `drifted` on `observed`: only the drifted GCS
/// fields are named. Foreign labels and foreign lifecycle rules are carried over, because GCS
/// replaces both as a whole.
pub(crate) fn patch(
    spec: &BucketSpec,
    bucket: &Bucket,
    observed: &Observed,
    drifted: &[Setting],
) -> (Bucket, Vec<String>) {
    let mut patch = Bucket::default();
    patch.name = resource(&short_name(bucket));
    let mut paths = Vec::new();
    for setting in drifted {
        match setting {
            Setting::Encryption => {
                patch.encryption = Some(encryption(spec));
                paths.push(PATH_KMS_KEY);
            }
            Setting::PublicAccess => {
                let iam = patch.iam_config.get_or_insert_with(hardened_iam);
                *iam = hardened_iam();
                if !ubla_enabled(bucket) {
                    paths.push(PATH_UBLA);
                }
                if !pap_enforced(bucket) {
                    paths.push(PATH_PAP);
                }
            }
            Setting::Lifecycle => {
                patch.lifecycle = Some(lifecycle(&observed.foreign_rules, spec));
                paths.push(PATH_LIFECYCLE);
            }
            Setting::Tags => {
                let merged =
                    spec.merge_labels(&observed.state.tags).unwrap_or_else(|| observed.state.tags.clone());
                patch.labels = label_map(merged);
                paths.push(PATH_LABELS);
            }
        }
    }
    (patch, paths.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use mvo_core::Owner;

    use super::*;

    fn spec() -> BucketSpec {
        BucketSpec {
            name: "b".into(),
            region: "europe-west4".into(),
            owner: Owner::new("Cluster.One"),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(30),
            applied_retention_days: None,
        }
    }

    fn created(spec: &BucketSpec) -> Bucket {
        let mut bucket = new_bucket(spec, "p");
        bucket.bucket_id = spec.name.clone();
        bucket
    }

    #[test]
    fn a_new_bucket_reads_back_without_drift() {
        let spec = spec();
        let bucket = created(&spec);
        assert_eq!(bucket.location, "EUROPE-WEST4");
        assert_eq!(
            bucket.labels.get("velero-io-infrastructurename").map(String::as_str),
            Some("cluster-one")
        );
        let observed = observe(&bucket, Some(&spec));
        assert!(observed.state.drift(&spec, mvo_core::TagStyle::Labels).is_empty(), "{:?}", observed.state);
        assert!(observed.foreign_rules.is_empty());
        assert_eq!(observed.state.lifecycle, spec.managed_lifecycle());
    }

    #[test]
    fn public_access_maps_ubla_and_pap_to_two_flags_each() {
        let spec = spec();
        let mut bucket = created(&spec);
        bucket.iam_config.as_mut().expect("iam").public_access_prevention = "inherited".into();
        let state = observe(&bucket, Some(&spec)).state;
        assert!(state.public_access.block_public_acls && state.public_access.ignore_public_acls);
        assert!(!state.public_access.block_public_policy && !state.public_access.restrict_public_buckets);
        let (_, paths) = patch(&spec, &bucket, &observe(&bucket, Some(&spec)), &[Setting::PublicAccess]);
        assert_eq!(paths, [PATH_PAP]);
    }

    #[test]
    fn foreign_rules_get_positional_ids_and_are_kept_verbatim() {
        let spec = spec();
        let mut bucket = created(&spec);
        let mut transition = Rule::default();
        let mut action = Action::default();
        action.r#type = "SetStorageClass".into();
        action.storage_class = "COLDLINE".into();
        let mut condition = Condition::default();
        condition.age_days = Some(365);
        transition.action = Some(action);
        transition.condition = Some(condition);
        let logs = rule_to(&LifecycleRule {
            id: String::new(),
            prefix: "logs/".into(),
            action: LifecycleAction::Expire { days: 3 },
            enabled: true,
        });
        let lifecycle = bucket.lifecycle.as_mut().expect("lifecycle");
        lifecycle.rule.insert(0, transition.clone());
        lifecycle.rule.push(logs.clone());
        let observed = observe(&bucket, Some(&spec));
        assert_eq!(observed.foreign_rules, vec![transition.clone(), logs.clone()]);
        let ids: Vec<&str> = observed.state.lifecycle.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [BACKUP_EXPIRY_RULE_ID, ABORT_UPLOADS_RULE_ID, "gcs-rule-3"]);

        let mut longer = spec.clone();
        longer.applied_retention_days = longer.retention_days;
        longer.retention_days = Some(60);
        let drift = observed.state.drift(&longer, mvo_core::TagStyle::Labels);
        assert_eq!(drift, vec![Setting::Lifecycle]);
        let (patch, paths) = patch(&longer, &bucket, &observed, &drift);
        assert_eq!(paths, [PATH_LIFECYCLE]);
        let rules = patch.lifecycle.clone().expect("lifecycle").rule;
        assert_eq!(&rules[..2], &[transition, logs]);
        let mut rewritten = bucket.clone();
        rewritten.lifecycle = patch.lifecycle.clone();
        assert_eq!(
            observe(&rewritten, Some(&longer)).state.drift(&longer, mvo_core::TagStyle::Labels),
            vec![]
        );
    }

    #[test]
    fn a_rule_with_extra_conditions_is_not_mistaken_for_a_managed_one() {
        let spec = spec();
        let mut rule = rule_to(&spec.managed_lifecycle()[0]);
        assert!(managed_rule(&rule, Some(&[30])).is_some());
        assert!(managed_rule(&rule, Some(&[45])).is_none(), "a backups/ rule of another age is a user's");
        rule.condition.as_mut().expect("condition").is_live = Some(false);
        assert!(managed_rule(&rule, None).is_none());
        assert_eq!(foreign_rule(0, &rule).map(|r| r.id), Some("gcs-rule-0".to_owned()));
    }

    #[test]
    fn label_patch_keeps_foreign_labels_and_kms_patch_names_only_the_key() {
        let mut spec = spec();
        let mut bucket = created(&spec);
        bucket.labels.remove("velero-io-backup-location");
        bucket.labels.insert("team".into(), "storage".into());
        let observed = observe(&bucket, Some(&spec));
        let (patch_body, paths) = patch(&spec, &bucket, &observed, &[Setting::Tags]);
        assert_eq!(paths, [PATH_LABELS]);
        assert_eq!(patch_body.labels.get("team").map(String::as_str), Some("storage"));
        assert!(spec.owner.owns_labels(&labels(&patch_body)));

        spec.encryption = Encryption::Kms { key: "projects/p/locations/l/keyRings/r/cryptoKeys/k".into() };
        let (patch_body, paths) = patch(&spec, &bucket, &observed, &[Setting::Encryption]);
        assert_eq!(paths, [PATH_KMS_KEY]);
        assert_eq!(kms_key(&patch_body), "projects/p/locations/l/keyRings/r/cryptoKeys/k");
        assert_eq!(claimant(&observed.state.tags), Some("cluster-one"));
    }
}
