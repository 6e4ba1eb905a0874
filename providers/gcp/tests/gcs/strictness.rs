//! The provider against GCS answers as production gives them over gRPC: a taken name on create
//! is FAILED_PRECONDITION, so is an organisation-policy refusal; Cloud KMS refusals concern the
//! Cloud Storage service agent, not the operator; GetBucket returns only what its read mask names;
//! labels may carry international lowercase letters.

use google_cloud_storage::model::Bucket;
use mvo_core::{Encryption, Error, Platform, Setting};
use mvo_testkit::gcs::{CMEK_CONSTRAINT, Received};

use super::common::{Fixture, KMS_KEY, PROJECT, REGION, harness};

#[tokio::test]
async fn a_taken_name_answered_with_failed_precondition_is_decided_by_reading_it_again() {
    let f = Fixture::new();
    let ours = f.spec();
    let mut plain = Bucket::default();
    plain.bucket_id = ours.name.clone();
    plain.location = REGION.into();
    f.plane.insert(PROJECT, plain);
    // The bucket appears between our read and our create (a crashed earlier attempt).
    f.plane.fail_next_on("GetBucket", google_cloud_gax::error::rpc::Code::NotFound);
    let report = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&ours)
        .await
        .expect("ours: adopted");
    assert!(!report.created);
    assert!(report.corrected.contains(&Setting::Tags), "{report:?}");

    let theirs = f.spec();
    let mut foreign = Bucket::default();
    foreign.bucket_id = theirs.name.clone();
    f.plane.insert("someone-else", foreign);
    f.plane.fail_next_on("GetBucket", google_cloud_gax::error::rpc::Code::NotFound);
    let err = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&theirs)
        .await
        .expect_err("theirs");
    assert!(matches!(&err, Error::AlreadyOwnedByOther { bucket } if *bucket == theirs.name), "{err}");
}

#[tokio::test]
async fn an_organisation_policy_refusal_is_reported_with_its_message_and_not_retried() {
    let f = Fixture::new();
    f.plane.require_cmek(PROJECT);
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let err = store.ensure_bucket(&spec).await.expect_err("policy refuses a bucket without CMEK");
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.category(), "Refused");
    let text = err.to_string();
    assert!(text.contains(CMEK_CONSTRAINT) && text.contains(&spec.name), "{text}");
    assert!(f.plane.bucket(&spec.name).is_none());
    let kinds: Vec<&str> = f
        .plane
        .received()
        .iter()
        .map(|r| match r {
            Received::GetBucket { .. } => "get",
            Received::CreateBucket { .. } => "create",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["get", "create", "get"], "the name is read again before giving up");

    let mut cmek = f.spec();
    cmek.encryption = Encryption::Kms { key: KMS_KEY.into() };
    assert!(store.ensure_bucket(&cmek).await.expect("a CMEK bucket is allowed").created);
}

#[tokio::test]
async fn a_kms_key_the_service_agent_cannot_use_names_the_key_and_the_agent() {
    let f = Fixture::new();
    f.plane.deny_kms_key(KMS_KEY);
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    let mut spec = f.spec();
    spec.encryption = Encryption::Kms { key: KMS_KEY.into() };

    // At create GCS has not told us the project number yet.
    let err = store.ensure_bucket(&spec).await.expect_err("agent denied at create");
    assert!(matches!(&err, Error::EncryptionKeyUnusable { key, .. } if key == KMS_KEY), "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("the project's Cloud Storage service agent"), "{text}");
    assert!(text.contains("roles/cloudkms.cryptoKeyEncrypterDecrypter"), "{text}");
    assert!(!text.contains("storage.buckets.create is"), "not the operator's permission: {text}");

    // On an existing bucket the agent is named by address.
    let mut plain = f.spec();
    plain.name = spec.name.clone();
    plain.owner = spec.owner.clone();
    store.ensure_bucket(&plain).await.expect("created without a key");
    let err = store.ensure_bucket(&spec).await.expect_err("agent denied at update");
    let agent =
        format!("service-{}@gs-project-accounts.iam.gserviceaccount.com", f.plane.project_number(PROJECT));
    assert_eq!(err.category(), "EncryptionKeyUnusable", "{err}");
    assert!(err.to_string().contains(&agent) && err.to_string().contains(KMS_KEY), "{err}");
    assert_eq!(f.plane.bucket(&spec.name).map(|b| b.encryption), Some(None));
}

#[tokio::test]
async fn a_kms_key_in_another_location_is_unusable_not_a_provider_error() {
    let f = Fixture::new();
    let key = "projects/mvo-test-project/locations/us-central1/keyRings/velero/cryptoKeys/backups";
    let mut spec = f.spec();
    spec.encryption = Encryption::Kms { key: key.into() };
    let err = f
        .platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .ensure_bucket(&spec)
        .await
        .expect_err("wrong location");
    assert!(matches!(&err, Error::EncryptionKeyUnusable { key: k, .. } if k == key), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("bucket's location"), "{err}");
}

#[tokio::test]
async fn get_bucket_asks_for_exactly_the_fields_the_provider_uses() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    store.ensure_bucket(&spec).await.expect("steady");
    store.observe_bucket(&spec.name).await.expect("observe");
    let masks = f.plane.read_masks();
    assert_eq!(masks.len(), 3);
    let expected = [
        "bucket_id",
        "project",
        "metageneration",
        "location",
        "labels",
        "lifecycle",
        "iam_config",
        "encryption",
    ];
    for mask in masks {
        let mut mask = mask.expect("an explicit read mask");
        mask.sort();
        let mut want: Vec<String> = expected.iter().map(|p| (*p).to_owned()).collect();
        want.sort();
        assert_eq!(mask, want);
    }
}

#[tokio::test]
async fn international_foreign_labels_survive_a_label_correction() {
    let f = Fixture::new();
    let spec = f.spec();
    let store = f.platform.object_store(&mvo_core::NO_SECTION).expect("object store");
    store.ensure_bucket(&spec).await.expect("create");
    assert!(f.plane.modify(&spec.name, |b| {
        b.labels.remove("velero-io-backup-location");
        b.labels.insert("équipe".into(), "sauvegardes".into());
        b.labels.insert("部門".into(), "開発".into());
    }));
    let report = store.ensure_bucket(&spec).await.expect("corrected");
    assert_eq!(report.corrected, vec![Setting::Tags]);
    let labels = f.plane.bucket(&spec.name).expect("stored").labels;
    assert_eq!(labels.get("équipe").map(String::as_str), Some("sauvegardes"));
    assert_eq!(labels.get("部門").map(String::as_str), Some("開発"));
    assert!(spec.owner.owns_labels(&labels.into_iter().collect()));
}

#[tokio::test]
async fn the_harness_does_not_claim_recovery_skipping_uninspectable_buckets() {
    let h = harness().await;
    let name = h.bucket_name();
    h.backdoor.create_plain_bucket(&name, &h.region, Default::default()).await.expect("create");
    let err = h.backdoor.refuse_inspection(&name).await.expect_err("GCS lists every bucket's metadata");
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
}
