//! SPEC 11 "API server restarts or watch breaks": the running controller's watches resume after
//! the API server process is restarted, edits made afterwards are still reverted, and no work is
//! repeated (still one bucket). Uses its own API server, since it restarts it.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::events::Reporter,
};
use mvo_core::Platform;
use mvo_operator::{controller, crd::VeleroInstall, reconcile::Context};
use mvo_testkit::{
    InMemoryPlatform,
    env::{KubeEnv, foreign_crds, install_crds},
};
use serde_json::json;

async fn image(deployments: &Api<Deployment>) -> Option<String> {
    let d = deployments.get_opt("velero").await.ok()??;
    d.spec?.template.spec?.containers.first()?.image.clone()
}

async fn eventually(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..seconds * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} not seen within {seconds} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_after_the_api_server_restarts() {
    let mut env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let namespace = env.namespace(&client, "restart").await.expect("namespace");
    let operator = env.operator_client(&[&namespace]).await.expect("operator client");
    let platform = InMemoryPlatform::new("eu-west-1");
    let recorder = Reporter { controller: "test".into(), instance: None };
    let cloud: Arc<dyn Platform> = Arc::new(platform.clone());
    let ctx = Arc::new(Context::new(operator, cloud, "c1".into(), recorder));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = {
        let namespace = namespace.clone();
        tokio::spawn(async move {
            controller::watch_and_reconcile(ctx, &namespace, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), &namespace);
    let vi: VeleroInstall = serde_json::from_value(json!({
        "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
        "metadata": {"name": "cluster"}, "spec": {}
    }))
    .expect("object");
    installs.create(&PostParams::default(), &vi).await.expect("create");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    eventually("Velero installed", 10, async || image(&deployments).await.is_some()).await;
    let original = image(&deployments).await;

    env.restart_apiserver().expect("restart");
    let client = env.client().await.expect("client after restart");
    let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
    eventually("API server back", 30, async || deployments.get_opt("velero").await.is_ok()).await;

    let edit =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": "evil:latest"}]}}}});
    deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await.expect("edit");
    eventually("edit reverted after the restart", 30, async || image(&deployments).await == original).await;
    assert_eq!(platform.cloud().bucket_names().len(), 1, "no duplicate bucket after the restart");

    let _ = stop.send(());
    controller.await.expect("controller stops");
}
