//! The provider contract suite: every rule an [`ObjectStore`] must follow, as one `pub async fn`
//! per rule, declared once in [`CASES`] with the capabilities it needs, and [`main`] to run them
//! all for a provider as a test binary (`harness = false`).
//!
//! A case gets a [`Harness`]: the store under test, its claimed [`Capabilities`], and a
//! [`Backdoor`] that changes the backend out of band (drift, foreign buckets, faults) the way a
//! person with console access would. A case whose capability the provider does not claim, or
//! whose setup the backend cannot perform, is reported as *ignored* with the reason, never as
//! passed; [`unclaimed_capabilities_answer_not_supported`] checks the other side of a claim.
//! Every case uses its own random owner identity and bucket names, so cases may share a backend.

use std::{future::Future, pin::Pin, process::ExitCode, sync::Arc};

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
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Why a case did not run to the end: what the provider or its backend cannot do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored(pub String);

/// What a case returns: `Ok` when every assertion held (a failed one panics).
pub type Outcome = std::result::Result<(), Ignored>;

/// Runs a backdoor setup step; [`Ignored`] when the backend cannot perform it.
async fn setup<T>(step: impl Future<Output = Result<T>>) -> std::result::Result<T, Ignored> {
    match step.await {
        Ok(value) => Ok(value),
        Err(Error::NotSupported { operation, .. }) => Err(Ignored(format!("the backend cannot {operation}"))),
        Err(err) => panic!("backdoor setup failed: {err}"),
    }
}

/// A capability a case needs the provider to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// [`Capabilities::buckets`].
    Buckets,
    /// [`Capabilities::recovery`].
    Recovery,
    /// [`Capabilities::lifecycle_rules`].
    LifecycleRules,
    /// [`Capabilities::public_access_block`].
    PublicAccessBlock,
    /// [`Capabilities::default_encryption`].
    DefaultEncryption,
    /// [`Capabilities::kms`].
    Kms,
}

impl Capability {
    /// Whether `claimed` includes this capability.
    pub fn claimed_in(self, claimed: &Capabilities) -> bool {
        match self {
            Capability::Buckets => claimed.buckets,
            Capability::Recovery => claimed.recovery,
            Capability::LifecycleRules => claimed.lifecycle_rules,
            Capability::PublicAccessBlock => claimed.public_access_block,
            Capability::DefaultEncryption => claimed.default_encryption,
            Capability::Kms => claimed.kms,
        }
    }

    /// The field name in [`Capabilities`].
    pub fn name(self) -> &'static str {
        match self {
            Capability::Buckets => "buckets",
            Capability::Recovery => "recovery",
            Capability::LifecycleRules => "lifecycle_rules",
            Capability::PublicAccessBlock => "public_access_block",
            Capability::DefaultEncryption => "default_encryption",
            Capability::Kms => "kms",
        }
    }
}

/// One contract case: its name, what it needs the provider to claim, and the rule it checks.
pub struct Case {
    /// The case's function name, the test's name.
    pub name: &'static str,
    /// Capabilities the provider must claim for the case to run.
    pub needs: &'static [Capability],
    /// The case itself.
    pub run: for<'a> fn(&'a Harness) -> CaseFuture<'a>,
}

impl Case {
    /// Why the case is ignored for a provider claiming `claimed`, or `None` when it runs.
    pub fn unclaimed(&self, claimed: &Capabilities) -> Option<Ignored> {
        let missing: Vec<&str> =
            self.needs.iter().filter(|c| !c.claimed_in(claimed)).map(|c| c.name()).collect();
        (!missing.is_empty()).then(|| Ignored(format!("the provider does not claim {}", missing.join(", "))))
    }

    /// Runs the case on a harness, or says why it does not apply.
    pub async fn check(&self, harness: &Harness) -> Outcome {
        match self.unclaimed(&harness.capabilities) {
            Some(ignored) => Err(ignored),
            None => (self.run)(harness).await,
        }
    }
}

/// Runs every case of [`CASES`] as one test each, with the standard test-binary arguments
/// (filters, `--list`, `--test-threads`): the `main` of a provider's contract test target, which
/// sets `harness = false`. Each case gets its own runtime and a harness built by `make`.
pub fn main<F, Fut>(make: F) -> ExitCode
where
    F: Fn() -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Harness>,
{
    let args = libtest_mimic::Arguments::from_args();
    let trials = CASES
        .iter()
        .map(|case| {
            libtest_mimic::Trial::ignorable_test(case.name, move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|err| format!("cannot start a runtime: {err}"))?;
                let outcome = runtime.block_on(async { case.check(&make().await).await });
                Ok(match outcome {
                    Ok(()) => libtest_mimic::Completion::Completed,
                    Err(Ignored(reason)) => libtest_mimic::Completion::ignored_with(reason),
                })
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// A boxed case future, as [`CASES`] stores them.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

macro_rules! cases {
    ($($case:ident: [$($need:ident),*]),* $(,)?) => {
        /// Every contract case, with the capabilities it needs.
        pub const CASES: &[Case] = &[$(Case {
            name: stringify!($case),
            needs: &[$(Capability::$need),*],
            run: |h| Box::pin($case(h)),
        }),*];
    };
}

cases!(
    create_is_idempotent: [Buckets],
    new_bucket_is_hardened: [Buckets],
    encryption_drift_is_corrected: [Buckets, DefaultEncryption],
    kms_encryption_is_enforced: [Buckets, Kms],
    public_access_drift_is_corrected: [Buckets, PublicAccessBlock],
    lifecycle_drift_is_corrected: [Buckets, LifecycleRules],
    retention_change_keeps_foreign_lifecycle_rules: [Buckets, LifecycleRules],
    tag_drift_is_corrected_and_foreign_tags_survive: [Buckets],
    recovery_finds_exactly_the_owners_bucket: [Recovery],
    recovery_refuses_ambiguity: [Recovery],
    recovery_skips_uninspectable_buckets: [Recovery],
    recovery_reports_absence: [Recovery],
    name_taken_by_another_account_is_refused: [Buckets],
    bucket_of_another_cluster_is_refused: [Buckets],
    missing_bucket_is_reported_not_invented: [Buckets],
    deleted_bucket_is_recreated_with_the_same_name: [Buckets],
    objects_are_never_deleted: [Buckets],
    faults_map_to_error_variants: [Buckets],
    unclaimed_capabilities_answer_not_supported: [],
);

/// Ensuring twice creates once; the second call writes nothing and observes the same bucket.
pub async fn create_is_idempotent(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    let first = h.store.ensure_bucket(&spec).await.expect("first ensure");
    assert!(first.created, "first ensure must create");
    let writes = h.backdoor.writes();
    let second = h.store.ensure_bucket(&spec).await.expect("second ensure");
    assert!(second.is_unchanged(), "second ensure changed {:?}", second.corrected);
    assert_eq!(second.state, first.state);
    assert_eq!(h.backdoor.writes(), writes, "second ensure wrote to the cloud");
    assert_eq!(h.store.observe_bucket(&spec.name).await.expect("observe"), second.state);
    Ok(())
}

/// A created bucket has every enforced setting: encryption, public access blocked, the managed
/// lifecycle rules and both owner tags.
pub async fn new_bucket_is_hardened(h: &Harness) -> Outcome {
    let owner = h.owner();
    let spec = h.spec(&owner);
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(h.drift(&state, &spec), Vec::<Setting>::new(), "{state:?}");
    for (k, v) in h.owner_tags(&owner) {
        assert_eq!(state.tags.get(&k), Some(&v), "owner tag {k}");
    }
    Ok(())
}

async fn drift_case(h: &Harness, setting: Setting, tamper: impl AsyncFnOnce(&str) -> Result<()>) -> Outcome {
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    setup(tamper(&spec.name)).await?;
    let report = h.store.ensure_bucket(&spec).await.expect("correcting ensure");
    assert!(!report.created);
    assert_eq!(report.corrected, vec![setting], "only the drifted setting is corrected");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert!(h.drift(&state, &spec).is_empty(), "still drifted: {state:?}");
    Ok(())
}

/// Removed default encryption is detected and restored, and nothing else is written.
pub async fn encryption_drift_is_corrected(h: &Harness) -> Outcome {
    drift_case(h, Setting::Encryption, async |name| h.backdoor.set_encryption(name, None).await).await
}

/// A customer-managed key is applied on create and enforced when drifted to provider-managed
/// keys; asking for provider-managed keys never weakens a bucket that has a customer key.
pub async fn kms_encryption_is_enforced(h: &Harness) -> Outcome {
    let mut spec = h.spec(&h.owner());
    spec.encryption = Encryption::Kms { key: h.kms_key.clone() };
    let report = h.store.ensure_bucket(&spec).await.expect("create with KMS");
    assert_eq!(report.state.encryption, Some(spec.encryption.clone()));
    let kms = spec.encryption.clone();
    spec.encryption = Encryption::ProviderManaged;
    let report = h.store.ensure_bucket(&spec).await.expect("provider keys asked for");
    assert!(report.is_unchanged(), "weakened a KMS bucket: {:?}", report.corrected);
    assert_eq!(report.state.encryption, Some(kms.clone()));
    setup(h.backdoor.set_encryption(&spec.name, Some(Encryption::ProviderManaged))).await?;
    spec.encryption = kms.clone();
    let report = h.store.ensure_bucket(&spec).await.expect("key restored");
    assert_eq!(report.corrected, vec![Setting::Encryption]);
    assert_eq!(report.state.encryption, Some(kms));
    Ok(())
}

/// Any public-access flag turned off is turned back on.
pub async fn public_access_drift_is_corrected(h: &Harness) -> Outcome {
    drift_case(h, Setting::PublicAccess, async |name| {
        let block = PublicAccessBlock { restrict_public_buckets: false, ..PublicAccessBlock::ALL_BLOCKED };
        h.backdoor.set_public_access(name, block).await
    })
    .await
}

/// Deleted lifecycle rules are restored.
pub async fn lifecycle_drift_is_corrected(h: &Harness) -> Outcome {
    drift_case(h, Setting::Lifecycle, async |name| h.backdoor.set_lifecycle(name, Vec::new()).await).await
}

/// Changing the retention rewrites only the managed `backups/` rule; a user's rule survives and
/// no managed rule ever covers another prefix.
pub async fn retention_change_keeps_foreign_lifecycle_rules(h: &Harness) -> Outcome {
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
    setup(h.backdoor.set_lifecycle(&spec.name, rules)).await?;
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
    Ok(())
}

/// A stripped owner tag is restored and a foreign tag added meanwhile survives.
pub async fn tag_drift_is_corrected_and_foreign_tags_survive(h: &Harness) -> Outcome {
    let owner = h.owner();
    let spec = h.spec(&owner);
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let (key, value) = h.foreign_tag();
    let mut tags = h.owner_tags(&owner);
    tags.retain(|k, _| !k.contains("backup"));
    tags.insert(key.clone(), value.clone());
    setup(h.backdoor.set_tags(&spec.name, tags)).await?;
    let report = h.store.ensure_bucket(&spec).await.expect("correcting ensure");
    assert_eq!(report.corrected, vec![Setting::Tags]);
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(state.tags.get(&key), Some(&value), "foreign tag lost");
    for (k, v) in h.owner_tags(&owner) {
        assert_eq!(state.tags.get(&k), Some(&v), "owner tag {k}");
    }
    let again = h.store.ensure_bucket(&spec).await.expect("steady ensure");
    assert!(again.is_unchanged());
    Ok(())
}

/// Recovery adopts only a bucket with both owner tags at exact values: not another cluster's,
/// not one with a single tag, not one whose value merely starts with ours.
pub async fn recovery_finds_exactly_the_owners_bucket(h: &Harness) -> Outcome {
    let owner = h.owner();
    let ours = h.bucket_name();
    let decoys = [
        h.owner_tags(&Owner::new(format!("{}-other", owner.infrastructure_name))),
        h.owner_tags(&Owner::new("another-cluster")),
        h.owner_tags(&owner).into_iter().filter(|(k, _)| k.contains("infrastructure")).collect(),
        h.owner_tags(&owner).into_iter().filter(|(k, _)| k.contains("backup")).collect(),
    ];
    for tags in decoys {
        setup(h.backdoor.create_plain_bucket(&h.bucket_name(), &h.region, tags)).await?;
    }
    let mut tags = h.owner_tags(&owner);
    tags.insert("unrelated".into(), "tag".into());
    setup(h.backdoor.create_plain_bucket(&ours, &h.region, tags)).await?;
    let found = h.store.find_bucket(&owner).await.expect("find");
    assert!(matches!(&found, Recovery::Found { name, .. } if *name == ours), "{found:?}");
    Ok(())
}

/// Two buckets with our owner tags: recovery names both and adopts neither.
pub async fn recovery_refuses_ambiguity(h: &Harness) -> Outcome {
    let owner = h.owner();
    let mut names = vec![h.bucket_name(), h.bucket_name()];
    for name in &names {
        setup(h.backdoor.create_plain_bucket(name, &h.region, h.owner_tags(&owner))).await?;
    }
    names.sort();
    let found = h.store.find_bucket(&owner).await.expect("find");
    assert!(matches!(&found, Recovery::Ambiguous { names: got, .. } if *got == names), "{found:?}");
    Ok(())
}

/// A bucket that refuses inspection is skipped and counted; recovery still finds ours.
pub async fn recovery_skips_uninspectable_buckets(h: &Harness) -> Outcome {
    let owner = h.owner();
    let (ours, locked) = (h.bucket_name(), h.bucket_name());
    let empty = Tags::new();
    setup(h.backdoor.create_plain_bucket(&locked, &h.region, empty)).await?;
    setup(h.backdoor.refuse_inspection(&locked)).await?;
    setup(h.backdoor.create_plain_bucket(&ours, &h.region, h.owner_tags(&owner))).await?;
    let found = h.store.find_bucket(&owner).await.expect("find despite a locked bucket");
    assert!(matches!(&found, Recovery::Found { name, .. } if *name == ours), "{found:?}");
    assert!(found.skipped() >= 1, "locked bucket not counted: {found:?}");
    Ok(())
}

/// With no bucket of ours, recovery says so instead of picking anything.
pub async fn recovery_reports_absence(h: &Harness) -> Outcome {
    let found = h.store.find_bucket(&h.owner()).await.expect("find");
    assert!(matches!(found, Recovery::NotFound { .. }), "{found:?}");
    Ok(())
}

/// A name taken by another account yields `AlreadyOwnedByOther` and that bucket is untouched.
pub async fn name_taken_by_another_account_is_refused(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    setup(h.backdoor.create_foreign_account_bucket(&spec.name)).await?;
    let writes = h.backdoor.writes();
    let err = h.store.ensure_bucket(&spec).await.expect_err("taken name");
    assert!(matches!(err, Error::AlreadyOwnedByOther { ref bucket } if *bucket == spec.name), "{err}");
    assert_eq!(h.backdoor.writes(), writes, "wrote to someone else's bucket");
    Ok(())
}

/// A bucket in our account that carries another cluster's infrastructure tag is not taken over.
pub async fn bucket_of_another_cluster_is_refused(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    let theirs = h.owner_tags(&Owner::new("another-cluster"));
    setup(h.backdoor.create_plain_bucket(&spec.name, &h.region, theirs.clone())).await?;
    let err = h.store.ensure_bucket(&spec).await.expect_err("another cluster's bucket");
    assert!(matches!(err, Error::AlreadyOwnedByOther { .. }), "{err}");
    let state = h.store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(state.tags, theirs, "their tags changed");
    Ok(())
}

/// Observing a bucket that does not exist is `NotFound` and creates nothing.
pub async fn missing_bucket_is_reported_not_invented(h: &Harness) -> Outcome {
    let name = h.bucket_name();
    let err = h.store.observe_bucket(&name).await.expect_err("missing bucket");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!h.backdoor.bucket_exists(&name).await.expect("exists check"), "observe created the bucket");
    Ok(())
}

/// A bucket deleted out of band is reported missing, then re-created under the same name.
pub async fn deleted_bucket_is_recreated_with_the_same_name(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    setup(h.backdoor.delete_bucket(&spec.name)).await?;
    let err = h.store.observe_bucket(&spec.name).await.expect_err("deleted");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let report = h.store.ensure_bucket(&spec).await.expect("re-create");
    assert!(report.created);
    assert_eq!(report.state.name, spec.name);
    Ok(())
}

/// Enforcing settings never deletes an object, under any prefix.
pub async fn objects_are_never_deleted(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    h.store.ensure_bucket(&spec).await.expect("ensure");
    let keys = ["backups/b1/velero-backup.json", "kopia/default/kopia.repository", "restic/x/config"];
    for key in keys {
        setup(h.backdoor.put_object(&spec.name, key)).await?;
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
    Ok(())
}

/// Throttling, outages, denied permissions and rejected credentials reach the caller as the
/// matching variant, with the right retryability, and the next call works again.
pub async fn faults_map_to_error_variants(h: &Harness) -> Outcome {
    let spec = h.spec(&h.owner());
    for (fault, retryable) in [
        (Fault::Throttled, true),
        (Fault::Unavailable, true),
        (Fault::PermissionDenied, false),
        (Fault::Unauthenticated, true),
    ] {
        setup(h.backdoor.inject_fault(fault)).await?;
        let err = h.store.ensure_bucket(&spec).await.expect_err("injected fault");
        assert!(fault.matches(&err), "{fault:?} surfaced as {err:?}");
        assert_eq!(err.is_retryable(), retryable, "{fault:?}");
    }
    h.store.ensure_bucket(&spec).await.expect("works after the faults");
    Ok(())
}

/// Operations behind capabilities the provider does not claim answer `NotSupported`.
pub async fn unclaimed_capabilities_answer_not_supported(h: &Harness) -> Outcome {
    let not_supported = |r: Result<()>| matches!(r, Err(Error::NotSupported { .. }));
    if !h.capabilities.buckets {
        let spec = h.spec(&h.owner());
        assert!(not_supported(h.store.ensure_bucket(&spec).await.map(drop)), "ensure_bucket");
        assert!(not_supported(h.store.observe_bucket(&spec.name).await.map(drop)), "observe_bucket");
    }
    if !h.capabilities.recovery {
        assert!(not_supported(h.store.find_bucket(&h.owner()).await.map(drop)), "find_bucket");
    }
    Ok(())
}

/// The owner tag keys, re-exported for backdoors that build tags by hand.
pub const OWNER_TAG_KEYS: [&str; 2] = [INFRASTRUCTURE_NAME_TAG, BACKUP_LOCATION_TAG];
