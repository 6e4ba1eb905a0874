//! The Go MVO's leader-for-life lock: while it is held, this operator does not reconcile.
//!
//! MVO (operator-lib `leader.Become`) creates the ConfigMap `managed-velero-operator-lock` in its
//! namespace with a plain owner reference to its own pod, and acts for as long as that pod lives;
//! the garbage collector deletes the ConfigMap after the pod. During a rolling replacement the new
//! operator's pod starts while MVO's still runs, so before its first reconcile this operator
//! waits until the lock is gone or its owner pod is: deleted, replaced by a pod of the same name
//! (another UID), or finished (`Failed`/`Succeeded`, e.g. evicted, whose containers no longer
//! run). It never deletes the lock or the pod: that is the garbage collector's and kubelet's job.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{Api, Client};
use tracing::{info, warn};

/// Name of MVO's lock ConfigMap.
pub const MVO_LOCK: &str = "managed-velero-operator-lock";
/// How often the lock is looked at again while it is held.
pub const POLL: Duration = Duration::from_secs(5);

/// What the lock says about MVO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No lock: MVO does not run (or never ran) here.
    Absent,
    /// The lock's owner pod exists and runs: MVO may act.
    Held {
        /// The MVO pod.
        pod: String,
    },
    /// The lock is left over: its owner pod is gone or finished.
    Released {
        /// Why the lock no longer counts.
        reason: String,
    },
}

impl LockState {
    /// Whether this operator must wait.
    pub fn is_held(&self) -> bool {
        matches!(self, LockState::Held { .. })
    }
}

/// Reads the lock in `namespace` and the pods it names.
pub async fn observe(client: &Client, namespace: &str) -> Result<LockState, kube::Error> {
    let Some(lock) = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(MVO_LOCK).await? else {
        return Ok(LockState::Absent);
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let owners: Vec<_> = lock
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.kind == "Pod" && o.api_version == "v1")
        .collect();
    if owners.is_empty() {
        // operator-lib never acts on a lock without a pod owner; nobody holds it.
        return Ok(LockState::Released { reason: "the lock names no pod".into() });
    }
    let mut reasons = Vec::new();
    for owner in owners {
        let pod = pods.get_opt(&owner.name).await?;
        match pod {
            None => reasons.push(format!("pod {} is gone", owner.name)),
            Some(pod) if pod.metadata.uid.as_deref() != Some(owner.uid.as_str()) => {
                reasons.push(format!("pod {} was replaced", owner.name));
            }
            Some(pod) => {
                let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
                if matches!(phase.as_str(), "Failed" | "Succeeded") {
                    reasons.push(format!("pod {} has {}", owner.name, phase.to_lowercase()));
                } else {
                    return Ok(LockState::Held { pod: owner.name });
                }
            }
        }
    }
    Ok(LockState::Released { reason: reasons.join(", ") })
}

/// Returns once MVO's lock in `namespace` is not held, looking every `poll`. A failed read is
/// logged and retried: acting while MVO may still act is what this guards against.
pub async fn wait_until_released(client: &Client, namespace: &str, poll: Duration) {
    let mut announced = false;
    loop {
        match observe(client, namespace).await {
            Ok(LockState::Held { pod }) => {
                if !announced {
                    info!(lock = MVO_LOCK, %pod, "waiting: the Go MVO holds its leader-for-life lock");
                    announced = true;
                }
            }
            Ok(LockState::Absent) => return,
            Ok(LockState::Released { reason }) => {
                info!(lock = MVO_LOCK, %reason, "the Go MVO's lock is no longer held");
                return;
            }
            Err(err) => warn!(error = %err, lock = MVO_LOCK, "cannot read the Go MVO's lock; retrying"),
        }
        tokio::time::sleep(poll).await;
    }
}
