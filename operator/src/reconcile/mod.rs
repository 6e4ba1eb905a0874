//! The reconcile pipeline of SPEC section 4, one step per module:
//! [`validate`] (pure) -> [`bucket`] (cloud) -> [`build`] (pure) -> [`apply`] (Kubernetes) ->
//! [`status`] and [`events`]; what a pass shares is in [`context`], and every write goes through
//! its [`writer`]. [`reconcile`] is the controller's entry point; [`error_policy`]
//! decides the retry of a failed pass.

pub mod apply;
pub mod bucket;
pub mod build;
pub mod conditions;
pub mod context;
pub mod crds;
pub mod derived;
pub mod events;
pub mod plan;
pub mod schedules;
pub mod status;
pub mod takeover;
pub mod validate;
pub mod writer;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use mvo_core::{
    ShortLivedError, ShortLivedField, ShortLivedInput, VeleroFacts, VeleroInput,
    velero::VELERO_CREDENTIALS_SECRET,
};
use tracing::{instrument, warn};

pub use self::context::{Context, FailureBackoff};
use self::{
    bucket::BucketOutcome,
    build::VeleroCredentials,
    conditions::{BUCKET_READY, CREDENTIALS_READY, Report, VELERO_READY},
    context::jitter,
    crds::{Crds, CrdsOutcome},
    events::{announce_bucket, announce_crds, announce_objects, publish},
    status::{merge, platform_supported, write_status},
    validate::{DEFAULT_RESYNC_INTERVAL, DesiredInstall, InvalidSpec},
};
use crate::crd::{RECONCILED_NAME, VeleroInstall};

/// How soon to look again while waiting for others (credential operator, Deployment rollout).
const WAITING_REQUEUE: Duration = Duration::from_secs(30);
/// How long reporting a missed pass deadline (status, event) may take.
const REPORT_DEADLINE: Duration = Duration::from_secs(30);
/// Event notes are truncated to this many bytes (the API limit is 1 KiB).
const MAX_NOTE: usize = 1024;

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
    let desired = match validate::validate(&vi, ctx.platform.as_ref()) {
        Ok(desired) => desired,
        Err(invalid) => return invalid_spec(&ctx, &vi, invalid).await,
    };
    match run_steps(&ctx, &vi, &desired).await {
        Ok(action) => {
            ctx.reset_backoff(&desired.install.uid);
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
        let interval = validate::validate(&vi, ctx.platform.as_ref())
            .map(|d| d.resync_interval)
            .unwrap_or(DEFAULT_RESYNC_INTERVAL);
        Action::requeue(interval)
    }
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

/// The outcome of a step: the pass goes on with its result, or it ended (status and events
/// already written) and the controller should act as told.
enum Step<T> {
    Next(T),
    Done(Action),
}

/// What the bucket step leaves for the rest of the pass.
struct CheckedBucket {
    name: String,
    report: Report,
    /// Set when the bucket was checked in this pass (not merely not due).
    managed: Option<crate::crd::ManagedBucketStatus>,
    storage: Option<crate::crd::StorageBucketStatus>,
    next_check_in: Duration,
}

/// The pass after validation, one named step after another: bucket, Velero's facts, Velero's
/// objects, Velero's credentials and rollout, status.
async fn run_steps(ctx: &Context, vi: &VeleroInstall, desired: &DesiredInstall) -> Result<Action, Error> {
    let bucket = match check_bucket(ctx, vi, desired, Timestamp::now()).await? {
        Step::Next(bucket) => bucket,
        Step::Done(action) => return Ok(action),
    };
    let (facts, mode) = match velero_facts(ctx, vi, &bucket.name) {
        Ok(facts) => facts,
        Err(report) => return stop_on_credentials(ctx, vi, desired, bucket, report).await,
    };
    let crds = apply_velero_objects(ctx, vi, desired, &facts, mode).await?;
    let namespace = &desired.install.namespace;
    let credentials = match &facts.credentials.derived {
        Some(file) => derived::velero_credentials(ctx, &desired.install, &facts.credentials, file).await?,
        None => velero_credentials(ctx, namespace, &facts).await?,
    };
    let velero = velero_rollout(ctx, namespace, &crds).await?;
    record_pass(ctx, vi, bucket, credentials, velero).await
}

/// Ensures the bucket when a check is due (after proving the operator's own credentials work),
/// announces what changed, and ends the pass when the bucket cannot be used.
async fn check_bucket(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    now: Timestamp,
) -> Result<Step<CheckedBucket>, Error> {
    // Plan mode always looks at the cloud.
    let not_due = if ctx.writer.is_plan() { None } else { bucket::next_check(vi, desired, now) };
    // The retention Velero keeps backups for bounds the lifecycle expiry; read only when the
    // bucket is checked in this pass.
    let longest = if not_due.is_none() {
        ctx.platform
            .credential_source()
            .credential()
            .await
            .map_err(|source| Error::Credentials { source })?;
        schedules::longest(&ctx.client, &desired.install.namespace).await?
    } else {
        None
    };
    let refusal = match bucket::ensure(ctx, vi, desired, not_due, longest.as_ref()).await? {
        BucketOutcome::Checked {
            name,
            report,
            recreated_missing,
            recovered,
            adopted_unmarked,
            retention,
        } => {
            ctx.metrics.bucket_checked(&report.corrected, now);
            announce_bucket(ctx, vi, &name, &report, recreated_missing, recovered).await;
            if let Some(equal) = retention.equal {
                publish(ctx, vi, EventType::Warning, "RetentionEqualsBackupTTL", "EnsureBucket", equal).await;
            }
            let report = match retention.refused {
                Some(refused) => {
                    warn!(bucket = %name, "{refused}");
                    let reason = "RetentionBelowBackupTTL";
                    publish(ctx, vi, EventType::Warning, reason, "EnsureBucket", refused.clone()).await;
                    Report::fail(BUCKET_READY, reason, refused)
                }
                None => {
                    let summary = if report.created { "created and hardened" } else { "settings enforced" };
                    let message = conditions::bucket_ready_message(ctx.platform.as_ref(), &name, summary);
                    Report::ok(BUCKET_READY, "BucketReady", message)
                }
            };
            return Ok(Step::Next(CheckedBucket {
                managed: Some(crate::crd::ManagedBucketStatus {
                    name: name.clone(),
                    adopted_unmarked,
                    backup_expiry_days: retention.applied,
                }),
                storage: Some(bucket::synced_status(&name, now)),
                next_check_in: desired.resync_interval,
                report,
                name,
            }));
        }
        BucketOutcome::NotDue { name, next_check_in } => {
            let message = conditions::bucket_ready_message(ctx.platform.as_ref(), &name, "settings enforced");
            return Ok(Step::Next(CheckedBucket {
                report: Report::ok(BUCKET_READY, "BucketReady", message),
                managed: None,
                storage: None,
                next_check_in,
                name,
            }));
        }
        BucketOutcome::Ambiguous { names } => Report::fail(
            BUCKET_READY,
            "AmbiguousBuckets",
            format!("several buckets carry this cluster's owner tags, none adopted: {}", names.join(", ")),
        ),
        BucketOutcome::AdoptedBucketNotOurs { name } => Report::fail(
            BUCKET_READY,
            "BucketOwnedByOther",
            format!("spec.storageBucket.name {name:?} belongs to another account or cluster"),
        ),
        BucketOutcome::UnmarkedBucketNotAdopted { name } => Report::fail(
            BUCKET_READY,
            "UnmarkedBucketNotAdopted",
            format!(
                "spec.storageBucket.name {name:?} carries no owner marks of this or any cluster; nothing was \
                 written to it. Set spec.storageBucket.adoptUnmarkedBucket: true to adopt it"
            ),
        ),
        BucketOutcome::OwnedByAnotherCluster { name, claimant } => {
            let now_owner = match claimant {
                Some(cluster) => format!("now carries the owner mark of cluster {cluster:?}"),
                None => "now belongs to another account or project".to_owned(),
            };
            Report::fail(
                BUCKET_READY,
                "BucketOwnedByAnotherCluster",
                format!(
                    "bucket {name} is this cluster's ({:?}) backup bucket but {now_owner}; nothing was written \
                     to it and it was not replaced, so existing backups stay reachable. An administrator \
                     must restore the owner mark or point spec.storageBucket.name at the right bucket",
                    ctx.infrastructure_name
                ),
            )
        }
    };
    stop_on_bucket(ctx, vi, desired, refusal).await.map(Step::Done)
}

/// Applies Velero's objects: the plain kinds first, then the CRD Job, and Velero's own kinds
/// once their CRDs are installed; announces what changed.
async fn apply_velero_objects(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    facts: &VeleroFacts,
    mode: VeleroCredentials,
) -> Result<CrdsOutcome, Error> {
    let namespace = &desired.install.namespace;
    let (velero_kinds, others): (Vec<_>, Vec<_>) = build::velero_objects(desired, facts, mode)
        .into_iter()
        .partition(|o| o.resource.group == "velero.io");
    let mut applied = Vec::new();
    for object in &others {
        applied.push((object.describe(), apply::apply(&ctx.client, namespace, object, &ctx.writer).await?));
    }
    let crds_job = build::crds_job(desired);
    let crds = Crds { client: &ctx.client, namespace, job: &crds_job, writer: &ctx.writer }.ensure().await?;
    announce_crds(ctx, vi, &crds).await;
    let crds_installed = matches!(crds, CrdsOutcome::Applied { .. });
    if crds_installed {
        for object in &velero_kinds {
            applied
                .push((object.describe(), apply::apply(&ctx.client, namespace, object, &ctx.writer).await?));
        }
    }
    announce_objects(ctx, vi, &applied).await;
    if crds_installed {
        warn_about_schedules(ctx, vi, desired, namespace).await?;
    }
    Ok(crds)
}

/// VeleroReady: the CRDs' state, then the Deployment's rollout.
async fn velero_rollout(ctx: &Context, namespace: &str, crds: &CrdsOutcome) -> Result<Report, Error> {
    Ok(match crds {
        CrdsOutcome::Pending(message) => Report::fail(VELERO_READY, "InstallingVeleroCRDs", message.clone()),
        CrdsOutcome::JobFailed { reason, message } => Report::fail(VELERO_READY, reason, message.clone()),
        CrdsOutcome::Refused { message, .. } => {
            Report::fail(VELERO_READY, "VeleroCRDsRefused", message.clone())
        }
        CrdsOutcome::Applied { foreign, .. } => {
            let mut report = velero_available(ctx, namespace).await?;
            if !foreign.is_empty() {
                report.message.push_str(&format!(
                    "; CRDs managed by another installer were left alone: {}",
                    foreign.join(", ")
                ));
            }
            report
        }
    })
}

/// Writes the status of a pass that ran every step, and when to look again: soon while waiting
/// for the credential operator or the rollout, else at the next bucket check.
async fn record_pass(
    ctx: &Context,
    vi: &VeleroInstall,
    bucket: CheckedBucket,
    credentials: Report,
    velero: Report,
) -> Result<Action, Error> {
    let waiting = !credentials.ok || !velero.ok;
    let reports = with_ready([platform_supported(ctx), credentials, bucket.report, velero]);
    write_status(ctx, vi, |status| {
        if let Some(storage) = bucket.storage {
            status.storage_bucket = Some(storage);
        }
        if let Some(managed) = bucket.managed {
            status.managed_bucket = Some(managed);
        }
        status.observed_generation = vi.metadata.generation;
        status.platform = Some(ctx.platform.name().to_owned());
        status.region = Some(ctx.platform.region().to_owned());
        status.conditions = merge(vi, &reports);
    })
    .await?;
    let wait = if waiting { bucket.next_check_in.min(WAITING_REQUEUE) } else { bucket.next_check_in };
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
        Err(ShortLivedError::MissingInSection(fields)) => Err(Report::fail(
            CREDENTIALS_READY,
            "ShortLivedIdentityMissing",
            format!(
                "the cluster issues only short-lived cloud credentials; set {} so Velero's credentials can be requested",
                fields.join(" and ")
            ),
        )),
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
    bucket: CheckedBucket,
    credentials: Report,
) -> Result<Action, Error> {
    let message = credentials.message.clone();
    let reason = credentials.reason;
    let velero = Report::fail(
        VELERO_READY,
        "WaitingForCredentials",
        "Velero is not installed until its credentials can be requested",
    );
    let reports = with_ready([platform_supported(ctx), credentials, bucket.report, velero]);
    write_status(ctx, vi, |status| {
        if let Some(storage) = bucket.storage {
            status.storage_bucket = Some(storage);
        }
        status.observed_generation = vi.metadata.generation;
        status.platform = Some(ctx.platform.name().to_owned());
        status.region = Some(ctx.platform.region().to_owned());
        status.conditions = merge(vi, &reports);
    })
    .await?;
    publish(ctx, vi, EventType::Warning, reason, "RequestCredentials", message).await;
    Ok(Action::requeue(jitter(bucket.next_check_in.min(desired.resync_interval))))
}

/// The operator's own credentials worked this pass (Velero's are reported once known).
fn operator_credentials() -> Report {
    Report::ok(CREDENTIALS_READY, "CredentialsAvailable", "")
}

/// `reports` followed by the Ready condition they add up to.
fn with_ready<const N: usize>(reports: [Report; N]) -> Vec<Report> {
    let mut all = Vec::from(reports);
    all.push(conditions::ready(&all));
    all
}

async fn stop_on_bucket(
    ctx: &Context,
    vi: &VeleroInstall,
    desired: &DesiredInstall,
    refusal: Report,
) -> Result<Action, Error> {
    let (reason, message) = (refusal.reason, refusal.message.clone());
    let reports = with_ready([platform_supported(ctx), operator_credentials(), refusal]);
    write_status(ctx, vi, |status| {
        status.observed_generation = vi.metadata.generation;
        status.conditions = merge(vi, &reports);
    })
    .await?;
    publish(ctx, vi, EventType::Warning, reason, "EnsureBucket", message).await;
    Ok(Action::requeue(desired.resync_interval))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::crd::VeleroInstallStatus;
    use crate::reconcile::{
        context::{BACKOFF_MAX, backoff_delay, spread},
        status::status_patch,
    };

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
