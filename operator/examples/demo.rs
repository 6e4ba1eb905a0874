//! `make demo`: the operator's main job against the local environment.
//!
//! Starts a real Kubernetes API server and a real S3 server (moto), creates an AWS-like
//! `Infrastructure`, runs the `managed-velero-operator` binary against them, creates the
//! `VeleroInstall`, and shows the bucket and its settings, the Velero objects and the conditions
//! reaching Ready. The test API server has no controllers or kubelet, so the demo plays their part
//! where Velero would need them (minting Velero's secret, running the CRD Job, starting the pod),
//! and says so. Everything is stopped at the end.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use mvo_core::{Platform, ProviderConfig};
use mvo_operator::{
    controller,
    crd::VeleroInstall,
    infrastructure::Infrastructure,
    reconcile::{build, validate::DEFAULT_VELERO_IMAGE},
};
use mvo_testkit::env::{KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;

const NAMESPACE: &str = "openshift-velero";
const REGION: &str = "eu-west-1";
const INFRA: &str = "demo-cluster-x8k2p";

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn apply() -> PatchParams {
    PatchParams::apply("demo").force()
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(value) = check().await {
            println!("   {what} after {} ms", started.elapsed().as_millis());
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what}: not seen within {timeout:?}")
}

async fn print_conditions(installs: &Api<VeleroInstall>) -> anyhow::Result<()> {
    let vi = installs.get("cluster").await?;
    for c in vi.status.iter().flat_map(|s| s.conditions.iter()) {
        println!("   {:<18} {:<6} {:<24} {}", c.type_, c.status, c.reason, c.message);
    }
    Ok(())
}

fn operator_binary() -> anyhow::Result<PathBuf> {
    // examples live in target/<profile>/examples/; the operator binary one level up.
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|p| p.parent()).context("locating target dir")?;
    let bin = dir.join("managed-velero-operator");
    if !bin.is_file() {
        bail!("{} not built: run `make demo`", bin.display());
    }
    Ok(bin)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    step("Starting a local Kubernetes API server (etcd + Kubernetes 1.36 code) and an S3 server (moto)");
    let kube = KubeEnv::start().context("starting the API server (run `make testenv`)")?;
    let s3 = S3Env::start().context("starting moto (run `make testenv`)")?;
    println!("   API server {}   S3 {}", kube.server(), s3.endpoint());
    let client = kube.client().await?;
    let mut crds = foreign_crds()?;
    crds.push(VeleroInstall::crd());
    install_crds(&client, crds).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NAMESPACE,
            &apply(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})),
        )
        .await?;

    step("The cluster reports AWS in eu-west-1 (Infrastructure/cluster)");
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &apply(), &Patch::Apply(&object)).await?;
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
        "infrastructureName": INFRA, "platformStatus": {"type": "AWS", "aws": {"region": REGION}}}});
    infra.patch_status("cluster", &apply(), &Patch::Apply(&status)).await?;

    let work = std::env::temp_dir().join(format!("mvo-demo-{}", std::process::id()));
    let credentials = work.join("credentials");
    std::fs::create_dir_all(&credentials)?;
    std::fs::write(credentials.join("aws_access_key_id"), "AKIADEMO")?;
    std::fs::write(credentials.join("aws_secret_access_key"), "demo-secret-key")?;
    let log = work.join("operator.log");

    step("Starting managed-velero-operator");
    let mut operator = tokio::process::Command::new(operator_binary()?)
        .args(["run", "--leader-election", "false", "--log-format", "text", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("MVO_CLOUD_ENDPOINT", s3.endpoint())
        .env("MVO_CREDENTIALS_DIR", &credentials)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    println!("   pid {}, log {}", operator.id().unwrap_or_default(), log.display());

    step("Creating VeleroInstall/cluster with an empty spec (MVO's behaviour)");
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), NAMESPACE);
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall", "metadata": {"name": "cluster"}, "spec": {}});
    installs.patch("cluster", &apply(), &Patch::Apply(&vi)).await?;
    let bucket = wait_for("bucket provisioned", Duration::from_secs(30), async || {
        let vi = installs.get("cluster").await.ok()?;
        let bucket = vi.status?.storage_bucket?;
        bucket.provisioned.then_some(bucket.name?)
    })
    .await?;

    step(&format!("The bucket {bucket}, read back from S3"));
    let aws = mvo_provider_aws::AwsPlatform::new(&ProviderConfig {
        platform: "AWS".into(),
        region: Some(REGION.into()),
        infrastructure_name: INFRA.into(),
        credentials_dir: credentials.clone(),
        endpoint: Some(s3.endpoint().to_owned()),
        ..Default::default()
    })?;
    let state = aws.object_store().observe_bucket(&bucket).await?;
    println!("   region             {}", state.region);
    println!("   encryption         {:?}", state.encryption);
    println!(
        "   public access      {}",
        if state.public_access.is_fully_blocked() { "all four blocks on" } else { "OPEN" }
    );
    for rule in &state.lifecycle {
        println!("   lifecycle          {:<26} prefix {:<10?} {:?}", rule.id, rule.prefix, rule.action);
    }
    for (k, v) in &state.tags {
        println!("   tag                {k}={v}");
    }

    step("Velero objects applied by the operator (server-side apply, owned by the VeleroInstall)");
    for kind in controller::owned_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &kind);
        for o in api.list(&Default::default()).await?.items {
            println!("   {:<22} {}", kind.kind, o.name_any());
        }
    }
    print_conditions(&installs).await?;

    step(
        "Playing the cluster's controllers (this API server has none): credential operator, Job controller, kubelet",
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                        "stringData": {"credentials": "[default]\naws_access_key_id = AKIADEMO\n"}});
    secrets.patch("velero-iam-credentials", &apply(), &Patch::Apply(&secret)).await?;
    let job_name = build::crds_job_name(DEFAULT_VELERO_IMAGE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"succeeded": 1}})))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let crd_output = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: schedules.velero.io\nspec:\n  group: velero.io\n  names: {kind: Schedule, listKind: ScheduleList, plural: schedules, singular: schedule}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    let pod_name = format!("{job_name}-demo");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"batch.kubernetes.io/job-name": job_name},
                     "annotations": {"mvo-test-apiserver/log": crd_output}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "velero-crds", "image": DEFAULT_VELERO_IMAGE}]}});
    pods.patch(&pod_name, &apply(), &Patch::Apply(&pod)).await?;
    pods.patch_status(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let available = json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("velero", &PatchParams::default(), &Patch::Merge(&available)).await?;
    wait_for("Ready=True", Duration::from_secs(60), async || {
        let vi = installs.get("cluster").await.ok()?;
        vi.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await?;
    print_conditions(&installs).await?;

    step("`managed-velero-operator plan`: what a reconcile would change now (read-only)");
    let plan = tokio::process::Command::new(operator_binary()?)
        .args(["plan", "--log-format", "text"])
        .env("KUBECONFIG", kube.kubeconfig_path())
        .env("MVO_CLOUD_ENDPOINT", s3.endpoint())
        .env("MVO_CREDENTIALS_DIR", &credentials)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    for line in String::from_utf8_lossy(&plan.stdout).lines() {
        println!("   {line}");
    }

    step("Drift: someone edits the Velero Deployment's image");
    let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": "example.com/not-velero:latest"}]}}}});
    deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await?;
    wait_for("image restored by the operator", Duration::from_secs(10), async || {
        let d = deployments.get("velero").await.ok()?;
        let image = d.spec?.template.spec?.containers.first()?.image.clone()?;
        (image == DEFAULT_VELERO_IMAGE).then_some(())
    })
    .await?;

    step("Stopping");
    if let Some(pid) = operator.id() {
        tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), operator.wait()).await??;
    println!("   operator exited with {status}; API server, etcd and moto stopped");
    drop((kube, s3));
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
