//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica reconciles.
//!
//! The leader renews the Lease every [`RENEW_EVERY`]; a standby takes it over once it has not
//! been renewed for [`LEASE_DURATION`]. Every write carries the Lease's resourceVersion, so two
//! candidates cannot both win. A leader that cannot renew in time stops leading (the process
//! exits and restarts as a candidate) rather than risk two reconcilers.

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
use tracing::{info, warn};

/// Name of the Lease.
pub const LEASE_NAME: &str = "managed-velero-operator-lock";
/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and how often a standby retries.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// One candidate for the Lease.
#[derive(Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    holder: String,
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElection {
    /// A candidate named `holder` (the pod name) for the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, holder: String) -> Self {
        LeaderElection { api: Api::namespaced(client, namespace), holder }
    }

    /// The candidate's identity.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(self.holder.as_str()));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// Takes or renews the Lease; `Ok(false)` when another live holder has it or won a race.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(err) if is_conflict(&err) => Ok(false),
                Err(err) => Err(err),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let held_by_other = current.holder_identity.as_deref().is_some_and(|h| h != self.holder);
        let expires =
            current.renew_time.as_ref().zip(current.lease_duration_seconds).and_then(|(renewed, seconds)| {
                renewed.0.checked_add(Duration::from_secs(seconds.max(0) as u64)).ok()
            });
        if held_by_other && expires.is_some_and(|at| at > now) {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&current), now));
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(holder = %self.holder, lease = LEASE_NAME, "leading");
                    return;
                }
                Ok(false) if !announced => {
                    info!(holder = %self.holder, lease = LEASE_NAME, "standing by: another replica leads");
                    announced = true;
                }
                Ok(false) => {}
                Err(err) => warn!(error = %err, "leader election: cannot read or write the Lease"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews the Lease until renewal fails for longer than the Lease lasts; then returns, and the
    /// caller must stop reconciling.
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(holder = %self.holder, "leadership lost to another replica");
                    return;
                }
                Err(err) => warn!(error = %err, "leader election: renewal failed"),
            }
            if last_renewal.elapsed() >= LEASE_DURATION {
                warn!(holder = %self.holder, "could not renew the Lease in time; stepping down");
                return;
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(err) = self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            warn!(error = %err, "could not release the Lease; a standby takes over when it expires");
        } else {
            info!(holder = %self.holder, "Lease released");
        }
    }
}
