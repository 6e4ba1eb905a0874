//! The stand-in CRDs of `testkit/crds/` are as strict as the upstream CRDs they mirror: the real
//! API server rejects a broken object of each kind, prunes misspelled fields, and has (or lacks)
//! a status subresource exactly where upstream does. A stand-in that accepted everything would
//! let the operator pass here and fail in a real cluster.
//!
//! Objects are sent with plain creates and merge patches: the server validates (422) and prunes
//! unknown fields (with a warning). Server-side apply, which the operator uses, is stricter
//! still: it refuses a field the schema does not declare, or a value of the wrong type, outright
//! ("failed to create typed patch object", HTTP 500), so the operator's own integration tests
//! fail on a misspelled field instead of silently losing it.

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use mvo_testkit::env::{KubeEnv, foreign_crds, install_crds};
use serde_json::{Value, json};

async fn client() -> (&'static KubeEnv, Client) {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    install_crds(&client, foreign_crds().expect("stand-in CRDs")).await.expect("install CRDs");
    (env, client)
}

fn resource(group: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind))
}

async fn namespaced(group: &str, kind: &str) -> Api<DynamicObject> {
    let (env, client) = client().await;
    let ns = env.namespace(&client, &format!("crd-{}", kind.to_ascii_lowercase())).await.expect("namespace");
    Api::namespaced_with(client, &ns, &resource(group, kind))
}

fn object(api: &ApiResource, name: &str, body: Value) -> Value {
    let mut object = json!({"apiVersion": api.api_version, "kind": api.kind, "metadata": {"name": name}});
    if let (Some(target), Some(fields)) = (object.as_object_mut(), body.as_object()) {
        target.extend(fields.clone());
    }
    object
}

/// Creates `name` with `body` and returns the object as stored.
async fn apply(api: &Api<DynamicObject>, kind: &ApiResource, name: &str, body: Value) -> kube::Result<Value> {
    let object: DynamicObject = serde_json::from_value(object(kind, name, body)).expect("object");
    let created = api.create(&PostParams::default(), &object).await?;
    Ok(serde_json::to_value(created).expect("serialisable"))
}

fn invalid<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => {}
        other => panic!("{what}: expected 422 Invalid, got {other:?}"),
    }
}

/// Creates an object with `body` and expects the server to refuse it as invalid (HTTP 422).
async fn rejected(api: &Api<DynamicObject>, kind: &ApiResource, what: &str, body: Value) {
    invalid(apply(api, kind, "broken", body).await, &format!("{} {what}", kind.kind));
}

const VELERO: &str = "velero.io";

#[tokio::test]
async fn backup_storage_location_is_validated_pruned_and_has_no_status_subresource() {
    let kind = resource(VELERO, "BackupStorageLocation");
    let api = namespaced(VELERO, "BackupStorageLocation").await;
    let spec =
        json!({"provider": "aws", "objectStorage": {"bucket": "b"}, "config": {"region": "eu-west-1"}});
    rejected(
        &api,
        &kind,
        "with a non-string config value",
        json!({"spec": {
        "provider": "aws", "objectStorage": {"bucket": "b"}, "config": {"s3ForcePathStyle": true}}}),
    )
    .await;
    rejected(&api, &kind, "without a bucket", json!({"spec": {"provider": "aws", "objectStorage": {}}}))
        .await;
    rejected(&api, &kind, "without objectStorage", json!({"spec": {"provider": "aws"}})).await;
    rejected(&api, &kind, "without a provider", json!({"spec": {"objectStorage": {"bucket": "b"}}})).await;
    rejected(
        &api,
        &kind,
        "with an unknown accessMode",
        json!({"spec": {
        "provider": "aws", "objectStorage": {"bucket": "b"}, "accessMode": "WriteOnly"}}),
    )
    .await;

    let mut misspelled = spec.clone();
    misspelled["defualt"] = json!(true);
    misspelled["objectStorage"]["prefx"] = json!("velero");
    // Without a status subresource the status travels with the object, as Velero writes it.
    let stored = apply(&api, &kind, "default", json!({"spec": misspelled, "status": {"phase": "Available"}}))
        .await
        .expect("valid BSL");
    assert_eq!(stored["spec"], spec, "misspelled fields must be pruned");
    assert_eq!(stored["status"]["phase"], "Available", "BSL has no status subresource in Velero v1.17");
}

#[tokio::test]
async fn volume_snapshot_location_is_validated_and_pruned() {
    let kind = resource(VELERO, "VolumeSnapshotLocation");
    let api = namespaced(VELERO, "VolumeSnapshotLocation").await;
    rejected(&api, &kind, "without a provider", json!({"spec": {"config": {"region": "eu-west-1"}}})).await;
    rejected(
        &api,
        &kind,
        "with a non-string config value",
        json!({"spec": {
        "provider": "aws", "config": {"snapshots": 3}}}),
    )
    .await;
    let stored = apply(
        &api,
        &kind,
        "default",
        json!({"spec": {
        "provider": "aws", "config": {"region": "eu-west-1"}, "confg": {"x": "y"}},
        "status": {"phase": "Available"}}),
    )
    .await
    .expect("valid VSL");
    assert_eq!(stored["spec"], json!({"provider": "aws", "config": {"region": "eu-west-1"}}));
    assert_eq!(stored["status"]["phase"], "Available", "VSL has no status subresource in Velero v1.17");
}

#[tokio::test]
async fn schedule_is_validated_and_pruned() {
    let kind = resource(VELERO, "Schedule");
    let api = namespaced(VELERO, "Schedule").await;
    rejected(&api, &kind, "without a template", json!({"spec": {"schedule": "0 1 * * *"}})).await;
    rejected(&api, &kind, "without a schedule", json!({"spec": {"template": {"ttl": "240h0m0s"}}})).await;
    rejected(
        &api,
        &kind,
        "with a numeric ttl",
        json!({"spec": {
        "schedule": "0 1 * * *", "template": {"ttl": 240}}}),
    )
    .await;
    let stored = apply(
        &api,
        &kind,
        "daily",
        json!({"spec": {
        "schedule": "0 1 * * *", "pasued": true, "template": {"ttl": "240h0m0s", "tll": "1h"}}}),
    )
    .await
    .expect("valid Schedule");
    assert_eq!(stored["spec"], json!({"schedule": "0 1 * * *", "template": {"ttl": "240h0m0s"}}));
}

#[tokio::test]
async fn credentials_request_is_validated_and_pruned_but_keeps_its_provider_spec() {
    let group = "cloudcredential.openshift.io";
    let kind = resource(group, "CredentialsRequest");
    let api = namespaced(group, "CredentialsRequest").await;
    let provider_spec = json!({"apiVersion": "cloudcredential.openshift.io/v1", "kind": "GCPProviderSpec",
                               "predefinedRoles": ["roles/storage.admin"], "skipServiceCheck": true});
    rejected(
        &api,
        &kind,
        "without secretRef",
        json!({"spec": {
        "serviceAccountNames": ["velero"], "providerSpec": provider_spec}}),
    )
    .await;
    rejected(&api, &kind, "without spec", json!({})).await;
    rejected(
        &api,
        &kind,
        "with a non-list serviceAccountNames",
        json!({"spec": {
        "secretRef": {"name": "s", "namespace": "n"}, "serviceAccountNames": "velero"}}),
    )
    .await;
    let stored = apply(
        &api,
        &kind,
        "velero",
        json!({"spec": {
        "secretRef": {"name": "s", "namespace": "n", "nmae": "typo"},
        "serviceAccountNames": ["velero"], "serviceAcountNames": ["typo"],
        "providerSpec": provider_spec}}),
    )
    .await
    .expect("valid CredentialsRequest");
    assert_eq!(stored["spec"]["secretRef"], json!({"name": "s", "namespace": "n"}));
    assert!(stored["spec"].get("serviceAcountNames").is_none(), "{stored}");
    assert_eq!(stored["spec"]["providerSpec"], provider_spec, "providerSpec is a RawExtension upstream");
}

#[tokio::test]
async fn service_monitor_is_validated_and_pruned() {
    let group = "monitoring.coreos.com";
    let kind = resource(group, "ServiceMonitor");
    let api = namespaced(group, "ServiceMonitor").await;
    let endpoints = json!([{"port": "metrics", "interval": "30s"}]);
    let selector = json!({"matchLabels": {"component": "velero"}});
    rejected(&api, &kind, "without a selector", json!({"spec": {"endpoints": endpoints}})).await;
    rejected(&api, &kind, "without endpoints", json!({"spec": {"selector": selector}})).await;
    rejected(
        &api,
        &kind,
        "with a bad interval",
        json!({"spec": {
        "selector": selector, "endpoints": [{"port": "metrics", "interval": "30 seconds"}]}}),
    )
    .await;
    rejected(
        &api,
        &kind,
        "with a bad scheme",
        json!({"spec": {
        "selector": selector, "endpoints": [{"port": "metrics", "scheme": "ftp"}]}}),
    )
    .await;
    let stored = apply(
        &api,
        &kind,
        "velero-metrics",
        json!({"spec": {
        "selector": selector, "endpoints": [{"port": "metrics", "interval": "1m30s", "intreval": "5s"}],
        "namespaceSelector": {"matchNames": ["openshift-velero"]}, "namepsaceSelector": {}}}),
    )
    .await
    .expect("valid ServiceMonitor");
    assert_eq!(
        stored["spec"],
        json!({"selector": selector,
        "endpoints": [{"port": "metrics", "interval": "1m30s"}],
        "namespaceSelector": {"matchNames": ["openshift-velero"]}})
    );
}

/// Every platform type openshift/api's Infrastructure CRD allows (feature set Default).
const PLATFORMS: [&str; 17] = [
    "",
    "AWS",
    "Azure",
    "BareMetal",
    "GCP",
    "Libvirt",
    "OpenStack",
    "None",
    "VSphere",
    "oVirt",
    "IBMCloud",
    "KubeVirt",
    "EquinixMetal",
    "PowerVS",
    "AlibabaCloud",
    "Nutanix",
    "External",
];

#[tokio::test]
async fn infrastructure_accepts_every_upstream_platform_and_rejects_others() {
    let (_, client) = client().await;
    let kind = resource("config.openshift.io", "Infrastructure");
    let api: Api<DynamicObject> = Api::all_with(client, &kind);
    let name = format!("infra-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    rejected(&api, &kind, "without spec", json!({})).await;
    apply(&api, &kind, &name, json!({"spec": {"platfromSpec": {}}})).await.expect("Infrastructure");
    let stored = api.get(&name).await.expect("read back");
    assert_eq!(stored.data["spec"], json!({}), "misspelled spec fields must be pruned");

    let set_status = |status: Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await
        }
    };
    for platform in PLATFORMS {
        let status = json!({"infrastructureName": "c1", "platform": platform,
                            "platformStatus": {"type": platform}});
        set_status(status).await.unwrap_or_else(|e| panic!("platform {platform:?} refused: {e}"));
    }
    for (what, status) in [
        ("an unknown platform type", json!({"platformStatus": {"type": "Mars"}})),
        ("an unknown deprecated platform", json!({"platform": "aws"})),
        ("a non-string region", json!({"platformStatus": {"type": "AWS", "aws": {"region": 1}}})),
    ] {
        invalid(set_status(status).await, &format!("Infrastructure with {what}"));
    }
    let stored =
        set_status(json!({"infrastructureName": "c1", "platformStatus": {"type": "GCP", "aws": null,
        "gcp": {"projectID": "p", "region": "europe-west4", "regoin": "typo"}}}))
        .await
        .expect("GCP status");
    assert_eq!(
        stored.data["status"]["platformStatus"]["gcp"],
        json!({"projectID": "p", "region": "europe-west4"})
    );
    assert_eq!(stored.data["status"]["infrastructureName"], "c1");
}
