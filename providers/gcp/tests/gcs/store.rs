//! GCS-specific rules beyond the contract: what the control plane receives (one masked
//! UpdateBucket per drift, one GetBucket in steady state), the 409 decision, recovery across
//! clusters and locations, and error mapping through the real client.

use google_cloud_gax::error::rpc::Code;
use google_cloud_storage::model::{
    Bucket,
    bucket::{
        Encryption as GcsEncryption,
        lifecycle::{
            Rule,
            rule::{Action, Condition},
        },
    },
};
use mvo_core::{Encryption, Error, Owner, Platform, Recovery, Setting};
use mvo_testkit::gcs::{GcsControlPlane, Received};

use super::common::{Fixture, KMS_KEY, PROJECT, REGION};

fn no_deletes(f: &Fixture) {
    assert!(
        !f.plane.received().iter().any(|r| matches!(r, Received::DeleteBucket { .. })),
        "the provider sent a DeleteBucket"
    );
}

#[tokio::test]
async fn create_sends_every_setting_in_one_call() {
    let f = Fixture::new();
    let mut spec = f.spec();
    spec.encryption = Encryption::Kms { key: KMS_KEY.into() };
    let report = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect("create");
    assert!(report.created);
    assert_eq!(
        f.plane.received(),
        vec![
            Received::GetBucket { bucket: spec.name.clone() },
            Received::CreateBucket { bucket: spec.name.clone(), project: PROJECT.into() }
        ]
    );
    let bucket = f.plane.bucket(&spec.name).expect("stored");
    assert_eq!(bucket.location, REGION.to_ascii_uppercase());
    let iam = bucket.iam_config.clone().expect("iam config");
    assert!(iam.uniform_bucket_level_access.is_some_and(|u| u.enabled));
    assert_eq!(iam.public_access_prevention, "enforced");
    assert_eq!(bucket.encryption.map(|e| e.default_kms_key), Some(KMS_KEY.to_owned()));
    assert!(spec.owner.owns_labels(&bucket.labels.clone().into_iter().collect()));
    let rules = bucket.lifecycle.expect("lifecycle").rule;
    let summary: Vec<(String, Option<i32>, Vec<String>)> = rules
        .iter()
        .map(|r| {
            let action = r.action.clone().unwrap_or_default().r#type;
            let condition = r.condition.clone().unwrap_or_default();
            (action, condition.age_days, condition.matches_prefix)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Delete".to_owned(), Some(90), vec!["backups/".to_owned()]),
            ("AbortIncompleteMultipartUpload".to_owned(), Some(7), vec![]),
        ]
    );
    assert_eq!(report.state.region, "EUROPE-WEST4");
}

#[tokio::test]
async fn steady_state_is_one_read_and_no_write() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    let before = f.calls();
    f.plane.clear_received();
    let report = store.ensure_bucket(&spec).await.expect("steady");
    assert!(report.is_unchanged());
    let after = f.calls();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "(reads, writes) of a steady check");
    assert_eq!(f.plane.received(), vec![Received::GetBucket { bucket: spec.name.clone() }]);
}

/// One tamper of one GCS field and the exact mask the correction must carry.
struct DriftCase {
    name: &'static str,
    tamper: fn(&mut Bucket),
    paths: &'static [&'static str],
    setting: Setting,
}

fn age_rule(kind: &str, days: i32, prefix: Option<&str>) -> Rule {
    let mut action = Action::default();
    action.r#type = kind.into();
    let mut condition = Condition::default();
    condition.age_days = Some(days);
    condition.matches_prefix = prefix.map(|p| vec![p.to_owned()]).unwrap_or_default();
    let mut rule = Rule::default();
    rule.action = Some(action);
    rule.condition = Some(condition);
    rule
}

const DRIFT_CASES: &[DriftCase] = &[
    DriftCase {
        name: "public access prevention inherited",
        tamper: |b| b.iam_config.get_or_insert_default().public_access_prevention = "inherited".into(),
        paths: &["iam_config.public_access_prevention"],
        setting: Setting::PublicAccess,
    },
    DriftCase {
        name: "uniform access off",
        tamper: |b| {
            b.iam_config.get_or_insert_default().uniform_bucket_level_access.get_or_insert_default().enabled =
                false
        },
        paths: &["iam_config.uniform_bucket_level_access"],
        setting: Setting::PublicAccess,
    },
    DriftCase {
        name: "lifecycle removed",
        tamper: |b| b.lifecycle = None,
        paths: &["lifecycle"],
        setting: Setting::Lifecycle,
    },
    DriftCase {
        name: "owner label stripped",
        tamper: |b| {
            b.labels.remove("velero-io-backup-location");
        },
        paths: &["labels"],
        setting: Setting::Tags,
    },
    DriftCase {
        name: "KMS key changed",
        tamper: |b| {
            let mut encryption = GcsEncryption::default();
            encryption.default_kms_key = "projects/x/locations/l/keyRings/r/cryptoKeys/other".into();
            b.encryption = Some(encryption);
        },
        paths: &["encryption.default_kms_key"],
        setting: Setting::Encryption,
    },
];

#[tokio::test]
async fn each_drift_is_corrected_by_one_update_naming_only_its_field() {
    for case in DRIFT_CASES {
        let f = Fixture::new();
        let mut spec = f.spec();
        spec.encryption = Encryption::Kms { key: KMS_KEY.into() };
        let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
        store.ensure_bucket(&spec).await.expect("create");
        // A foreign label and a foreign rule added meanwhile must survive every correction.
        assert!(f.plane.modify(&spec.name, |b| {
            b.labels.insert("team".into(), "storage".into());
            if let Some(lifecycle) = b.lifecycle.as_mut() {
                lifecycle.rule.insert(0, age_rule("SetStorageClass", 30, Some("logs/")));
            }
        }));
        assert!(f.plane.modify(&spec.name, case.tamper), "{}", case.name);
        let metageneration = f.plane.bucket(&spec.name).expect("stored").metageneration;
        f.plane.clear_received();

        let report = store.ensure_bucket(&spec).await.expect("correct");
        assert_eq!(report.corrected, vec![case.setting], "{}", case.name);
        assert_eq!(
            f.updates(),
            vec![Received::UpdateBucket {
                bucket: spec.name.clone(),
                paths: case.paths.iter().map(|p| p.to_string()).collect(),
                if_metageneration_match: Some(metageneration),
            }],
            "{}",
            case.name
        );
        let stored = f.plane.bucket(&spec.name).expect("stored");
        assert_eq!(stored.labels.get("team").map(String::as_str), Some("storage"), "{}", case.name);
        let rules = stored.lifecycle.clone().map(|l| l.rule).unwrap_or_default();
        if case.setting != Setting::Lifecycle {
            assert_eq!(rules.len(), 3, "{}: rules {rules:?}", case.name);
        }
        let state = store.observe_bucket(&spec.name).await.expect("observe");
        assert!(state.drift(&spec, mvo_core::TagStyle::Labels).is_empty(), "{}: {state:?}", case.name);
        f.plane.clear_received();
        assert!(store.ensure_bucket(&spec).await.expect("steady").is_unchanged(), "{}", case.name);
        assert!(f.updates().is_empty(), "{}", case.name);
        no_deletes(&f);
    }
}

#[tokio::test]
async fn removed_lifecycle_is_restored_and_a_foreign_rule_is_written_back_verbatim() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    let foreign = age_rule("SetStorageClass", 30, Some("logs/"));
    assert!(f.plane.modify(&spec.name, |b| {
        let lifecycle = b.lifecycle.get_or_insert_default();
        lifecycle.rule = vec![foreign.clone()];
    }));
    let report = store.ensure_bucket(&spec).await.expect("correct");
    assert_eq!(report.corrected, vec![Setting::Lifecycle]);
    let rules = f.plane.bucket(&spec.name).and_then(|b| b.lifecycle).expect("lifecycle").rule;
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0], foreign, "foreign rule changed");
}

#[tokio::test]
async fn a_foreign_label_alone_is_not_drift() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    assert!(f.plane.modify(&spec.name, |b| {
        b.labels.insert("cost-center".into(), "42".into());
    }));
    let report = store.ensure_bucket(&spec).await.expect("check");
    assert!(report.is_unchanged());
    assert_eq!(report.state.tags.get("cost-center").map(String::as_str), Some("42"));
    assert!(f.updates().is_empty());
}

#[tokio::test]
async fn conflict_on_an_unlabelled_bucket_of_our_project_is_adopted_and_enforced() {
    let f = Fixture::new();
    let spec = f.spec();
    let mut plain = Bucket::default();
    plain.bucket_id = spec.name.clone();
    plain.location = REGION.into();
    f.plane.insert(PROJECT, plain);
    // The bucket appears between our read and our create (a crashed earlier attempt).
    f.plane.fail_next_on("GetBucket", Code::NotFound);
    let report = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect("adopt");
    assert!(!report.created);
    assert_eq!(report.corrected, vec![Setting::PublicAccess, Setting::Lifecycle, Setting::Tags]);
    let kinds: Vec<&str> = f
        .plane
        .received()
        .iter()
        .map(|r| match r {
            Received::GetBucket { .. } => "get",
            Received::CreateBucket { .. } => "create",
            Received::ListBuckets { .. } => "list",
            Received::UpdateBucket { .. } => "update",
            Received::DeleteBucket { .. } => "delete",
        })
        .collect();
    assert_eq!(kinds, ["get", "create", "get", "list", "update"]);
    let Some(Received::UpdateBucket { paths, .. }) = f.updates().pop() else { panic!("no update") };
    assert_eq!(
        paths,
        [
            "iam_config.uniform_bucket_level_access",
            "iam_config.public_access_prevention",
            "lifecycle",
            "labels"
        ]
    );
    let stored = f.plane.bucket(&spec.name).expect("stored");
    assert!(spec.owner.owns_labels(&stored.labels.into_iter().collect()));
}

#[tokio::test]
async fn conflict_on_another_projects_bucket_is_refused_without_a_write() {
    let f = Fixture::new();
    let spec = f.spec();
    let mut theirs = Bucket::default();
    theirs.bucket_id = spec.name.clone();
    f.plane.insert("someone-else", theirs);
    f.plane.fail_next_on("GetBucket", Code::NotFound);
    let err = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect_err("taken");
    assert!(matches!(&err, Error::AlreadyOwnedByOther { bucket } if *bucket == spec.name), "{err}");
    assert!(!err.is_retryable());
    assert!(f.updates().is_empty());
    assert_eq!(f.plane.bucket(&spec.name).map(|b| b.metageneration), Some(1), "their bucket changed");
    assert_eq!(f.plane.owner_project(&spec.name).as_deref(), Some("someone-else"));
}

#[tokio::test]
async fn a_bucket_labelled_for_another_cluster_is_refused_untouched() {
    let f = Fixture::new();
    let spec = f.spec();
    let mut theirs = Bucket::default();
    theirs.bucket_id = spec.name.clone();
    theirs.location = REGION.into();
    theirs.labels = Owner::new("other-cluster").labels().into_iter().collect();
    f.plane.insert(PROJECT, theirs);
    let err = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect_err("theirs");
    assert!(matches!(err, Error::AlreadyOwnedByOther { .. }), "{err}");
    assert_eq!(f.platform.call_counter().writes(), 0);
    assert_eq!(f.plane.bucket(&spec.name).map(|b| b.metageneration), Some(1));
}

fn labelled(name: &str, location: &str, owner: &Owner) -> Bucket {
    let mut bucket = Bucket::default();
    bucket.bucket_id = name.into();
    bucket.location = location.into();
    bucket.labels = owner.labels().into_iter().collect();
    bucket
}

#[tokio::test]
async fn recovery_pages_through_the_project_and_matches_owner_and_location() {
    let f = Fixture::on(GcsControlPlane::new().with_page_size(2));
    let ours = Owner::new("cluster-a");
    f.plane.insert(PROJECT, labelled("b-ours", REGION, &ours));
    f.plane.insert(PROJECT, labelled("b-ours-elsewhere", "us-central1", &ours));
    f.plane.insert(PROJECT, labelled("b-other-1", REGION, &Owner::new("cluster-b")));
    f.plane.insert(PROJECT, labelled("b-other-2", REGION, &Owner::new("cluster-a-2")));
    let mut only_infra = labelled("b-half", REGION, &ours);
    only_infra.labels.remove("velero-io-backup-location");
    f.plane.insert(PROJECT, only_infra);
    f.plane.insert(PROJECT, labelled("b-locked", REGION, &Owner::new("cluster-c")));
    assert!(f.plane.refuse_inspection("b-locked"));
    f.plane.insert("another-project", labelled("b-ours-other-project", REGION, &ours));

    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let found = store.find_bucket(&ours).await.expect("find");
    assert_eq!(found, Recovery::Found { name: "b-ours".into(), skipped: 1 });
    assert_eq!(f.platform.call_counter().calls("ListBuckets"), 3, "6 buckets in pages of 2");
    assert_eq!(f.platform.call_counter().calls("GetBucket"), 0, "the listing carries the labels");

    f.plane.insert(PROJECT, labelled("b-ours-too", &REGION.to_ascii_uppercase(), &ours));
    let found = store.find_bucket(&ours).await.expect("find");
    assert_eq!(found, Recovery::Ambiguous { names: vec!["b-ours".into(), "b-ours-too".into()], skipped: 1 });
    assert_eq!(
        store.find_bucket(&Owner::new("nobody")).await.expect("find"),
        Recovery::NotFound { skipped: 1 }
    );
}

#[tokio::test]
async fn refused_writes_name_the_permission_and_stale_writes_are_retryable() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    assert!(f.plane.modify(&spec.name, |b| b.lifecycle = None));

    f.plane.fail_next_on("UpdateBucket", Code::PermissionDenied);
    let err = store.ensure_bucket(&spec).await.expect_err("denied");
    assert!(
        matches!(&err, Error::PermissionDenied { operation, .. } if operation == "storage.buckets.update"),
        "{err}"
    );
    assert!(!err.is_retryable());

    f.plane.fail_next_on("UpdateBucket", Code::FailedPrecondition);
    let err = store.ensure_bucket(&spec).await.expect_err("stale metageneration");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());

    f.plane.fail_next_on("ListBuckets", Code::PermissionDenied);
    let err = store.find_bucket(&spec.owner).await.expect_err("list denied");
    assert!(
        matches!(&err, Error::PermissionDenied { operation, .. } if operation == "storage.buckets.list"),
        "{err}"
    );

    f.plane.fail_next_on("CreateBucket", Code::PermissionDenied);
    let mut other = f.spec();
    other.owner = spec.owner.clone();
    let err = store.ensure_bucket(&other).await.expect_err("create denied");
    assert!(
        matches!(&err, Error::PermissionDenied { operation, .. } if operation == "storage.buckets.create"),
        "{err}"
    );

    assert!(store.ensure_bucket(&spec).await.expect("converges").corrected == vec![Setting::Lifecycle]);
    no_deletes(&f);
}

#[tokio::test]
async fn a_bucket_in_our_project_we_cannot_read_is_permission_denied_not_someone_elses() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    assert!(f.plane.refuse_inspection(&spec.name));
    let err = store.ensure_bucket(&spec).await.expect_err("refused");
    assert!(
        matches!(&err, Error::PermissionDenied { operation, .. } if operation == "storage.buckets.get"),
        "{err}"
    );
}

#[tokio::test]
async fn our_labels_on_a_bucket_of_another_project_do_not_make_it_ours() {
    let f = Fixture::new();
    let spec = f.spec();
    // Another project's bucket carrying exactly our labels, on which our project was granted
    // bucket-level admin: readable and writable by us, but not ours.
    let mut theirs = labelled(&spec.name, REGION, &spec.owner);
    theirs.lifecycle = None;
    f.plane.insert("someone-else", theirs);
    assert!(f.plane.share(&spec.name, PROJECT));
    let err = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect_err("not in our project");
    assert!(matches!(&err, Error::AlreadyOwnedByOther { bucket } if *bucket == spec.name), "{err}");
    assert!(f.updates().is_empty(), "updated another project's bucket: {:?}", f.updates());
    assert_eq!(f.plane.bucket(&spec.name).map(|b| b.metageneration), Some(1));
}

#[tokio::test]
async fn our_project_is_learned_once_and_the_steady_check_stays_one_read() {
    let f = Fixture::new();
    let spec = f.spec();
    f.plane.insert(PROJECT, labelled(&spec.name, REGION, &spec.owner));
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("ours: our project, our labels");
    f.plane.clear_received();
    store.ensure_bucket(&spec).await.expect("steady");
    assert_eq!(f.plane.received(), vec![Received::GetBucket { bucket: spec.name.clone() }]);
}

#[tokio::test]
async fn a_users_own_delete_rule_on_backups_survives_every_sync() {
    let f = Fixture::new();
    let mut spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    // GCS rules have no IDs: the user's rule has the managed rule's shape, another age.
    let users = age_rule("Delete", 365, Some("backups/"));
    f.plane.modify(&spec.name, |b| b.lifecycle.get_or_insert_default().rule.push(users.clone()));
    let with_users = |f: &Fixture| {
        let rules = f.plane.bucket(&spec.name).expect("bucket").lifecycle.expect("lifecycle").rule;
        rules.iter().filter(|r| **r == users).count()
    };
    let report = store.ensure_bucket(&spec).await.expect("sync");
    assert!(report.is_unchanged(), "the user's rule was taken for ours: {:?}", report.corrected);
    assert_eq!(with_users(&f), 1);
    // A retention change rewrites only the rule the operator applied (as recorded by it).
    spec.applied_retention_days = spec.retention_days;
    spec.retention_days = Some(30);
    let report = store.ensure_bucket(&spec).await.expect("new retention");
    assert_eq!(report.corrected, vec![Setting::Lifecycle]);
    assert_eq!(with_users(&f), 1, "the user's rule was dropped");
    let ages: Vec<i32> = f
        .plane
        .bucket(&spec.name)
        .expect("bucket")
        .lifecycle
        .expect("lifecycle")
        .rule
        .iter()
        .filter(|r| r.action.as_ref().is_some_and(|a| a.r#type == "Delete"))
        .filter_map(|r| r.condition.as_ref().and_then(|c| c.age_days))
        .collect();
    assert_eq!(ages, [365, 30]);
}
