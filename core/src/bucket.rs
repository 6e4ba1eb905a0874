//! Buckets: the desired state the operator asks for, the observed state providers report, and
//! the pure comparisons between the two that every provider shares.
//!
//! Providers read a bucket into a [`BucketState`], ask [`BucketState::drift`] which settings
//! differ from the [`BucketSpec`], and write only those, using the merge helpers here so that
//! foreign tags and lifecycle rules survive on every cloud in the same way.

use std::collections::BTreeMap;

use crate::owner::{Owner, TagStyle};

/// Bucket tags (S3) or labels (GCS), ordered by key.
pub type Tags = BTreeMap<String, String>;

/// Prefix of bucket names the operator generates (MVO's naming, kept for compatibility).
pub const BUCKET_NAME_PREFIX: &str = "managed-velero-backups-";
/// Lifecycle rule ID of the managed expiry rule.
pub const BACKUP_EXPIRY_RULE_ID: &str = "Backup Expiry";
/// Lifecycle rule ID of the managed incomplete-upload rule.
pub const ABORT_UPLOADS_RULE_ID: &str = "Abort Incomplete Uploads";
/// The only object prefix the expiry rule covers: Velero's backup metadata and tarballs.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Days after which incomplete multipart uploads are aborted.
pub const ABORT_INCOMPLETE_UPLOAD_DAYS: u32 = 7;
/// Default for `backupRetentionDays`.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// A fresh bucket name: `managed-velero-backups-` followed by a random UUIDv4 (59 characters).
pub fn new_bucket_name() -> String {
    format!("{BUCKET_NAME_PREFIX}{}", uuid::Uuid::new_v4())
}

/// Whether `name` is acceptable as a bucket name on every supported cloud: 3 to 63 characters
/// of lower-case letters, digits, `-` and `.`, beginning and ending with a letter or digit.
pub fn is_valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
}

/// Default encryption of new objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// Keys managed by the cloud (S3: SSE-S3 / AES256; GCS: Google-managed).
    ProviderManaged,
    /// A customer-managed key (S3: SSE-KMS with bucket key; GCS: default KMS key).
    Kms {
        /// KMS key ARN (AWS) or full key resource name (GCP).
        key: String,
    },
}

/// Public access settings, in S3's four-flag shape.
///
/// GCS maps uniform bucket-level access to the two ACL flags (ACLs are then neither honoured nor
/// accepted) and public access prevention `enforced` to the two policy flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PublicAccessBlock {
    /// New public ACLs are rejected.
    pub block_public_acls: bool,
    /// Existing public ACLs are ignored.
    pub ignore_public_acls: bool,
    /// Public bucket policies are rejected.
    pub block_public_policy: bool,
    /// Access through public policies is restricted to the owner.
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    /// Every flag set: the only state the operator accepts.
    pub const ALL_BLOCKED: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };

    /// True when every flag is set.
    pub fn is_fully_blocked(&self) -> bool {
        *self == Self::ALL_BLOCKED
    }
}

/// What a lifecycle rule does to the objects it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    /// Delete objects this many days after creation.
    Expire {
        /// Age in days.
        days: u32,
    },
    /// Abort multipart uploads still incomplete this many days after they began.
    AbortIncompleteUpload {
        /// Age in days.
        days: u32,
    },
}

/// One lifecycle rule, in a cloud-neutral shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LifecycleRule {
    /// Rule ID (S3). GCS rules have no IDs; its provider names recognised managed rules with the
    /// managed IDs and foreign rules by position.
    pub id: String,
    /// Object key prefix the rule covers; empty for the whole bucket.
    pub prefix: String,
    /// The rule's action.
    pub action: LifecycleAction,
    /// Whether the rule is enabled.
    pub enabled: bool,
}

impl LifecycleRule {
    /// True for the rules the operator owns (by ID); every other rule is foreign and kept.
    pub fn is_managed(&self) -> bool {
        self.id == BACKUP_EXPIRY_RULE_ID || self.id == ABORT_UPLOADS_RULE_ID
    }
}

/// The settings the operator enforces, as reported in [`BucketReport::corrected`] and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setting {
    /// Default encryption.
    Encryption,
    /// Public access block / prevention.
    PublicAccess,
    /// Managed lifecycle rules.
    Lifecycle,
    /// Owner tags or labels.
    Tags,
}

impl Setting {
    /// Every enforced setting, in the order providers check them.
    pub const ALL: [Setting; 4] =
        [Setting::Encryption, Setting::PublicAccess, Setting::Lifecycle, Setting::Tags];

    /// A stable snake_case name for metric labels and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Setting::Encryption => "encryption",
            Setting::PublicAccess => "public_access",
            Setting::Lifecycle => "lifecycle",
            Setting::Tags => "tags",
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As a person reads it: `cloud-managed keys` or `KMS key <key>`.
impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encryption::ProviderManaged => f.write_str("cloud-managed keys"),
            Encryption::Kms { key } => write!(f, "KMS key {key}"),
        }
    }
}

/// As a person reads it: `expire objects after 90 days`.
impl std::fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, days) = match self {
            LifecycleAction::Expire { days } => ("expire objects", days),
            LifecycleAction::AbortIncompleteUpload { days } => ("abort incomplete uploads", days),
        };
        let unit = if *days == 1 { "day" } else { "days" };
        write!(f, "{what} after {days} {unit}")
    }
}

/// As a person reads it: `expire-backups: expire objects after 90 days under backups/`.
impl std::fmt::Display for LifecycleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.id, self.action)?;
        match self.prefix.as_str() {
            "" => f.write_str(" in the whole bucket")?,
            prefix => write!(f, " under {prefix}")?,
        }
        if !self.enabled {
            f.write_str(" (disabled)")?;
        }
        Ok(())
    }
}

/// The bucket the operator wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    /// Bucket name; chosen (and persisted) by the operator before the bucket is created.
    pub name: String,
    /// Region (AWS) or location (GCP) the bucket is created in.
    pub region: String,
    /// The cluster identity written on the bucket.
    pub owner: Owner,
    /// Default encryption.
    pub encryption: Encryption,
    /// Days after which objects under `backups/` expire; `None` for no expiry rule at all (a
    /// bucket adopted by opt-in whose spec does not ask for one).
    pub retention_days: Option<u32>,
    /// The expiry, in days, of the rule this operator applied last (recorded by the caller).
    /// Identifies the managed rule where the cloud has no rule IDs (GCS), so a user's own rule on
    /// `backups/` of another age is foreign and kept, never taken for ours by its shape.
    pub applied_retention_days: Option<u32>,
}

impl BucketSpec {
    /// The managed lifecycle rules: expiry of `backups/` (when a retention is set) and abort of
    /// incomplete uploads.
    pub fn managed_lifecycle(&self) -> Vec<LifecycleRule> {
        let expiry = self.retention_days.map(|days| LifecycleRule {
            id: BACKUP_EXPIRY_RULE_ID.into(),
            prefix: BACKUPS_PREFIX.into(),
            action: LifecycleAction::Expire { days },
            enabled: true,
        });
        let abort = LifecycleRule {
            id: ABORT_UPLOADS_RULE_ID.into(),
            prefix: String::new(),
            action: LifecycleAction::AbortIncompleteUpload { days: ABORT_INCOMPLETE_UPLOAD_DAYS },
            enabled: true,
        };
        expiry.into_iter().chain([abort]).collect()
    }

    /// The ages an ID-less `backups/` expiry rule may have to be the managed one: the one this
    /// operator applied last and the one it would write now. Any other age is a user's rule.
    pub fn managed_expiry_ages(&self) -> Vec<u32> {
        let mut ages: Vec<u32> = self.applied_retention_days.into_iter().chain(self.retention_days).collect();
        ages.dedup();
        ages
    }

    /// The bucket as it is right after a create: every setting as desired, owner identity in
    /// `style`.
    pub fn desired_state(&self, style: TagStyle) -> BucketState {
        BucketState {
            name: self.name.clone(),
            region: self.region.clone(),
            encryption: Some(self.encryption.clone()),
            public_access: PublicAccessBlock::ALL_BLOCKED,
            lifecycle: self.managed_lifecycle(),
            tags: style.marks(&self.owner),
        }
    }

    /// The lifecycle to write over `observed`: foreign rules kept in their order, managed rules
    /// replaced by the desired ones. `None` when `observed` already has the desired managed rules.
    pub fn merge_lifecycle(&self, observed: &[LifecycleRule]) -> Option<Vec<LifecycleRule>> {
        let desired = self.managed_lifecycle();
        let mut current: Vec<&LifecycleRule> = observed.iter().filter(|r| r.is_managed()).collect();
        current.sort_by(|a, b| a.id.cmp(&b.id));
        let mut wanted: Vec<&LifecycleRule> = desired.iter().collect();
        wanted.sort_by(|a, b| a.id.cmp(&b.id));
        if current == wanted {
            return None;
        }
        let mut merged: Vec<LifecycleRule> = observed.iter().filter(|r| !r.is_managed()).cloned().collect();
        merged.extend(desired);
        Some(merged)
    }

    /// The tags to write over `observed` (S3 semantics: keys as given): every foreign tag kept, the
    /// owner tags set. `None` when nothing needs to change.
    pub fn merge_tags(&self, observed: &Tags) -> Option<Tags> {
        merge_into(observed, self.owner.tags())
    }

    /// The labels to write over `observed` (GCS semantics: sanitised owner labels).
    pub fn merge_labels(&self, observed: &Tags) -> Option<Tags> {
        merge_into(observed, self.owner.labels())
    }

    /// The owner marks to write over `observed` in `style`, every foreign mark kept; `None` when
    /// nothing needs to change.
    pub fn merge_marks(&self, style: TagStyle, observed: &Tags) -> Option<Tags> {
        merge_into(observed, style.marks(&self.owner))
    }
}

fn merge_into(observed: &Tags, wanted: Tags) -> Option<Tags> {
    if wanted.iter().all(|(k, v)| observed.get(k) == Some(v)) {
        return None;
    }
    let mut merged = observed.clone();
    merged.extend(wanted);
    Some(merged)
}

/// A bucket as observed in the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketState {
    /// Bucket name.
    pub name: String,
    /// Region or location the bucket lives in, as the cloud reports it.
    pub region: String,
    /// Default encryption; `None` when the bucket reports none.
    pub encryption: Option<Encryption>,
    /// Public access settings; all false when none are configured.
    pub public_access: PublicAccessBlock,
    /// Every lifecycle rule, managed and foreign.
    pub lifecycle: Vec<LifecycleRule>,
    /// Every tag (S3) or label (GCS), owner and foreign.
    pub tags: Tags,
}

impl BucketState {
    /// The settings in which this bucket differs from `spec`, in [`Setting::ALL`] order.
    ///
    /// Owner marks are compared in the provider's `style`.
    pub fn drift(&self, spec: &BucketSpec, style: TagStyle) -> Vec<Setting> {
        let mut drifted = Vec::new();
        if !self.encryption_satisfies(&spec.encryption) {
            drifted.push(Setting::Encryption);
        }
        if !self.public_access.is_fully_blocked() {
            drifted.push(Setting::PublicAccess);
        }
        if spec.merge_lifecycle(&self.lifecycle).is_some() {
            drifted.push(Setting::Lifecycle);
        }
        if spec.merge_marks(style, &self.tags).is_some() {
            drifted.push(Setting::Tags);
        }
        drifted
    }
}

impl BucketState {
    /// Whether the bucket's encryption meets `wanted`. Enforcement never weakens a setting: a
    /// customer-managed key on the bucket satisfies the provider-managed default, so a bucket
    /// someone moved to SSE-KMS is not switched back to AES256. A specific key must be that key.
    pub fn encryption_satisfies(&self, wanted: &Encryption) -> bool {
        match (&self.encryption, wanted) {
            (None, _) => false,
            (Some(_), Encryption::ProviderManaged) => true,
            (Some(actual), wanted) => actual == wanted,
        }
    }
}

/// What [`crate::ObjectStore::ensure_bucket`] found, changed and left true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketReport {
    /// True when this call created the bucket.
    pub created: bool,
    /// The settings this call had to correct on an existing bucket (empty after a create: a new
    /// bucket is made right, not corrected).
    pub corrected: Vec<Setting>,
    /// The bucket as it is now.
    pub state: BucketState,
}

impl BucketReport {
    /// True when the call changed nothing in the cloud.
    pub fn is_unchanged(&self) -> bool {
        !self.created && self.corrected.is_empty()
    }
}

/// The result of looking for the cluster's bucket by owner tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No bucket carries both owner tags.
    NotFound {
        /// Buckets that could not be inspected (access denied, vanished) and were skipped.
        skipped: usize,
    },
    /// Exactly one bucket carries both owner tags.
    Found {
        /// Its name.
        name: String,
        /// Buckets that could not be inspected and were skipped.
        skipped: usize,
    },
    /// Several buckets carry both owner tags; none may be adopted.
    Ambiguous {
        /// Their names, sorted.
        names: Vec<String>,
        /// Buckets that could not be inspected and were skipped.
        skipped: usize,
    },
}

impl Recovery {
    /// Builds the verdict from the names of all matching buckets.
    pub fn from_matches(mut names: Vec<String>, skipped: usize) -> Self {
        names.sort();
        names.dedup();
        match names.len() {
            0 => Recovery::NotFound { skipped },
            1 => Recovery::Found { name: names.remove(0), skipped },
            _ => Recovery::Ambiguous { names, skipped },
        }
    }

    /// How many buckets were skipped because they could not be inspected.
    pub fn skipped(&self) -> usize {
        match self {
            Recovery::NotFound { skipped }
            | Recovery::Found { skipped, .. }
            | Recovery::Ambiguous { skipped, .. } => *skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_display_the_way_a_person_reads_them() {
        use super::{Encryption, LifecycleAction, LifecycleRule};
        assert_eq!(Encryption::ProviderManaged.to_string(), "cloud-managed keys");
        assert_eq!(Encryption::Kms { key: "arn:k".into() }.to_string(), "KMS key arn:k");
        assert_eq!(LifecycleAction::Expire { days: 90 }.to_string(), "expire objects after 90 days");
        assert_eq!(
            LifecycleAction::AbortIncompleteUpload { days: 1 }.to_string(),
            "abort incomplete uploads after 1 day"
        );
        let rule = LifecycleRule {
            id: "backups".into(),
            prefix: "backups/".into(),
            action: LifecycleAction::Expire { days: 90 },
            enabled: true,
        };
        assert_eq!(rule.to_string(), "backups: expire objects after 90 days under backups/");
        let rule = LifecycleRule { prefix: String::new(), enabled: false, ..rule };
        assert_eq!(rule.to_string(), "backups: expire objects after 90 days in the whole bucket (disabled)");
    }

    use super::*;

    fn spec() -> BucketSpec {
        BucketSpec {
            name: "b".into(),
            region: "eu-west-1".into(),
            owner: Owner::new("c1"),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(30),
            applied_retention_days: None,
        }
    }

    #[test]
    fn generated_names_match_mvo_format() {
        let name = new_bucket_name();
        assert_eq!(name.len(), 59);
        assert!(name.starts_with(BUCKET_NAME_PREFIX));
        assert!(is_valid_bucket_name(&name));
        assert_ne!(name, new_bucket_name());
    }

    #[test]
    fn bucket_name_rules() {
        assert!(is_valid_bucket_name("abc"));
        assert!(is_valid_bucket_name("my.bucket-1"));
        for bad in ["ab", "Abc", "-abc", "abc-", "a_b", &"a".repeat(64), ""] {
            assert!(!is_valid_bucket_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn desired_state_has_no_drift() {
        let spec = spec();
        assert!(spec.desired_state(TagStyle::Tags).drift(&spec, TagStyle::Tags).is_empty());
    }

    #[test]
    fn each_setting_drifts_alone() {
        let spec = spec();
        let mut s = spec.desired_state(TagStyle::Tags);
        s.encryption = None;
        assert_eq!(s.drift(&spec, TagStyle::Tags), vec![Setting::Encryption]);

        let mut s = spec.desired_state(TagStyle::Tags);
        s.encryption = Some(Encryption::Kms { key: "k".into() });
        assert_eq!(
            s.drift(&spec, TagStyle::Tags),
            vec![],
            "a KMS key satisfies the provider-managed default"
        );
        let mut kms = spec.clone();
        kms.encryption = Encryption::Kms { key: "wanted".into() };
        assert_eq!(s.drift(&kms, TagStyle::Tags), vec![Setting::Encryption], "another key is drift");

        let mut s = spec.desired_state(TagStyle::Tags);
        s.public_access.restrict_public_buckets = false;
        assert_eq!(s.drift(&spec, TagStyle::Tags), vec![Setting::PublicAccess]);

        let mut s = spec.desired_state(TagStyle::Tags);
        s.lifecycle.clear();
        assert_eq!(s.drift(&spec, TagStyle::Tags), vec![Setting::Lifecycle]);

        let mut s = spec.desired_state(TagStyle::Tags);
        s.tags.remove(crate::owner::BACKUP_LOCATION_TAG);
        assert_eq!(s.drift(&spec, TagStyle::Tags), vec![Setting::Tags]);
    }

    #[test]
    fn retention_change_is_lifecycle_drift() {
        let mut spec = spec();
        let state = spec.desired_state(TagStyle::Tags);
        spec.retention_days = Some(31);
        assert_eq!(state.drift(&spec, TagStyle::Tags), vec![Setting::Lifecycle]);
    }

    #[test]
    fn lifecycle_merge_keeps_foreign_rules_and_touches_only_backups() {
        let spec = spec();
        let foreign = LifecycleRule {
            id: "user-logs".into(),
            prefix: "logs/".into(),
            action: LifecycleAction::Expire { days: 3 },
            enabled: true,
        };
        let stale = LifecycleRule {
            id: BACKUP_EXPIRY_RULE_ID.into(),
            prefix: "kopia/".into(),
            action: LifecycleAction::Expire { days: 1 },
            enabled: true,
        };
        let merged = spec.merge_lifecycle(&[foreign.clone(), stale]).expect("drift");
        assert_eq!(merged[0], foreign);
        let managed: Vec<_> = merged.iter().filter(|r| r.is_managed()).collect();
        assert_eq!(managed.len(), 2);
        for rule in managed {
            match rule.action {
                LifecycleAction::Expire { days } => {
                    assert_eq!((rule.prefix.as_str(), days), (BACKUPS_PREFIX, 30))
                }
                LifecycleAction::AbortIncompleteUpload { days } => assert_eq!(days, 7),
            }
        }
        assert_eq!(spec.merge_lifecycle(&merged), None);
    }

    #[test]
    fn without_a_retention_there_is_no_expiry_rule() {
        let mut spec = spec();
        spec.retention_days = None;
        let managed = spec.managed_lifecycle();
        assert_eq!(managed.len(), 1);
        assert!(matches!(managed[0].action, LifecycleAction::AbortIncompleteUpload { .. }));
        let with_expiry = self::spec().desired_state(TagStyle::Tags);
        assert_eq!(
            with_expiry.drift(&spec, TagStyle::Tags),
            vec![Setting::Lifecycle],
            "our old expiry rule goes"
        );
        spec.applied_retention_days = Some(30);
        spec.retention_days = Some(45);
        assert_eq!(spec.managed_expiry_ages(), vec![30, 45]);
    }

    #[test]
    fn tag_merge_keeps_foreign_tags() {
        let spec = spec();
        let observed = Tags::from([("cost-center".to_owned(), "42".to_owned())]);
        let merged = spec.merge_tags(&observed).expect("drift");
        assert_eq!(merged.get("cost-center").map(String::as_str), Some("42"));
        assert!(spec.owner.owns_tags(&merged));
        assert_eq!(spec.merge_tags(&merged), None);
    }

    #[test]
    fn recovery_verdicts() {
        assert_eq!(Recovery::from_matches(vec![], 2), Recovery::NotFound { skipped: 2 });
        assert_eq!(
            Recovery::from_matches(vec!["a".into()], 0),
            Recovery::Found { name: "a".into(), skipped: 0 }
        );
        let r = Recovery::from_matches(vec!["b".into(), "a".into()], 1);
        assert_eq!(r, Recovery::Ambiguous { names: vec!["a".into(), "b".into()], skipped: 1 });
        assert_eq!(r.skipped(), 1);
    }
}
