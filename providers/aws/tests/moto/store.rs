//! S3 store behaviour the contract suite does not pin down: exact call budgets, which write fixes
//! which drift, recovery across clusters and regions, and the IAM list matching real calls.

use std::collections::BTreeSet;

use mvo_core::{BucketSpec, Encryption, Error, Owner, Platform, PublicAccessBlock, Recovery, Setting, Tags};
use mvo_provider_aws::{AwsPlatform, iam};
use mvo_testkit::Backdoor;

use super::common::{KMS_KEY, MotoBackdoor, REGION, bucket_name, platform, raw_client};

fn spec(name: &str, owner: &str) -> BucketSpec {
    BucketSpec {
        name: name.into(),
        region: REGION.into(),
        owner: Owner::new(owner),
        encryption: Encryption::ProviderManaged,
        retention_days: Some(30),
        applied_retention_days: None,
    }
}

fn backdoor(platform: &AwsPlatform, faults: super::common::FaultInjector) -> MotoBackdoor {
    MotoBackdoor { client: raw_client(REGION), faults, platform: platform.clone() }
}

/// Calls per operation made by `f`.
async fn calls_during<F: Future>(platform: &AwsPlatform, f: F) -> (F::Output, Vec<(String, u64)>) {
    let before = platform.call_counter().snapshot();
    let out = f.await;
    let after = platform.call_counter().snapshot();
    let diff = after
        .into_iter()
        .map(|(op, c)| {
            let was = before.get(&op).map_or(0, |b| b.calls);
            (op, c.calls - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    (out, diff)
}

fn reads_only(ops: &[(String, u64)]) -> Vec<(&str, u64)> {
    ops.iter().map(|(op, n)| (op.as_str(), *n)).collect()
}

#[tokio::test]
async fn create_writes_every_setting_once_and_steady_state_is_five_reads() {
    let (platform, _) = platform(REGION);
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let spec = spec(&bucket_name("steady"), "steady-cluster");
    let (report, created) = calls_during(&platform, store.ensure_bucket(&spec)).await;
    assert!(report.expect("create").created);
    assert_eq!(
        reads_only(&created),
        [
            ("CreateBucket", 1),
            ("GetCallerIdentity", 1),
            ("HeadBucket", 1),
            ("PutBucketEncryption", 1),
            ("PutBucketLifecycleConfiguration", 1),
            ("PutBucketTagging", 1),
            ("PutPublicAccessBlock", 1),
        ]
    );
    let (reads, writes) = (platform.call_counter().reads(), platform.call_counter().writes());
    let (report, steady) = calls_during(&platform, store.ensure_bucket(&spec)).await;
    assert!(report.expect("steady").is_unchanged());
    assert_eq!(platform.call_counter().reads() - reads, 5);
    assert_eq!(platform.call_counter().writes() - writes, 0);
    assert_eq!(
        reads_only(&steady),
        [
            ("GetBucketEncryption", 1),
            ("GetBucketLifecycleConfiguration", 1),
            ("GetBucketTagging", 1),
            ("GetPublicAccessBlock", 1),
            ("HeadBucket", 1),
        ]
    );
}

/// Tampers with a compliant bucket, then checks that one ensure writes exactly `expected_put`.
async fn drift_fixed_by(
    tamper: impl AsyncFnOnce(&MotoBackdoor, &str),
    expected: Option<(Setting, &str)>,
) -> (AwsPlatform, BucketSpec) {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults);
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let spec = spec(&bucket_name("drift"), "drift-cluster");
    store.ensure_bucket(&spec).await.expect("create");
    tamper(&door, &spec.name).await;
    let writes = platform.call_counter().writes();
    let (report, calls) = calls_during(&platform, store.ensure_bucket(&spec)).await;
    let report = report.expect("correcting ensure");
    let puts: Vec<(&str, u64)> =
        reads_only(&calls).into_iter().filter(|(op, _)| !mvo_provider_aws::metering::is_read(op)).collect();
    match expected {
        Some((setting, put)) => {
            assert_eq!(report.corrected, vec![setting]);
            assert_eq!(puts, [(put, 1)]);
        }
        None => {
            assert!(report.is_unchanged(), "{:?}", report.corrected);
            assert_eq!(platform.call_counter().writes(), writes);
        }
    }
    let again = store.ensure_bucket(&spec).await.expect("steady");
    assert!(again.is_unchanged(), "not converged: {:?}", again.corrected);
    (platform, spec)
}

#[tokio::test]
async fn removed_encryption_costs_one_put_bucket_encryption() {
    drift_fixed_by(
        async |door, name| door.set_encryption(name, None).await.expect("tamper"),
        Some((Setting::Encryption, "PutBucketEncryption")),
    )
    .await;
}

#[tokio::test]
async fn kms_without_bucket_key_is_encryption_drift() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults);
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let mut spec = spec(&bucket_name("kms"), "kms-cluster");
    spec.encryption = Encryption::Kms { key: KMS_KEY.into() };
    store.ensure_bucket(&spec).await.expect("create");
    // SSE-KMS with the same key but no bucket key: reads as the same key, still not our setting.
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .kms_master_key_id(KMS_KEY)
        .build()
        .expect("default");
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(default)
        .bucket_key_enabled(false)
        .build();
    door.client
        .put_bucket_encryption()
        .bucket(&spec.name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder().rules(rule).build().expect("config"),
        )
        .send()
        .await
        .expect("tamper");
    let report = store.ensure_bucket(&spec).await.expect("correct");
    assert_eq!(report.corrected, vec![Setting::Encryption]);
    let read = door.client.get_bucket_encryption().bucket(&spec.name).send().await.expect("read");
    let rule = &read.server_side_encryption_configuration().expect("config").rules()[0];
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    assert!(store.ensure_bucket(&spec).await.expect("steady").is_unchanged());
}

#[tokio::test]
async fn one_public_access_flag_costs_one_put_public_access_block() {
    for flag in 0..4 {
        drift_fixed_by(
            async |door, name| {
                let mut block = PublicAccessBlock::ALL_BLOCKED;
                match flag {
                    0 => block.block_public_acls = false,
                    1 => block.ignore_public_acls = false,
                    2 => block.block_public_policy = false,
                    _ => block.restrict_public_buckets = false,
                }
                door.set_public_access(name, block).await.expect("tamper")
            },
            Some((Setting::PublicAccess, "PutPublicAccessBlock")),
        )
        .await;
    }
}

#[tokio::test]
async fn deleted_lifecycle_costs_one_put_lifecycle() {
    drift_fixed_by(
        async |door, name| door.set_lifecycle(name, Vec::new()).await.expect("tamper"),
        Some((Setting::Lifecycle, "PutBucketLifecycleConfiguration")),
    )
    .await;
}

#[tokio::test]
async fn stripped_owner_tag_costs_one_put_tagging() {
    drift_fixed_by(
        async |door, name| {
            let tags =
                Tags::from([(mvo_core::owner::INFRASTRUCTURE_NAME_TAG.into(), "drift-cluster".into())]);
            door.set_tags(name, tags).await.expect("tamper")
        },
        Some((Setting::Tags, "PutBucketTagging")),
    )
    .await;
}

#[tokio::test]
async fn added_foreign_tag_is_not_drift_and_survives() {
    let (platform, spec) = drift_fixed_by(
        async |door, name| {
            let mut tags = Owner::new("drift-cluster").tags();
            tags.insert("team".into(), "storage".into());
            door.set_tags(name, tags).await.expect("tamper")
        },
        None,
    )
    .await;
    let state = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .observe_bucket(&spec.name)
        .await
        .expect("observe");
    assert_eq!(state.tags.get("team").map(String::as_str), Some("storage"));
}

#[tokio::test]
async fn foreign_lifecycle_rules_are_written_back_verbatim() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults);
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let mut spec = spec(&bucket_name("rules"), "rules-cluster");
    store.ensure_bucket(&spec).await.expect("create");
    // A rule the neutral shape cannot express (a storage-class transition) must survive as is.
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter, Transition,
        TransitionStorageClass,
    };
    let mut rules = door
        .client
        .get_bucket_lifecycle_configuration()
        .bucket(&spec.name)
        .send()
        .await
        .expect("read")
        .rules()
        .to_vec();
    let foreign = LifecycleRule::builder()
        .id("archive-logs")
        .filter(LifecycleRuleFilter::builder().prefix("logs/").build())
        .status(ExpirationStatus::Enabled)
        .transitions(Transition::builder().days(30).storage_class(TransitionStorageClass::Glacier).build())
        .build()
        .expect("rule");
    rules.push(foreign);
    door.client
        .put_bucket_lifecycle_configuration()
        .bucket(&spec.name)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().expect("lc"),
        )
        .send()
        .await
        .expect("tamper");
    spec.retention_days = Some(45);
    let report = store.ensure_bucket(&spec).await.expect("new retention");
    assert_eq!(report.corrected, vec![Setting::Lifecycle]);
    let after =
        door.client.get_bucket_lifecycle_configuration().bucket(&spec.name).send().await.expect("read");
    let kept = after.rules().iter().find(|r| r.id() == Some("archive-logs")).expect("foreign rule kept");
    assert_eq!(kept.transitions()[0].days(), Some(30));
    let prefixes: BTreeSet<String> =
        after.rules().iter().filter_map(|r| r.filter().and_then(|f| f.prefix()).map(str::to_owned)).collect();
    assert_eq!(prefixes, BTreeSet::from(["".into(), "backups/".into(), "logs/".into()]));
}

#[tokio::test]
async fn us_east_1_buckets_are_created_without_location_constraint() {
    let (platform, _) = platform("us-east-1");
    let mut spec = spec(&bucket_name("use1"), "use1-cluster");
    spec.region = "us-east-1".into();
    let report = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect("create in us-east-1");
    assert!(report.created);
    let location =
        raw_client("us-east-1").get_bucket_location().bucket(&spec.name).send().await.expect("loc");
    assert_eq!(location.location_constraint().map(|c| c.as_str()).unwrap_or(""), "");
    let state = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .observe_bucket(&spec.name)
        .await
        .expect("observe");
    assert_eq!(state.region, "us-east-1");
    // Never Object Lock: the bucket has no object lock configuration.
    let lock = raw_client("us-east-1").get_object_lock_configuration().bucket(&spec.name).send().await;
    assert!(lock.map(|o| o.object_lock_configuration().is_none()).unwrap_or(true));
}

#[tokio::test]
async fn recovery_picks_our_cluster_among_several_and_ignores_other_regions() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults);
    let ours = Owner::new(format!("recover-{}", &bucket_name("x")[4..]));
    let ours_bucket = bucket_name("ours");
    for cluster in ["alpha", "beta", "gamma"] {
        let owner = Owner::new(format!("{}-{cluster}", ours.infrastructure_name));
        door.create_plain_bucket(&bucket_name(cluster), REGION, owner.tags()).await.expect("other cluster");
    }
    // Our tags, but in another region: not ours to adopt from here.
    door.create_plain_bucket(&bucket_name("west2"), "us-west-2", ours.tags()).await.expect("other region");
    door.create_plain_bucket(&ours_bucket, REGION, ours.tags()).await.expect("ours");
    let (found, calls) = calls_during(
        &platform,
        platform.object_store(&mvo_core::NO_SECTION).expect("object store").find_bucket(&ours),
    )
    .await;
    let found = found.expect("find");
    assert!(matches!(&found, Recovery::Found { name, .. } if *name == ours_bucket), "{found:?}");
    let calls: Vec<&str> = calls.iter().map(|(op, _)| op.as_str()).collect();
    // GetCallerIdentity once: the account the inspections pin as expected owner.
    assert_eq!(calls, ["GetBucketLocation", "GetBucketTagging", "GetCallerIdentity", "ListBuckets"]);
    assert_eq!(platform.call_counter().writes(), 0, "recovery must not write");
}

#[tokio::test]
async fn missing_credentials_surface_as_unauthenticated_through_the_sdk() {
    let dir = std::env::temp_dir().join(format!("mvo-aws-nocreds-{}", &bucket_name("d")[4..]));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut config = super::common::config(REGION);
    config.credentials_dir = dir.clone();
    let platform = AwsPlatform::new(&config).expect("platform");
    let err = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .observe_bucket(&bucket_name("nocreds"))
        .await
        .expect_err("no credentials");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert!(err.to_string().contains("aws_access_key_id"), "{err}");
    assert_eq!(platform.call_counter().reads(), 0, "nothing may be sent unsigned");
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[tokio::test]
async fn iam_statements_cover_exactly_the_calls_the_provider_makes() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults);
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let spec = spec(&bucket_name("iam"), "iam-cluster");
    store.ensure_bucket(&spec).await.expect("create");
    door.set_encryption(&spec.name, None).await.expect("tamper");
    door.set_public_access(&spec.name, PublicAccessBlock::default()).await.expect("tamper");
    door.set_lifecycle(&spec.name, Vec::new()).await.expect("tamper");
    door.set_tags(&spec.name, Tags::new()).await.expect("tamper");
    let report = store.ensure_bucket(&spec).await.expect("correct everything");
    assert_eq!(report.corrected, Setting::ALL.to_vec());
    store.observe_bucket(&spec.name).await.expect("observe");
    store.find_bucket(&spec.owner).await.expect("find");
    let called: BTreeSet<&str> = platform
        .call_counter()
        .snapshot()
        .keys()
        .map(|op| iam::action_of(op).unwrap_or_else(|| panic!("{op} has no IAM action in the policy")))
        .collect();
    let granted: BTreeSet<&str> = iam::operator_actions().into_iter().collect();
    assert_eq!(called, granted, "policy and calls differ");
}

#[tokio::test]
async fn our_bucket_refusing_head_is_permission_denied_not_foreign() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults.clone());
    let spec = spec(&bucket_name("denied"), "denied-cluster");
    door.create_plain_bucket(&spec.name, REGION, spec.owner.tags()).await.expect("ours");
    faults.deny_bucket(&spec.name);
    let err = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect_err("denied");
    assert!(
        matches!(&err, Error::PermissionDenied { operation, .. } if operation == "s3:ListBucket"),
        "{err:?}"
    );
    assert_eq!(platform.call_counter().writes(), 0);
}

/// The account moto's GetCallerIdentity reports for any credentials.
const MOTO_ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn every_call_on_a_bucket_pins_the_operators_account_as_expected_owner() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults.clone());
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let spec = spec(&bucket_name("pinned"), "pinned-cluster");
    store.ensure_bucket(&spec).await.expect("create");
    door.set_encryption(&spec.name, None).await.expect("tamper");
    door.set_public_access(&spec.name, PublicAccessBlock::default()).await.expect("tamper");
    door.set_lifecycle(&spec.name, Vec::new()).await.expect("tamper");
    door.set_tags(&spec.name, Tags::new()).await.expect("tamper");
    store.ensure_bucket(&spec).await.expect("correct everything");
    store.find_bucket(&spec.owner).await.expect("find");
    let sent = faults.sent();
    let on_bucket: Vec<_> = sent.iter().filter(|(_, bucket, _)| bucket.is_some()).collect();
    let operations: BTreeSet<&str> = on_bucket.iter().map(|(op, _, _)| op.as_str()).collect();
    assert!(operations.len() >= 10, "too few bucket operations seen: {operations:?}");
    for (operation, bucket, expected) in on_bucket {
        // CreateBucket has no ExpectedBucketOwner: a name nobody owns has no owner to expect.
        if operation == "CreateBucket" {
            continue;
        }
        assert_eq!(expected.as_deref(), Some(MOTO_ACCOUNT), "{operation} on {bucket:?} is not pinned");
    }
    let identity_calls = platform.call_counter().snapshot().get("GetCallerIdentity").map_or(0, |c| c.calls);
    assert_eq!(identity_calls, 1, "the account is learned once");
}

#[tokio::test]
async fn a_name_re_registered_by_another_account_is_refused_and_never_written() {
    let (platform, faults) = platform(REGION);
    let door = backdoor(&platform, faults.clone());
    let store = platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let spec = spec(&bucket_name("reregistered"), "rereg-cluster");
    store.ensure_bucket(&spec).await.expect("create");
    door.delete_bucket(&spec.name).await.expect("deleted out of band");
    // Another account takes the freed name; moto still lets us read it, real S3 would not
    // when we say which account we expect.
    let foreign = raw_client(REGION);
    foreign
        .create_bucket()
        .bucket(&spec.name)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(REGION))
                .build(),
        )
        .customize()
        .mutate_request(|req| {
            req.headers_mut().insert("x-moto-account-id", "222222222222");
        })
        .send()
        .await
        .expect("re-registered by another account");
    faults.owned_by(&spec.name, "222222222222");
    let writes = platform.call_counter().writes();
    let err = store.ensure_bucket(&spec).await.expect_err("not ours any more");
    assert!(matches!(err, Error::AlreadyOwnedByOther { ref bucket } if *bucket == spec.name), "{err}");
    assert_eq!(platform.call_counter().writes(), writes, "wrote to another account's bucket");
    // The 403 on HeadBucket is told apart from a missing permission by our own bucket list.
    let err = store.observe_bucket(&spec.name).await.expect_err("refused read");
    assert!(matches!(err, Error::AlreadyOwnedByOther { .. }), "{err}");
    let denied_as_ours = faults.sent().iter().any(|(op, b, _)| op == "ListBuckets" && b.is_none());
    assert!(denied_as_ours, "ListBuckets was not asked to tell 'not ours' from 'not allowed'");
}
