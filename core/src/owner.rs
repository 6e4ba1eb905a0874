//! Who owns a bucket: the cluster identity written on it as tags (S3) or labels (GCS).
//!
//! The identity is the pair MVO used, so buckets made by MVO are recognised:
//! `velero.io/infrastructureName=<infrastructureName>` and `velero.io/backup-location=default`.

use crate::bucket::Tags;

/// Tag key naming the cluster that owns a bucket.
pub const INFRASTRUCTURE_NAME_TAG: &str = "velero.io/infrastructureName";
/// Tag key naming the Velero backup location the bucket serves.
pub const BACKUP_LOCATION_TAG: &str = "velero.io/backup-location";
/// The backup location name the operator manages.
pub const DEFAULT_BACKUP_LOCATION: &str = "default";

/// The cluster identity a bucket carries. Both parts must match exactly for a bucket to be ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `Infrastructure.status.infrastructureName` of the cluster, e.g. `mycluster-x8k2p`.
    pub infrastructure_name: String,
    /// The Velero backup location name, `default` for the operator's own bucket.
    pub backup_location: String,
}

impl Owner {
    /// The owner identity of the default backup location of the named cluster.
    pub fn new(infrastructure_name: impl Into<String>) -> Self {
        Owner {
            infrastructure_name: infrastructure_name.into(),
            backup_location: DEFAULT_BACKUP_LOCATION.into(),
        }
    }

    /// The two owner tags as S3 writes them.
    pub fn tags(&self) -> Tags {
        Tags::from([
            (INFRASTRUCTURE_NAME_TAG.to_owned(), self.infrastructure_name.clone()),
            (BACKUP_LOCATION_TAG.to_owned(), self.backup_location.clone()),
        ])
    }

    /// The two owner labels as GCS writes them: keys and values sanitised with [`gcs_label`].
    pub fn labels(&self) -> Tags {
        self.tags().iter().map(|(k, v)| (gcs_label(k), gcs_label(v))).collect()
    }

    /// True when `tags` carries both owner tags with exactly our values.
    ///
    /// Other tags are ignored. A bucket with only one of the two, or with a different value, is
    /// not ours (MVO combined hits across buckets and ignored values; this does not).
    pub fn owns_tags(&self, tags: &Tags) -> bool {
        self.tags().iter().all(|(k, v)| tags.get(k) == Some(v))
    }

    /// True when `labels` carries both sanitised owner labels with exactly our sanitised values.
    pub fn owns_labels(&self, labels: &Tags) -> bool {
        self.labels().iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The infrastructure name recorded in `tags`, if any; used to tell "owned by another
    /// cluster" from "not tagged at all".
    pub fn claimed_by(tags: &Tags) -> Option<&str> {
        tags.get(INFRASTRUCTURE_NAME_TAG).map(String::as_str)
    }

    /// The infrastructure name recorded in S3 tags or GCS labels, whichever style `tags` uses
    /// (a GCS value is the sanitised name).
    pub fn claimant(tags: &Tags) -> Option<&str> {
        Self::claimed_by(tags).or_else(|| tags.get(&gcs_label(INFRASTRUCTURE_NAME_TAG)).map(String::as_str))
    }

    /// True when `tags` carries both owner marks with our values, as S3 tags or as GCS labels.
    pub fn owns(&self, tags: &Tags) -> bool {
        self.owns_tags(tags) || self.owns_labels(tags)
    }
}

/// How a provider writes the owner identity on its buckets; declared by the provider
/// ([`crate::Platform::tag_style`]) so that comparisons (drift, ownership) need no platform name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TagStyle {
    /// Tags with keys and values as given (S3, Azure blob metadata, the in-memory cloud).
    #[default]
    Tags,
    /// Labels with sanitised keys and values ([`gcs_label`]), as GCS requires.
    Labels,
}

impl TagStyle {
    /// The two owner marks of `owner` in this style.
    pub fn marks(self, owner: &Owner) -> Tags {
        match self {
            TagStyle::Tags => owner.tags(),
            TagStyle::Labels => owner.labels(),
        }
    }

    /// True when `tags` carries both owner marks of `owner` in this style, with exact values.
    pub fn owns(self, owner: &Owner, tags: &Tags) -> bool {
        self.marks(owner).iter().all(|(k, v)| tags.get(k) == Some(v))
    }

    /// The infrastructure name recorded in `tags` in this style, if any (a label value is the
    /// sanitised name).
    pub fn claimant(self, tags: &Tags) -> Option<&str> {
        match self {
            TagStyle::Tags => Owner::claimed_by(tags),
            TagStyle::Labels => tags.get(&gcs_label(INFRASTRUCTURE_NAME_TAG)).map(String::as_str),
        }
    }
}

/// Sanitises a tag key or value into a GCS label: lower case, every run of characters outside
/// `[a-z0-9_-]` replaced by one `-`, at most 63 characters.
pub fn gcs_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_bad_run = false;
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            out.push(c);
            in_bad_run = false;
        } else if !in_bad_run {
            out.push('-');
            in_bad_run = true;
        }
    }
    out.truncate(63);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sanitised_like_mvo() {
        let owner = Owner::new("MyCluster.prod-x8k2p");
        let labels = owner.labels();
        assert_eq!(
            labels.get("velero-io-infrastructurename").map(String::as_str),
            Some("mycluster-prod-x8k2p")
        );
        assert_eq!(labels.get("velero-io-backup-location").map(String::as_str), Some("default"));
        assert_eq!(gcs_label("a..//b"), "a-b");
        assert_eq!(gcs_label(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn ownership_needs_both_tags_with_exact_values() {
        let owner = Owner::new("c1-abcde");
        let mut tags = owner.tags();
        tags.insert("team".into(), "storage".into());
        assert!(owner.owns_tags(&tags));

        let mut other_value = owner.tags();
        other_value.insert(INFRASTRUCTURE_NAME_TAG.into(), "c1-abcdef".into());
        assert!(!owner.owns_tags(&other_value));

        let mut only_one = owner.tags();
        only_one.remove(BACKUP_LOCATION_TAG);
        assert!(!owner.owns_tags(&only_one));
        assert!(!owner.owns_tags(&Tags::new()));
    }

    #[test]
    fn claimant_reads_either_style() {
        let owner = Owner::new("C1.x");
        assert_eq!(Owner::claimant(&owner.tags()), Some("C1.x"));
        assert_eq!(Owner::claimant(&owner.labels()), Some("c1-x"));
        assert_eq!(Owner::claimant(&Tags::new()), None);
        assert!(owner.owns(&owner.tags()) && owner.owns(&owner.labels()));
    }

    #[test]
    fn styles_write_and_read_their_own_marks() {
        let owner = Owner::new("C1.x");
        assert_eq!(TagStyle::Tags.marks(&owner), owner.tags());
        assert_eq!(TagStyle::Labels.marks(&owner), owner.labels());
        assert!(TagStyle::Labels.owns(&owner, &owner.labels()));
        assert!(!TagStyle::Labels.owns(&owner, &owner.tags()));
        assert_eq!(TagStyle::Labels.claimant(&owner.labels()), Some("c1-x"));
        assert_eq!(TagStyle::Tags.claimant(&owner.labels()), None);
    }

    #[test]
    fn label_ownership_uses_sanitised_values() {
        let owner = Owner::new("C1.x");
        assert!(owner.owns_labels(&owner.labels()));
        assert!(!owner.owns_labels(&Owner::new("c1-y").labels()));
    }
}
