//! Image selection end to end, with the real binary: `RELATED_IMAGE_*` on the operator replaces
//! the default Velero and plugin images (the mirrored/disconnected cluster case), and the
//! VeleroInstall spec still wins over them.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Namespace};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure};
use mvo_testkit::env::{KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;

const NAMESPACE: &str = "openshift-velero";
const MIRROR_VELERO: &str = "mirror.example.com/velero/velero:v1.17.0";
const MIRROR_AWS_PLUGIN: &str = "mirror.example.com/velero/velero-plugin-for-aws:v1.13.0";

/// The images of the velero Deployment's containers and init containers, once it exists and
/// `done` accepts them.
async fn velero_images(client: &Client, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let images: Vec<String> = api
            .get_opt("velero")
            .await
            .expect("read Deployment")
            .and_then(|d| d.spec?.template.spec)
            .map(|pod| {
                pod.init_containers
                    .unwrap_or_default()
                    .into_iter()
                    .chain(pod.containers)
                    .filter_map(|c| c.image)
                    .collect()
            })
            .unwrap_or_default();
        if done(&images) {
            return images;
        }
        assert!(Instant::now() < deadline, "velero Deployment images never settled: {images:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_image_env_replaces_the_defaults_and_the_spec_wins_over_it() {
    let kube = KubeEnv::start().expect("test API server (run `make testenv`)");
    let s3 = S3Env::start().expect("moto (run `make testenv`)");
    let client = kube.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let params = PatchParams::apply("images-test").force();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    Api::<Namespace>::all(client.clone())
        .patch(NAMESPACE, &params, &Patch::Apply(namespace))
        .await
        .expect("ns");
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                        "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
        "infrastructureName": "images-c1", "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    let credentials = tempdir();
    std::fs::write(credentials.join("aws_access_key_id"), "AKIATEST").expect("key id");
    std::fs::write(credentials.join("aws_secret_access_key"), "test-secret").expect("secret");

    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["run", "--leader-election", "false", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("WATCH_NAMESPACE", NAMESPACE)
        .env("MVO_CLOUD_ENDPOINT", s3.endpoint())
        .env("MVO_CREDENTIALS_DIR", &credentials)
        .env("RELATED_IMAGE_VELERO", MIRROR_VELERO)
        .env("RELATED_IMAGE_VELERO_PLUGIN_AWS", MIRROR_AWS_PLUGIN)
        .env("RELATED_IMAGE_VELERO_PLUGIN_GCP", "mirror.example.com/not-this-cloud:v1")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");

    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), NAMESPACE);
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {}});
    installs.patch("cluster", &params, &Patch::Apply(&vi)).await.expect("VeleroInstall");

    // Environment over defaults: Velero and the AWS plugin (not the GCP one) from the mirror.
    let images = velero_images(&client, |images| !images.is_empty()).await;
    assert!(images.iter().any(|i| i == MIRROR_VELERO), "{images:?}");
    assert!(images.iter().any(|i| i == MIRROR_AWS_PLUGIN), "{images:?}");
    assert!(images.iter().all(|i| i.starts_with("mirror.example.com/velero/")), "{images:?}");
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    // The CRD Job is applied after the Deployment: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let job_images = loop {
        let job_images: Vec<String> = jobs
            .list(&Default::default())
            .await
            .expect("Jobs")
            .items
            .into_iter()
            .flat_map(|j| j.spec.and_then(|s| s.template.spec).map(|p| p.containers).unwrap_or_default())
            .filter_map(|c| c.image)
            .collect();
        if !job_images.is_empty() || Instant::now() > deadline {
            break job_images;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job_images, [MIRROR_VELERO], "the CRD Job runs the chosen Velero image");

    // The spec over the environment.
    let spec_image = "spec.example.com/velero/velero:v1.17.0";
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {"veleroImage": spec_image}});
    installs.patch("cluster", &params, &Patch::Apply(&vi)).await.expect("VeleroInstall");
    let images = velero_images(&client, |images| images.iter().any(|i| i == spec_image)).await;
    assert!(images.iter().any(|i| i == MIRROR_AWS_PLUGIN), "the plugin still from the env: {images:?}");
    assert!(!images.iter().any(|i| i == MIRROR_VELERO), "{images:?}");

    let _ = operator.start_kill();
    let _ = std::fs::remove_dir_all(&credentials);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mvo-images-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
