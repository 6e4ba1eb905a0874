//! The reconcile pipeline of SPEC section 4, one step per module:
//! [`validate`] (pure) -> [`bucket`] (cloud) -> [`build`] (pure) -> [`apply`] (Kubernetes) ->
//! status and events (here). [`reconcile`] is the controller's entry point; [`error_policy`]
//! decides the retry of a failed pass.

pub mod apply;
pub mod bucket;
pub mod build;
pub mod conditions;
pub mod crds;
pub mod events;
pub mod plan;
pub mod schedules;
pub mod takeover;
pub mod validate;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Reporter},
    },
};
use mvo_core::{
    ObjectStore, Platform, ShortLivedError, ShortLivedField, ShortLivedInput, VeleroFacts, VeleroInput,
    velero::VELERO_CREDENTIALS_SECRET,
};
use serde_json::json;
use tracing::{info, instrument, warn};

use self::{
    apply::Applied,
    bucket::BucketOutcome,
    build::VeleroCredentials,
    conditions::{BUCKET_READY, CREDENTIALS_READY, PLATFORM_SUPPORTED, Report, VELERO_READY},
    crds::{Crds, CrdsOutcome},
    events::Events,
    plan::{Plan, PlanStore},
    validate::{DEFAULT_RESYNC_INTERVAL, DesiredInstall, InvalidSpec},
};
use crate::{
    crd::{RECONCILED_NAME, VeleroInstall, VeleroInstallStatus},
    health::{Health, PASS_DEADLINE},
    metrics::Metrics,
};

/// Shortest and longest wait after a retryable failure.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Spread of a failure backoff: wider than the resync's ±10%, since failures start together.
const BACKOFF_JITTER_PERCENT: u32 = 25;
/// How soon to look again while waiting for others (credential operator, Deployment rollout).
const WAITING_REQUEUE: Duration = Duration::from_secs(30);
/// How long reporting a missed pass deadline (status, event) may take.
const REPORT_DEADLINE: Duration = Duration::from_secs(30);
/// Event notes are truncated to this many bytes (the API limit is 1 KiB).
const MAX_NOTE: usize = 1024;

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The cloud the cluster runs on.
    pub platform: Arc<dyn Platform>,
    /// The cluster's infrastructure name: the bucket owner identity.
    pub infrastructure_name: String,
    /// Event publisher shared by all reconciles.
    pub events: Events,
    /// Metrics the reconciles record.
    pub metrics: Arc<Metrics>,
    /// Set in plan mode: writes are recorded here instead of made.
    pub plan: Option<Arc<Plan>>,
    /// Set on token-based clusters (AWS STS, GCP WIF): the environment's defaults for Velero's
    /// identity; `None` where the credential operator mints long-lived keys.
    pub short_lived: Option<ShortLivedInput>,
    /// Consecutive retryable failures per object UID, for exponential backoff.
    failures: FailureBackoff,
    /// Readiness and liveness, which passes report to.
    pub health: Arc<Health>,
    /// Longest a pass may run before it is cancelled ([`PASS_DEADLINE`]; shorter in tests).
    pub pass_deadline: Duration,
}

impl Context {
    /// A context for `platform` in the cluster named `infrastructure_name`.
    pub fn new(
        client: Client,
        platform: Arc<dyn Platform>,
        infrastructure_name: String,
        reporter: Reporter,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(platform.as_ref()));
        Context {
            events: Events::new(client.clone(), reporter),
            client,
            platform,
            infrastructure_name,
            metrics,
            plan: None,
            short_lived: None,
            failures: FailureBackoff::default(),
            health: Arc::default(),
            pass_deadline: PASS_DEADLINE,
        }
    }

    /// This context on a token-based cluster when `short_lived` is set, with the environment's
    /// defaults for Velero's identity.
    pub fn with_short_lived(mut self, short_lived: Option<ShortLivedInput>) -> Self {
        self.short_lived = short_lived;
        self
    }

    /// A context that runs the pipeline read-only, recording into the returned [`Plan`] what it
    /// would change in the cloud and in Kubernetes.
    pub fn for_plan(
        client: Client,
        platform: Arc<dyn Platform>,
        infrastructure_name: String,
        reporter: Reporter,
    ) -> (Self, Arc<Plan>) {
        let plan = Arc::new(Plan::default());
        let mut ctx = Self::new(client, platform, infrastructure_name, reporter);
        ctx.events = ctx.events.recording_into(plan.clone());
        ctx.plan = Some(plan.clone());
        (ctx, plan)
    }

    /// The provider's own section of `vi`'s spec (`Value::Null` when it owns none or it is absent).
    pub fn section<'a>(&self, vi: &'a VeleroInstall) -> &'a serde_json::Value {
        vi.spec.section(self.platform.spec_fields().section.map(|s| s.key))
    }

    /// The provider's bucket operations for this pass of `vi`; in plan mode a store that only
    /// reads and records what it would change.
    pub fn object_store(&self, vi: &VeleroInstall) -> Result<Arc<dyn ObjectStore>, Error> {
        let store =
            self.platform.object_store(self.section(vi)).map_err(|source| Error::ObjectStore { source })?;
        Ok(match &self.plan {
            Some(plan) => Arc::new(PlanStore::new(
                store,
                plan.clone(),
                self.platform.tag_style(),
                self.platform.capabilities(),
            )),
            None => store,
        })
    }

    /// The wait before retrying `uid` after another retryable failure (see [`FailureBackoff`]).
    pub fn next_backoff(&self, uid: &str) -> Duration {
        self.failures.next(uid)
    }

    fn reset_backoff(&self, uid: &str) {
        self.failures.reset(uid);
    }
}

/// Consecutive retryable failures per object UID, and the backoff they earn.
#[derive(Debug, Default)]
pub struct FailureBackoff(Mutex<HashMap<String, u32>>);

impl FailureBackoff {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The wait before retrying `uid` after another retryable failure: 5 s doubling to 5 min,
    /// spread by ±[`BACKOFF_JITTER_PERCENT`]% so that clusters failing together (a regional
    /// cloud outage) do not retry together.
    pub fn next(&self, uid: &str) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(uid.to_owned()).or_default();
        let delay = backoff_delay(*count);
        *count = count.saturating_add(1);
        spread(delay, BACKOFF_JITTER_PERCENT)
    }

    /// Forgets the failures of `uid` after a successful pass.
    pub fn reset(&self, uid: &str) {
        self.failures().remove(uid);
    }
}

/// The wait after `failures` earlier consecutive failures: 5 s doubling, capped at 5 min.
fn backoff_delay(failures: u32) -> Duration {
    BACKOFF_MIN.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_MAX)
}

/// Why a reconcile pass failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("failed to read {what}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        source: kube::Error,
    },
    /// Applying a Velero object failed.
    #[error("failed to apply {object}")]
    Apply {
        /// `Kind/name` of the object.
        object: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing the VeleroInstall status failed.
    #[error("failed to update the VeleroInstall status")]
    UpdateStatus {
        /// The API error.
        source: kube::Error,
    },
    /// The operator's own cloud credentials are unusable.
    #[error("the operator's cloud credentials are unusable")]
    Credentials {
        /// The provider's error.
        source: mvo_core::Error,
    },
    /// Looking for the cluster's bucket by owner tags failed.
    #[error("failed to look for the cluster's bucket")]
    FindBucket {
        /// The provider's error.
        source: mvo_core::Error,
    },
    /// The pass did not finish within its deadline (a call that never answered) and was
    /// cancelled.
    #[error("the reconcile pass did not finish within {after:?} and was cancelled")]
    Deadline {
        /// The deadline.
        after: Duration,
    },
    /// The provider cannot give bucket operations for this spec (its section is unusable).
    #[error("the provider cannot manage buckets with this spec")]
    ObjectStore {
        /// The provider's error.
        source: mvo_core::Error,
    },
    /// Creating or enforcing the bucket failed.
    #[error("failed to ensure bucket {bucket}")]
    EnsureBucket {
        /// The bucket name.
        bucket: String,
        /// The provider's error.
        source: mvo_core::Error,
    },
}

impl Error {
    /// A stable PascalCase name for metrics and the Warning event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read { .. } => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::UpdateStatus { .. } => "UpdateStatusFailed",
            Error::Credentials { .. } => "CredentialsUnusable",
            Error::Deadline { .. } => "ReconcileDeadline",
            Error::FindBucket { source }
            | Error::ObjectStore { source }
            | Error::EnsureBucket { source, .. } => source.category(),
        }
    }

    /// Whether retrying soon may help (cloud throttling, API hiccups), as opposed to waiting for
    /// a human (missing permission).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Read { .. }
            | Error::Apply { .. }
            | Error::UpdateStatus { .. }
            | Error::Deadline { .. } => true,
            Error::Credentials { source }
            | Error::FindBucket { source }
            | Error::ObjectStore { source }
            | Error::EnsureBucket { source, .. } => source.is_retryable(),
        }
    }

    /// The condition this failure turns false.
    fn condition(&self) -> &'static str {
        match self {
            Error::Read { .. }
            | Error::Apply { .. }
            | Error::UpdateStatus { .. }
            | Error::Deadline { .. } => VELERO_READY,
            Error::Credentials { .. } => CREDENTIALS_READY,
            Error::FindBucket { .. } | Error::ObjectStore { .. } | Error::EnsureBucket { .. } => BUCKET_READY,
        }
    }
}

/// The error and its causes on one line, truncated for events and conditions.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    if line.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Reconciles one VeleroInstall: the whole pipeline in one pass.
#[instrument(skip(vi, ctx), fields(name = %vi.name_any(), namespace = vi.namespace().unwrap_or_default()))]
pub async fn reconcile(vi: Arc<VeleroInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let _pass = ctx.health.pass_started();
    match tokio::time::timeout(ctx.pass_deadline, pass(&vi, &ctx)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            let err = Error::Deadline { after: ctx.pass_deadline };
            ctx.metrics.reconcile_failed(err.category());
            // Reporting talks to the API server too, which may be what hangs.
            let report = report_failure(&ctx, &vi, &err);
            if tokio::time::timeout(REPORT_DEADLINE, report).await.is_err() {
                warn!("could not report the missed deadline in time");
            }
            Err(err)
        }
    }
}

/// One pass of the pipeline, without a deadline.
async fn pass(vi: &Arc<VeleroInstall>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let (vi, ctx) = (vi.clone(), ctx.clone());
    if vi.name_any() != RECONCILED_NAME {
        let report = Report::fail(
            conditions::READY,
            "UnsupportedName",
            format!("only the VeleroInstall named {RECONCILED_NAME:?} is reconciled; this one is ignored"),
        );
        write_status(&ctx, &vi, |status| status.conditions = merge(&vi, &[report])).await?;
        return Ok(Action::await_change());
    }
    let desired = match validate::validate(&vi.spec, ctx.platform.as_ref()) {
        Ok(desired) => desired,
        Err(invalid) => return invalid_spec(&ctx, &vi, invalid).await,
    };
    match run(&ctx, &vi, &desired).await {
        Ok(action) => {
            ctx.reset_backoff(&vi.uid().unwrap_or_default());
            Ok(action)
        }
        Err(err) => {
            ctx.metrics.reconcile_failed(err.category());
            report_failure(&ctx, &vi, &err).await;
            Err(err)
        }
    }
}

/// Decides when a failed pass runs again.
pub fn error_policy(vi: Arc<VeleroInstall>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_retryable() {
        Action::requeue(ctx.next_backoff(&vi.uid().unwrap_or_default()))
    } else {
        // A human must act (grant a permission); look again at the next resync.
        let interval = validate::validate(&vi.spec, ctx.platform.as_ref())
            .map(|d| d.resync_interval)
            .unwrap_or(DEFAULT_RESYNC_INTERVAL);
        Action::requeue(interval)
    }
}

fn merge(
    vi: &VeleroInstall,
    reports: &[Report],
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let existing = vi.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions::merge(existing, reports, vi.metadata.generation, Timestamp::now())
}

async fn invalid_spec(ctx: &Context, vi: &VeleroInstall, invalid: InvalidSpec) -> Result<Action, Error> {
    let message = invalid.to_string();
    let reports = [platform_supported(ctx), Report::fail(conditions::READY, "InvalidSpec", message.clone())];
    write_status(ctx, vi, |status| {
        status.conditions = merge(vi, &reports);
        status.observed_generation = vi.metadata.generation;
    })
    .await?;
    publish(ctx, vi, EventType::Warning, "InvalidSpec", "Validate", message).await;
    Ok(Action::await_change())
}

fn platform_supported(ctx: &Context) -> Report {
    Report::ok(
        PLATFORM_SUPPORTED,
        "Supported",
        format!("{} in {}", ctx.platform.name(), ctx.platform.region()),
    )
}

async fn report_failure(ctx: &Context, vi: &VeleroInstall, err: &Error) {
    let message = error_chain(err);
    warn!(error = %message, category = err.category(), "reconcile failed");
    let reports = [
        platform_supported(ctx),
        Report::fail(err.condition(), err.category(), message.clone()),
        Report::fail(conditions::READY, err.category(), message.clone()),
    ];
    // One Warning event per change of reason, not one per failed pass: a failure that lasts
    // (a refused request retried at every resync) would otherwise flood the namespace.
    let already_reported = vi
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.type_ == err.condition() && c.status == "False" && c.reason == err.category());
    if let Err(status_err) = write_status(ctx, vi, |status| status.conditions = merge(vi, &reports)).await {
        warn!(error = %error_chain(&status_err), "could not record the failure in status");
    }
    if !already_reported {
        publish(ctx, vi, EventType::Warning, err.category(), "Reconcile", message).await;
    }
}

async fn publish(
    ctx: &Context,
    vi: &VeleroInstall,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event =
        Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(err) = ctx.events.publish(&event, &vi.object_ref(&())).await {
        warn!(error = %err, reason, "could not publish event");
    }
}

/// Writes the status produced by `change` applied to the current status, unless it is equal.
async fn write_status(
    ctx: &Context,
    vi: &VeleroInstall,
    change: impl FnOnce(&mut VeleroInstallStatus),
) -> Result<(), Error> {
    let current = vi.status.clone().unwrap_or_default();
    let mut next = current.clone();
    change(&mut next);
    if next == current {
        return Ok(());
    }
    if let Some(plan) = &ctx.plan {
        // Plan mode always checks the bucket, so a new lastSyncTimestamp alone is not a change.
        let without_sync = |status: &VeleroInstallStatus| {
            let mut status = status.clone();
            if let Some(bucket) = status.storage_bucket.as_mut() {
                bucket.last_sync_timestamp = None;
            }
            status
        };
        if without_sync(&next) != without_sync(&current) {
            plan.record(format!(
                "kubernetes: update the status of VeleroInstall/{}: {}",
                vi.name_any(),
                describe_status_change(&current, &next)
            ));
        }
        return Ok(());
    }
    let api: Api<VeleroInstall> = Api::namespaced(ctx.client.clone(), &vi.namespace().unwrap_or_default());
    let patch = json!({"status": status_patch(&current, &next)});
    api.patch_status(&vi.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::UpdateStatus { source })?;
    Ok(())
}

/// The status fields `next` changes relative to `current`, and only those. A field this pass did
/// not change is not sent, so the snapshot the pass started from never overwrites what an earlier
/// step of the same pass (the bucket name persisted before creation) or another writer recorded.
fn status_patch(current: &VeleroInstallStatus, next: &VeleroInstallStatus) -> serde_json::Value {
    let as_map = |status: &VeleroInstallStatus| match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(current), as_map(next));
    let mut patch = serde_json::Map::new();
    for (field, value) in &after {
        if before.get(field) != Some(value) {
            patch.insert(field.clone(), value.clone());
        }
    }
    for field in before.keys().filter(|f| !after.contains_key(*f)) {
        patch.insert(field.clone(), serde_json::Value::Null);
    }
    serde_json::Value::Object(patch)
}

/// The fields and conditions that differ between two statuses, for plan output.
fn describe_status_change(current: &VeleroInstallStatus, next: &VeleroInstallStatus) -> String {
    let mut changes = Vec::new();
    if current.storage_bucket.as_ref().map(|b| (&b.name, b.provisioned))
        != next.storage_bucket.as_ref().map(|b| (&b.name, b.provisioned))
    {
        changes.push("storageBucket".to_owned());
    }
    if (current.observed_generation, &current.platform, &current.region)
        != (next.observed_generation, &next.platform, &next.region)
    {
        changes.push("observedGeneration/platform/region".to_owned());
    }
    for condition in &next.conditions {
        let before = current.conditions.iter().find(|c| c.type_ == condition.type_);
        let same = before.is_some_and(|b| {
            (&b.status, &b.reason, &b.message) == (&condition.status, &condition.reason, &condition.message)
        });
        if !same {
            changes.push(format!("{}={} ({})", condition.type_, condition.status, condition.reason));
        }
    }
    if changes.is_empty() { "timestamps".to_owned() } else { changes.join(", ") }
}

async fn run(ctx: &Context, vi: &VeleroInstall, desired: &DesiredInstall) -> Result<Action, Error> {
    let now = Timestamp::now();
    let namespace = vi.namespace().unwrap_or_default();
    if ctx.plan.is_some() || bucket::next_check(vi, desired, now).is_none() {
        ctx.platform
            .credential_source()
            .credential()
            .await
            .map_err(|source| Error::Credentials { source })?;
    }
    // The retention Velero keeps backups for bounds the lifecycle expiry; read only when the
    // bucket is checked in this pass.
    let longest = if ctx.plan.is_some() || bucket::next_check(vi, desired, now).is_none() {
        schedules::longest(&ctx.client, &namespace).await?
    } else {
        None
    };
    let outcome = bucket::ensure(ctx, vi, desired, longest.as_ref()).await?;
    let mut managed_bucket = None;
    let mut reports =
        vec![platform_supported(ctx), Report::ok(CREDENTIALS_READY, "CredentialsAvailable", "")];
    let (bucket_name, next_check_in, storage) = match &outcome {
        BucketOutcome::Checked {
            name,
            report,
            recreated_missing,
            recovered,
            adopted_unmarked,
            retention,
        } => {
            ctx.metrics.bucket_checked(&report.corrected, now);
            announce_bucket(ctx, vi, name, report, *recreated_missing, *recovered).await;
            let summary = if report.created { "created and hardened" } else { "settings enforced" };
            managed_bucket = Some(crate::crd::ManagedBucketStatus {
                name: name.clone(),
                adopted_unmarked: *adopted_unmarked,
                backup_expiry_days: retention.applied,
            });
            if let Some(equal) = &retention.equal {
                publish(
                    ctx,
                    vi,
                    EventType::Warning,
                    "RetentionEqualsBackupTTL",
                    "EnsureBucket",
                    equal.clone(),
                )
                .await;
            }
            match &retention.refused {
                Some(refused) => {
                    warn!(bucket = %name, "{refused}");
                    publish(
                        ctx,
                        vi,
                        EventType::Warning,
                        "RetentionBelowBackupTTL",
                        "EnsureBucket",
                        refused.clone(),
                    )
                    .await;
                    reports.push(Report::fail(BUCKET_READY, "RetentionBelowBackupTTL", refused.clone()));
                }
                None => {
                    let message = conditions::bucket_ready_message(ctx.platform.as_ref(), name, summary);
                    reports.push(Report::ok(BUCKET_READY, "BucketReady", message))
                }
            }
            (name.clone(), desired.resync_interval, Some(bucket::synced_status(name, now)))
        }
        BucketOutcome::NotDue { name, next_check_in } => {
            let message = conditions::bucket_ready_message(ctx.platform.as_ref(), name, "settings enforced");
            reports.push(Report::ok(BUCKET_READY, "BucketReady", message));
            (name.clone(), *next_check_in, None)
        }
        BucketOutcome::Ambiguous { names } => {
            let message = format!(
                "several buckets carry this cluster's owner tags, none adopted: {}",
                names.join(", ")
            );
            return stop_on_bucket(ctx, vi, desired, reports, "AmbiguousBuckets", message).await;
        }
        BucketOutcome::AdoptedBucketNotOurs { name } => {
            let message = format!("spec.storageBucket.name {name:?} belongs to another account or cluster");
            return stop_on_bucket(ctx, vi, desired, reports, "BucketOwnedByOther", message).await;
        }
        BucketOutcome::UnmarkedBucketNotAdopted { name } => {
            let message = format!(
                "spec.storageBucket.name {name:?} carries no owner marks of this or any cluster; nothing was \
                 written to it. Set spec.storageBucket.adoptUnmarkedBucket: true to adopt it"
            );
            return stop_on_bucket(ctx, vi, desired, reports, "UnmarkedBucketNotAdopted", message).await;
        }
        BucketOutcome::OwnedByAnotherCluster { name, claimant } => {
            let now_owner = match claimant {
                Some(cluster) => format!("now carries the owner mark of cluster {cluster:?}"),
                None => "now belongs to another account or project".to_owned(),
            };
            let message = format!(
                "bucket {name} is this cluster's ({:?}) backup bucket but {now_owner}; nothing was written \
                 to it and it was not replaced, so existing backups stay reachable. An administrator \
                 must restore the owner mark or point spec.storageBucket.name at the right bucket",
                ctx.infrastructure_name
            );
            return stop_on_bucket(ctx, vi, desired, reports, "BucketOwnedByAnotherCluster", message).await;
        }
    };

    let (velero_facts, credentials) = match velero_facts(ctx, vi, &bucket_name) {
        Ok(facts) => facts,
        Err(report) => {
            return stop_on_credentials(ctx, vi, desired, reports, report, storage, next_check_in).await;
        }
    };
    // Velero's own kinds can only be applied once the CRD Job has installed their CRDs.
    let (velero_kinds, others): (Vec<_>, Vec<_>) =
        build::velero_objects(vi, desired, &velero_facts, credentials)
            .into_iter()
            .partition(|o| o.resource.group == "velero.io");
    let mut applied = Vec::new();
    for object in &others {
        applied.push((
            object.describe(),
            apply::apply(&ctx.client, &namespace, object, ctx.plan.as_deref()).await?,
        ));
    }
    let crds_job = build::crds_job(vi, desired);
    let crds = Crds { client: &ctx.client, namespace: &namespace, job: &crds_job, plan: ctx.plan.as_deref() }
        .ensure()
        .await?;
    announce_crds(ctx, vi, &crds).await;
    if matches!(crds, CrdsOutcome::Applied { .. }) {
        for object in &velero_kinds {
            applied.push((
                object.describe(),
                apply::apply(&ctx.client, &namespace, object, ctx.plan.as_deref()).await?,
            ));
        }
    }
    announce_objects(ctx, vi, &applied).await;
    if matches!(crds, CrdsOutcome::Applied { .. }) {
        warn_about_schedules(ctx, vi, desired, &namespace).await?;
    }
    let credentials = velero_credentials(ctx, &namespace, &velero_facts).await?;
    let velero = match &crds {
        CrdsOutcome::Pending(message) => Report::fail(VELERO_READY, "InstallingVeleroCRDs", message.clone()),
        CrdsOutcome::JobFailed { reason, message } => Report::fail(VELERO_READY, reason, message.clone()),
        CrdsOutcome::Refused { message, .. } => {
            Report::fail(VELERO_READY, "VeleroCRDsRefused", message.clone())
        }
        CrdsOutcome::Applied { foreign, .. } => {
            let mut report = velero_available(ctx, &namespace).await?;
            if !foreign.is_empty() {
                report.message.push_str(&format!(
                    "; CRDs managed by another installer were left alone: {}",
                    foreign.join(", ")
                ));
            }
            report
        }
    };
    let waiting = !credentials.ok || !velero.ok;
    reports[1] = credentials;
    reports.push(velero);
    reports.push(conditions::ready(&reports));
    write_status(ctx, vi, |status| {
        if let Some(storage) = storage {
            status.storage_bucket = Some(storage);
        }
        if let Some(managed) = managed_bucket {
            status.managed_bucket = Some(managed);
        }
        status.observed_generation = vi.metadata.generation;
        status.platform = Some(ctx.platform.name().to_owned());
        status.region = Some(ctx.platform.region().to_owned());
        status.conditions = merge(vi, &reports);
    })
    .await?;
    let wait = if waiting { next_check_in.min(WAITING_REQUEUE) } else { next_check_in };
    Ok(Action::requeue(jitter(wait)))
}

/// Backups that outlive the lifecycle expiry would disappear before Velero expires them.
async fn warn_about_schedules(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    namespace: &str,
) -> Result<(), Error> {
    let outliving = schedules::outliving(&ctx.client, namespace, desired.retention_days).await?;
    if outliving.is_empty() {
        return Ok(());
    }
    let names: Vec<String> =
        outliving.iter().map(|s| format!("{} (ttl {}h)", s.name, s.ttl.as_secs() / 3600)).collect();
    let note = format!(
        "backups of {} outlive spec.backupRetentionDays={}: the bucket lifecycle deletes them earlier; raise backupRetentionDays above the longest TTL",
        names.join(", "),
        desired.retention_days
    );
    warn!(schedules = ?names, "{note}");
    publish(ctx, vi, EventType::Warning, "ScheduleOutlivesRetention", "CheckSchedules", note).await;
    Ok(())
}

/// One event per new fact about the CRDs: output refused, another installer's CRDs found.
async fn announce_crds(ctx: &Context, vi: &VeleroInstall, crds: &CrdsOutcome) {
    match crds {
        CrdsOutcome::Refused { message, first: true } => {
            publish(ctx, vi, EventType::Warning, "VeleroCRDsRefused", "ApplyCRDs", message.clone()).await;
        }
        CrdsOutcome::Applied { foreign, foreign_changed: true } if !foreign.is_empty() => {
            let note =
                format!("Velero CRDs managed by another installer were left alone: {}", foreign.join(", "));
            publish(ctx, vi, EventType::Warning, "VeleroCRDsManagedElsewhere", "ApplyCRDs", note).await;
        }
        _ => {}
    }
}

/// What Velero needs from the provider: with long-lived keys, or on a token-based cluster the
/// provider's short-lived wiring with the identity from the spec (or the operator's environment).
/// `Err` is the CredentialsReady report naming what the administrator must set.
fn velero_facts(
    ctx: &Context,
    vi: &VeleroInstall,
    bucket: &str,
) -> Result<(VeleroFacts, VeleroCredentials), Report> {
    let short_lived = ctx.short_lived.as_ref().map(|defaults| {
        let spec = vi.spec.short_lived_credentials.clone().unwrap_or_default();
        ShortLivedInput {
            role_arn: spec.role_arn.or_else(|| defaults.role_arn.clone()),
            service_account_email: spec
                .service_account_email
                .or_else(|| defaults.service_account_email.clone()),
            audience: spec.audience.or_else(|| defaults.audience.clone()),
        }
    });
    let input = VeleroInput { bucket, section: ctx.section(vi), short_lived: short_lived.as_ref() };
    let mode =
        if short_lived.is_some() { VeleroCredentials::ShortLived } else { VeleroCredentials::LongLived };
    match ctx.platform.velero(&input) {
        Ok(facts) => Ok((facts, mode)),
        Err(ShortLivedError::Missing(fields)) => {
            let names: Vec<String> = fields
                .iter()
                .map(|f| {
                    let (field, env) = match f {
                        ShortLivedField::RoleArn => ("roleARN", "MVO_VELERO_ROLE_ARN"),
                        ShortLivedField::ServiceAccountEmail => {
                            ("serviceAccountEmail", "MVO_VELERO_SERVICE_ACCOUNT_EMAIL")
                        }
                        ShortLivedField::Audience => ("audience", "MVO_VELERO_WIF_AUDIENCE"),
                    };
                    format!("spec.shortLivedCredentials.{field} (or the operator's env var {env})")
                })
                .collect();
            Err(Report::fail(
                CREDENTIALS_READY,
                "ShortLivedIdentityMissing",
                format!(
                    "the cluster issues only short-lived cloud credentials; set {} so Velero's credentials can be requested",
                    names.join(" and ")
                ),
            ))
        }
        Err(ShortLivedError::NotSupported) => Err(Report::fail(
            CREDENTIALS_READY,
            "ShortLivedCredentialsNotSupported",
            format!(
                "the cluster issues only short-lived cloud credentials and the {} provider cannot wire them for Velero",
                ctx.platform.name()
            ),
        )),
    }
}

/// Velero cannot get credentials until the administrator acts: nothing is requested (no
/// long-lived request on a token-based cluster), the bucket status is kept.
async fn stop_on_credentials(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    mut reports: Vec<Report>,
    credentials: Report,
    storage: Option<crate::crd::StorageBucketStatus>,
    next_check_in: Duration,
) -> Result<Action, Error> {
    let message = credentials.message.clone();
    let reason = credentials.reason;
    reports[1] = credentials;
    reports.push(Report::fail(
        VELERO_READY,
        "WaitingForCredentials",
        "Velero is not installed until its credentials can be requested",
    ));
    reports.push(conditions::ready(&reports));
    write_status(ctx, vi, |status| {
        if let Some(storage) = storage {
            status.storage_bucket = Some(storage);
        }
        status.observed_generation = vi.metadata.generation;
        status.platform = Some(ctx.platform.name().to_owned());
        status.region = Some(ctx.platform.region().to_owned());
        status.conditions = merge(vi, &reports);
    })
    .await?;
    publish(ctx, vi, EventType::Warning, reason, "RequestCredentials", message).await;
    Ok(Action::requeue(jitter(next_check_in.min(desired.resync_interval))))
}

async fn announce_objects(ctx: &Context, vi: &VeleroInstall, applied: &[(String, apply::Outcome)]) {
    let with = |outcome: Applied| -> Vec<&str> {
        applied.iter().filter(|(_, a)| a.applied == outcome).map(|(o, _)| o.as_str()).collect()
    };
    let taken_over = with(Applied::TakenOver);
    if !taken_over.is_empty() {
        let note = format!(
            "took over {} from the previous operator: field ownership handed over, foreign controller references replaced",
            taken_over.join(", ")
        );
        publish(ctx, vi, EventType::Normal, "VeleroObjectsTakenOver", "Apply", note).await;
    }
    for (object, outcome) in applied {
        if let Some((before, after)) = &outcome.images {
            let note =
                format!("{object}: images {} -> {} (one rollout)", before.join(", "), after.join(", "));
            info!(%object, ?before, ?after, "Velero images changed");
            publish(ctx, vi, EventType::Normal, "VeleroImageChanged", "Apply", note).await;
        }
    }
    let (installed, restored) = (with(Applied::Created), with(Applied::Corrected));
    if !installed.is_empty() {
        let note = format!("created {}", installed.join(", "));
        publish(ctx, vi, EventType::Normal, "VeleroInstalled", "Apply", note).await;
    }
    if !restored.is_empty() {
        let note = format!("restored {}", restored.join(", "));
        publish(ctx, vi, EventType::Normal, "VeleroObjectRestored", "Apply", note).await;
    }
}

async fn stop_on_bucket(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    mut reports: Vec<Report>,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    reports.push(Report::fail(BUCKET_READY, reason, message.clone()));
    reports.push(conditions::ready(&reports));
    write_status(ctx, vi, |status| {
        status.observed_generation = vi.metadata.generation;
        status.conditions = merge(vi, &reports);
    })
    .await?;
    publish(ctx, vi, EventType::Warning, reason, "EnsureBucket", message).await;
    Ok(Action::requeue(desired.resync_interval))
}

async fn announce_bucket(
    ctx: &Context,
    vi: &VeleroInstall,
    name: &str,
    report: &mvo_core::BucketReport,
    recreated_missing: bool,
    recovered: bool,
) {
    if recreated_missing {
        let note = format!("bucket {name} was missing (deleted out of band) and has been created again");
        publish(ctx, vi, EventType::Warning, "BucketMissing", "EnsureBucket", note).await;
    } else if report.created {
        publish(
            ctx,
            vi,
            EventType::Normal,
            "BucketCreated",
            "EnsureBucket",
            format!("created bucket {name}"),
        )
        .await;
    }
    if recovered {
        let note = format!("adopted bucket {name}, found by this cluster's owner tags");
        publish(ctx, vi, EventType::Normal, "BucketRecovered", "EnsureBucket", note).await;
    }
    if !report.corrected.is_empty() {
        let settings: Vec<&str> = report.corrected.iter().map(|s| s.as_str()).collect();
        let note = format!("corrected drifted settings of bucket {name}: {}", settings.join(", "));
        info!(bucket = name, settings = ?settings, "bucket settings corrected");
        publish(ctx, vi, EventType::Normal, "BucketSettingCorrected", "EnsureBucket", note).await;
    }
}

async fn velero_credentials(ctx: &Context, namespace: &str, velero: &VeleroFacts) -> Result<Report, Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(VELERO_CREDENTIALS_SECRET)
        .await
        .map_err(|source| Error::Read { what: format!("Secret/{VELERO_CREDENTIALS_SECRET}"), source })?;
    // The key Velero's container reads, not any data: a secret of the other mode (or half
    // written) leaves Velero without credentials.
    let key = &velero.credentials.secret_key;
    let data = secret.map(|s| (s.data.unwrap_or_default(), s.string_data.unwrap_or_default()));
    Ok(match data {
        Some((data, _)) if data.get(key).is_some_and(|v| !v.0.is_empty()) => {
            Report::ok(CREDENTIALS_READY, "CredentialsAvailable", "Velero's cloud credentials are present")
        }
        Some(_) => Report::fail(
            CREDENTIALS_READY,
            "WaitingForCredentials",
            format!("Secret {VELERO_CREDENTIALS_SECRET} has no key {key:?}, the file Velero reads"),
        ),
        None => Report::fail(
            CREDENTIALS_READY,
            "WaitingForCredentials",
            format!("waiting for the cloud credential operator to create Secret {VELERO_CREDENTIALS_SECRET}"),
        ),
    })
}

async fn velero_available(ctx: &Context, namespace: &str) -> Result<Report, Error> {
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
        .get_opt(build::VELERO)
        .await
        .map_err(|source| Error::Read { what: "Deployment/velero".into(), source })?;
    Ok(match deployment.as_ref().map(rollout) {
        Some(Ok(())) => {
            Report::ok(VELERO_READY, "VeleroAvailable", "the Velero Deployment is rolled out and available")
        }
        Some(Err(message)) => Report::fail(VELERO_READY, "DeploymentUnavailable", message),
        None => {
            Report::fail(VELERO_READY, "DeploymentUnavailable", "the Velero Deployment does not exist yet")
        }
    })
}

/// Whether the Deployment's current generation is rolled out: observed by its controller, every
/// replica updated and available (as `kubectl rollout status` decides), else why not.
fn rollout(deployment: &Deployment) -> Result<(), String> {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Err(format!(
            "the Velero Deployment's generation {generation} is not observed yet (observed {})",
            status.observed_generation.unwrap_or(0)
        ));
    }
    let (updated, available) = (status.updated_replicas.unwrap_or(0), status.available_replicas.unwrap_or(0));
    if updated < wanted || available < wanted || status.replicas.unwrap_or(0) > updated {
        return Err(format!(
            "the Velero Deployment is rolling out: {updated}/{wanted} updated, {available}/{wanted} available"
        ));
    }
    Ok(())
}

/// Spreads requeues over ±10% so many clusters do not check their buckets in lockstep.
fn jitter(wait: Duration) -> Duration {
    spread(wait, 10)
}

/// `wait` moved by a uniformly random offset within ±`percent`%. Saturating throughout: the
/// wait may come from the spec, and no input may make this panic.
fn spread(wait: Duration, percent: u32) -> Duration {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let spread = millis / 100 * u64::from(percent.min(100));
    if spread == 0 {
        return wait;
    }
    let offset = uuid::Uuid::new_v4().as_u128() % u128::from(spread.saturating_mul(2));
    let offset = Duration::from_millis(u64::try_from(offset).unwrap_or(u64::MAX));
    wait.saturating_add(offset).saturating_sub(Duration::from_millis(spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5s_to_5min() {
        let delays: Vec<u64> = (0..8).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn failure_backoff_is_spread_around_the_doubling() {
        let backoff = FailureBackoff::default();
        for (attempt, base) in [5u64, 10, 20, 40, 80, 160, 300, 300].into_iter().enumerate() {
            let samples: Vec<Duration> = (0..200)
                .map(|i| {
                    let uid = format!("uid-{i}");
                    for _ in 0..attempt {
                        backoff.next(&uid);
                    }
                    let delay = backoff.next(&uid);
                    backoff.reset(&uid);
                    delay
                })
                .collect();
            let (low, high) = (Duration::from_millis(base * 750), Duration::from_millis(base * 1250));
            assert!(samples.iter().all(|d| *d >= low && *d <= high), "attempt {attempt}: {samples:?}");
            // Spread over the whole range, not a few values: the quartiles of the range are hit.
            let quarter = Duration::from_millis(base * 125);
            assert!(samples.iter().any(|d| *d < low + quarter), "attempt {attempt}: no early retry");
            assert!(samples.iter().any(|d| *d > high - quarter), "attempt {attempt}: no late retry");
            let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
            assert!(distinct.len() > 150, "attempt {attempt}: only {} distinct delays", distinct.len());
        }
    }

    #[test]
    fn spread_never_panics() {
        for wait in [Duration::ZERO, Duration::from_millis(1), Duration::MAX, Duration::from_secs(u64::MAX)] {
            for percent in [0, 10, 25, 100, u32::MAX] {
                let _ = spread(wait, percent);
            }
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(3600));
            assert!(j >= Duration::from_secs(3240) && j <= Duration::from_secs(3960), "{j:?}");
        }
    }

    #[test]
    fn status_patch_names_only_changed_fields() {
        let bucket = |name: &str| crate::crd::StorageBucketStatus {
            name: Some(name.into()),
            provisioned: false,
            last_sync_timestamp: None,
        };
        let current = VeleroInstallStatus {
            storage_bucket: Some(bucket("stale")),
            platform: Some("AWS".into()),
            ..Default::default()
        };
        let mut next = current.clone();
        next.observed_generation = Some(2);
        next.platform = None;
        let patch = status_patch(&current, &next);
        assert_eq!(patch, json!({"observedGeneration": 2, "platform": null}), "storageBucket not sent");
    }

    #[test]
    fn error_chain_is_one_truncated_line() {
        let err = Error::EnsureBucket {
            bucket: "b".into(),
            source: mvo_core::Error::Throttled { message: "x".repeat(2000) },
        };
        let line = error_chain(&err);
        assert!(line.starts_with("failed to ensure bucket b: throttled by the cloud: xxx"));
        assert!(line.len() <= MAX_NOTE && line.ends_with("..."));
        assert_eq!(err.category(), "Throttled");
        assert!(err.is_retryable());
    }

    #[test]
    fn refusals_and_unusable_keys_are_bucket_conditions_that_wait_for_a_person() {
        for (source, reason) in [
            (
                mvo_core::Error::Refused { message: "constraints/gcp.restrictNonCmekServices".into() },
                "Refused",
            ),
            (
                mvo_core::Error::EncryptionKeyUnusable { key: "k".into(), message: "service agent".into() },
                "EncryptionKeyUnusable",
            ),
        ] {
            let err = Error::EnsureBucket { bucket: "b".into(), source };
            assert_eq!((err.category(), err.condition()), (reason, BUCKET_READY));
            assert!(!err.is_retryable(), "{reason}");
        }
    }
}
