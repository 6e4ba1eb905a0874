//! Provider behaviour on Azurite beyond the shared contract: drift in each enforced setting,
//! what survives a correction, recovery rules, call budgets and error mapping.

use std::sync::Arc;

use mvo_core::{BucketSpec, Encryption, Error, ObjectStore, Owner, Recovery, Setting, Tags};
use mvo_provider_azure::{SOFT_DELETE_RETENTION_DAYS, owner_metadata};
use mvo_testkit::Backdoor;

use mvo_testkit::env::AzuriteEnv;

use super::common::{
    REGION, azurite, backdoor, backdoor_on, container_name, platform, platform_on, raw_client, store,
};

fn spec(owner: &Owner) -> BucketSpec {
    BucketSpec {
        name: container_name("store"),
        region: REGION.into(),
        owner: owner.clone(),
        encryption: Encryption::ProviderManaged,
        retention_days: Some(90),
        applied_retention_days: None,
    }
}

fn owner() -> Owner {
    Owner::new(format!("store-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliant_container_costs_two_reads_and_no_write() {
    let (platform, _faults) = platform();
    let spec = spec(&owner());
    let store = store(&platform);
    store.ensure_bucket(&spec).await.expect("create");
    let counter = platform.call_counter();
    let (reads, writes) = (counter.reads(), counter.writes());
    let report = store.ensure_bucket(&spec).await.expect("steady");
    assert!(report.is_unchanged(), "{:?}", report.corrected);
    assert_eq!((counter.reads() - reads, counter.writes() - writes), (2, 0), "{:?}", counter.snapshot());
    for operation in counter.snapshot().keys() {
        assert!(mvo_provider_azure::iam::permission_of(operation).is_some(), "{operation} has no permission");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_container_is_refused_with_what_to_change_and_left_untouched() {
    let (platform, faults) = platform();
    let door = backdoor(&platform, &faults);
    let owner = owner();
    let spec = spec(&owner);
    // Public from the start (the one way to make it public with a token): anonymous blob reads.
    door.create_plain_bucket(&spec.name, REGION, owner.tags()).await.expect("public container");
    let store = store(&platform);
    let observed = store.observe_bucket(&spec.name).await.expect("observe");
    assert!(!observed.public_access.is_fully_blocked(), "{observed:?}");
    let writes = platform.call_counter().writes();
    let err = store.ensure_bucket(&spec).await.expect_err("public container");
    assert!(matches!(&err, Error::Refused { message } if message.contains("anonymous access")), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(platform.call_counter().writes(), writes, "wrote to a container it cannot make private");
    // Why the container is not made private: Azure accepts Set Container ACL with an Entra ID
    // token since August 2025 (`containers/setAcl/action`), but Azurite 3.35 serves Get/Set
    // Container ACL to the account key only (its token authenticator skips them), so a
    // correction could not be tested here. This fails the day the emulator accepts the token;
    // then the provider should correct public access instead of refusing.
    let container = raw_client(azurite()).blob_container_client(&spec.name);
    let private = azure_storage_blob::models::SignedIdentifiers::default().try_into().expect("ACL body");
    let err = container.set_access_policy(private, None).await.expect_err("Azurite refuses the token");
    assert_eq!(err.http_status(), Some(azure_core::http::StatusCode::Forbidden), "{err}");
    assert!(format!("{err:?}").contains("AuthorizationFailure"), "not authenticated: {err}");
    assert!(!store.observe_bucket(&spec.name).await.expect("observe").public_access.is_fully_blocked());
    // Found by recovery all the same (the marks are ours); the refusal is about the setting.
    assert_eq!(
        store.find_bucket(&owner).await.expect("find"),
        Recovery::Found { name: spec.name, skipped: 0 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_retention_is_enforced_and_never_shortened() {
    // Changes the account's blob service properties: a dedicated account.
    let env = AzuriteEnv::start().expect("Azurite");
    let (platform, faults) = platform_on(&env);
    let door = backdoor_on(&env, &platform, &faults);
    let spec = spec(&owner());
    let store = store(&platform);
    store.ensure_bucket(&spec).await.expect("create");
    door.set_soft_delete(None).await.expect("disable soft delete");
    let report = store.ensure_bucket(&spec).await.expect("correct");
    assert!(report.corrected.contains(&Setting::Lifecycle), "{:?}", report.corrected);
    let (enabled, days) = door.soft_delete().await.expect("read");
    assert_eq!(enabled, Some(true));
    assert!(days.is_some_and(|d| d >= SOFT_DELETE_RETENTION_DAYS), "{days:?}");

    door.set_soft_delete(Some(30)).await.expect("longer retention");
    let writes = platform.call_counter().writes();
    let report = store.ensure_bucket(&spec).await.expect("steady");
    assert!(report.is_unchanged(), "{:?}", report.corrected);
    assert_eq!(platform.call_counter().writes(), writes);
    assert_eq!(door.soft_delete().await.expect("read").1, Some(30), "a longer retention was shortened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_drift_keeps_foreign_entries_and_case_insensitive_marks_count() {
    let (platform, faults) = platform();
    let door = backdoor(&platform, &faults);
    let owner = owner();
    let spec = spec(&owner);
    let store = store(&platform);
    store.ensure_bucket(&spec).await.expect("create");
    let upper: std::collections::HashMap<String, String> =
        owner_metadata(&owner).into_iter().map(|(k, v)| (k.to_uppercase(), v)).collect();
    door.client.blob_container_client(&spec.name).set_metadata(&upper, None).await.expect("upper-case names");
    let report = store.ensure_bucket(&spec).await.expect("steady");
    assert!(report.is_unchanged(), "metadata names are case-insensitive: {:?}", report.corrected);

    let foreign = Tags::from([("team".to_owned(), "storage".to_owned())]);
    door.set_tags(&spec.name, foreign).await.expect("strip marks");
    let report = store.ensure_bucket(&spec).await.expect("correct");
    assert_eq!(report.corrected, vec![Setting::Tags]);
    let tags = store.observe_bucket(&spec.name).await.expect("observe").tags;
    assert_eq!(tags.get("team").map(String::as_str), Some("storage"));
    assert_eq!(
        store.find_bucket(&owner).await.expect("find"),
        Recovery::Found { name: spec.name.clone(), skipped: 0 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_crash_between_create_and_status_finds_the_one_container() {
    let (platform, _faults) = platform();
    let owner = owner();
    let spec = spec(&owner);
    store(&platform).ensure_bucket(&spec).await.expect("create");
    // A restarted operator: a new provider, no name in status.
    let (restarted, _faults) = super::common::platform();
    let found = store(&restarted).find_bucket(&owner).await.expect("find");
    assert_eq!(found, Recovery::Found { name: spec.name.clone(), skipped: 0 });
    let again = store(&restarted).ensure_bucket(&spec).await.expect("ensure");
    assert!(!again.created && again.is_unchanged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_managed_keys_are_refused_as_not_supported_before_any_call() {
    let (platform, _faults) = platform();
    let mut spec = spec(&owner());
    spec.encryption = Encryption::Kms { key: "https://vault.vault.azure.net/keys/k".into() };
    let err = store(&platform).ensure_bucket(&spec).await.expect_err("kms");
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    assert_eq!(platform.call_counter().reads() + platform.call_counter().writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_never_sends_a_delete() {
    // Changes the account's blob service properties: a dedicated account.
    let env = AzuriteEnv::start().expect("Azurite");
    let (platform, faults) = platform_on(&env);
    let door = backdoor_on(&env, &platform, &faults);
    let spec = spec(&owner());
    let store: Arc<dyn ObjectStore> = store(&platform);
    store.ensure_bucket(&spec).await.expect("create");
    door.put_object(&spec.name, "backups/b1/velero-backup.json").await.expect("put");
    door.set_tags(&spec.name, Tags::new()).await.expect("strip");
    door.set_soft_delete(None).await.expect("soft delete off");
    store.ensure_bucket(&spec).await.expect("enforce");
    store.find_bucket(&spec.owner).await.expect("find");
    let sent = faults.sent();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|(method, _)| method != "DELETE"), "{sent:?}");
    assert_eq!(door.object_keys(&spec.name).await.expect("list"), ["backups/b1/velero-backup.json"]);
}
