//! Ensure bucket: decides which bucket the install uses and makes the cloud match.
//!
//! May call the provider and write the VeleroInstall status (only to persist a chosen bucket
//! name before the bucket is created, so a crash in between never leaks a bucket). Builds no
//! Kubernetes objects.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use mvo_core::{BucketReport, BucketSpec, Error as CloudError, Owner, Recovery, bucket::new_bucket_name};
use serde_json::json;
use tracing::info;

use super::{Context, Error, validate::DesiredInstall};
use crate::crd::{StorageBucketStatus, VeleroInstall};

/// Annotation that forces a bucket check on the next reconcile.
pub const RECONCILE_REQUESTED_AT: &str = "managed.openshift.io/reconcile-requested-at";

/// What the bucket step settled.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketOutcome {
    /// The bucket was checked (and created or corrected as needed) now.
    Checked {
        /// The bucket name.
        name: String,
        /// What the provider found and changed.
        report: BucketReport,
        /// The bucket was expected (status said provisioned) but had to be created again.
        recreated_missing: bool,
        /// The bucket was found by its owner tags rather than taken from status or spec.
        recovered: bool,
    },
    /// The bucket is provisioned and its last check is recent enough; nothing was called.
    NotDue {
        /// The bucket name.
        name: String,
        /// When the next check is due.
        next_check_in: Duration,
    },
    /// Several buckets carry our owner tags; none was adopted.
    Ambiguous {
        /// Their names.
        names: Vec<String>,
    },
    /// The bucket named in the spec belongs to someone else; nothing was touched.
    AdoptedBucketNotOurs {
        /// The bucket name.
        name: String,
    },
}

fn storage_status(vi: &VeleroInstall) -> StorageBucketStatus {
    vi.status.as_ref().and_then(|s| s.storage_bucket.clone()).unwrap_or_default()
}

/// When the next bucket check is due, or `None` when one is due now.
pub fn next_check(vi: &VeleroInstall, desired: &DesiredInstall, now: Timestamp) -> Option<Duration> {
    let status = storage_status(vi);
    let observed = vi.status.as_ref().and_then(|s| s.observed_generation);
    let last_sync = status.last_sync_timestamp.as_ref().map(|t| t.0)?;
    if !status.provisioned || status.name.is_none() || observed != vi.metadata.generation {
        return None;
    }
    if let Some(requested) = vi.annotations().get(RECONCILE_REQUESTED_AT) {
        // An unparsable request counts as a request: the user asked for a check.
        match requested.parse::<Timestamp>() {
            Ok(at) if at <= last_sync => {}
            _ => return None,
        }
    }
    let due = last_sync.checked_add(desired.resync_interval).ok()?;
    let remaining = now.duration_until(due);
    (remaining.is_positive()).then(|| Duration::try_from(remaining).unwrap_or_default())
}

async fn persist_name(ctx: &Context, vi: &VeleroInstall, name: &str) -> Result<(), Error> {
    if let Some(plan) = &ctx.plan {
        plan.record(format!(
            "kubernetes: record bucket name {name} in the VeleroInstall status before creating it"
        ));
        return Ok(());
    }
    let api: Api<VeleroInstall> = Api::namespaced(ctx.client.clone(), &vi.namespace().unwrap_or_default());
    let patch = json!({"status": {"storageBucket": {"name": name, "provisioned": false}}});
    api.patch_status(&vi.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::UpdateStatus { source })?;
    info!(bucket = name, "bucket name recorded before creation");
    Ok(())
}

/// Picks the bucket, persists its name, and ensures it, unless a check is not due.
pub async fn ensure(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
) -> Result<BucketOutcome, Error> {
    let status = storage_status(vi);
    let now = Timestamp::now();
    // Plan mode always looks at the cloud.
    if let (Some(name), Some(next_check_in), None) = (&status.name, next_check(vi, desired, now), &ctx.plan) {
        return Ok(BucketOutcome::NotDue { name: name.clone(), next_check_in });
    }
    let store = ctx.platform.object_store();
    let owner = Owner::new(ctx.infrastructure_name.clone());
    let adopted = desired.adopt_bucket.is_some();
    let (mut name, recovered) = match (&status.name, &desired.adopt_bucket) {
        (_, Some(adopt)) => (adopt.clone(), false),
        (Some(name), None) => (name.clone(), false),
        (None, None) => {
            match store.find_bucket(&owner).await.map_err(|source| Error::FindBucket { source })? {
                Recovery::Found { name, .. } => (name, true),
                Recovery::Ambiguous { names, .. } => return Ok(BucketOutcome::Ambiguous { names }),
                Recovery::NotFound { .. } => (new_bucket_name(), false),
            }
        }
    };
    if status.name.as_deref() != Some(name.as_str()) {
        persist_name(ctx, vi, &name).await?;
    }
    // A generated name can collide with someone else's bucket; then pick another, a few times.
    for _attempt in 0..3 {
        let spec = BucketSpec {
            name: name.clone(),
            region: ctx.platform.region().to_owned(),
            owner: owner.clone(),
            encryption: desired.encryption.clone(),
            retention_days: desired.retention_days,
        };
        match store.ensure_bucket(&spec).await {
            Ok(report) => {
                let recreated_missing =
                    report.created && status.provisioned && status.name.as_deref() == Some(&name);
                return Ok(BucketOutcome::Checked { name, report, recreated_missing, recovered });
            }
            Err(CloudError::AlreadyOwnedByOther { .. }) if adopted => {
                return Ok(BucketOutcome::AdoptedBucketNotOurs { name });
            }
            Err(CloudError::AlreadyOwnedByOther { .. }) => {
                info!(bucket = %name, "bucket name is taken by someone else; choosing a new one");
                name = new_bucket_name();
                persist_name(ctx, vi, &name).await?;
            }
            Err(source) => return Err(Error::EnsureBucket { bucket: name, source }),
        }
    }
    Err(Error::EnsureBucket {
        bucket: name.clone(),
        source: CloudError::AlreadyOwnedByOther { bucket: name },
    })
}

/// The MVO status of a checked bucket.
pub fn synced_status(name: &str, now: Timestamp) -> StorageBucketStatus {
    StorageBucketStatus {
        name: Some(name.to_owned()),
        provisioned: true,
        last_sync_timestamp: Some(Time(now)),
    }
}

#[cfg(test)]
mod tests {
    use mvo_testkit::InMemoryPlatform;

    use super::*;
    use crate::{
        crd::{VeleroInstallSpec, VeleroInstallStatus},
        reconcile::validate::validate,
    };

    fn install(last_sync: Option<i64>, provisioned: bool) -> VeleroInstall {
        let mut vi = VeleroInstall::new("cluster", VeleroInstallSpec::default());
        vi.metadata.generation = Some(1);
        vi.status = Some(VeleroInstallStatus {
            storage_bucket: Some(StorageBucketStatus {
                name: Some("b".into()),
                provisioned,
                last_sync_timestamp: last_sync.map(|s| Time(Timestamp::from_second(s).expect("ts"))),
            }),
            observed_generation: Some(1),
            ..Default::default()
        });
        vi
    }

    fn desired() -> DesiredInstall {
        validate(&VeleroInstallSpec::default(), &InMemoryPlatform::new("r")).expect("valid")
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("ts")
    }

    #[test]
    fn check_is_due_after_the_resync_interval() {
        let vi = install(Some(1_000), true);
        assert_eq!(next_check(&vi, &desired(), at(1_000 + 600)), Some(Duration::from_secs(3000)));
        assert_eq!(next_check(&vi, &desired(), at(1_000 + 3600)), None);
    }

    #[test]
    fn unprovisioned_or_changed_spec_is_due_now() {
        assert_eq!(next_check(&install(Some(1_000), false), &desired(), at(1_001)), None);
        assert_eq!(next_check(&install(None, true), &desired(), at(1_001)), None);
        let mut vi = install(Some(1_000), true);
        vi.metadata.generation = Some(2);
        assert_eq!(next_check(&vi, &desired(), at(1_001)), None);
    }

    #[test]
    fn reconcile_request_newer_than_the_last_sync_forces_a_check() {
        let mut vi = install(Some(1_000), true);
        vi.annotations_mut().insert(RECONCILE_REQUESTED_AT.into(), at(1_500).to_string());
        assert_eq!(next_check(&vi, &desired(), at(1_600)), None);
        vi.annotations_mut().insert(RECONCILE_REQUESTED_AT.into(), at(900).to_string());
        assert!(next_check(&vi, &desired(), at(1_600)).is_some());
        vi.annotations_mut().insert(RECONCILE_REQUESTED_AT.into(), "now please".into());
        assert_eq!(next_check(&vi, &desired(), at(1_600)), None);
    }
}
