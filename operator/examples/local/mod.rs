//! The local environment as `make demo` and `make bench` use it: a real API server and moto,
//! an AWS-like cluster, credentials for the operator, the operator binary, and the parts of a
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
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams},
};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure};
use mvo_testkit::env::{KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;
use tokio::process::Command;

pub const NAMESPACE: &str = "openshift-velero";
pub const REGION: &str = "eu-west-1";
pub const INFRA: &str = "demo-cluster-x8k2p";

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

/// A running local environment with an AWS-like cluster.
pub struct Local {
    pub kube: KubeEnv,
    pub s3: S3Env,
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
        crds.push(VeleroInstall::crd());
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
        Ok(Local { kube, s3, client, work, credentials })
    }

    /// `managed-velero-operator <args>` against this environment.
    pub fn operator(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(operator_binary()?);
        command
            .args(args)
            .env("KUBECONFIG", self.kube.operator_kubeconfig_path())
            .env("MVO_CLOUD_ENDPOINT", self.s3.endpoint())
            .env("MVO_CREDENTIALS_DIR", &self.credentials)
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        Ok(command)
    }

    pub fn installs(&self) -> Api<VeleroInstall> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    pub async fn create_install(&self) -> anyhow::Result<()> {
        let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                        "metadata": {"name": "cluster"}, "spec": {}});
        self.installs().patch("cluster", &apply(), &Patch::Apply(&vi)).await?;
        Ok(())
    }

    /// Does what the cluster's credential operator, Job controller and kubelet would: mints
    /// Velero's secret, completes the CRD Job with a pod whose log holds one Velero CRD, and makes
    /// the Deployment available. Waits for the Job and Deployment the operator creates.
    pub async fn play_cluster_controllers(&self) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                            "stringData": {"credentials": "[default]\naws_access_key_id = AKIADEMO\n"}});
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
