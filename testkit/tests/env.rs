//! The local environment works: a real API server serving CRDs and the built-in kinds the
//! operator uses (with server-side apply, status subresources and watch), and a real S3 server.

use std::collections::BTreeMap;

use aws_sdk_s3::{
    config::{Credentials, Region},
    primitives::ByteStream,
    types::{Tag, Tagging},
};
use aws_smithy_http_client::tls;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentStatus},
    core::v1::{Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use mvo_testkit::env::{EnvError, KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;

const MANAGER: &str = "env-test";

async fn kube() -> (&'static KubeEnv, Client) {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    (env, client)
}

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn managers(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect()
}

#[tokio::test]
async fn custom_resources_are_validated_applied_and_watched() {
    let (env, client) = kube().await;
    install_crds(&client, foreign_crds().expect("stand-in CRDs")).await.expect("install CRDs");
    let ns = env.namespace(&client, "env-crd").await.expect("namespace");
    let gvk = GroupVersionKind::gvk("cloudcredential.openshift.io", "v1", "CredentialsRequest");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));

    let watched = {
        let api = api.clone();
        tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .applied_objects()
                .try_filter(|o| std::future::ready(o.name_any() == "velero-iam-credentials"))
                .boxed()
                .try_next()
                .await
        })
    };

    let object = json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "CredentialsRequest",
        "metadata": {"name": "velero-iam-credentials"},
        "spec": {"secretRef": {"name": "velero-iam-credentials", "namespace": ns}}
    });
    let applied = api.patch("velero-iam-credentials", &apply(), &Patch::Apply(&object)).await.expect("SSA");
    assert_eq!(managers(&applied.metadata), [MANAGER]);
    let again =
        api.patch("velero-iam-credentials", &apply(), &Patch::Apply(&object)).await.expect("SSA again");
    assert_eq!(again.resource_version(), applied.resource_version(), "identical apply must be a no-op");

    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), watched)
        .await
        .expect("watch event in time")
        .expect("watch task")
        .expect("watch stream");
    assert_eq!(seen.map(|o| o.name_any()).as_deref(), Some("velero-iam-credentials"));
}

#[tokio::test]
async fn crd_schemas_are_enforced() {
    let (env, client) = kube().await;
    let ns = env.namespace(&client, "env-schema").await.expect("namespace");
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.test.mvo.io"},
            "spec": {
                "group": "test.mvo.io",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "properties": {
                        "days": {"type": "integer", "minimum": 1}
                    }}}
                }}}]
            }
        }))
        .expect("crd");
    install_crds(&client, [crd]).await.expect("install");
    let gvk = GroupVersionKind::gvk("test.mvo.io", "v1", "Widget");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
    let bad = json!({"apiVersion": "test.mvo.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"days": 0}});
    let err = api.patch("w", &apply(), &Patch::Apply(&bad)).await.expect_err("minimum violated");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 422), "{err}");
}

#[tokio::test]
async fn built_in_kinds_support_server_side_apply_and_status() {
    let (env, client) = kube().await;
    let ns = env.namespace(&client, "env-builtin").await.expect("namespace");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "velero", "labels": {"component": "velero"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"deploy": "velero"}},
            "template": {
                "metadata": {"labels": {"deploy": "velero"}},
                "spec": {"containers": [{"name": "velero", "image": "velero/velero:v1.17.0", "args": ["server"]}]}
            }
        }
    });
    let applied =
        deployments.patch("velero", &apply(), &Patch::Apply(&deployment)).await.expect("apply Deployment");
    assert_eq!(managers(&applied.metadata), [MANAGER]);
    let again = deployments.patch("velero", &apply(), &Patch::Apply(&deployment)).await.expect("re-apply");
    assert_eq!(again.resource_version(), applied.resource_version());

    let status = json!({"status": DeploymentStatus { ready_replicas: Some(1), replicas: Some(1), ..Default::default() }});
    deployments
        .patch_status("velero", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let read = deployments.get("velero").await.expect("get");
    assert_eq!(read.status.and_then(|s| s.ready_replicas), Some(1));
    assert_eq!(read.spec.and_then(|s| s.replicas), Some(1), "status write must not touch spec");

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "velero-metrics"},
        "spec": {"selector": {"deploy": "velero"}, "ports": [{"name": "metrics", "port": 8085}]}
    });
    let svc =
        services.patch("velero-metrics", &apply(), &Patch::Apply(&service)).await.expect("apply Service");
    assert_eq!(svc.spec.and_then(|s| s.ports).map(|p| p[0].port), Some(8085));

    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
        "stringData": {"credentials": "[default]\naws_access_key_id = AKIDEXAMPLE\n"}
    });
    secrets.patch("velero-iam-credentials", &apply(), &Patch::Apply(&secret)).await.expect("apply Secret");
    let stored = secrets.get("velero-iam-credentials").await.expect("get Secret");
    let data: BTreeMap<_, _> = stored.data.unwrap_or_default();
    assert!(data.contains_key("credentials"), "stringData must be stored as data");
}

#[tokio::test]
async fn s3_round_trip_with_the_aws_sdk() {
    let s3 = S3Env::shared().expect("moto (run `make testenv`)");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(https)
        .endpoint_url(s3.endpoint())
        .force_path_style(true)
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "env-test"))
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let bucket = format!("env-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    client
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    let tag = Tag::builder().key("velero.io/backup-location").value("default").build().expect("tag");
    client
        .put_bucket_tagging()
        .bucket(&bucket)
        .tagging(Tagging::builder().tag_set(tag).build().expect("tagging"))
        .send()
        .await
        .expect("tag bucket");
    client
        .put_object()
        .bucket(&bucket)
        .key("backups/b1/velero-backup.json")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await
        .expect("put object");
    let tags = client.get_bucket_tagging().bucket(&bucket).send().await.expect("get tagging");
    assert_eq!(tags.tag_set()[0].value(), "default");
    let listed = client.list_objects_v2().bucket(&bucket).send().await.expect("list");
    assert_eq!(listed.key_count(), Some(1));
    let location = client.get_bucket_location().bucket(&bucket).send().await.expect("location");
    assert_eq!(location.location_constraint().map(|c| c.as_str()), Some("eu-west-1"));
}

#[test]
fn a_missing_binary_names_the_command_that_builds_it() {
    let empty = std::env::temp_dir().join(format!("mvo-empty-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&empty).expect("dir");
    let err = KubeEnv::start_from(&empty).expect_err("no binaries");
    assert!(matches!(err, EnvError::MissingBinary { .. }), "{err}");
    assert!(err.to_string().contains("make testenv"), "{err}");
    let err = S3Env::start_from(&empty).expect_err("no venv");
    assert!(err.to_string().contains("make testenv"), "{err}");
    std::fs::remove_dir_all(&empty).expect("cleanup");
}
