//! `make demo`: the operator's main job against the local environment.
//!
//! Starts a real Kubernetes API server and a real S3 server (moto), creates an AWS-like
//! `Infrastructure` (or, with `MVO_DEMO_CLOUD=azure`, an Azure one whose storage account is a real
//! Azurite), runs the `managed-velero-operator` binary against them, creates the
//! `VeleroInstall`, and shows the bucket and its settings, the Velero objects and the conditions
//! reaching Ready. The test API server has no controllers or kubelet, so the demo plays their part
//! where Velero would need them (minting Velero's secret, running the CRD Job, starting the pod),
//! and says so. Everything is stopped at the end.
//!
//! Values are printed the way a person reads them (never Rust debug formatting). The operator's
//! log is written outside the environment's scratch directory: deleted when the demo succeeds,
//! kept when a step fails, with its path and last lines printed.

mod local;

use std::{
    path::Path,
    process::{ExitCode, Stdio},
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use local::{
    AZURE_REGION, AZURE_RESOURCE_GROUP, INFRA, Local, NAMESPACE, REGION, azure_requested, step, stop,
    wait_for,
};
use mvo_core::{Platform, ProviderConfig};
use mvo_operator::{controller, crd::VeleroInstall, reconcile::validate::DEFAULT_VELERO_IMAGE};
use serde_json::json;

/// Lines of the operator log shown when a step fails.
const LOG_TAIL: usize = 25;

async fn print_conditions(installs: &Api<VeleroInstall>) -> anyhow::Result<()> {
    let vi = installs.get("cluster").await?;
    for c in vi.status.iter().flat_map(|s| s.conditions.iter()) {
        println!("   {:<18} {:<6} {:<24} {}", c.type_, c.status, c.reason, c.message);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let log = std::env::temp_dir().join(format!("mvo-demo-operator-{}.log", std::process::id()));
    match demo(&log).await {
        Ok(()) => {
            let _ = std::fs::remove_file(&log);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("\nmake demo failed: {err:#}");
            match std::fs::read_to_string(&log) {
                Ok(text) => {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
                    eprintln!("operator log kept at {} (last {} lines):", log.display(), tail.len());
                    for line in tail {
                        eprintln!("   {line}");
                    }
                }
                Err(_) => eprintln!("(the operator had not started: no log)"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn demo(log: &Path) -> anyhow::Result<()> {
    let azure = azure_requested();
    let local = if azure {
        step("Starting a local Kubernetes API server (etcd + Kubernetes 1.36 code) and Azurite (Azure Blob)");
        let local = Local::start_azure().await?;
        println!("   API server {}   Azure Blob {}", local.kube.server(), local.cloud_endpoint());
        println!(
            "   the cluster reports Azure (resource group {AZURE_RESOURCE_GROUP}; region {AZURE_REGION} from \
             install-config), infrastructureName {INFRA}"
        );
        local
    } else {
        step("Starting a local Kubernetes API server (etcd + Kubernetes 1.36 code) and an S3 server (moto)");
        let local = Local::start().await?;
        println!("   API server {}   S3 {}", local.kube.server(), local.s3.endpoint());
        println!(
            "   the cluster reports AWS in {REGION} (Infrastructure/cluster, infrastructureName {INFRA})"
        );
        local
    };

    step("Starting managed-velero-operator");
    let mut operator = local
        .operator(&[
            "run",
            "--leader-election",
            "false",
            "--log-format",
            "text",
            "--metrics-addr",
            "127.0.0.1:0",
        ])?
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    println!("   pid {}, log {}", operator.id().unwrap_or_default(), log.display());

    if azure {
        step("Creating VeleroInstall/cluster naming the storage account (spec.azure.storageAccount)");
    } else {
        step("Creating VeleroInstall/cluster with an empty spec (MVO's behaviour)");
    }
    let installs = local.installs();
    local.create_install().await?;
    let (bucket, took) = wait_for("bucket provisioned", Duration::from_secs(30), async || {
        let bucket = installs.get("cluster").await.ok()?.status?.storage_bucket?;
        bucket.provisioned.then_some(bucket.name?)
    })
    .await?;
    println!("   bucket provisioned after {} ms", took.as_millis());

    let state = if azure {
        step(&format!("The container {bucket}, read back from Azurite"));
        let config = ProviderConfig {
            platform: "Azure".into(),
            region: Some(AZURE_REGION.into()),
            infrastructure_name: INFRA.into(),
            credentials_dir: local.credentials.clone(),
            endpoint: Some(local.cloud_endpoint().to_owned()),
            ..Default::default()
        };
        let ca = local.azurite.as_ref().map(|a| a.ca_pem().to_vec()).unwrap_or_default();
        let azure = mvo_provider_azure::AzurePlatform::builder(&config).trust_pem(ca).build()?;
        let section = json!({"storageAccount": mvo_testkit::env::AZURITE_ACCOUNT});
        let state = azure.object_store(&section)?.observe_bucket(&bucket).await?;
        let public =
            if state.public_access.is_fully_blocked() { "private (no anonymous access)" } else { "OPEN" };
        println!("   public access      {public}");
        println!("   not enforced       {}", mvo_provider_azure::ACCOUNT_SETTINGS);
        state
    } else {
        step(&format!("The bucket {bucket}, read back from S3"));
        let aws = mvo_provider_aws::AwsPlatform::new(&ProviderConfig {
            platform: "AWS".into(),
            region: Some(REGION.into()),
            infrastructure_name: INFRA.into(),
            credentials_dir: local.credentials.clone(),
            endpoint: Some(local.s3.endpoint().to_owned()),
            ..Default::default()
        })?;
        let state =
            aws.object_store(&mvo_core::NO_SECTION).expect("object store").observe_bucket(&bucket).await?;
        println!("   region             {}", state.region);
        let encryption = state.encryption.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string);
        println!("   encryption         {encryption}");
        let public = if state.public_access.is_fully_blocked() { "all four blocks on" } else { "OPEN" };
        println!("   public access      {public}");
        for rule in &state.lifecycle {
            println!("   lifecycle          {rule}");
        }
        state
    };
    for (k, v) in &state.tags {
        println!("   tag                {k}={v}");
    }

    step("Velero objects applied by the operator (server-side apply, owned by the VeleroInstall)");
    for kind in controller::owned_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(local.client.clone(), NAMESPACE, &kind);
        for o in api.list(&Default::default()).await?.items {
            println!("   {:<22} {}", kind.kind, o.name_any());
        }
    }
    print_conditions(&installs).await?;

    step(
        "Playing the cluster's controllers (this API server has none): credential operator, Job controller, kubelet",
    );
    local.play_cluster_controllers().await?;
    let ((), took) =
        wait_for("Ready", Duration::from_secs(60), async || local.condition_true("Ready").await).await?;
    println!("   Ready=True after {} ms", took.as_millis());
    print_conditions(&installs).await?;

    step("`managed-velero-operator plan`: what a reconcile would change now (read-only)");
    let plan = local.operator(&["plan", "--log-format", "text"])?.env("RUST_LOG", "warn").output().await?;
    for line in String::from_utf8_lossy(&plan.stdout).lines() {
        println!("   {line}");
    }

    step("Drift: someone edits the Velero Deployment's image");
    let deployments: Api<Deployment> = Api::namespaced(local.client.clone(), NAMESPACE);
    let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": "example.com/not-velero:latest"}]}}}});
    deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await?;
    let ((), took) = wait_for("image restored", Duration::from_secs(10), async || {
        let image =
            deployments.get("velero").await.ok()?.spec?.template.spec?.containers.first()?.image.clone()?;
        (image == DEFAULT_VELERO_IMAGE).then_some(())
    })
    .await?;
    println!("   image restored by the operator after {} ms", took.as_millis());

    step("Stopping");
    let status = stop(&mut operator).await?;
    let cloud = if azure { "moto and Azurite" } else { "moto" };
    println!("   operator exited with {status}; API server, etcd and {cloud} stopped");
    Ok(())
}
