//! The contract runner is honest about claims: with a provider that claims less, the cases behind
//! the unclaimed capabilities are ignored with the reason (never counted as passed), and
//! `unclaimed_capabilities_answer_not_supported` holds for it and fails for one that lies.

use std::sync::Arc;

use mvo_core::{Capabilities, Platform};
use mvo_testkit::{
    Harness, InMemoryPlatform,
    contract::{CASES, Ignored, TagStyle, unclaimed_capabilities_answer_not_supported},
};

fn harness(platform: InMemoryPlatform, claimed: Capabilities) -> Harness {
    Harness {
        store: platform.object_store(&mvo_core::NO_SECTION).expect("object store"),
        capabilities: claimed,
        region: platform.region().to_owned(),
        tag_style: TagStyle::Tags,
        kms_key: "kms-key".into(),
        backdoor: Arc::new(platform),
    }
}

fn in_memory_claiming(claimed: Capabilities) -> Harness {
    harness(InMemoryPlatform::new("eu-west-1").claiming(claimed), claimed)
}

const FULL: Capabilities = Capabilities { workload_identity: false, ..Capabilities::ALL };

#[tokio::test]
async fn unclaimed_cases_are_ignored_with_the_missing_capability() {
    let claimed = Capabilities { recovery: false, kms: false, lifecycle_rules: false, ..FULL };
    let h = in_memory_claiming(claimed);
    let mut ignored = Vec::new();
    for case in CASES {
        match case.check(&h).await {
            Ok(()) => {}
            Err(Ignored(reason)) => ignored.push((case.name, reason)),
        }
    }
    let reason = |capability: &str| format!("the provider does not claim {capability}");
    assert_eq!(
        ignored,
        [
            ("kms_encryption_is_enforced", reason("kms")),
            ("lifecycle_drift_is_corrected", reason("lifecycle_rules")),
            ("retention_change_keeps_foreign_lifecycle_rules", reason("lifecycle_rules")),
            ("recovery_finds_exactly_the_owners_bucket", reason("recovery")),
            ("recovery_refuses_ambiguity", reason("recovery")),
            ("recovery_skips_uninspectable_buckets", reason("recovery")),
            ("recovery_reports_absence", reason("recovery")),
        ]
    );
}

#[tokio::test]
async fn a_provider_without_buckets_runs_only_the_not_supported_case() {
    let claimed = Capabilities { buckets: false, recovery: false, ..FULL };
    let h = in_memory_claiming(claimed);
    let mut ran = Vec::new();
    for case in CASES {
        if case.check(&h).await.is_ok() {
            ran.push(case.name);
        }
    }
    assert_eq!(ran, ["unclaimed_capabilities_answer_not_supported"]);
}

#[tokio::test]
async fn a_provider_answering_an_unclaimed_operation_fails_the_contract() {
    // Claims no recovery, but its store recovers anyway: the claim is a lie the suite must catch.
    let h = harness(InMemoryPlatform::new("eu-west-1"), Capabilities { recovery: false, ..FULL });
    let case = tokio::spawn(async move { unclaimed_capabilities_answer_not_supported(&h).await });
    let err = case.await.expect_err("the case must fail");
    assert!(err.is_panic(), "{err}");
}

#[test]
fn every_case_is_declared_once() {
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "a case is declared twice");
}
