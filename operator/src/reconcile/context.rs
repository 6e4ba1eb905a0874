//! What every reconcile shares ([`Context`]: client, provider, writer, events, metrics) and the
//! failure backoff with its jitter.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;

use kube::{Client, runtime::events::Reporter};
use mvo_core::{ObjectStore, Platform, ShortLivedInput};

use super::{
    Error,
    events::Events,
    plan::{Plan, PlanStore},
    writer::Writer,
};
use crate::{
    crd::VeleroInstall,
    health::{Health, PASS_DEADLINE},
    metrics::Metrics,
};

/// Shortest and longest wait after a retryable failure.
pub(super) const BACKOFF_MIN: Duration = Duration::from_secs(5);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Spread of a failure backoff: wider than the resync's ±10%, since failures start together.
pub(super) const BACKOFF_JITTER_PERCENT: u32 = 25;

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
    /// Where every Kubernetes write goes: the API server, or (plan mode) the plan.
    pub writer: Writer,
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
            events: Events::new(client.clone(), reporter, Writer::Live),
            client,
            platform,
            infrastructure_name,
            metrics,
            writer: Writer::Live,
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
        let mut ctx = Self::new(client.clone(), platform, infrastructure_name, reporter.clone());
        ctx.writer = Writer::Plan(plan.clone());
        ctx.events = Events::new(client, reporter, ctx.writer.clone());
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
        Ok(match self.writer.plan() {
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

    pub(super) fn reset_backoff(&self, uid: &str) {
        self.failures.reset(uid);
    }
}

/// Consecutive retryable failures per object UID, and the backoff they earn.
#[derive(Debug, Default)]
pub struct FailureBackoff(Mutex<HashMap<String, u32>>);

impl FailureBackoff {
    fn failures(&self) -> parking_lot::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock()
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
pub(super) fn backoff_delay(failures: u32) -> Duration {
    BACKOFF_MIN.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_MAX)
}

/// Spreads requeues over ±10% so many clusters do not check their buckets in lockstep.
pub(super) fn jitter(wait: Duration) -> Duration {
    spread(wait, 10)
}

/// `wait` moved by a uniformly random offset within ±`percent`%. Saturating throughout: the
/// wait may come from the spec, and no input may make this panic.
pub(super) fn spread(wait: Duration, percent: u32) -> Duration {
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let spread = millis / 100 * u64::from(percent.min(100));
    if spread == 0 {
        return wait;
    }
    let offset = uuid::Uuid::new_v4().as_u128() % u128::from(spread.saturating_mul(2));
    let offset = Duration::from_millis(u64::try_from(offset).unwrap_or(u64::MAX));
    wait.saturating_add(offset).saturating_sub(Duration::from_millis(spread))
}
