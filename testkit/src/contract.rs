//! The provider contract suite: every rule an [`ObjectStore`] must follow, as one `pub async fn`
//! per rule, and [`contract_suite!`](crate::contract_suite) to run them all for a provider.
//!
//! A case gets a [`Harness`]: the store under test, its claimed [`Capabilities`], and a
//! [`Backdoor`] that changes the backend out of band (drift, foreign buckets, faults) the way a
//! person with console access would. Cases whose capability is not claimed are skipped with a
//! printed reason; [`unclaimed_capabilities_answer_not_supported`] checks the other side.
//! Every case uses its own random owner identity and bucket names, so cases may share a backend.

use std::{future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use mvo_core::{
    BucketSpec, BucketState, Capabilities, Encryption, Error, LifecycleAction, LifecycleRule, ObjectStore,
    Owner, PublicAccessBlock, Recovery, Result, Setting, Tags,
    bucket::{BACKUP_EXPIRY_RULE_ID, BACKUPS_PREFIX},
    owner::{BACKUP_LOCATION_TAG, INFRASTRUCTURE_NAME_TAG},
};

/// A failure the backend can be told to produce on the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The cloud asks to slow down (S3 `SlowDown`, HTTP 429).
    Throttled,
    /// The cloud fails temporarily (HTTP 5xx, timeout).
    Unavailable,
    /// The caller lacks a permission (HTTP 403).
    PermissionDenied,
    /// The credentials are rejected (HTTP 401, expired token).
    Unauthenticated,
}

impl Fault {
    /// The [`Error`] a provider must map this fault to, for `operation`.
    pub fn to_error(self, operation: &str) -> Error {
        match self {
            Fault::Throttled => Error::Throttled { message: format!("{operation}: slow down") },
            Fault::Unavailable => Error::Unavailable { message: format!("{operation}: service unavailable") },
            Fault::PermissionDenied => {
                Error::PermissionDenied { operation: operation.into(), message: "access denied".into() }
            }
            Fault::Unauthenticated => {
                Error::Unauthenticated { message: format!("{operation}: token expired") }
            }
        }
    }

    fn matches(self, err: &Error) -> bool {
        matches!(
            (self, err),
            (Fault::Throttled, Error::Throttled { .. })
                | (Fault::Unavailable, Error::Unavailable { .. })
                | (Fault::PermissionDenied, Error::PermissionDenied { .. })
                | (Fault::Unauthenticated, Error::Unauthenticated { .. })
        )
    }
}

/// Out-of-band access to a provider's backend, for setting up and checking cases.
///
/// Operations a backend cannot perform return [`Error::NotSupported`]; cases that need them are
/// then skipped with a printed reason.
#[async_trait]
pub trait Backdoor: Send + Sync {
    /// Creates a bucket in the tested account and region with exactly `tags` and no hardening.
    async fn create_plain_bucket(&self, name: &str, region: &str, tags: Tags) -> Result<()>;
    /// Creates a bucket named `name` that belongs to another account or project.
    async fn create_foreign_account_bucket(&self, name: &str) -> Result<()>;
    /// Replaces the bucket's default encryption (`None` removes it).
    async fn set_encryption(&self, name: &str, encryption: Option<Encryption>) -> Result<()>;
    /// Replaces the bucket's public access settings.
    async fn set_public_access(&self, name: &str, block: PublicAccessBlock) -> Result<()>;
    /// Replaces the bucket's lifecycle rules (empty removes them).
    async fn set_lifecycle(&self, name: &str, rules: Vec<LifecycleRule>) -> Result<()>;
    /// Replaces the bucket's tags or labels.
    async fn set_tags(&self, name: &str, tags: Tags) -> Result<()>;
    /// Deletes the bucket (and its objects) out of band.
    async fn delete_bucket(&self, name: &str) -> Result<()>;
    /// Makes the bucket list but refuse every inspection (access denied).
    async fn refuse_inspection(&self, name: &str) -> Result<()>;
    /// Stores an object.
    async fn put_object(&self, bucket: &str, key: &str) -> Result<()>;
    /// The keys of every object in the bucket, sorted.
    async fn object_keys(&self, bucket: &str) -> Result<Vec<String>>;
    /// Whether a bucket of this name exists in any account.
    async fn bucket_exists(&self, name: &str) -> Result<bool>;
    /// Makes the next provider call fail with `fault`.
    async fn inject_fault(&self, fault: Fault) -> Result<()>;
    /// Total cloud write calls the provider has made, when the backend can count them.
    fn writes(&self) -> Option<u64>;
}

/// How a provider stores owner identity on buckets: core's owner-mark style, re-exported here
/// for existing harnesses.
pub use mvo_core::TagStyle;

/// Everything a contract case needs.
#[derive(Clone)]
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn ObjectStore>,
    /// What the provider claims.
    pub capabilities: Capabilities,
    /// Out-of-band access to its backend.
    pub backdoor: Arc<dyn Backdoor>,
    /// The region the store works in.
    pub region: String,
    /// How owner identity is written.
    pub tag_style: TagStyle,
    /// A customer-managed key the backend accepts, for the KMS case.
    pub kms_key: String,
}

impl Harness {
    /// A fresh owner identity, unique to the calling case.
    pub fn owner(&self) -> Owner {
        Owner::new(format!("contract-{}", short_id()))
    }

    /// A fresh bucket name, unique to the calling case.
    pub fn bucket_name(&self) -> String {
        format!("mvo-contract-{}", short_id())
    }

    /// The default spec of a new bucket for `owner`.
    pub fn spec(&self, owner: &Owner) -> BucketSpec {
        BucketSpec {
            name: self.bucket_name(),
            region: self.region.clone(),
            owner: owner.clone(),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(90),
            applied_retention_days: None,
        }
    }

    /// The owner tags in the provider's style.
    pub fn owner_tags(&self, owner: &Owner) -> Tags {
        self.tag_style.marks(owner)
    }

    /// The settings in which `state` differs from `spec`, among those the provider claims to
    /// enforce (a setting it declares unsupported is the account owner's, not drift).
    fn drift(&self, state: &BucketState, spec: &BucketSpec) -> Vec<Setting> {
        let mut drifted = state.drift(spec, self.tag_style);
        if !self.capabilities.lifecycle_rules {
            drifted.retain(|s| *s != Setting::Lifecycle);
        }
        if !self.capabilities.default_encryption {
            drifted.retain(|s| *s != Setting::Encryption);
        }
        drifted
    }

    fn foreign_tag(&self) -> (String, String) {
        // A key every cloud accepts as written: Azure metadata names are C# identifiers (no `-`).
        ("cost_center".into(), "backup-team-42".into())
    }

    fn claims(&self, case: &str, needed: &[(&str, bool)]) -> bool {
        let missing: Vec<&str> = needed.iter().filter(|(_, has)| !has).map(|(name, _)| *name).collect();
        if missing.is_empty() {
            return true;
        }
        eprintln!("skipping contract case {case}: provider does not claim {}", missing.join(", "));
        false
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Runs a backdoor setup step; `None` (with a printed reason) when the backend cannot do it.
async fn setup<T>(case: &str, step: impl Future<Output = Result<T>>) -> Option<T> {
    match step.await {
        Ok(value) => Some(value),
        Err(Error::NotSupported { operation, .. }) => {
            eprintln!("skipping contract case {case}: backend cannot {operation}");
            None
        }
        Err(err) => panic!("{case}: backdoor setup failed: {err}"),
    }
}

/// A boxed case future, as [`CASES`] stores them.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        /// Every contract case by name, for runners that iterate instead of using the macro.
        pub const CASES: &[(&str, for<'a> fn(&'a Harness) -> CaseFuture<'a>)] =
            &[$((stringify!($case), |h| Box::pin($case(h)))),*];

        /// Expands to one `#[tokio::test]` per contract case, each building a [`Harness`] with
        /// `$make` (an expression evaluating to a future of a `Harness`). The calling crate needs
        /// `tokio` (macros, rt-multi-thread) as a dev-dependency.
        #[macro_export]
        macro_rules! contract_suite {
            ($make:expr) => {
                $(
                    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let harness: $crate::Harness = ($make).await;
                        $crate::contract::$case(&harness).await;
                    }
                )*
            };
        }
    };
}

cases!(
    create_is_idempotent,
    new_bucket_is_hardened,
    encryption_drift_is_corrected,
    kms_encryption_is_enforced,
    public_access_drift_is_corrected,
    lifecycle_drift_is_corrected,
    retention_change_keeps_foreign_lifecycle_rules,
    tag_drift_is_corrected_and_foreign_tags_survive,
    recovery_finds_exactly_the_owners_bucket,
    recovery_refuses_ambiguity,
    recovery_skips_uninspectable_buckets,
    recovery_reports_absence,
    name_taken_by_another_account_is_refused,
    bucket_of_another_cluster_is_refused,
    missing_bucket_is_reported_not_invented,
    deleted_bucket_is_recreated_with_the_same_name,
    objects_are_never_deleted,
    faults_map_to_error_variants,
    unclaimed_capabilities_answer_not_supported,
);

/// Ensuring twice creates once; the second call writes nothing and observes the same bucket.
pub async fn create_is_idempotent(h: &Harness) {
    if !h.claims("create_is_idempotent", &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    let first = h.store.ensure_bucket(&spec).await.expect("first ensure");
    assert!(first.created, "first ensure must create");
    let writes = h.backdoor.writes();
    let second = h.store.ensure_bucket(&spec).await.expect("second ensure");
    assert!(second.is_unchanged(), "second ensure changed {:?}", second.corrected);
    assert_eq!(second.state, first.state);
    assert_eq!(h.backdoor.writes(), writes, "second ensure wrote to the cloud");
    assert_eq!(h.store.observe_bucket(&spec.name).await.expect("observe"), second.state);
}

/// A created bucket has every enforced setting: encryption, public access blocked, the managed
/// lifecycle rules and both owner tags.
pub async fn new_bucket_is_hardened(h: &Harness) {
    if !h.claims("new_bucket_is_hardened", &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let owner = h.owner();
    let spec = h.spec(&owner);
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(h.drift(&state, &spec), Vec::<Setting>::new(), "{state:?}");
    for (k, v) in h.owner_tags(&owner) {
        assert_eq!(state.tags.get(&k), Some(&v), "owner tag {k}");
    }
}

async fn drift_case(
    h: &Harness,
    case: &str,
    needed: &[(&str, bool)],
    setting: Setting,
    tamper: impl AsyncFnOnce(&str) -> Result<()>,
) {
    if !h.claims(case, needed) {
        return;
    }
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    if setup(case, tamper(&spec.name)).await.is_none() {
        return;
    }
    let report = h.store.ensure_bucket(&spec).await.expect("correcting ensure");
    assert!(!report.created);
    assert_eq!(report.corrected, vec![setting], "only the drifted setting is corrected");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert!(h.drift(&state, &spec).is_empty(), "still drifted: {state:?}");
}

/// Removed default encryption is detected and restored, and nothing else is written.
pub async fn encryption_drift_is_corrected(h: &Harness) {
    let needed =
        [("buckets", h.capabilities.buckets), ("default_encryption", h.capabilities.default_encryption)];
    drift_case(h, "encryption_drift_is_corrected", &needed, Setting::Encryption, async |name| {
        h.backdoor.set_encryption(name, None).await
    })
    .await;
}

/// A customer-managed key is applied on create and enforced when drifted to provider-managed
/// keys; asking for provider-managed keys never weakens a bucket that has a customer key.
pub async fn kms_encryption_is_enforced(h: &Harness) {
    let needed = [("buckets", h.capabilities.buckets), ("kms", h.capabilities.kms)];
    if !h.claims("kms_encryption_is_enforced", &needed) {
        return;
    }
    let mut spec = h.spec(&h.owner());
    spec.encryption = Encryption::Kms { key: h.kms_key.clone() };
    let report = h.store.ensure_bucket(&spec).await.expect("create with KMS");
    assert_eq!(report.state.encryption, Some(spec.encryption.clone()));
    let kms = spec.encryption.clone();
    spec.encryption = Encryption::ProviderManaged;
    let report = h.store.ensure_bucket(&spec).await.expect("provider keys asked for");
    assert!(report.is_unchanged(), "weakened a KMS bucket: {:?}", report.corrected);
    assert_eq!(report.state.encryption, Some(kms.clone()));
    if setup(
        "kms_encryption_is_enforced",
        h.backdoor.set_encryption(&spec.name, Some(Encryption::ProviderManaged)),
    )
    .await
    .is_none()
    {
        return;
    }
    spec.encryption = kms.clone();
    let report = h.store.ensure_bucket(&spec).await.expect("key restored");
    assert_eq!(report.corrected, vec![Setting::Encryption]);
    assert_eq!(report.state.encryption, Some(kms));
}

/// Any public-access flag turned off is turned back on.
pub async fn public_access_drift_is_corrected(h: &Harness) {
    let needed =
        [("buckets", h.capabilities.buckets), ("public_access_block", h.capabilities.public_access_block)];
    drift_case(h, "public_access_drift_is_corrected", &needed, Setting::PublicAccess, async |name| {
        let block = PublicAccessBlock { restrict_public_buckets: false, ..PublicAccessBlock::ALL_BLOCKED };
        h.backdoor.set_public_access(name, block).await
    })
    .await;
}

/// Deleted lifecycle rules are restored.
pub async fn lifecycle_drift_is_corrected(h: &Harness) {
    let needed = [("buckets", h.capabilities.buckets), ("lifecycle_rules", h.capabilities.lifecycle_rules)];
    drift_case(h, "lifecycle_drift_is_corrected", &needed, Setting::Lifecycle, async |name| {
        h.backdoor.set_lifecycle(name, Vec::new()).await
    })
    .await;
}

/// Changing the retention rewrites only the managed `backups/` rule; a user's rule survives and
/// no managed rule ever covers another prefix.
pub async fn retention_change_keeps_foreign_lifecycle_rules(h: &Harness) {
    let case = "retention_change_keeps_foreign_lifecycle_rules";
    let needed = [("buckets", h.capabilities.buckets), ("lifecycle_rules", h.capabilities.lifecycle_rules)];
    if !h.claims(case, &needed) {
        return;
    }
    let mut spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let foreign = LifecycleRule {
        id: "user-logs-expiry".into(),
        prefix: "logs/".into(),
        action: LifecycleAction::Expire { days: 3 },
        enabled: true,
    };
    let mut rules = h.store.observe_bucket(&spec.name).await.expect("observe").lifecycle;
    rules.push(foreign.clone());
    if setup(case, h.backdoor.set_lifecycle(&spec.name, rules)).await.is_none() {
        return;
    }
    // The operator records what it applied and names it on the next call (GCS has no rule IDs).
    spec.applied_retention_days = spec.retention_days;
    spec.retention_days = Some(30);
    let report = h.store.ensure_bucket(&spec).await.expect("ensure new retention");
    assert_eq!(report.corrected, vec![Setting::Lifecycle]);
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    // GCS rules carry no IDs: label-style providers report foreign rules under synthetic IDs.
    let same = |r: &LifecycleRule| {
        (h.tag_style == TagStyle::Labels || r.id == foreign.id)
            && (r.prefix.as_str(), r.action, r.enabled)
                == (foreign.prefix.as_str(), foreign.action, foreign.enabled)
    };
    assert!(state.lifecycle.iter().any(same), "foreign rule lost: {:?}", state.lifecycle);
    let expiry = state.lifecycle.iter().find(|r| r.id == BACKUP_EXPIRY_RULE_ID).expect("expiry rule");
    assert_eq!(
        (expiry.prefix.as_str(), expiry.action),
        (BACKUPS_PREFIX, LifecycleAction::Expire { days: 30 })
    );
    for rule in state.lifecycle.iter().filter(|r| r.is_managed()) {
        let covers_backups_only = rule.prefix == BACKUPS_PREFIX;
        let aborts_uploads_only = matches!(rule.action, LifecycleAction::AbortIncompleteUpload { .. });
        assert!(covers_backups_only || aborts_uploads_only, "managed rule reaches too far: {rule:?}");
    }
}

/// A stripped owner tag is restored and a foreign tag added meanwhile survives.
pub async fn tag_drift_is_corrected_and_foreign_tags_survive(h: &Harness) {
    let case = "tag_drift_is_corrected_and_foreign_tags_survive";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let owner = h.owner();
    let spec = h.spec(&owner);
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let (key, value) = h.foreign_tag();
    let mut tags = h.owner_tags(&owner);
    tags.retain(|k, _| !k.contains("backup"));
    tags.insert(key.clone(), value.clone());
    if setup(case, h.backdoor.set_tags(&spec.name, tags)).await.is_none() {
        return;
    }
    let report = h.store.ensure_bucket(&spec).await.expect("correcting ensure");
    assert_eq!(report.corrected, vec![Setting::Tags]);
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(state.tags.get(&key), Some(&value), "foreign tag lost");
    for (k, v) in h.owner_tags(&owner) {
        assert_eq!(state.tags.get(&k), Some(&v), "owner tag {k}");
    }
    let again = h.store.ensure_bucket(&spec).await.expect("steady ensure");
    assert!(again.is_unchanged());
}

/// Recovery adopts only a bucket with both owner tags at exact values: not another cluster's,
/// not one with a single tag, not one whose value merely starts with ours.
pub async fn recovery_finds_exactly_the_owners_bucket(h: &Harness) {
    let case = "recovery_finds_exactly_the_owners_bucket";
    if !h.claims(case, &[("recovery", h.capabilities.recovery)]) {
        return;
    }
    let owner = h.owner();
    let ours = h.bucket_name();
    let decoys = [
        h.owner_tags(&Owner::new(format!("{}-other", owner.infrastructure_name))),
        h.owner_tags(&Owner::new("another-cluster")),
        h.owner_tags(&owner).into_iter().filter(|(k, _)| k.contains("infrastructure")).collect(),
        h.owner_tags(&owner).into_iter().filter(|(k, _)| k.contains("backup")).collect(),
    ];
    for tags in decoys {
        if setup(case, h.backdoor.create_plain_bucket(&h.bucket_name(), &h.region, tags)).await.is_none() {
            return;
        }
    }
    let mut tags = h.owner_tags(&owner);
    tags.insert("unrelated".into(), "tag".into());
    if setup(case, h.backdoor.create_plain_bucket(&ours, &h.region, tags)).await.is_none() {
        return;
    }
    let found = h.store.find_bucket(&owner).await.expect("find");
    assert!(matches!(&found, Recovery::Found { name, .. } if *name == ours), "{found:?}");
}

/// Two buckets with our owner tags: recovery names both and adopts neither.
pub async fn recovery_refuses_ambiguity(h: &Harness) {
    let case = "recovery_refuses_ambiguity";
    if !h.claims(case, &[("recovery", h.capabilities.recovery)]) {
        return;
    }
    let owner = h.owner();
    let mut names = vec![h.bucket_name(), h.bucket_name()];
    for name in &names {
        if setup(case, h.backdoor.create_plain_bucket(name, &h.region, h.owner_tags(&owner))).await.is_none()
        {
            return;
        }
    }
    names.sort();
    let found = h.store.find_bucket(&owner).await.expect("find");
    assert!(matches!(&found, Recovery::Ambiguous { names: got, .. } if *got == names), "{found:?}");
}

/// A bucket that refuses inspection is skipped and counted; recovery still finds ours.
pub async fn recovery_skips_uninspectable_buckets(h: &Harness) {
    let case = "recovery_skips_uninspectable_buckets";
    if !h.claims(case, &[("recovery", h.capabilities.recovery)]) {
        return;
    }
    let owner = h.owner();
    let (ours, locked) = (h.bucket_name(), h.bucket_name());
    let empty = Tags::new();
    if setup(case, h.backdoor.create_plain_bucket(&locked, &h.region, empty)).await.is_none()
        || setup(case, h.backdoor.refuse_inspection(&locked)).await.is_none()
        || setup(case, h.backdoor.create_plain_bucket(&ours, &h.region, h.owner_tags(&owner))).await.is_none()
    {
        return;
    }
    let found = h.store.find_bucket(&owner).await.expect("find despite a locked bucket");
    assert!(matches!(&found, Recovery::Found { name, .. } if *name == ours), "{found:?}");
    assert!(found.skipped() >= 1, "locked bucket not counted: {found:?}");
}

/// With no bucket of ours, recovery says so instead of picking anything.
pub async fn recovery_reports_absence(h: &Harness) {
    if !h.claims("recovery_reports_absence", &[("recovery", h.capabilities.recovery)]) {
        return;
    }
    let found = h.store.find_bucket(&h.owner()).await.expect("find");
    assert!(matches!(found, Recovery::NotFound { .. }), "{found:?}");
}

/// A name taken by another account yields `AlreadyOwnedByOther` and that bucket is untouched.
pub async fn name_taken_by_another_account_is_refused(h: &Harness) {
    let case = "name_taken_by_another_account_is_refused";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    if setup(case, h.backdoor.create_foreign_account_bucket(&spec.name)).await.is_none() {
        return;
    }
    let writes = h.backdoor.writes();
    let err = h.store.ensure_bucket(&spec).await.expect_err("taken name");
    assert!(matches!(err, Error::AlreadyOwnedByOther { ref bucket } if *bucket == spec.name), "{err}");
    assert_eq!(h.backdoor.writes(), writes, "wrote to someone else's bucket");
}

/// A bucket in our account that carries another cluster's infrastructure tag is not taken over.
pub async fn bucket_of_another_cluster_is_refused(h: &Harness) {
    let case = "bucket_of_another_cluster_is_refused";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    let theirs = h.owner_tags(&Owner::new("another-cluster"));
    if setup(case, h.backdoor.create_plain_bucket(&spec.name, &h.region, theirs.clone())).await.is_none() {
        return;
    }
    let err = h.store.ensure_bucket(&spec).await.expect_err("another cluster's bucket");
    assert!(matches!(err, Error::AlreadyOwnedByOther { .. }), "{err}");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(state.tags, theirs, "their tags changed");
}

/// Observing a bucket that does not exist is `NotFound` and creates nothing.
pub async fn missing_bucket_is_reported_not_invented(h: &Harness) {
    let case = "missing_bucket_is_reported_not_invented";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let name = h.bucket_name();
    let err = h.store.observe_bucket(&name).await.expect_err("missing bucket");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!h.backdoor.bucket_exists(&name).await.expect("exists check"), "observe created the bucket");
}

/// A bucket deleted out of band is reported missing, then re-created under the same name.
pub async fn deleted_bucket_is_recreated_with_the_same_name(h: &Harness) {
    let case = "deleted_bucket_is_recreated_with_the_same_name";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    if setup(case, h.backdoor.delete_bucket(&spec.name)).await.is_none() {
        return;
    }
    let err = h.store.observe_bucket(&spec.name).await.expect_err("deleted");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let report = h.store.ensure_bucket(&spec).await.expect("re-create");
    assert!(report.created);
    assert_eq!(report.state.name, spec.name);
}

/// Enforcing settings never deletes an object, under any prefix.
pub async fn objects_are_never_deleted(h: &Harness) {
    let case = "objects_are_never_deleted";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let keys = ["backups/b1/velero-backup.json", "kopia/default/kopia.repository", "restic/x/config"];
    for key in keys {
        if setup(case, h.backdoor.put_object(&spec.name, key)).await.is_none() {
            return;
        }
    }
    // Drift everything the backend lets us drift, then enforce.
    let _ = h.backdoor.set_encryption(&spec.name, None).await;
    let _ = h.backdoor.set_lifecycle(&spec.name, Vec::new()).await;
    let _ = h.backdoor.set_tags(&spec.name, Tags::new()).await;
    h.store.ensure_bucket(&spec).await.expect("enforce");
    h.store.ensure_bucket(&spec).await.expect("enforce again");
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(h.backdoor.object_keys(&spec.name).await.expect("list objects"), expected);
}

/// Throttling, outages, denied permissions and rejected credentials reach the caller as the
/// matching variant, with the right retryability, and the next call works again.
pub async fn faults_map_to_error_variants(h: &Harness) {
    let case = "faults_map_to_error_variants";
    if !h.claims(case, &[("buckets", h.capabilities.buckets)]) {
        return;
    }
    let spec = h.spec(&h.owner());
    for (fault, retryable) in [
        (Fault::Throttled, true),
        (Fault::Unavailable, true),
        (Fault::PermissionDenied, false),
        (Fault::Unauthenticated, true),
    ] {
        if setup(case, h.backdoor.inject_fault(fault)).await.is_none() {
            return;
        }
        let err = h.store.ensure_bucket(&spec).await.expect_err("injected fault");
        assert!(fault.matches(&err), "{fault:?} surfaced as {err:?}");
        assert_eq!(err.is_retryable(), retryable, "{fault:?}");
    }
    h.store.ensure_bucket(&spec).await.expect("works after the faults");
}

/// Operations behind capabilities the provider does not claim answer `NotSupported`.
pub async fn unclaimed_capabilities_answer_not_supported(h: &Harness) {
    let not_supported = |r: Result<()>| matches!(r, Err(Error::NotSupported { .. }));
    if !h.capabilities.buckets {
        let spec = h.spec(&h.owner());
        assert!(not_supported(h.store.ensure_bucket(&spec).await.map(drop)), "ensure_bucket");
        assert!(not_supported(h.store.observe_bucket(&spec.name).await.map(drop)), "observe_bucket");
    }
    if !h.capabilities.recovery {
        assert!(not_supported(h.store.find_bucket(&h.owner()).await.map(drop)), "find_bucket");
    }
}

/// The owner tag keys, re-exported for backdoors that build tags by hand.
pub const OWNER_TAG_KEYS: [&str; 2] = [INFRASTRUCTURE_NAME_TAG, BACKUP_LOCATION_TAG];
