//! [`BlobStore`]: the Azure [`ObjectStore`] of SPEC 5.3 on Blob containers in one storage account.
//!
//! The "bucket" is a container. It is created private (no anonymous access) with the two owner
//! marks as container metadata; every check reads the container's properties (public access and
//! metadata) and the account's blob service properties (soft-delete retention), and writes only
//! what drifted: the metadata (foreign entries kept) and the delete retention policy (only that
//! element is sent). Recovery lists the account's containers with their metadata and matches both
//! marks exactly.
//!
//! Public access is checked, not corrected. Set Container ACL is the only data-plane call that
//! changes a container's anonymous access. Azure Storage has accepted it with an Entra ID token
//! since August 2025 (RBAC action `containers/setAcl/action`), but Azurite 3.35, the emulator
//! these tests run against, serves Get/Set Container ACL with the account key only (its token
//! authenticator skips both: `AuthorizationFailure`, pinned by the store tests), so a correction
//! could not be tested and is not made. A container found public is reported as
//! [`Error::Refused`] naming what to change, and nothing is written to it.
//!
//! A compliant container costs two reads and no write. Nothing is ever deleted: [`Blob`] cannot
//! issue a container or blob delete.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use azure_storage_blob::models::{
    BlobContainerClientCreateOptions, BlobContainerClientGetPropertiesResultHeaders, BlobServiceProperties,
    PublicAccessType, RetentionPolicy,
};
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Encryption, Error, ObjectStore, Owner, PublicAccessBlock,
    Recovery, Result, Setting, Tags,
};

use crate::{
    PLATFORM,
    errors::{self, Call},
    iam,
    metering::Blob,
};

/// Days deleted blobs are kept by the account's soft-delete policy, at least (the Azure portal's
/// default). A longer retention someone set is kept: enforcement never weakens a setting.
pub const SOFT_DELETE_RETENTION_DAYS: i32 = 7;

/// The metadata key of an owner tag: Azure metadata names are C# identifiers, so every run of
/// characters outside `[a-z0-9_]` becomes one `_` (lower case: names are case-insensitive).
pub fn metadata_key(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    let mut in_bad_run = false;
    for c in tag.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
            in_bad_run = false;
        } else if !in_bad_run {
            out.push('_');
            in_bad_run = true;
        }
    }
    out
}

/// The owner marks as container metadata: sanitised keys, values exactly as given.
pub fn owner_metadata(owner: &Owner) -> Tags {
    owner.tags().into_iter().map(|(k, v)| (metadata_key(&k), v)).collect()
}

/// The container's metadata as neutral tags: the two owner marks under their tag keys
/// (`velero.io/infrastructureName`, `velero.io/backup-location`, whatever case Azure returns the
/// names in), every other entry as it is. So ownership, drift and plan output compare Azure
/// containers exactly as S3 buckets ([`mvo_core::Owner::owns_tags`]).
pub fn tags_of(metadata: &Tags) -> Tags {
    let marks = [mvo_core::owner::INFRASTRUCTURE_NAME_TAG, mvo_core::owner::BACKUP_LOCATION_TAG];
    metadata
        .iter()
        .map(|(key, value)| {
            let tag = marks.iter().find(|tag| metadata_key(tag).eq_ignore_ascii_case(key));
            (tag.map_or_else(|| key.clone(), |tag| (*tag).to_owned()), value.clone())
        })
        .collect()
}

/// The value of metadata `key`, compared case-insensitively as Azure does.
fn get_ci<'a>(metadata: &'a Tags, key: &str) -> Option<&'a String> {
    metadata.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// True when `metadata` carries both owner marks with exactly `owner`'s values.
pub fn owns(owner: &Owner, metadata: &Tags) -> bool {
    owner_metadata(owner).iter().all(|(k, v)| get_ci(metadata, k) == Some(v))
}

/// The cluster a container's infrastructure mark names, if any.
fn claimant(metadata: &Tags) -> Option<&str> {
    get_ci(metadata, &metadata_key(mvo_core::owner::INFRASTRUCTURE_NAME_TAG)).map(String::as_str)
}

/// The metadata to write over `observed`: foreign entries kept, owner marks set (replacing any
/// differently-cased key of the same name). `None` when nothing needs to change.
fn merge_metadata(observed: &Tags, owner: &Owner) -> Option<Tags> {
    if owns(owner, observed) {
        return None;
    }
    let wanted = owner_metadata(owner);
    let mut merged: Tags = observed
        .iter()
        .filter(|(k, _)| !wanted.keys().any(|w| w.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(wanted);
    Some(merged)
}

fn public_access_of(access: Option<&PublicAccessType>) -> PublicAccessBlock {
    // Any anonymous access level (blob or container) is public; only "none" is private.
    match access {
        None => PublicAccessBlock::ALL_BLOCKED,
        Some(_) => PublicAccessBlock::default(),
    }
}

/// Whether the account's delete retention policy keeps deleted blobs long enough.
pub fn soft_delete_ok(policy: Option<&RetentionPolicy>) -> bool {
    policy.is_some_and(|p| p.enabled == Some(true) && p.days.is_some_and(|d| d >= SOFT_DELETE_RETENTION_DAYS))
}

/// A container as read.
#[derive(Debug, Clone)]
struct Container {
    access: Option<PublicAccessType>,
    metadata: Tags,
}

/// The Blob container operations of one storage account.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    blob: Blob,
    region: String,
}

impl BlobStore {
    pub(crate) fn new(blob: Blob, region: String) -> Self {
        BlobStore { blob, region }
    }

    fn state(&self, name: &str, container: &Container) -> BucketState {
        BucketState {
            name: name.to_owned(),
            region: self.region.clone(),
            // Azure Storage encrypts every blob at rest and cannot be told not to; which key it
            // uses is an account setting the data plane does not show.
            encryption: Some(Encryption::ProviderManaged),
            public_access: public_access_of(container.access.as_ref()),
            // Lifecycle management is an account-level (management plane) policy: not observed.
            lifecycle: Vec::new(),
            tags: tags_of(&container.metadata),
        }
    }

    /// The container's properties; `Ok(None)` when it does not exist.
    async fn get(&self, name: &str) -> Result<Option<Container>> {
        let response = match self.blob.get_container_properties(name).await {
            Ok(response) => response,
            Err(err) if errors::is_not_found(&err) => return Ok(None),
            Err(err) => return Err(errors::map(err, Call::on(iam::CONTAINERS_READ, name))),
        };
        let decode = |err| errors::map(err, Call::on(iam::CONTAINERS_READ, name));
        let access = response.access().map_err(decode)?;
        let metadata = response.metadata().map_err(decode)?.into_iter().collect();
        Ok(Some(Container { access, metadata }))
    }

    /// Creates the container private with the owner marks; `Ok(false)` when it exists already.
    async fn create(&self, spec: &BucketSpec) -> Result<bool> {
        let options = BlobContainerClientCreateOptions {
            // No access header: the container is private.
            access: None,
            metadata: Some(owner_metadata(&spec.owner).into_iter().collect()),
            ..Default::default()
        };
        match self.blob.create_container(&spec.name, options).await {
            Ok(()) => Ok(true),
            Err(err) if errors::is_already_exists(&err) => Ok(false),
            Err(err) => Err(errors::map(err, Call::on(iam::CONTAINERS_WRITE, &spec.name))),
        }
    }

    async fn write_metadata(&self, name: &str, metadata: &Tags) -> Result<()> {
        let map: HashMap<String, String> = metadata.clone().into_iter().collect();
        self.blob
            .set_container_metadata(name, &map)
            .await
            .map_err(|e| errors::map(e, Call::on(iam::CONTAINERS_WRITE, name)))
    }

    /// Reads the account's delete retention policy and raises it when it keeps deleted blobs for
    /// less than [`SOFT_DELETE_RETENTION_DAYS`]; true when it wrote.
    async fn ensure_soft_delete(&self) -> Result<bool> {
        let properties = self
            .blob
            .get_service_properties()
            .await
            .map_err(|e| errors::map(e, Call::global(iam::BLOB_SERVICES_READ)))?;
        if soft_delete_ok(properties.delete_retention_policy.as_ref()) {
            return Ok(false);
        }
        // Only the one element: the service leaves every element that is not sent unchanged
        // (logging, metrics, CORS, versioning stay the account owner's).
        let update = BlobServiceProperties {
            delete_retention_policy: Some(RetentionPolicy {
                enabled: Some(true),
                days: Some(SOFT_DELETE_RETENTION_DAYS),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.blob
            .set_service_properties(update)
            .await
            .map_err(|e| errors::map(e, Call::global(iam::BLOB_SERVICES_WRITE)))?;
        Ok(true)
    }
}

#[async_trait]
impl ObjectStore for BlobStore {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        // One listing with metadata answers for every container: none needs a separate read, so
        // none can refuse inspection (skipped is always 0).
        let containers = self
            .blob
            .list_containers_with_metadata()
            .await
            .map_err(|e| errors::map(e, Call::global(iam::CONTAINERS_READ)))?;
        let matches = containers
            .into_iter()
            .filter(|(_, metadata)| owns(owner, metadata))
            .map(|(name, _)| name)
            .collect();
        Ok(Recovery::from_matches(matches, 0))
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        if matches!(spec.encryption, Encryption::Kms { .. }) {
            // The key of an account's encryption is management-plane; never pretend to honour it.
            return Err(Error::NotSupported {
                operation: "customer-managed encryption keys",
                provider: PLATFORM,
            });
        }
        let (mut container, created) = match self.get(&spec.name).await? {
            Some(container) => (container, false),
            None => {
                let created = self.create(spec).await?;
                let container = match created {
                    true => Container { access: None, metadata: owner_metadata(&spec.owner) },
                    // Created meanwhile by someone else: read what is there and judge it.
                    false => {
                        self.get(&spec.name).await?.ok_or_else(|| Error::bucket_not_found(&spec.name))?
                    }
                };
                (container, created)
            }
        };
        if let Some(theirs) = claimant(&container.metadata)
            && theirs != spec.owner.infrastructure_name
        {
            return Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() });
        }
        if container.access.is_some() {
            return Err(Error::Refused {
                message: format!(
                    "container {:?} allows anonymous access; the operator reports it and does not change it: \
                     set its public access level to private, or disallow blob public access on the storage \
                     account",
                    spec.name
                ),
            });
        }
        let mut corrected = Vec::new();
        if let Some(merged) = merge_metadata(&container.metadata, &spec.owner) {
            self.write_metadata(&spec.name, &merged).await?;
            container.metadata = merged;
            corrected.push(Setting::Tags);
        }
        // Deleted blobs recoverable for a week: the one retention setting the data plane owns.
        // Counted as the lifecycle setting (what happens to deleted data) in reports and metrics.
        if self.ensure_soft_delete().await? && !created {
            corrected.push(Setting::Lifecycle);
        }
        if created {
            corrected.clear();
        }
        Ok(BucketReport { created, corrected, state: self.state(&spec.name, &container) })
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        let container = self.get(name).await?.ok_or_else(|| Error::bucket_not_found(name))?;
        Ok(self.state(name, &container))
    }
}

/// Sorted metadata of a listing entry.
pub(crate) fn metadata_of(map: Option<HashMap<String, String>>) -> Tags {
    map.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_marks_become_identifier_keys_with_exact_values() {
        let owner = Owner::new("My.Cluster-x8k2p");
        let metadata = owner_metadata(&owner);
        assert_eq!(
            metadata,
            Tags::from([
                ("velero_io_backup_location".to_owned(), "default".to_owned()),
                ("velero_io_infrastructurename".to_owned(), "My.Cluster-x8k2p".to_owned()),
            ])
        );
        let mut upper = Tags::new();
        for (k, v) in &metadata {
            upper.insert(k.to_uppercase(), v.clone());
        }
        assert!(owns(&owner, &upper), "keys compare case-insensitively");
        let mut other = metadata.clone();
        other.insert("velero_io_infrastructurename".into(), "My.Cluster-x8k2p-other".into());
        assert!(!owns(&owner, &other), "values compare exactly");
        assert_eq!(claimant(&other), Some("My.Cluster-x8k2p-other"));
        let tags = tags_of(&upper);
        assert!(owner.owns_tags(&tags), "reported as the neutral owner tags: {tags:?}");
    }

    #[test]
    fn metadata_merge_keeps_foreign_entries() {
        let owner = Owner::new("c1");
        let observed = Tags::from([
            ("cost_center".to_owned(), "42".to_owned()),
            ("VELERO_IO_BACKUP_LOCATION".to_owned(), "other".to_owned()),
        ]);
        let merged = merge_metadata(&observed, &owner).expect("drift");
        assert_eq!(merged.get("cost_center").map(String::as_str), Some("42"));
        assert!(!merged.contains_key("VELERO_IO_BACKUP_LOCATION"));
        assert!(owns(&owner, &merged));
        assert_eq!(merge_metadata(&merged, &owner), None);
    }

    #[test]
    fn soft_delete_is_never_weakened() {
        let policy = |enabled, days| RetentionPolicy {
            enabled: Some(enabled),
            days: Some(days),
            ..Default::default()
        };
        assert!(!soft_delete_ok(None));
        assert!(!soft_delete_ok(Some(&policy(false, 30))));
        assert!(!soft_delete_ok(Some(&policy(true, 1))));
        assert!(soft_delete_ok(Some(&policy(true, 7))));
        assert!(soft_delete_ok(Some(&policy(true, 365))));
    }
}
