//! The test API server authorizes the operator's ServiceAccount with RBAC, as kube-apiserver
//! does: nothing without a binding, exactly what `deploy/` grants once it is applied, 403 with
//! kube-apiserver's message; the admin stays all-powerful.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    discovery::Discovery,
};
use mvo_testkit::env::{DeployRbac, KubeEnv, OPERATOR_NAMESPACE, OPERATOR_USER};
use serde_json::json;

/// The status code and message of a request's error (0 and "" when it succeeded).
fn status<T>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Ok(_) => (0, String::new()),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("not an API error: {e}"),
    }
}

async fn admin(env: &KubeEnv) -> Client {
    env.client().await.expect("admin client")
}

#[tokio::test]
async fn without_a_binding_the_operator_is_refused_with_kube_apiservers_message() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let operator = env.operator_client_unbound().await.expect("operator client");
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), "ns1");
    let (code, message) = status(secrets.get("x").await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        format!(
            "secrets \"x\" is forbidden: User \"{OPERATOR_USER}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ns1\""
        )
    );
    let (code, message) = status(Api::<Deployment>::all(operator.clone()).list(&ListParams::default()).await);
    assert_eq!(code, 403);
    assert!(
        message.ends_with("cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"),
        "{message}"
    );
    // Discovery is granted to every authenticated identity (bootstrap system:discovery role).
    Discovery::new(operator).run_aggregated().await.expect("discovery as the operator");
    // The admin may do anything.
    let (code, _) = status(Api::<Secret>::namespaced(admin(&env).await, "ns1").get("x").await);
    assert_eq!(code, 404);
}

#[tokio::test]
async fn deploy_rbac_grants_the_operator_exactly_its_rules() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let admin = admin(env).await;
    let namespace = env.namespace(&admin, "rbac").await.expect("namespace");
    let operator = env.operator_client(&[&namespace]).await.expect("operator client");
    for ns in [OPERATOR_NAMESPACE, namespace.as_str()] {
        let deployments: Api<Deployment> = Api::namespaced(operator.clone(), ns);
        deployments.list(&ListParams::default()).await.expect("list deployments is granted");
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        deployments
            .patch("d", &PatchParams::apply("op").force(), &Patch::Apply(&deployment))
            .await
            .expect("server-side apply (patch + create) is granted");
        let (code, message) = status(deployments.delete("d", &DeleteParams::default()).await);
        assert_eq!(code, 403, "delete is not granted: {message}");
        // resourceNames: only Velero's credentials secret.
        let secrets: Api<Secret> = Api::namespaced(operator.clone(), ns);
        assert_eq!(status(secrets.get("velero-iam-credentials").await).0, 404, "granted, absent");
        assert_eq!(status(secrets.get("other").await).0, 403);
        assert_eq!(status(secrets.list(&ListParams::default()).await).0, 403);
    }
    // Namespaced rules stay in their namespaces.
    let (code, _) =
        status(Api::<Deployment>::namespaced(operator.clone(), "default").list(&ListParams::default()).await);
    assert_eq!(code, 403);
    // The kube-system Role: the one ConfigMap, nothing else.
    let configmaps: Api<ConfigMap> = Api::namespaced(operator.clone(), "kube-system");
    assert_eq!(status(configmaps.get("cluster-config-v1").await).0, 404);
    assert_eq!(status(configmaps.get("other").await).0, 403);
}

#[tokio::test]
async fn a_role_with_a_verb_removed_refuses_that_verb() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let admin = admin(env).await;
    let namespace = env.namespace(&admin, "rbac-cut").await.expect("namespace");
    let role = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/role.yaml"))
        .expect("role.yaml");
    let cut = role.replace(
        "resources: [deployments]\n    verbs: [get, list, watch, create, patch]",
        "resources: [deployments]\n    verbs: [get, watch, create, patch]",
    );
    assert_ne!(cut, role, "deploy/role.yaml changed: update this test's edit");
    DeployRbac::from_yaml(&[&cut]).expect("edited role").grant_in(&admin, &namespace).await.expect("grant");
    let operator = env.operator_client_unbound().await.expect("operator client");
    let deployments: Api<Deployment> = Api::namespaced(operator, &namespace);
    assert_eq!(status(deployments.get("d").await).0, 404, "get still granted");
    let (code, message) = status(deployments.list(&ListParams::default()).await);
    assert_eq!(code, 403);
    assert!(message.contains("cannot list resource \"deployments\" in API group \"apps\""), "{message}");
}
