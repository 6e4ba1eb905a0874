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

use super::{
    Context, Error,
    schedules::LongLivedSchedule,
    validate::{DesiredInstall, InstallIdentity},
};
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
        /// The bucket was adopted without owner marks, confirmed by the spec (now or before).
        adopted_unmarked: bool,
        /// The `backups/` expiry now on the bucket, and whether the spec's was refused.
        retention: RetentionOutcome,
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
    /// The bucket named in the spec carries no owner marks and `adoptUnmarkedBucket` is not set;
    /// nothing was touched.
    UnmarkedBucketNotAdopted {
        /// The bucket name.
        name: String,
    },
    /// The provisioned bucket (this operator's or the Go MVO's) now carries another cluster's
    /// owner mark or belongs to another account/project. Nothing was written to it and it is not
    /// replaced: a new empty bucket would strand every existing backup.
    OwnedByAnotherCluster {
        /// The bucket name.
        name: String,
        /// The cluster named by the bucket's owner mark; `None` when the bucket cannot be read
        /// (another account or project).
        claimant: Option<String>,
    },
}

/// The `backups/` expiry a check applied, and why it differs from the spec when it does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Days of the managed expiry rule now on the bucket; `None` when there is none.
    pub applied: Option<u32>,
    /// Why the spec's retention was refused: it would delete backups Velero still keeps.
    pub refused: Option<String>,
    /// A warning: the retention equals the longest Velero TTL, so backups are deleted by the
    /// lifecycle and by Velero at the same moment, with no margin.
    pub equal: Option<String>,
}

const DAY: u64 = 24 * 3600;

/// Decides the expiry to apply. Only an owner-marked bucket (created by this operator or the Go
/// MVO, or marked ours) gets one by default; a bucket adopted unmarked only when the spec sets a
/// retention. A retention shorter than the longest Velero TTL is refused when it would lower the
/// expiry: the rule stays as last applied (or, with no record, at the longest TTL).
fn plan_retention(
    desired: &DesiredInstall,
    adopted_unmarked: bool,
    applied_before: Option<u32>,
    longest: Option<&LongLivedSchedule>,
) -> RetentionOutcome {
    let wanted = (!adopted_unmarked || desired.retention_explicit).then_some(desired.retention_days);
    let (Some(days), Some(longest)) = (wanted, longest) else {
        return RetentionOutcome { applied: wanted, ..Default::default() };
    };
    let retention = Duration::from_secs(u64::from(days) * DAY);
    let ttl_hours = longest.ttl.as_secs() / 3600;
    let ttl_days = u32::try_from(longest.ttl.as_secs().div_ceil(DAY)).unwrap_or(u32::MAX);
    if retention < longest.ttl && applied_before.is_none_or(|before| days < before) {
        let kept = applied_before.unwrap_or(ttl_days);
        let refused = format!(
            "spec.backupRetentionDays={days} refused: Schedule {} keeps backups for {ttl_hours}h and the bucket \
             lifecycle would delete them earlier; backups/ still expire after {kept} days. Set \
             backupRetentionDays to at least {ttl_days}, or shorten the Schedule's ttl first",
            longest.name
        );
        return RetentionOutcome { applied: Some(kept), refused: Some(refused), equal: None };
    }
    let equal = (retention == longest.ttl).then(|| {
        format!(
            "spec.backupRetentionDays={days} equals the ttl of Schedule {} ({ttl_hours}h): the lifecycle \
             deletes backups/ objects as Velero expires them, with no margin; raise backupRetentionDays",
            longest.name
        )
    });
    RetentionOutcome { applied: Some(days), refused: None, equal }
}

/// Where the bucket name of this pass comes from; decides what a collision means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `spec.storageBucket.name`.
    Spec,
    /// `status.storageBucket` with `provisioned: true` (ours, or inherited from the Go MVO).
    Provisioned,
    /// Found by owner tags.
    Recovered,
    /// Generated by this operator and never provisioned: the only name that may be replaced.
    Generated,
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
    // A bucket that failed its last check (owned by another cluster, not adopted, a cloud error)
    // is checked again on the next pass, not reported ready from an old sync.
    let bucket_ready = vi
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.type_ == super::conditions::BUCKET_READY && c.status == "True");
    if !bucket_ready {
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

/// Records `name` as the bucket of this install before it is created, guarded by the
/// resourceVersion this pass last saw (`version`, updated on success): a concurrent pass that
/// recorded another name meanwhile makes this write fail with a conflict instead of being
/// silently overwritten.
async fn persist_name(
    ctx: &Context,
    install: &InstallIdentity,
    name: &str,
    version: &mut Option<String>,
) -> Result<(), Error> {
    let api: Api<VeleroInstall> = Api::namespaced(ctx.client.clone(), &install.namespace);
    let mut patch = json!({"status": {"storageBucket": {"name": name, "provisioned": false}}});
    if let Some(version) = version.as_deref() {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    let describe =
        || Some(format!("record bucket name {name} in the VeleroInstall status before creating it"));
    let written = ctx
        .writer
        .write(describe, || async {
            api.patch_status(&install.name, &PatchParams::default(), &Patch::Merge(&patch)).await
        })
        .await
        .map_err(|source| Error::UpdateStatus { source })?;
    if let Some(updated) = written {
        *version = updated.resource_version();
        info!(bucket = name, "bucket name recorded before creation");
    }
    Ok(())
}

/// Picks the bucket, persists its name, and ensures it, unless a check is not due: `not_due` is
/// the caller's [`next_check`] (`None` when due, and always in plan mode, which looks at the
/// cloud).
pub async fn ensure(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    not_due: Option<Duration>,
    longest: Option<&LongLivedSchedule>,
) -> Result<BucketOutcome, Error> {
    let status = storage_status(vi);
    if let (Some(name), Some(next_check_in)) = (&status.name, not_due) {
        return Ok(BucketOutcome::NotDue { name: name.clone(), next_check_in });
    }
    let store = ctx.object_store(vi)?;
    let owner = Owner::new(ctx.infrastructure_name.clone());
    let (mut name, origin) = match (&status.name, &desired.adopt_bucket) {
        (_, Some(adopt)) => (adopt.clone(), Origin::Spec),
        (Some(name), None) if status.provisioned => (name.clone(), Origin::Provisioned),
        (Some(name), None) => (name.clone(), Origin::Generated),
        (None, None) => {
            match store.find_bucket(&owner).await.map_err(|source| Error::FindBucket { source })? {
                Recovery::Found { name, .. } => (name, Origin::Recovered),
                Recovery::Ambiguous { names, .. } => return Ok(BucketOutcome::Ambiguous { names }),
                Recovery::NotFound { .. } => (new_bucket_name(), Origin::Generated),
            }
        }
    };
    let already_ours = status.provisioned && status.name.as_deref() == Some(name.as_str());
    let record =
        |name: &str| vi.status.as_ref().and_then(|s| s.managed_bucket.clone()).filter(|m| m.name == name);
    let mut adopted_unmarked = record(&name).is_some_and(|r| r.adopted_unmarked);
    if origin == Origin::Spec && !already_ours {
        match check_named_bucket(store.as_ref(), &owner, &name, desired).await? {
            Ok(unmarked) => adopted_unmarked |= unmarked,
            Err(stop) => return Ok(stop),
        }
    }
    let mut version = vi.resource_version();
    if status.name.as_deref() != Some(name.as_str()) {
        persist_name(ctx, &desired.install, &name, &mut version).await?;
    }
    // A generated name can collide with someone else's bucket; then pick another, a few times.
    for _attempt in 0..3 {
        let applied_before = record(&name).and_then(|r| r.backup_expiry_days);
        let retention = plan_retention(desired, adopted_unmarked, applied_before, longest);
        let spec = BucketSpec {
            name: name.clone(),
            region: ctx.platform.region().to_owned(),
            owner: owner.clone(),
            encryption: desired.encryption.clone(),
            retention_days: retention.applied,
            applied_retention_days: applied_before,
        };
        match store.ensure_bucket(&spec).await {
            Ok(report) => {
                let recreated_missing =
                    report.created && status.provisioned && status.name.as_deref() == Some(&name);
                let recovered = origin == Origin::Recovered;
                return Ok(BucketOutcome::Checked {
                    name,
                    report,
                    recreated_missing,
                    recovered,
                    adopted_unmarked,
                    retention,
                });
            }
            Err(CloudError::AlreadyOwnedByOther { .. }) => match origin {
                Origin::Spec => return Ok(BucketOutcome::AdoptedBucketNotOurs { name }),
                Origin::Provisioned | Origin::Recovered => {
                    let claimant = claimant_of(store.as_ref(), &name).await;
                    return Ok(BucketOutcome::OwnedByAnotherCluster { name, claimant });
                }
                Origin::Generated => {
                    info!(bucket = %name, "generated bucket name is taken by someone else; choosing a new one");
                    name = new_bucket_name();
                    persist_name(ctx, &desired.install, &name, &mut version).await?;
                }
            },
            Err(source) => return Err(Error::EnsureBucket { bucket: name, source }),
        }
    }
    Err(Error::EnsureBucket {
        bucket: name.clone(),
        source: CloudError::AlreadyOwnedByOther { bucket: name },
    })
}

/// Reads a bucket named in the spec before anything is written to it: another cluster's bucket
/// is refused, an unmarked one is adopted only when the spec confirms it. `Ok(adopted_unmarked)`
/// lets the pass go on (ours, absent, adoption confirmed, or unreadable: `ensure_bucket` then
/// decides); `Err` is the outcome that stops it.
async fn check_named_bucket(
    store: &dyn mvo_core::ObjectStore,
    owner: &Owner,
    name: &str,
    desired: &DesiredInstall,
) -> Result<Result<bool, BucketOutcome>, Error> {
    let state = match store.observe_bucket(name).await {
        Ok(state) => state,
        Err(CloudError::NotFound { .. }) => return Ok(Ok(false)),
        Err(source) if source.is_retryable() => {
            return Err(Error::EnsureBucket { bucket: name.to_owned(), source });
        }
        Err(_) => return Ok(Ok(false)),
    };
    if owner.owns(&state.tags) {
        return Ok(Ok(false));
    }
    if Owner::claimant(&state.tags).is_some() {
        return Ok(Err(BucketOutcome::AdoptedBucketNotOurs { name: name.to_owned() }));
    }
    if desired.adopt_unmarked_bucket {
        info!(bucket = name, "adopting a bucket without owner marks, as the spec confirms");
        return Ok(Ok(true));
    }
    Ok(Err(BucketOutcome::UnmarkedBucketNotAdopted { name: name.to_owned() }))
}

/// The cluster another owner mark names, read without writing; `None` when the bucket refuses
/// the read (another account or project).
async fn claimant_of(store: &dyn mvo_core::ObjectStore, name: &str) -> Option<String> {
    let state = store.observe_bucket(name).await.ok()?;
    Owner::claimant(&state.tags).map(str::to_owned)
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
        reconcile::validate::{stored, validate},
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
            conditions: crate::reconcile::conditions::merge(
                &[],
                &[crate::reconcile::conditions::Report::ok(
                    crate::reconcile::conditions::BUCKET_READY,
                    "BucketReady",
                    "",
                )],
                Some(1),
                Timestamp::from_second(1).expect("ts"),
            ),
            ..Default::default()
        });
        vi
    }

    fn desired() -> DesiredInstall {
        validate(&stored(VeleroInstallSpec::default()), &InMemoryPlatform::new("r")).expect("valid")
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
    fn retention_below_the_longest_ttl_is_refused_only_when_it_lowers_the_expiry() {
        let mut desired = desired();
        let quarterly = LongLivedSchedule { name: "quarterly".into(), ttl: Duration::from_secs(90 * DAY) };
        desired.retention_days = 60;
        let refused = plan_retention(&desired, false, Some(120), Some(&quarterly));
        assert_eq!(refused.applied, Some(120), "rule unchanged");
        assert!(refused.refused.as_deref().is_some_and(|m| m.contains("quarterly") && m.contains("90")));
        let raised = plan_retention(&desired, false, Some(30), Some(&quarterly));
        assert_eq!((raised.applied, raised.refused), (Some(60), None), "raising is not refused");
        let fresh = plan_retention(&desired, false, None, Some(&quarterly));
        assert_eq!(fresh.applied, Some(90), "no record: the longest TTL");
        desired.retention_days = 90;
        let equal = plan_retention(&desired, false, Some(120), Some(&quarterly));
        assert_eq!(equal.applied, Some(90));
        assert!(equal.equal.is_some() && equal.refused.is_none());
        assert_eq!(plan_retention(&desired, false, None, None).applied, Some(90));
    }

    #[test]
    fn an_adopted_unmarked_bucket_gets_expiry_only_when_asked() {
        let mut desired = desired();
        assert_eq!(plan_retention(&desired, true, None, None).applied, None);
        desired.retention_explicit = true;
        assert_eq!(plan_retention(&desired, true, None, None).applied, Some(90));
    }

    #[test]
    fn a_failed_bucket_check_is_due_again_at_once() {
        let mut vi = install(Some(1_000), true);
        let status = vi.status.as_mut().expect("status");
        status.conditions[0].status = "False".into();
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
