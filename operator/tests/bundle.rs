//! The OLM bundle in bundle/ (written by `make bundle`, kept current by `make check-bundle`):
//! its CSV installs exactly deploy/'s Deployment with exactly the rules deploy/ binds to each
//! ServiceAccount, and every bundle object can be created on the test API server.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    discovery::{Discovery, Scope},
};
use mvo_testkit::env::{KubeEnv, foreign_crds, install_crds};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every object deploy/kustomization.yaml lists.
fn deploy() -> Vec<Value> {
    let dir = root().join("deploy");
    let kustomization = documents(&dir.join("kustomization.yaml")).remove(0);
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|file| documents(&dir.join(file.as_str().expect("path"))))
        .collect()
}

/// Every object of bundle/manifests, by file name.
fn bundle() -> BTreeMap<String, Value> {
    let dir = root().join("bundle/manifests");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("bundle/manifests (run `make bundle`)") {
        let path = entry.expect("entry").path();
        let mut docs = documents(&path);
        assert_eq!(docs.len(), 1, "{}: one object per file", path.display());
        out.insert(path.file_name().expect("name").to_string_lossy().into_owned(), docs.remove(0));
    }
    out
}

fn csv() -> Value {
    bundle()
        .into_values()
        .find(|o| o["kind"] == "ClusterServiceVersion")
        .expect("bundle/manifests has a ClusterServiceVersion")
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind: &str, namespace: Option<&str>, name: &str) -> Option<&'a Value> {
    of_kind(objects, kind)
        .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str() == namespace)
}

#[test]
fn the_csv_installs_exactly_deploys_deployment() {
    let deploy = deploy();
    let deployments: Vec<&Value> = of_kind(&deploy, "Deployment").collect();
    assert_eq!(deployments.len(), 1);
    let deployment = deployments[0];
    assert_eq!(
        csv()["spec"]["install"],
        json!({"strategy": "deployment", "spec": {
            "deployments": [{
                "name": deployment["metadata"]["name"],
                "label": deployment["metadata"]["labels"],
                "spec": deployment["spec"],
            }],
            "permissions": csv()["spec"]["install"]["spec"]["permissions"],
            "clusterPermissions": csv()["spec"]["install"]["spec"]["clusterPermissions"],
        }})
    );
}

#[test]
fn the_csv_grants_exactly_the_rules_deploy_binds_to_each_service_account() {
    let deploy = deploy();
    let namespace = of_kind(&deploy, "Deployment").next().expect("Deployment")["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_owned();
    // deploy/'s bindings, read independently of the generator: in-namespace Roles are
    // `permissions`, everything else (ClusterRoles, Roles elsewhere) `clusterPermissions`.
    let mut permissions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut cluster: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let accounts: Vec<&str> = of_kind(&deploy, "ServiceAccount")
        .filter(|a| a["metadata"]["namespace"] == namespace.as_str())
        .map(|a| a["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert!(accounts.contains(&"managed-velero-operator"), "{accounts:?}");
    for binding in deploy.iter().filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding") {
        let binding_ns = binding["metadata"]["namespace"].as_str();
        for subject in binding["subjects"].as_array().expect("subjects") {
            let subject_ns = subject["namespace"].as_str().or(binding_ns);
            let name = subject["name"].as_str().expect("subject name");
            if subject["kind"] != "ServiceAccount"
                || subject_ns != Some(&namespace)
                || !accounts.contains(&name)
            {
                continue;
            }
            let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef kind");
            let role_name = binding["roleRef"]["name"].as_str().expect("roleRef name");
            let role_ns = (role_kind == "Role").then_some(binding_ns).flatten();
            let rules = match named(&deploy, role_kind, role_ns, role_name) {
                Some(role) => role["rules"].as_array().expect("rules").clone(),
                None => {
                    assert_eq!((role_kind, role_name), ("ClusterRole", "cluster-admin"), "unknown role");
                    vec![
                        json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                        json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
                    ]
                }
            };
            let target = if binding["kind"] == "RoleBinding" && binding_ns == Some(&namespace) {
                &mut permissions
            } else {
                &mut cluster
            };
            target.entry(name.to_owned()).or_default().extend(rules);
        }
    }
    let listed = |map: BTreeMap<String, Vec<Value>>| -> Value {
        map.into_iter().map(|(sa, rules)| json!({"serviceAccountName": sa, "rules": rules})).collect()
    };
    let install = &csv()["spec"]["install"]["spec"];
    assert_eq!(install["permissions"], listed(permissions), "permissions");
    assert_eq!(install["clusterPermissions"], listed(cluster), "clusterPermissions");
    // The operator's own identity has both: a namespaced Role and cluster-scoped reads.
    for key in ["permissions", "clusterPermissions"] {
        assert!(
            install[key]
                .as_array()
                .expect(key)
                .iter()
                .any(|p| p["serviceAccountName"] == "managed-velero-operator"),
            "{key}"
        );
    }
}

#[test]
fn the_bundle_carries_deploys_crd_and_describes_every_field() {
    let deploy = deploy();
    let crd = of_kind(&deploy, "CustomResourceDefinition").next().expect("CRD in deploy/");
    let bundle = bundle();
    assert_eq!(bundle.get("managed.openshift.io_veleroinstalls.yaml"), Some(crd));
    let owned = &csv()["spec"]["customresourcedefinitions"]["owned"];
    assert_eq!(owned[0]["name"], crd["metadata"]["name"]);
    assert_eq!(owned[0]["kind"], "VeleroInstall");
    let paths = |key: &str| -> Vec<String> {
        owned[0][key]
            .as_array()
            .expect(key)
            .iter()
            .map(|d| d["path"].as_str().expect("path").to_owned())
            .collect()
    };
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    for (section, key) in [("spec", "specDescriptors"), ("status", "statusDescriptors")] {
        let described = paths(key);
        for field in schema[section]["properties"].as_object().expect(section).keys() {
            assert!(described.contains(field), "{section}.{field} has no descriptor: {described:?}");
        }
    }
    let annotations = documents(&root().join("bundle/metadata/annotations.yaml")).remove(0);
    assert_eq!(
        annotations["annotations"]["operators.operatorframework.io.bundle.manifests.v1"],
        "manifests/"
    );
    assert_eq!(
        annotations["annotations"]["operators.operatorframework.io.bundle.mediatype.v1"],
        "registry+v1"
    );
}

/// A stand-in for OLM's ClusterServiceVersion CRD: the kind and scope only, any content.
fn csv_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterserviceversions.operators.coreos.com"},
        "spec": {
            "group": "operators.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": "clusterserviceversions", "singular": "clusterserviceversion",
                      "kind": "ClusterServiceVersion", "listKind": "ClusterServiceVersionList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("CSV stand-in CRD")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundle_object_can_be_created_on_the_test_api_server() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client: Client = env.client().await.expect("client");
    let bundle = bundle();
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(csv_crd());
    crds.extend(
        bundle
            .values()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .map(|o| serde_json::from_value::<CustomResourceDefinition>(o.clone()).expect("CRD")),
    );
    install_crds(&client, crds).await.expect("CRDs");
    // OLM installs into the operator's namespace (the CSV's suggested one).
    let namespace = csv()["metadata"]["annotations"]["operatorframework.io/suggested-namespace"]
        .as_str()
        .expect("suggested namespace")
        .to_owned();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let params = PatchParams::apply("bundle-test").force();
    namespaces
        .patch(
            &namespace,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
        )
        .await
        .expect("namespace");

    let deadline = Instant::now() + Duration::from_secs(15);
    let discovery = loop {
        let discovery = Discovery::new(client.clone()).run_aggregated().await.expect("discovery");
        let all = bundle.values().all(|o| {
            let gvk = gvk(o);
            discovery.resolve_gvk(&gvk).is_some()
        });
        if all || Instant::now() > deadline {
            break discovery;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (file, object) in &bundle {
        let (ar, caps) =
            discovery.resolve_gvk(&gvk(object)).unwrap_or_else(|| panic!("{file}: kind not served"));
        let mut object = object.clone();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                // As OLM does: namespaced bundle objects land in the install namespace.
                object["metadata"]["namespace"] = json!(namespace);
                Api::namespaced_with(client.clone(), &namespace, &ar)
            }
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = object["metadata"]["name"].as_str().expect("name").to_owned();
        api.patch(&name, &params, &Patch::Apply(&object)).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        let stored = serde_json::to_value(api.get(&name).await.unwrap_or_else(|e| panic!("{file}: {e}")))
            .expect("stored");
        if object["kind"] == "ClusterServiceVersion" {
            assert_eq!(stored["spec"], object["spec"], "{file}: stored CSV spec differs");
        }
    }
}

fn gvk(object: &Value) -> kube::api::GroupVersionKind {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    kube::api::GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"))
}
