//! Plan mode: the reconcile pipeline run read-only. The same steps run; every place that would
//! write (a bucket setting, an object, the status, an event) records what it would do in a
//! [`Plan`] instead, and the cloud is reached through [`PlanPlatform`], whose store only reads.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Capabilities, CredentialSource, CredentialsWiring, Error,
    LocationConfig, ObjectStore, Owner, Platform, Recovery, Result, metering::CallCounter,
};

/// What a reconcile would change, in order.
#[derive(Debug, Default)]
pub struct Plan {
    changes: Mutex<Vec<String>>,
}

impl Plan {
    /// Records one change that was not made.
    pub fn record(&self, change: impl Into<String>) {
        self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(change.into());
    }

    /// Every recorded change.
    pub fn changes(&self) -> Vec<String> {
        self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// A platform whose bucket operations only read, recording what `ensure_bucket` would change.
#[derive(Debug)]
pub struct PlanPlatform {
    inner: Arc<dyn Platform>,
    plan: Arc<Plan>,
}

impl PlanPlatform {
    /// Wraps `inner`, recording into `plan`.
    pub fn new(inner: Arc<dyn Platform>, plan: Arc<Plan>) -> Self {
        PlanPlatform { inner, plan }
    }
}

impl Platform for PlanPlatform {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn region(&self) -> &str {
        self.inner.region()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(PlanStore {
            inner: self.inner.object_store(),
            plan: self.plan.clone(),
            labels: self.inner.name() == "GCP",
        })
    }
    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.inner.credential_source()
    }
    fn location_config(&self, bucket: &str) -> LocationConfig {
        self.inner.location_config(bucket)
    }
    fn velero_credentials_request(&self, bucket: &str) -> serde_json::Value {
        self.inner.velero_credentials_request(bucket)
    }
    fn velero_plugin_image(&self) -> &str {
        self.inner.velero_plugin_image()
    }
    fn velero_credentials(&self) -> CredentialsWiring {
        self.inner.velero_credentials()
    }
    fn velero_short_lived(
        &self,
        bucket: &str,
        input: &mvo_core::ShortLivedInput,
    ) -> Result<mvo_core::ShortLivedVelero, mvo_core::ShortLivedError> {
        self.inner.velero_short_lived(bucket, input)
    }
    fn call_counter(&self) -> Option<CallCounter> {
        self.inner.call_counter()
    }
}

#[derive(Debug)]
struct PlanStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<Plan>,
    // GCS compares owner identity as sanitised labels.
    labels: bool,
}

#[async_trait]
impl ObjectStore for PlanStore {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        self.inner.find_bucket(owner).await
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        match self.inner.observe_bucket(&spec.name).await {
            Ok(state) => {
                let corrected = state.drift(spec, self.labels);
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
                let state = spec.desired_state(self.labels);
                Ok(BucketReport { created: true, corrected: Vec::new(), state })
            }
            Err(err) => Err(err),
        }
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        self.inner.observe_bucket(name).await
    }
}
