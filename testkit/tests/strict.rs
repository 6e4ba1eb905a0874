//! The test API server refuses what kube-apiserver refuses: ObjectMeta validation on every
//! built-in kind it serves (create, update, patch and server-side apply), and the immutable
//! fields of the kinds the operator writes (422 Invalid naming the field path).

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use mvo_testkit::env::KubeEnv;
use serde_json::{Value, json};

async fn admin() -> (&'static KubeEnv, Client) {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    (env, env.client().await.expect("client"))
}

/// The status code and message of a request's error (0 and "" when it succeeded).
fn status<T>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Ok(_) => (0, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("not an API error: {e}"),
    }
}

/// Every built-in kind the server serves, with a valid body (without metadata).
fn kinds() -> Vec<(GroupVersionKind, &'static str, bool, Value)> {
    let pod_spec = json!({"containers": [{"name": "c", "image": "i"}]});
    let gvk = GroupVersionKind::gvk;
    vec![
        (gvk("", "v1", "Namespace"), "namespaces", false, json!({})),
        (gvk("", "v1", "Secret"), "secrets", true, json!({"data": {"k": "dg=="}})),
        (gvk("", "v1", "ConfigMap"), "configmaps", true, json!({"data": {"k": "v"}})),
        (gvk("", "v1", "Service"), "services", true, json!({"spec": {"ports": [{"port": 80}]}})),
        (gvk("", "v1", "ServiceAccount"), "serviceaccounts", true, json!({})),
        (
            gvk("", "v1", "Event"),
            "events",
            true,
            json!({"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "R"}),
        ),
        (gvk("", "v1", "Pod"), "pods", true, json!({"spec": pod_spec})),
        (
            gvk("apps", "v1", "Deployment"),
            "deployments",
            true,
            json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}}),
        ),
        (
            gvk("batch", "v1", "Job"),
            "jobs",
            true,
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}),
        ),
        (gvk("coordination.k8s.io", "v1", "Lease"), "leases", true, json!({"spec": {"holderIdentity": "h"}})),
        (gvk("events.k8s.io", "v1", "Event"), "events", true, json!({"reason": "R", "note": "n"})),
        (gvk("rbac.authorization.k8s.io", "v1", "Role"), "roles", true, json!({"rules": []})),
        (
            gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            "rolebindings",
            true,
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        ),
        (gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"), "clusterroles", false, json!({"rules": []})),
        (
            gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
            "clusterrolebindings",
            false,
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}}),
        ),
    ]
}

fn owner(name: &str, controller: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": format!("uid-{name}"), "controller": controller})
}

/// Bad metadata and the field path kube-apiserver's message names.
fn bad_metadata() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("label key", json!({"labels": {"bad key!": "v"}}), "metadata.labels"),
        ("label value", json!({"labels": {"k": "bad value!"}}), "metadata.labels"),
        ("annotation key", json!({"annotations": {"bad key!": "v"}}), "metadata.annotations"),
        (
            "two controllers",
            json!({"ownerReferences": [owner("a", true), owner("b", true)]}),
            "Only one reference can have Controller set to true",
        ),
        (
            "owner without uid",
            json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": ""}]}),
            "metadata.ownerReferences.uid",
        ),
    ]
}

fn object(gvk: &GroupVersionKind, name: &str, body: &Value, metadata: &Value) -> Value {
    let mut obj = body.clone();
    obj["apiVersion"] = json!(gvk.api_version());
    obj["kind"] = json!(gvk.kind);
    obj["metadata"] = metadata.clone();
    obj["metadata"]["name"] = json!(name);
    obj
}

#[tokio::test]
async fn object_metadata_is_validated_for_every_kind_on_create_update_patch_and_apply() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "meta").await.expect("namespace");
    for (k, (gvk, plural, namespaced, body)) in kinds().into_iter().enumerate() {
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let what = format!("{}/{}", gvk.api_version(), gvk.kind);
        // Unique per kind: both Event kinds share one storage.
        let base = format!("{ns}-{k}");
        // Names: the generic check (a path segment) and the kind's format both run on create.
        let bad_name: DynamicObject =
            serde_json::from_value(object(&gvk, "Bad/Name", &body, &json!({}))).expect("object");
        let (code, _) = status(api.create(&PostParams::default(), &bad_name).await);
        assert!(code == 422 || code == 404, "{what}: name with a slash accepted ({code})");
        let valid: DynamicObject =
            serde_json::from_value(object(&gvk, &base, &body, &json!({}))).expect("object");
        api.create(&PostParams::default(), &valid)
            .await
            .unwrap_or_else(|e| panic!("{what}: valid create: {e}"));
        for (i, (rule, metadata, needle)) in bad_metadata().into_iter().enumerate() {
            let check = |op: &str, (code, message): (u16, String)| {
                assert_eq!(code, 422, "{what} {op} with bad {rule} accepted: {message}");
                assert!(message.contains(needle), "{what} {op} {rule}: {message}");
            };
            let created: DynamicObject =
                serde_json::from_value(object(&gvk, &format!("{base}-c{i}"), &body, &metadata))
                    .expect("object");
            check("create", status(api.create(&PostParams::default(), &created).await));
            let mut current = api.get(&base).await.expect("get");
            let mut update = serde_json::to_value(&current).expect("json");
            for (k, v) in metadata.as_object().expect("metadata") {
                update["metadata"][k] = v.clone();
            }
            current = serde_json::from_value(update).expect("object");
            check("update", status(api.replace(&base, &PostParams::default(), &current).await));
            check(
                "merge patch",
                status(
                    api.patch(&base, &PatchParams::default(), &Patch::Merge(json!({"metadata": metadata})))
                        .await,
                ),
            );
            let applied = object(&gvk, &base, &body, &metadata);
            check(
                "server-side apply",
                status(
                    api.patch(&base, &PatchParams::apply("strict").force(), &Patch::Apply(&applied)).await,
                ),
            );
        }
        if !namespaced {
            let _ = api.delete(&base, &Default::default()).await;
        }
    }
}

async fn api(client: &Client, ns: &str, gvk: GroupVersionKind, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// Creates `obj`, then applies `change` as a merge patch and as a server-side apply: both must be
/// 422 with `field` and `message` in kube-apiserver's wording.
async fn assert_immutable(api: &Api<DynamicObject>, obj: Value, change: Value, field: &str, message: &str) {
    let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
    let created: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
    api.create(&PostParams::default(), &created).await.expect("create");
    let (code, msg) = status(api.patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await);
    assert_eq!(code, 422, "merge patch of {field} accepted: {msg}");
    assert!(msg.contains(&format!("{field}: ")) && msg.contains(message), "{msg}");
    let mut applied = obj;
    json_merge(&mut applied, &change);
    let (code, msg) =
        status(api.patch(&name, &PatchParams::apply("strict").force(), &Patch::Apply(&applied)).await);
    assert_eq!(code, 422, "apply of {field} accepted: {msg}");
    assert!(msg.contains(&format!("{field}: ")) && msg.contains(message), "{msg}");
}

fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn job(name: &str, image: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}})
}

#[tokio::test]
async fn a_jobs_template_is_immutable() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "job-tpl").await.expect("namespace");
    let jobs = api(&client, &ns, GroupVersionKind::gvk("batch", "v1", "Job"), "jobs").await;
    let change = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "other"}]}}}});
    assert_immutable(&jobs, job("j", "i"), change, "spec.template", "field is immutable").await;
    // Metadata of the Job itself stays mutable.
    jobs.patch("j", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .expect("label the Job");
}

#[tokio::test]
async fn a_jobs_selector_is_immutable() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "job-sel").await.expect("namespace");
    let jobs = api(&client, &ns, GroupVersionKind::gvk("batch", "v1", "Job"), "jobs").await;
    let mut obj = job("j", "i");
    obj["spec"]["manualSelector"] = json!(true);
    obj["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
    obj["spec"]["template"]["metadata"] = json!({"labels": {"a": "b"}});
    let change = json!({"spec": {"selector": {"matchLabels": {"a": "c"}}}});
    assert_immutable(&jobs, obj, change, "spec.selector", "field is immutable").await;
}

#[tokio::test]
async fn a_deployments_selector_is_immutable() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "deploy-sel").await.expect("namespace");
    let deployments =
        api(&client, &ns, GroupVersionKind::gvk("apps", "v1", "Deployment"), "deployments").await;
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b", "c": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let change = json!({"spec": {"selector": {"matchLabels": {"a": "b", "c": "d"}}}});
    assert_immutable(&deployments, obj, change, "spec.selector", "field is immutable").await;
    // The template stays mutable.
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "j"}]}}}});
    deployments.patch("d", &PatchParams::default(), &Patch::Strategic(image)).await.expect("new image");
}

#[tokio::test]
async fn a_services_cluster_ip_may_not_change_once_set() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "svc-ip").await.expect("namespace");
    let services = api(&client, &ns, GroupVersionKind::gvk("", "v1", "Service"), "services").await;
    let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                     "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
    let change = json!({"spec": {"clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10"]}});
    assert_immutable(&services, obj, change, "spec.clusterIPs[0]", "may not change once set").await;
    // An apply that leaves clusterIP out keeps it, as on a real cluster.
    let again = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": {"ports": [{"port": 81}]}});
    let svc = services
        .patch("s", &PatchParams::apply("other"), &Patch::Apply(&again))
        .await
        .expect("apply without clusterIP");
    assert_eq!(svc.data["spec"]["clusterIP"], "None");
}

#[tokio::test]
async fn immutable_secrets_and_configmaps_are_frozen() {
    let (env, client) = admin().await;
    let ns = env.namespace(&client, "frozen").await.expect("namespace");
    let secrets = api(&client, &ns, GroupVersionKind::gvk("", "v1", "Secret"), "secrets").await;
    let configmaps = api(&client, &ns, GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps").await;
    let secret = |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "immutable": true, "data": {"k": "dg=="}});
    let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "immutable": true, "data": {"k": "v"}});
    let frozen = "field is immutable when `immutable` is set";
    assert_immutable(&secrets, secret("data"), json!({"data": {"k": "dw=="}}), "data", frozen).await;
    assert_immutable(&secrets, secret("flag"), json!({"immutable": false}), "immutable", frozen).await;
    assert_immutable(&configmaps, cm("data"), json!({"data": {"k": "w"}}), "data", frozen).await;
    assert_immutable(&configmaps, cm("flag"), json!({"immutable": false}), "immutable", frozen).await;
    // A Secret's type never changes; a mutable Secret's data does.
    let plain =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}, "data": {"k": "dg=="}});
    assert_immutable(&secrets, plain, json!({"type": "kubernetes.io/tls"}), "type", "field is immutable")
        .await;
    secrets
        .patch("plain", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "dw=="}})))
        .await
        .expect("mutable data");
}
