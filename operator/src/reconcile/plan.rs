//! Plan mode: the reconcile pipeline run read-only. The same steps run; every place that would
//! write (a bucket setting, an object, the status, an event) records what it would do in a
//! [`Plan`] instead, and the cloud is reached through [`PlanStore`], which only reads.

use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Capabilities, Error, ObjectStore, Owner, Recovery, Result,
    Setting, TagStyle,
};

/// What a reconcile would change, in order.
#[derive(Debug, Default)]
pub struct Plan {
    changes: Mutex<Vec<String>>,
}

impl Plan {
    /// Records one change that was not made.
    pub fn record(&self, change: impl Into<String>) {
        self.changes.lock().push(change.into());
    }

    /// Every recorded change.
    pub fn changes(&self) -> Vec<String> {
        self.changes.lock().clone()
    }
}

/// A store that only reads, recording what `ensure_bucket` would change; plan mode reaches the
/// cloud only through it.
#[derive(Debug)]
pub struct PlanStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<Plan>,
    /// The provider's owner-mark style, to compare marks as it would.
    style: TagStyle,
    /// What the provider enforces: a setting it does not claim is never corrected, so never
    /// planned (on Azure, lifecycle and encryption are the storage account's).
    capabilities: Capabilities,
}

impl PlanStore {
    /// Wraps `inner`, recording into `plan`, comparing owner marks in `style` and planning only
    /// the settings `capabilities` says the provider enforces.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        plan: Arc<Plan>,
        style: TagStyle,
        capabilities: Capabilities,
    ) -> Self {
        PlanStore { inner, plan, style, capabilities }
    }

    fn enforced(&self, setting: &Setting) -> bool {
        match setting {
            Setting::Encryption => self.capabilities.default_encryption,
            Setting::PublicAccess => self.capabilities.public_access_block,
            Setting::Lifecycle => self.capabilities.lifecycle_rules,
            Setting::Tags => true,
        }
    }
}

#[async_trait]
impl ObjectStore for PlanStore {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        self.inner.find_bucket(owner).await
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        match self.inner.observe_bucket(&spec.name).await {
            Ok(state) => {
                let mut corrected = state.drift(spec, self.style);
                corrected.retain(|setting| self.enforced(setting));
                for setting in &corrected {
                    self.plan.record(format!("cloud: correct {setting} of bucket {}", spec.name));
                }
                Ok(BucketReport { created: false, corrected, state })
            }
            Err(Error::NotFound { .. }) => {
                self.plan.record(format!(
                    "cloud: create bucket {} in {} (encryption, public access block, lifecycle, owner tags)",
                    spec.name, spec.region
                ));
                let state = spec.desired_state(self.style);
                Ok(BucketReport { created: true, corrected: Vec::new(), state })
            }
            Err(err) => Err(err),
        }
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        self.inner.observe_bucket(name).await
    }
}
