//! The local environment as `make demo` and `make bench` use it: a real API server and moto,
//! an AWS-like cluster (or, with `MVO_DEMO_CLOUD=azure`, an Azure cluster whose storage account
//! is a real Azurite; for the bench also a GCP cluster, whose operator brings the in-memory GCS
//! control plane), credentials for the operator, the operator binary, and the parts of a
//! cluster the test API server lacks (credential operator, Job controller, kubelet).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure};
use mvo_testkit::env::{AZURITE_ACCOUNT, AzuriteEnv, KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;
use tokio::process::Command;

pub const NAMESPACE: &str = "openshift-velero";
pub const REGION: &str = "eu-west-1";
pub const INFRA: &str = "demo-cluster-x8k2p";
/// The region and resource group of the Azure cluster (`MVO_DEMO_CLOUD=azure`).
#[allow(dead_code, reason = "used by make demo with MVO_DEMO_CLOUD=azure; the other examples run on AWS")]
pub const AZURE_REGION: &str = "eastus";
#[allow(dead_code, reason = "used by make demo with MVO_DEMO_CLOUD=azure; the other examples run on AWS")]
pub const AZURE_RESOURCE_GROUP: &str = "demo-cluster-x8k2p-rg";

/// The project and region of the GCP cluster (the bench's).
#[allow(dead_code, reason = "used by make bench; the other examples run on AWS or Azure")]
pub const GCP_PROJECT: &str = "demo-project";
#[allow(dead_code, reason = "used by make bench; the other examples run on AWS or Azure")]
pub const GCP_REGION: &str = "europe-west4";

/// The cloud the local cluster runs on: AWS (moto) unless `MVO_DEMO_CLOUD=azure` (Azurite).
#[allow(dead_code, reason = "used by make demo with MVO_DEMO_CLOUD=azure; the other examples run on AWS")]
pub fn azure_requested() -> bool {
    std::env::var("MVO_DEMO_CLOUD").is_ok_and(|c| c.eq_ignore_ascii_case("azure"))
}

pub fn apply() -> PatchParams {
    PatchParams::apply("local-env").force()
}

/// Polls `check` every 50 ms until it yields a value, returning it with the time it took.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<(T, Duration)> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(value) = check().await {
            return Ok((value, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what}: not seen within {} s", timeout.as_secs_f64())
}

/// The operator binary next to this example (target/<profile>/managed-velero-operator).
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|p| p.parent()).context("locating target dir")?;
    let bin = dir.join("managed-velero-operator");
    if !bin.is_file() {
        bail!("{} not built: run `make demo` or `make bench`", bin.display());
    }
    Ok(bin)
}

/// A running local environment with an AWS-like cluster, or an Azure one with `azurite`.
pub struct Local {
    pub kube: KubeEnv,
    pub s3: S3Env,
    /// Set on an Azure cluster: the storage account's Blob service.
    pub azurite: Option<AzuriteEnv>,
    /// Set on a GCP cluster (the GCS control plane lives in the operator process).
    pub gcp: bool,
    pub client: Client,
    pub work: PathBuf,
    pub credentials: PathBuf,
}

impl Local {
    pub async fn start() -> anyhow::Result<Local> {
        Self::start_with(S3Env::start().context("starting moto (run `make testenv`)")?).await
    }

    /// As [`Local::start`], with this S3 server (e.g. one that survives restarts).
    pub async fn start_with(s3: S3Env) -> anyhow::Result<Local> {
        let kube = KubeEnv::start().context("starting the API server (run `make testenv`)")?;
        let client = kube.client().await?;
        let mut crds = foreign_crds()?;
        // The CRD as deploy/ ships it, with the providers' spec sections.
        crds.push(mvo_operator::crd::crd());
        install_crds(&client, crds).await?;
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        Api::<Namespace>::all(client.clone()).patch(NAMESPACE, &apply(), &Patch::Apply(namespace)).await?;
        let infra: Api<Infrastructure> = Api::all(client.clone());
        let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                            "metadata": {"name": "cluster"}, "spec": {}});
        infra.patch("cluster", &apply(), &Patch::Apply(&object)).await?;
        let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
            "infrastructureName": INFRA, "platformStatus": {"type": "AWS", "aws": {"region": REGION}}}});
        infra.patch_status("cluster", &apply(), &Patch::Apply(&status)).await?;
        let work = std::env::temp_dir().join(format!("mvo-local-{}", std::process::id()));
        let credentials = work.join("credentials");
        std::fs::create_dir_all(&credentials)?;
        std::fs::write(credentials.join("aws_access_key_id"), "AKIADEMO")?;
        std::fs::write(credentials.join("aws_secret_access_key"), "demo-secret-key")?;
        // The operator runs as its ServiceAccount with exactly deploy/'s RBAC.
        kube.operator_kubeconfig(&[]).await?;
        Ok(Local { kube, s3, azurite: None, gcp: false, client, work, credentials })
    }

    /// The same environment as an Azure cluster: `Infrastructure` of type Azure (resource group
    /// and cloud in `platformStatus.azure`, the region only in the install-config), Azurite as the
    /// storage account's Blob service (HTTPS; its CA as the cluster's trusted bundle) and a
    /// pre-issued token as the operator's credentials (no Entra ID emulator exists).
    #[allow(dead_code, reason = "used by make demo with MVO_DEMO_CLOUD=azure; the other examples run on AWS")]
    pub async fn start_azure() -> anyhow::Result<Local> {
        let mut local = Self::start().await?;
        let azurite = AzuriteEnv::start().context("starting Azurite (run `make testenv`)")?;
        let infra: Api<Infrastructure> = Api::all(local.client.clone());
        let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
            "infrastructureName": INFRA, "platform": "Azure", "platformStatus": {"type": "Azure",
            "azure": {"resourceGroupName": AZURE_RESOURCE_GROUP, "cloudName": "AzurePublicCloud"}}}});
        infra.patch_status("cluster", &apply(), &Patch::Apply(&status)).await?;
        let kube_system =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}});
        Api::<Namespace>::all(local.client.clone())
            .patch("kube-system", &apply(), &Patch::Apply(kube_system))
            .await?;
        let install_config = format!("platform:\n  azure:\n    region: {AZURE_REGION}\n");
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-config-v1"},
                                "data": {"install-config": install_config}});
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(local.client.clone(), "kube-system")
            .patch("cluster-config-v1", &apply(), &Patch::Apply(&config_map))
            .await?;
        for file in ["aws_access_key_id", "aws_secret_access_key"] {
            std::fs::remove_file(local.credentials.join(file))?;
        }
        let token = AzuriteEnv::bearer_token(Duration::from_secs(3600));
        std::fs::write(local.credentials.join("azure_bearer_token"), token)?;
        std::fs::write(
            local.credentials.join("azure_subscription_id"),
            "00000000-0000-0000-0000-0000000000de",
        )?;
        std::fs::write(local.work.join("tls-ca-bundle.pem"), azurite.ca_pem())?;
        local.azurite = Some(azurite);
        Ok(local)
    }

    /// The same environment as a GCP cluster (project and region in `platformStatus.gcp`), for
    /// an operator that brings its own GCS control plane (`examples/gcp_plane_operator.rs`).
    #[allow(dead_code, reason = "used by make bench; the other examples run on AWS or Azure")]
    pub async fn start_gcp() -> anyhow::Result<Local> {
        let mut local = Self::start().await?;
        let infra: Api<Infrastructure> = Api::all(local.client.clone());
        let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
            "infrastructureName": INFRA, "platformStatus": {"type": "GCP",
            "gcp": {"projectID": GCP_PROJECT, "region": GCP_REGION}}}});
        infra.patch_status("cluster", &apply(), &Patch::Apply(&status)).await?;
        local.gcp = true;
        Ok(local)
    }

    /// `managed-velero-operator <args>` against this environment.
    #[allow(dead_code, reason = "the bench names the binary of each build it measures")]
    pub fn operator(&self, args: &[&str]) -> anyhow::Result<Command> {
        Ok(self.operator_at(operator_binary()?, args))
    }

    /// `binary <args>` (an operator build) against this environment.
    pub fn operator_at(&self, binary: PathBuf, args: &[&str]) -> Command {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env("KUBECONFIG", self.kube.operator_kubeconfig_path())
            .env("MVO_CLOUD_ENDPOINT", self.cloud_endpoint())
            .env("MVO_CREDENTIALS_DIR", &self.credentials)
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        if self.azurite.is_some() {
            command.env("MVO_TRUSTED_CA_BUNDLE", self.work.join("tls-ca-bundle.pem"));
        }
        command
    }

    /// The cloud endpoint the operator is pointed at: moto, or Azurite on an Azure cluster.
    pub fn cloud_endpoint(&self) -> &str {
        self.azurite.as_ref().map_or_else(|| self.s3.endpoint(), AzuriteEnv::endpoint)
    }

    pub fn installs(&self) -> Api<VeleroInstall> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub async fn create_install(&self) -> anyhow::Result<()> {
        // On Azure the storage account is named in the provider's section; else the empty spec.
        let spec = match self.azurite {
            Some(_) => json!({"azure": {"storageAccount": AZURITE_ACCOUNT}}),
            None => json!({}),
        };
        let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                        "metadata": {"name": "cluster"}, "spec": spec});
        self.installs().patch("cluster", &apply(), &Patch::Apply(&vi)).await?;
        Ok(())
    }

    /// Does what the cluster's credential operator, Job controller and kubelet would: mints
    /// Velero's secret, completes the CRD Job with a pod whose log holds one Velero CRD, and makes
    /// the Deployment available. Waits for the Job and Deployment the operator creates.
    pub async fn play_cluster_controllers(&self) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        // What the credential operator writes: an AWS credentials file, a service account key on
        // GCP, or on Azure one key per value (the operator renders Velero's AZURE_* file from them
        // into its own secret).
        let data = match self.azurite {
            None if self.gcp => json!({"service_account.json": "{\"type\": \"service_account\"}"}),
            Some(_) => json!({
                "azure_subscription_id": "00000000-0000-0000-0000-0000000000de", "azure_tenant_id": "demo",
                "azure_client_id": "demo", "azure_client_secret": "demo", "azure_region": AZURE_REGION,
                "azure_resourcegroup": AZURE_RESOURCE_GROUP,
            }),
            None => json!({"credentials": "[default]\naws_access_key_id = AKIADEMO\n"}),
        };
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                            "stringData": data});
        secrets.patch("velero-iam-credentials", &apply(), &Patch::Apply(&secret)).await?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
        let (job, _) = wait_for("CRD Job", Duration::from_secs(30), async || {
            jobs.list(&Default::default()).await.ok()?.items.into_iter().next()
        })
        .await?;
        let crd_output = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: backups.velero.io\nspec:\n  group: velero.io\n  names: {kind: Backup, listKind: BackupList, plural: backups, singular: backup}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
        mvo_testkit::jobs::complete_crd_job(&self.client, &job, crd_output, true).await?;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        wait_for("Deployment", Duration::from_secs(30), async || deployments.get_opt("velero").await.ok()?)
            .await?;
        let generation = deployments.get("velero").await?.metadata.generation;
        let available = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                          "readyReplicas": 1, "availableReplicas": 1}});
        deployments.patch_status("velero", &PatchParams::default(), &Patch::Merge(&available)).await?;
        Ok(())
    }

    /// Whether VeleroInstall/cluster reports `type=True`.
    pub async fn condition_true(&self, type_: &str) -> Option<()> {
        let vi = self.installs().get("cluster").await.ok()?;
        vi.status?.conditions.iter().any(|c| c.type_ == type_ && c.status == "True").then_some(())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Sends SIGTERM to `child` and waits for it.
pub async fn stop(child: &mut tokio::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
    }
    Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
}

/// Prints a demo step's title, bold only on a terminal (no escape codes in a log or a pipe).
#[allow(dead_code, reason = "shared by the demos; the bench prints a table, not steps")]
pub fn step(title: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!("\n\x1b[1m== {title}\x1b[0m");
    } else {
        println!("\n== {title}");
    }
}
