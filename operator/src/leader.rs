//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica reconciles, with
//! client-go's semantics:
//!
//! - A candidate measures expiry on its own monotonic clock from when it last *observed a change*
//!   of the Lease record, never by comparing the holder's `renewTime` with its own wall clock
//!   (clocks of two nodes differ; a record that stops changing is a holder that stopped renewing).
//! - Every call has a deadline, so a renewal cannot hang; the leader stops acting once it has not
//!   renewed for [`Timings::renew_deadline`], which is shorter than the lease: it is gone before
//!   any standby may take over.
//! - Writes carry the Lease's resourceVersion, so two candidates cannot both win a race.
//!
//! Defaults are OpenShift's (137 s lease, 107 s renew deadline, 26 s retry), so an API server
//! disruption of a minute does not restart the operator.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::{Instant, timeout};
use tracing::{info, warn};

/// Name of the Lease.
pub const LEASE_NAME: &str = "managed-velero-operator-lock";

/// The longest lease a record may claim; a larger value (a bad write) counts as this, so that no
/// record can keep candidates out for longer than an hour, and no arithmetic overflows.
const MAX_RECORD_LEASE: Duration = Duration::from_secs(3600);

/// Lease timings (client-go's `LeaseDuration`, `RenewDeadline`, `RetryPeriod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits, from the last change it observed, before taking the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby retries.
    pub retry_period: Duration,
}

impl Timings {
    /// OpenShift's recommended timings for operators.
    pub const OPENSHIFT: Timings = Timings {
        lease_duration: Duration::from_secs(137),
        renew_deadline: Duration::from_secs(107),
        retry_period: Duration::from_secs(26),
    };

    /// Checks client-go's ordering: lease > renew deadline > retry period x 1.2 (its jitter), so
    /// the leader gives up before a standby may take over, after more than one retry.
    pub fn validate(self) -> Result<Self, String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(format!(
                "the renew deadline ({:?}) must be longer than 1.2 x the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.retry_period.is_zero() || self.lease_duration > MAX_RECORD_LEASE {
            return Err("the retry period must be positive and the lease at most 1h".into());
        }
        Ok(self)
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings::OPENSHIFT
    }
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Another candidate holds the Lease now.
    TakenOver,
    /// No renewal succeeded within the renew deadline.
    RenewDeadline,
}

/// What a candidate last saw of the Lease, and when (on its own monotonic clock).
#[derive(Debug, Clone)]
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// One candidate for the Lease.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    holder: String,
    timings: Timings,
    observed: Option<Observed>,
    /// When the last successful write to the Lease was started.
    renewed: Instant,
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// The outcome of one attempt.
#[derive(Debug)]
enum Attempt {
    /// This candidate holds the Lease now.
    Held,
    /// Another live holder has it, or won a race.
    Other,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Deadline(Duration),
}

impl LeaderElection {
    /// A candidate named `holder` (the pod name) for the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, holder: String, timings: Timings) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            holder,
            timings,
            observed: None,
            renewed: Instant::now(),
        }
    }

    /// The candidate's identity.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(self.holder.as_str()));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours { transitions } else { transitions.saturating_add(1) }),
            ..Default::default()
        }
    }

    /// Records `spec` as observed now if it differs from what was last observed.
    fn observe(&mut self, spec: &LeaseSpec) {
        if self.observed.as_ref().is_none_or(|o| o.spec != *spec) {
            self.observed = Some(Observed { spec: spec.clone(), at: Instant::now() });
        }
    }

    /// Whether the last observed record names a live holder other than this candidate: it
    /// changed less than its lease duration ago (on this candidate's clock).
    fn held_by_other(&self) -> bool {
        let Some(observed) = &self.observed else { return false };
        let holder = observed.spec.holder_identity.as_deref().unwrap_or_default();
        if holder.is_empty() || holder == self.holder {
            return false;
        }
        let seconds = observed.spec.lease_duration_seconds.unwrap_or(0).max(0);
        let lease = Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(MAX_RECORD_LEASE);
        observed.at.elapsed() < lease
    }

    /// One read-and-write, without a deadline.
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created.spec.unwrap_or_default());
                    Ok(Attempt::Held)
                }
                Err(err) if is_conflict(&err) => Ok(Attempt::Other),
                Err(err) => Err(err),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        self.observe(&current);
        if self.held_by_other() {
            return Ok(Attempt::Other);
        }
        lease.spec = Some(self.spec(Some(&current)));
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.observe(&written.spec.unwrap_or_default());
                Ok(Attempt::Held)
            }
            Err(err) if is_conflict(&err) => Ok(Attempt::Other),
            Err(err) => Err(err),
        }
    }

    /// One attempt that gives up after `deadline`.
    async fn attempt_within(&mut self, deadline: Duration) -> Result<Attempt, AttemptError> {
        match timeout(deadline, self.attempt()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(AttemptError::Deadline(deadline)),
        }
    }

    /// The retry period stretched by up to 20% (client-go's jitter), so candidates spread out.
    fn jittered_retry(&self) -> Duration {
        let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
        self.timings.retry_period.mul_f64(1.0 + 0.2 * fraction)
    }

    /// Waits until this candidate holds the Lease. Calls `standing_by` once, when another
    /// replica is first seen leading (the candidate is then ready as a standby).
    pub async fn acquire(&mut self, mut standing_by: impl FnMut()) {
        let mut announced = false;
        loop {
            let started = Instant::now();
            match self.attempt_within(self.timings.renew_deadline).await {
                Ok(Attempt::Held) => {
                    self.renewed = started;
                    info!(holder = %self.holder, lease = LEASE_NAME, "leading");
                    return;
                }
                Ok(Attempt::Other) if !announced => {
                    // Ready first, then say so: the log line promises readiness.
                    standing_by();
                    announced = true;
                    info!(holder = %self.holder, lease = LEASE_NAME, "standing by: another replica leads");
                }
                Ok(Attempt::Other) => {}
                Err(err) => warn!(error = %err, "leader election: cannot read or write the Lease"),
            }
            tokio::time::sleep(self.jittered_retry()).await;
        }
    }

    /// Renews the Lease every retry period; returns when leadership is lost. Each attempt's
    /// deadline is the time left until the renew deadline, counted from the start of the last
    /// successful renewal, so this returns at that deadline even if a call hangs. The caller must
    /// stop acting at once when this returns.
    pub async fn keep(&mut self) -> Lost {
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            loop {
                let started = Instant::now();
                let left = self.timings.renew_deadline.saturating_sub(self.renewed.elapsed());
                if left.is_zero() {
                    warn!(holder = %self.holder, deadline = ?self.timings.renew_deadline, "could not renew the Lease in time");
                    return Lost::RenewDeadline;
                }
                match self.attempt_within(left).await {
                    Ok(Attempt::Held) => {
                        // The record was written after `started`: a standby's clock starts later.
                        self.renewed = started;
                        break;
                    }
                    Ok(Attempt::Other) => {
                        warn!(holder = %self.holder, "leadership lost to another replica");
                        return Lost::TakenOver;
                    }
                    Err(err) => {
                        warn!(error = %err, "leader election: renewal failed");
                        let left = self.timings.renew_deadline.saturating_sub(self.renewed.elapsed());
                        tokio::time::sleep(self.timings.retry_period.min(left)).await;
                    }
                }
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires. Bounded
    /// by the retry period: a shutdown must not hang on an unreachable API server.
    pub async fn release(&self) {
        let release = async {
            let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else { return Ok(false) };
            let Some(spec) = lease.spec.as_mut() else { return Ok(false) };
            if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(|_| true)
        };
        match timeout(self.timings.retry_period, release).await {
            Ok(Ok(true)) => info!(holder = %self.holder, "Lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => {
                warn!(error = %err, "could not release the Lease; a standby takes over when it expires")
            }
            Err(_) => warn!("releasing the Lease timed out; a standby takes over when it expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openshift_timings_are_the_default_and_valid() {
        assert_eq!(Timings::default(), Timings::OPENSHIFT);
        assert_eq!(Timings::OPENSHIFT.validate(), Ok(Timings::OPENSHIFT));
        assert_eq!(Timings::OPENSHIFT.lease_duration, Duration::from_secs(137));
    }

    #[test]
    fn timings_must_leave_the_leader_time_to_step_down() {
        let secs = |l, r, p| Timings {
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(r),
            retry_period: Duration::from_secs(p),
        };
        assert!(secs(10, 10, 2).validate().is_err(), "renew deadline must be shorter than the lease");
        assert!(secs(10, 6, 5).validate().is_err(), "retries must fit in the renew deadline");
        assert!(secs(6, 4, 1).validate().is_ok());
        assert!(secs(7200, 100, 1).validate().is_err(), "lease bounded");
    }
}
