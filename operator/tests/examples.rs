//! deploy/examples/ (the VeleroInstalls the README tells an administrator to create) are valid
//! against deploy/'s CRD on the test API server, and stored without any field pruned.

use std::path::Path;

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use mvo_operator::crd::VeleroInstall;
use mvo_testkit::env::{KubeEnv, install_crds};
use serde_json::{Value, json};

fn read(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_and_full_examples_validate_against_the_crd() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    let crd: CustomResourceDefinition =
        serde_json::from_value(read("crds/managed.openshift.io_veleroinstalls.yaml")).expect("CRD");
    install_crds(&client, [crd]).await.expect("VeleroInstall CRD");
    let params = PatchParams::apply("examples-test").force();
    Api::<Namespace>::all(client.clone())
        .patch(
            "openshift-velero",
            &params,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "openshift-velero"}}),
            ),
        )
        .await
        .expect("namespace");
    let api: Api<VeleroInstall> = Api::namespaced(client.clone(), "openshift-velero");

    for file in ["examples/minimal.yaml", "examples/full.yaml"] {
        let example = read(file);
        assert_eq!(example["metadata"]["name"], "cluster", "{file}: the only name reconciled");
        let object: VeleroInstall = serde_json::from_value(example.clone()).expect("a VeleroInstall");
        let _ = api.delete("cluster", &Default::default()).await;
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{file} is refused by the CRD: {e}"));
        // Read back raw: a field the schema does not know would have been pruned.
        let stored: Value = serde_json::to_value(&created).expect("stored");
        assert_eq!(stored["spec"], example["spec"], "{file}: the API server pruned or changed a field");
        api.delete("cluster", &Default::default()).await.expect("delete");
    }

    // The schema is really checking: the full example with an invalid value is refused.
    let mut broken = read("examples/full.yaml");
    broken["spec"]["backupRetentionDays"] = json!(0);
    let broken: VeleroInstall = serde_json::from_value(broken).expect("a VeleroInstall");
    let err = api.create(&PostParams::default(), &broken).await.expect_err("retention 0 is refused");
    assert!(err.to_string().contains("backupRetentionDays"), "{err}");
}

/// The condition reasons the code can set: literal reasons of `Report::ok`/`Report::fail` and
/// `stop_on_bucket`, and the failure categories (`=> "Reason"` arms of `fn category`).
fn reasons_in_code() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = Vec::new();
    for dir in ["operator/src/reconcile", "operator/src"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("sources") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    sources.push(root.join("core/src/error.rs"));
    let mut reasons = Vec::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("source");
        // Unit tests use made-up reasons.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let compact: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut take_after = |marker: &str, skip_args: usize| {
            for (at, _) in compact.match_indices(marker) {
                let rest = &compact[at + marker.len()..];
                // The reason is the first string literal after `skip_args` commas.
                let after = rest.splitn(skip_args + 1, ',').last().unwrap_or_default().trim_start();
                if let Some(literal) = after.strip_prefix('"') {
                    let reason: String = literal.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                    if reason.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                        reasons.push(reason);
                    }
                }
            }
        };
        take_after("Report::ok(", 1);
        take_after("Report::fail(", 1);
        if let Some(body) = code.split("pub fn category(&self) -> &'static str {").nth(1) {
            let body = body.split("\n    }\n").next().unwrap_or_default();
            for arm in body.split("=> \"").skip(1) {
                reasons.push(arm.chars().take_while(|c| c.is_ascii_alphanumeric()).collect());
            }
        }
    }
    reasons.sort();
    reasons.dedup();
    reasons
}

#[test]
fn every_condition_reason_is_in_the_readme_troubleshooting_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let table =
        readme.split("### Troubleshooting by condition reason").nth(1).expect("the troubleshooting table");
    let reasons = reasons_in_code();
    for expected in ["InvalidSpec", "WaitingForCredentials", "AmbiguousBuckets", "ReadFailed", "Throttled"] {
        assert!(reasons.iter().any(|r| r == expected), "the scan misses {expected}: {reasons:?}");
    }
    let missing: Vec<&String> = reasons.iter().filter(|r| !table.contains(&format!("| `{r}` |"))).collect();
    assert!(missing.is_empty(), "reasons without a README troubleshooting row (append them): {missing:?}");
}
