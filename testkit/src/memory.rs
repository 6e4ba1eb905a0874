//! [`InMemoryPlatform`]: a faithful in-memory provider.
//!
//! One [`InMemoryCloud`] holds the buckets of every account; each platform acts as one account in
//! one region. It follows the rules real clouds impose on the operator: bucket names are global,
//! another account's bucket refuses inspection, listing spans regions, unreadable buckets exist,
//! and faults can be injected per call. It counts reads and writes per operation in core's
//! [`CallCounter`], like the metering decorators of the real providers, so tests can assert "no
//! writes in steady state". It can claim fewer capabilities ([`InMemoryPlatform::claiming`]); the
//! operations behind an unclaimed one answer [`Error::NotSupported`], as the contract requires.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use mvo_core::{
    BucketReport, BucketSpec, BucketState, Capabilities, CredentialSource, CredentialsWiring, Encryption,
    Error, LifecycleRule, LocationConfig, ObjectStore, Owner, Platform, PublicAccessBlock, Recovery, Result,
    Setting, ShortLivedError, SpecFields, StaticCredentialSource, TagStyle, Tags, VeleroFacts, VeleroInput,
    metering::CallCounter, owner::INFRASTRUCTURE_NAME_TAG,
};

use crate::contract::{Backdoor, Fault};

/// The platform name the in-memory provider reports.
pub const PLATFORM: &str = "InMemory";
/// The account an [`InMemoryPlatform::new`] platform acts as.
pub const DEFAULT_ACCOUNT: &str = "self";

#[derive(Debug, Clone)]
struct StoredBucket {
    account: String,
    state: BucketState,
    objects: BTreeSet<String>,
    /// Listed, but every inspection is refused (a bucket policy denying us).
    refuses_inspection: bool,
}

#[derive(Debug, Default)]
struct CloudState {
    buckets: BTreeMap<String, StoredBucket>,
    faults: Vec<Fault>,
    targeted_faults: Vec<(&'static str, Fault)>,
    /// Faults reported after the operation took effect (a response lost on the way back).
    faults_after: Vec<(&'static str, Fault)>,
}

/// The shared state of an in-memory cloud: buckets of every account, injected faults, call counts.
#[derive(Debug, Clone, Default)]
pub struct InMemoryCloud {
    state: Arc<Mutex<CloudState>>,
    counter: CallCounter,
}

impl InMemoryCloud {
    /// An empty cloud.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, CloudState> {
        self.state.lock()
    }

    /// The calls every platform of this cloud made, by operation (`HeadBucket`,
    /// `PutBucketTagging`, ...).
    pub fn counter(&self) -> &CallCounter {
        &self.counter
    }

    /// Number of calls of `operation` so far (e.g. `PutBucketTagging`).
    pub fn calls(&self, operation: &str) -> u64 {
        self.counter.calls(operation)
    }

    /// Total read calls so far.
    pub fn reads(&self) -> u64 {
        self.counter.reads()
    }

    /// Total write calls so far.
    pub fn writes(&self) -> u64 {
        self.counter.writes()
    }

    /// Makes the next call of any operation fail with `fault` (faults queue up, one per call).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Makes the next call of `operation` (e.g. `HeadBucket`, `CreateBucket`) fail with `fault`,
    /// letting other operations through: for failing one precise step of a sequence.
    pub fn inject_at(&self, operation: &'static str, fault: Fault) {
        self.lock().targeted_faults.push((operation, fault));
    }

    /// Makes the next call of `operation` take effect and then fail with `fault`, as when the
    /// cloud did the work but its answer was lost (a timeout after a bucket was created).
    pub fn inject_after(&self, operation: &'static str, fault: Fault) {
        self.lock().faults_after.push((operation, fault));
    }

    /// The names of every bucket of every account.
    pub fn bucket_names(&self) -> Vec<String> {
        self.lock().buckets.keys().cloned().collect()
    }

    /// A copy of a bucket's settings as stored, whoever owns it.
    pub fn bucket(&self, name: &str) -> Option<BucketState> {
        self.lock().buckets.get(name).map(|b| b.state.clone())
    }

    /// Creates a bucket owned by `account` in `region` with `tags` and no hardening at all.
    pub fn insert_bucket(&self, account: &str, name: &str, region: &str, tags: Tags) {
        let state = BucketState {
            name: name.into(),
            region: region.into(),
            encryption: None,
            public_access: PublicAccessBlock::default(),
            lifecycle: Vec::new(),
            tags,
        };
        let bucket = StoredBucket {
            account: account.into(),
            state,
            objects: BTreeSet::new(),
            refuses_inspection: false,
        };
        self.lock().buckets.insert(name.into(), bucket);
    }

    /// Changes a stored bucket out of band, bypassing every rule and counter.
    ///
    /// Errors: [`Error::NotFound`] when there is no such bucket.
    pub fn tamper(&self, name: &str, change: impl FnOnce(&mut BucketState)) -> Result<()> {
        let mut state = self.lock();
        let bucket = state.buckets.get_mut(name).ok_or_else(|| Error::bucket_not_found(name))?;
        change(&mut bucket.state);
        Ok(())
    }

    fn with_bucket<T>(&self, name: &str, f: impl FnOnce(&mut StoredBucket) -> T) -> Result<T> {
        let mut state = self.lock();
        let bucket = state.buckets.get_mut(name).ok_or_else(|| Error::bucket_not_found(name))?;
        Ok(f(bucket))
    }
}

/// The in-memory provider: one account of an [`InMemoryCloud`] in one region.
#[derive(Debug, Clone)]
pub struct InMemoryPlatform {
    store: Arc<InMemoryStore>,
}

/// What an [`InMemoryPlatform::new`] platform claims: everything but Velero's short-lived
/// credentials, which are not modelled in memory.
const CLAIMED: Capabilities = Capabilities { workload_identity: false, ..Capabilities::ALL };

impl InMemoryPlatform {
    /// A platform acting as account [`DEFAULT_ACCOUNT`] in `region` of a fresh cloud.
    pub fn new(region: &str) -> Self {
        Self::in_cloud(InMemoryCloud::new(), DEFAULT_ACCOUNT, region)
    }

    /// A platform acting as `account` in `region` of an existing cloud.
    pub fn in_cloud(cloud: InMemoryCloud, account: &str, region: &str) -> Self {
        let store = InMemoryStore { cloud, account: account.into(), region: region.into(), claimed: CLAIMED };
        InMemoryPlatform { store: Arc::new(store) }
    }

    /// The same account claiming only `claimed`: what a provider whose cloud cannot do everything
    /// looks like to the operator and the contract suite.
    pub fn claiming(self, claimed: Capabilities) -> Self {
        InMemoryPlatform { store: Arc::new(InMemoryStore { claimed, ..(*self.store).clone() }) }
    }

    /// The cloud this platform lives in.
    pub fn cloud(&self) -> &InMemoryCloud {
        &self.store.cloud
    }

    /// The account this platform acts as.
    pub fn account(&self) -> &str {
        &self.store.account
    }
}

impl Platform for InMemoryPlatform {
    fn name(&self) -> &'static str {
        PLATFORM
    }

    fn region(&self) -> &str {
        &self.store.region
    }

    fn capabilities(&self) -> Capabilities {
        self.store.claimed
    }

    fn call_counter(&self) -> Option<CallCounter> {
        Some(self.store.cloud.counter.clone())
    }

    fn object_store(&self, _section: &serde_json::Value) -> Result<Arc<dyn ObjectStore>> {
        Ok(self.store.clone())
    }

    fn spec_fields(&self) -> SpecFields {
        SpecFields { kms_key: Some(KMS_KEY_FIELD), section: None }
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        Arc::new(StaticCredentialSource::access_key("in-memory", "in-memory-secret"))
    }

    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError> {
        if input.short_lived.is_some() {
            return Err(ShortLivedError::NotSupported);
        }
        Ok(velero_facts(&self.store.region, input.bucket))
    }
}

/// The spec field the in-memory platform reads its customer-managed key from.
pub const KMS_KEY_FIELD: &str = "kmsKeyID";
/// Velero's provider name on the in-memory cloud (no such plugin exists: objects are built and
/// applied, never run against a cloud).
pub const VELERO_PROVIDER: &str = "in-memory";
/// The plugin image the in-memory platform names.
pub const VELERO_PLUGIN_IMAGE: &str = "registry.example/velero/velero-plugin-for-in-memory:v1";
/// The environment variable pointing Velero at its credentials file.
pub const CREDENTIALS_ENV: &str = "IN_MEMORY_CREDENTIALS_FILE";

/// What Velero gets on the in-memory cloud: a neutral cloud of its own, so tests that assert these
/// values assert the operator's plumbing, not one real cloud's strings.
pub fn velero_facts(region: &str, bucket: &str) -> VeleroFacts {
    let config = BTreeMap::from([("region".to_owned(), region.to_owned())]);
    VeleroFacts {
        plugin_image: VELERO_PLUGIN_IMAGE.into(),
        location: LocationConfig {
            provider: VELERO_PROVIDER.into(),
            bucket: bucket.into(),
            backup_config: config.clone(),
            snapshot_config: config,
        },
        credentials_request: serde_json::json!({
            "apiVersion": "cloudcredential.openshift.io/v1",
            "kind": "InMemoryProviderSpec",
            "bucket": bucket,
            "access": ["read", "write", "list"],
        }),
        credentials: CredentialsWiring {
            mount_path: "/credentials".into(),
            secret_key: "credentials".into(),
            env: vec![(CREDENTIALS_ENV.into(), "/credentials/credentials".into())],
            derived: None,
        },
    }
}

/// The [`ObjectStore`] of one account.
#[derive(Debug, Clone)]
struct InMemoryStore {
    cloud: InMemoryCloud,
    account: String,
    region: String,
    claimed: Capabilities,
}

impl InMemoryStore {
    /// Counts a call and fails it if a fault is queued.
    fn call(&self, state: &mut CloudState, operation: &'static str) -> Result<()> {
        self.cloud.counter.record_sent(operation);
        let fault = match state.targeted_faults.iter().position(|(op, _)| *op == operation) {
            Some(i) => Some(state.targeted_faults.remove(i).1),
            None if state.faults.is_empty() => None,
            None => Some(state.faults.remove(0)),
        };
        match fault {
            Some(fault) => {
                self.cloud.counter.record_failure(operation);
                Err(fault.to_error(operation))
            }
            None => Ok(()),
        }
    }

    /// Refuses an operation behind a capability this platform does not claim.
    fn claims(&self, claimed: bool, operation: &'static str) -> Result<()> {
        if claimed { Ok(()) } else { Err(Error::NotSupported { operation, provider: PLATFORM }) }
    }

    /// Fails a call that already took effect, if a fault waits for it.
    fn after(&self, state: &mut CloudState, operation: &'static str) -> Result<()> {
        match state.faults_after.iter().position(|(op, _)| *op == operation) {
            Some(i) => Err(state.faults_after.remove(i).1.to_error(operation)),
            None => Ok(()),
        }
    }

    fn denied(operation: &str, name: &str) -> Error {
        Error::PermissionDenied {
            operation: operation.into(),
            message: format!("access to bucket {name:?} denied"),
        }
    }

    /// Reads one of our buckets, enforcing ownership and inspection rules.
    fn read(&self, state: &mut CloudState, name: &str) -> Result<BucketState> {
        self.call(state, "GetBucketSettings")?;
        match state.buckets.get(name) {
            None => Err(Error::bucket_not_found(name)),
            Some(b) if b.account != self.account || b.refuses_inspection => {
                Err(Self::denied("GetBucketSettings", name))
            }
            Some(b) => Ok(b.state.clone()),
        }
    }

    fn write(&self, state: &mut CloudState, name: &str, setting: Setting, spec: &BucketSpec) -> Result<()> {
        let operation = match setting {
            Setting::Encryption => "PutBucketEncryption",
            Setting::PublicAccess => "PutPublicAccessBlock",
            Setting::Lifecycle => "PutBucketLifecycle",
            Setting::Tags => "PutBucketTagging",
        };
        self.call(state, operation)?;
        let bucket = state.buckets.get_mut(name).ok_or_else(|| Error::bucket_not_found(name))?;
        let current = &mut bucket.state;
        match setting {
            Setting::Encryption => current.encryption = Some(spec.encryption.clone()),
            Setting::PublicAccess => current.public_access = PublicAccessBlock::ALL_BLOCKED,
            Setting::Lifecycle => {
                current.lifecycle =
                    spec.merge_lifecycle(&current.lifecycle).unwrap_or(current.lifecycle.clone())
            }
            Setting::Tags => current.tags = spec.merge_tags(&current.tags).unwrap_or(current.tags.clone()),
        }
        Ok(())
    }

    fn create(&self, state: &mut CloudState, spec: &BucketSpec) -> Result<BucketState> {
        self.call(state, "CreateBucket")?;
        let created = spec.desired_state(TagStyle::Tags);
        let bucket = StoredBucket {
            account: self.account.clone(),
            state: created.clone(),
            objects: BTreeSet::new(),
            refuses_inspection: false,
        };
        state.buckets.insert(spec.name.clone(), bucket);
        self.after(state, "CreateBucket")?;
        Ok(created)
    }
}

#[async_trait]
impl ObjectStore for InMemoryStore {
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery> {
        self.claims(self.claimed.recovery, "find a bucket by owner tags")?;
        let mut state = self.cloud.lock();
        self.call(&mut state, "ListBuckets")?;
        let mut matches = Vec::new();
        let mut skipped = 0;
        for bucket in state.buckets.values() {
            if bucket.account != self.account || bucket.state.region != self.region {
                continue;
            }
            if bucket.refuses_inspection {
                skipped += 1;
            } else if owner.owns_tags(&bucket.state.tags) {
                matches.push(bucket.state.name.clone());
            }
        }
        Ok(Recovery::from_matches(matches, skipped))
    }

    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport> {
        self.claims(self.claimed.buckets, "create or enforce a bucket")?;
        let mut state = self.cloud.lock();
        self.call(&mut state, "HeadBucket")?;
        let existing = match state.buckets.get(&spec.name) {
            None => None,
            Some(b) if b.account != self.account => {
                return Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() });
            }
            Some(_) => Some(self.read(&mut state, &spec.name)?),
        };
        let Some(current) = existing else {
            let created = self.create(&mut state, spec)?;
            return Ok(BucketReport { created: true, corrected: Vec::new(), state: created });
        };
        if let Some(claimant) = Owner::claimed_by(&current.tags)
            && claimant != spec.owner.infrastructure_name
        {
            return Err(Error::AlreadyOwnedByOther { bucket: spec.name.clone() });
        }
        let corrected = current.drift(spec, TagStyle::Tags);
        for setting in &corrected {
            self.write(&mut state, &spec.name, *setting, spec)?;
        }
        let now = state.buckets.get(&spec.name).map(|b| b.state.clone()).ok_or_else(|| {
            // Only reachable if a concurrent test deleted the bucket between calls under the lock.
            Error::bucket_not_found(&spec.name)
        })?;
        Ok(BucketReport { created: false, corrected, state: now })
    }

    async fn observe_bucket(&self, name: &str) -> Result<BucketState> {
        self.claims(self.claimed.buckets, "read a bucket's settings")?;
        let mut state = self.cloud.lock();
        self.read(&mut state, name)
    }
}

#[async_trait]
impl Backdoor for InMemoryPlatform {
    async fn create_plain_bucket(&self, name: &str, region: &str, tags: Tags) -> Result<()> {
        self.cloud().insert_bucket(self.account(), name, region, tags);
        Ok(())
    }

    async fn create_foreign_account_bucket(&self, name: &str) -> Result<()> {
        let tags = Tags::from([(INFRASTRUCTURE_NAME_TAG.to_owned(), "someone-else".to_owned())]);
        self.cloud().insert_bucket("another-account", name, self.region(), tags);
        Ok(())
    }

    async fn set_encryption(&self, name: &str, encryption: Option<Encryption>) -> Result<()> {
        self.cloud().tamper(name, |b| b.encryption = encryption)
    }

    async fn set_public_access(&self, name: &str, block: PublicAccessBlock) -> Result<()> {
        self.cloud().tamper(name, |b| b.public_access = block)
    }

    async fn set_lifecycle(&self, name: &str, rules: Vec<LifecycleRule>) -> Result<()> {
        self.cloud().tamper(name, |b| b.lifecycle = rules)
    }

    async fn set_tags(&self, name: &str, tags: Tags) -> Result<()> {
        self.cloud().tamper(name, |b| b.tags = tags)
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.cloud().lock().buckets.remove(name);
        Ok(())
    }

    async fn refuse_inspection(&self, name: &str) -> Result<()> {
        self.cloud().with_bucket(name, |b| b.refuses_inspection = true)
    }

    async fn put_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.cloud().with_bucket(bucket, |b| {
            b.objects.insert(key.into());
        })
    }

    async fn object_keys(&self, bucket: &str) -> Result<Vec<String>> {
        self.cloud().with_bucket(bucket, |b| b.objects.iter().cloned().collect())
    }

    async fn bucket_exists(&self, name: &str) -> Result<bool> {
        Ok(self.cloud().lock().buckets.contains_key(name))
    }

    async fn inject_fault(&self, fault: Fault) -> Result<()> {
        self.cloud().inject(fault);
        Ok(())
    }

    fn writes(&self) -> Option<u64> {
        Some(self.cloud().writes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> BucketSpec {
        BucketSpec {
            name: name.into(),
            region: "eu-west-1".into(),
            owner: Owner::new("c1"),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(90),
            applied_retention_days: None,
        }
    }

    #[tokio::test]
    async fn steady_state_is_reads_only() {
        let platform = InMemoryPlatform::new("eu-west-1");
        let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
        store.ensure_bucket(&spec("b1")).await.expect("create");
        let writes = platform.cloud().writes();
        let reads = platform.cloud().reads();
        let report = store.ensure_bucket(&spec("b1")).await.expect("steady");
        assert!(report.is_unchanged());
        assert_eq!(platform.cloud().writes(), writes);
        assert_eq!(platform.cloud().reads(), reads + 2);
    }

    #[tokio::test]
    async fn only_the_drifted_setting_is_written() {
        let platform = InMemoryPlatform::new("eu-west-1");
        let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
        store.ensure_bucket(&spec("b1")).await.expect("create");
        platform.set_public_access("b1", PublicAccessBlock::default()).await.expect("tamper");
        let report = store.ensure_bucket(&spec("b1")).await.expect("correct");
        assert_eq!(report.corrected, vec![Setting::PublicAccess]);
        assert_eq!(platform.cloud().calls("PutPublicAccessBlock"), 1);
        assert_eq!(platform.cloud().calls("PutBucketTagging"), 0);
    }

    #[tokio::test]
    async fn targeted_faults_wait_for_their_operation() {
        let platform = InMemoryPlatform::new("eu-west-1");
        platform.cloud().inject_at("CreateBucket", Fault::Unavailable);
        let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
        store.find_bucket(&Owner::new("c1")).await.expect("listing is not targeted");
        let err = store.ensure_bucket(&spec("b1")).await.expect_err("create fails");
        assert!(matches!(err, Error::Unavailable { .. }));
        assert!(platform.cloud().bucket_names().is_empty());
        store.ensure_bucket(&spec("b1")).await.expect("next create works");
    }

    #[tokio::test]
    async fn faults_fail_one_call_each() {
        let platform = InMemoryPlatform::new("eu-west-1");
        platform.cloud().inject(Fault::Throttled);
        let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
        let err = store.ensure_bucket(&spec("b1")).await.expect_err("throttled");
        assert!(matches!(err, Error::Throttled { .. }));
        store.ensure_bucket(&spec("b1")).await.expect("recovers");
    }
}
