//! The local test environment: real etcd + Kubernetes API server, a real moto S3/STS server and a
//! real Azurite blob service ([`AzuriteEnv`]), started as child processes on random 127.0.0.1
//! ports (SPEC section 12, TESTENV.md).
//!
//! Binaries are built and cached outside the repository by `make testenv`
//! (`testkit/scripts/build-apiserver.sh`, `testkit/scripts/install-moto.sh`,
//! `testkit/scripts/install-azurite.sh`); this module only
//! starts them, and says which command to run when one is missing.
//!
//! Processes are stopped by PID, never by name: on `Drop` for dedicated instances, and by a
//! watchdog that outlives the test binary for the shared ones (Rust never drops statics).
//! Tests isolate themselves inside a shared instance by namespace ([`KubeEnv::namespace`]) or by
//! bucket name.
//!
//! Two identities: the admin ([`KubeEnv::client`], `system:masters`, for test set-up and for
//! playing the cluster's other controllers) and the operator's ServiceAccount
//! ([`KubeEnv::operator_client`], [`KubeEnv::operator_kubeconfig`]), which the server authorizes
//! with RBAC. Those two apply `deploy/`'s RBAC first ([`DeployRbac`]), so the operator code under
//! test has exactly the permissions it ships with.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions::is_crd_established},
};
use serde_json::json;

use crate::scratch::{KEEP_SCRATCH, ScratchDir};

mod azurite;

pub use azurite::{AZURITE_ACCOUNT, AzuriteEnv};

/// The operator's identity on the test API server: the user name of its ServiceAccount
/// (`operator.kubeconfig` holds a client certificate with this name and the ServiceAccount groups).
pub const OPERATOR_USER: &str = "system:serviceaccount:openshift-velero:managed-velero-operator";
/// The namespace `deploy/` installs the operator in.
pub const OPERATOR_NAMESPACE: &str = "openshift-velero";

/// Field manager the helpers apply with.
const FIELD_MANAGER: &str = "mvo-testkit";
/// How long a CRD may take to become established.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long moto may take to answer after start.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the environment could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A binary of the environment is not built.
    #[error("{what} not found at {path}: run `{build}` first (make test does it)")]
    MissingBinary {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The command that builds it.
        build: &'static str,
    },
    /// A component failed to start.
    #[error("{what} failed to start: {detail}")]
    Start {
        /// Which component.
        what: &'static str,
        /// Its output or the failure.
        detail: String,
    },
    /// Reading the kubeconfig or talking to the API server failed.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A CRD did not become established in time.
    #[error("CRD {0} not established within {CRD_ESTABLISH_TIMEOUT:?}")]
    CrdNotEstablished(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnvError {
    let context = context.into();
    move |source| EnvError::Io { context, source }
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// Runs `script --print-bin-dir` to learn where the cached binaries live.
fn cached_bin_dir(script: &str) -> Result<PathBuf, EnvError> {
    let output = Command::new(scripts_dir().join(script))
        .arg("--print-bin-dir")
        .output()
        .map_err(io(format!("running {script}")))?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || dir.is_empty() {
        return Err(EnvError::Start {
            what: "testenv",
            detail: String::from_utf8_lossy(&output.stderr).into(),
        });
    }
    Ok(PathBuf::from(dir))
}

/// Starts a shell that kills `pids` once process `owner` is gone and then removes the instance's
/// directory, so shared instances (never dropped: they live in statics) outlive neither the test
/// binary that started them nor leave their data behind (an API server's etcd is ~60 MB).
fn spawn_watchdog(owner: u32, pids: &[u32], dir: &ScratchDir) -> Result<(), EnvError> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut script = format!(
        "while kill -0 {owner} 2>/dev/null; do sleep 0.5; done; kill {pids} 2>/dev/null; sleep 2; kill -9 {pids} 2>/dev/null",
        pids = pids.join(" ")
    );
    if std::env::var_os(KEEP_SCRATCH).is_none() {
        script.push_str("; rm -rf \"$0\"");
    }
    Command::new("sh")
        .args(["-c", &script])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting the watchdog"))?;
    Ok(())
}

fn kill_pid(pid: u32) {
    // By PID only; errors mean it is already gone.
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn free_port() -> Result<u16, EnvError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("picking a free port"))?;
    Ok(listener.local_addr().map_err(io("picking a free port"))?.port())
}

/// A running etcd + test API server.
#[derive(Debug)]
pub struct KubeEnv {
    dir: ScratchDir,
    server: String,
    pids: Vec<u32>,
}

static SHARED_KUBE: OnceLock<Result<KubeEnv, String>> = OnceLock::new();

impl KubeEnv {
    /// The instance shared by every test of this test binary, started on first use.
    pub fn shared() -> Result<&'static KubeEnv, EnvError> {
        let env = SHARED_KUBE.get_or_init(|| {
            let env = KubeEnv::start().map_err(|e| e.to_string())?;
            spawn_watchdog(std::process::id(), &env.pids, &env.dir).map_err(|e| e.to_string())?;
            Ok(env)
        });
        env.as_ref().map_err(|detail| EnvError::Start { what: "shared API server", detail: detail.clone() })
    }

    /// Starts a dedicated instance from the cached binaries, stopped when dropped.
    pub fn start() -> Result<KubeEnv, EnvError> {
        Self::start_from(&cached_bin_dir("build-apiserver.sh")?)
    }

    /// Starts a dedicated instance from the binaries in `bin` (`etcd`, `mvo-test-apiserver`).
    pub fn start_from(bin: &Path) -> Result<KubeEnv, EnvError> {
        for (what, file) in [("etcd", "etcd"), ("test API server", "mvo-test-apiserver")] {
            if !bin.join(file).is_file() {
                return Err(EnvError::MissingBinary { what, path: bin.join(file), build: "make testenv" });
            }
        }
        let dir = ScratchDir::new("mvo-kube").map_err(io("creating the API server directory"))?;
        let output = Command::new(scripts_dir().join("start-apiserver.sh"))
            .arg(dir.path())
            .env("MVO_TEST_APISERVER_BIN", bin.join("mvo-test-apiserver"))
            .env("ETCD_BIN", bin.join("etcd"))
            .stdin(Stdio::null())
            .output()
            .map_err(io("running start-apiserver.sh"))?;
        let pids: Vec<u32> = ["apiserver.pid", "etcd.pid"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(dir.path().join(f)).ok())
            .filter_map(|pid| pid.trim().parse().ok())
            .collect();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(server) = stdout.lines().find_map(|l| l.strip_prefix("READY ")).map(str::to_owned) else {
            pids.iter().copied().for_each(kill_pid);
            let detail = format!("{}{}", stdout, String::from_utf8_lossy(&output.stderr));
            return Err(EnvError::Start { what: "test API server", detail });
        };
        Ok(KubeEnv { dir, server, pids })
    }

    /// The API server URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Path of an admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Path of a kubeconfig for the operator's ServiceAccount ([`OPERATOR_USER`]), without
    /// applying any RBAC; see [`KubeEnv::operator_kubeconfig`].
    pub fn operator_kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("operator.kubeconfig")
    }

    /// Applies `deploy/`'s RBAC (granting its namespaced Role also in `namespaces`, see
    /// [`DeployRbac::grant_in`]) with the admin client, and returns the path of the operator's
    /// kubeconfig, for tests that run the operator binary.
    pub async fn operator_kubeconfig(&self, namespaces: &[&str]) -> Result<PathBuf, EnvError> {
        let admin = self.client().await?;
        let rbac = DeployRbac::from_repo()?;
        rbac.apply(&admin).await?;
        for ns in namespaces {
            rbac.grant_in(&admin, ns).await?;
        }
        Ok(self.operator_kubeconfig_path())
    }

    /// A client that is the operator's ServiceAccount, after applying `deploy/`'s RBAC as
    /// [`KubeEnv::operator_kubeconfig`] does.
    pub async fn operator_client(&self, namespaces: &[&str]) -> Result<Client, EnvError> {
        let path = self.operator_kubeconfig(namespaces).await?;
        Self::client_from(&path).await
    }

    /// A client for the operator's ServiceAccount with no RBAC applied (the caller grants what it
    /// wants, e.g. a [`DeployRbac`] with a verb removed).
    pub async fn operator_client_unbound(&self) -> Result<Client, EnvError> {
        Self::client_from(&self.operator_kubeconfig_path()).await
    }

    async fn client_from(path: &Path) -> Result<Client, EnvError> {
        let kubeconfig = Kubeconfig::read_from(path)?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Process IDs of the API server and etcd.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// A new client. Clients are bound to the tokio runtime that creates them, so every test
    /// makes its own.
    pub async fn client(&self) -> Result<Client, EnvError> {
        Self::client_from(&self.kubeconfig_path()).await
    }

    /// Stops the API server process and starts it again with the same command line (same port,
    /// same etcd, so no data is lost), for testing how clients survive an API server restart.
    /// Blocks until the new process listens again.
    pub fn restart_apiserver(&mut self) -> Result<(), EnvError> {
        let pid =
            *self.pids.first().ok_or(EnvError::Start { what: "restart", detail: "no API server".into() })?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map_err(io("reading the API server command line"))?;
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let (program, args) = argv
            .split_first()
            .ok_or(EnvError::Start { what: "restart", detail: "empty command line".into() })?;
        kill_pid(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .map_err(io("opening apiserver.log"))?;
        let log_err = log.try_clone().map_err(io("opening apiserver.log"))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io("restarting the API server"))?;
        self.pids[0] = child.id();
        let address = self.server.trim_start_matches("https://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&address).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EnvError::Start { what: "restarted API server", detail: format!("no answer on {address}") })
    }

    /// Creates a namespace with a unique name starting with `prefix`, for per-test isolation.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String, EnvError> {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(name)
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        self.pids.iter().copied().for_each(kill_pid);
    }
}

/// The files of `deploy/` that hold the operator's RBAC: its Role in its namespace, its
/// ClusterRole, its kube-system Role, each with its binding.
pub const DEPLOY_RBAC_FILES: [&str; 3] = ["role.yaml", "cluster_role.yaml", "kube_system_role.yaml"];

/// The operator's RBAC as `deploy/` ships it: the Roles, ClusterRoles and bindings of
/// [`DEPLOY_RBAC_FILES`], read from the repository (never copied), so a test fails when the code
/// needs a permission `deploy/` lacks.
#[derive(Debug, Clone)]
pub struct DeployRbac {
    /// Every document, in file order.
    pub objects: Vec<serde_json::Value>,
}

impl DeployRbac {
    /// Reads [`DEPLOY_RBAC_FILES`] from the repository's `deploy/`.
    pub fn from_repo() -> Result<DeployRbac, EnvError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut texts = Vec::new();
        for file in DEPLOY_RBAC_FILES {
            let path = dir.join(file);
            texts.push(std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?);
        }
        Self::from_yaml(&texts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Parses multi-document YAML texts (e.g. an edited copy of `deploy/role.yaml`).
    pub fn from_yaml(texts: &[&str]) -> Result<DeployRbac, EnvError> {
        let mut objects = Vec::new();
        for text in texts {
            let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
                .map_err(|e| EnvError::Start { what: "deploy/ RBAC", detail: e.to_string() })?;
            objects.extend(documents.into_iter().filter(|d| !d.is_null()));
        }
        Ok(DeployRbac { objects })
    }

    /// Applies every object server-side as written (with `admin`, which may grant anything).
    pub async fn apply(&self, admin: &Client) -> Result<(), EnvError> {
        for object in &self.objects {
            apply_rbac_object(admin, object.clone()).await?;
        }
        Ok(())
    }

    /// Grants the Roles (and RoleBindings) of the operator's own namespace in `namespace` as
    /// well: same rules and subjects, namespace rewritten.
    ///
    /// Why: on a cluster the operator works in `openshift-velero` only, but tests share one API
    /// server and isolate themselves in per-test namespaces, where the operator must have exactly
    /// what `deploy/role.yaml` gives it in its own namespace, no more.
    pub async fn grant_in(&self, admin: &Client, namespace: &str) -> Result<(), EnvError> {
        for object in &self.objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            let own_namespace = object["metadata"]["namespace"].as_str() == Some(OPERATOR_NAMESPACE);
            if own_namespace && matches!(kind, "Role" | "RoleBinding") {
                let mut object = object.clone();
                object["metadata"]["namespace"] = serde_json::Value::from(namespace);
                apply_rbac_object(admin, object).await?;
            }
        }
        Ok(())
    }

    /// Grants the ClusterRole rules of `deploy/` that are restricted to named CRDs (the Velero
    /// CRDs) for `crd_names` as well: same verbs, same subjects, names replaced, in a ClusterRole
    /// and ClusterRoleBinding named after `tag`.
    ///
    /// Why: CRDs are cluster-scoped and tests share one API server, so a test that plays the
    /// Velero CRD Job uses CRD names of its own (e.g. `widgets<suffix>.velero.io`) instead of the
    /// real ones; the operator must have exactly the access `deploy/` gives it to the real names.
    pub async fn grant_crd_names(
        &self,
        admin: &Client,
        tag: &str,
        crd_names: &[String],
    ) -> Result<(), EnvError> {
        let is_named_crd_rule = |rule: &serde_json::Value| {
            rule["resources"].as_array().is_some_and(|r| r.iter().any(|r| r == "customresourcedefinitions"))
                && rule["resourceNames"].as_array().is_some_and(|n| !n.is_empty())
        };
        for role in self.objects.iter().filter(|o| o["kind"] == "ClusterRole") {
            let rules: Vec<serde_json::Value> = role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|rule| is_named_crd_rule(rule))
                .map(|rule| {
                    let mut rule = rule.clone();
                    rule["resourceNames"] = serde_json::json!(crd_names);
                    rule
                })
                .collect();
            if rules.is_empty() {
                continue;
            }
            let role_name = role["metadata"]["name"].as_str().unwrap_or_default();
            let name = format!("{role_name}-test-crds-{tag}");
            let subjects: Vec<serde_json::Value> = self
                .objects
                .iter()
                .filter(|b| b["kind"] == "ClusterRoleBinding" && b["roleRef"]["name"] == role_name)
                .flat_map(|b| b["subjects"].as_array().cloned().unwrap_or_default())
                .collect();
            apply_rbac_object(
                admin,
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                   "metadata": {"name": name}, "rules": rules}),
            )
            .await?;
            apply_rbac_object(
                admin,
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                                   "metadata": {"name": name}, "subjects": subjects,
                                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                               "name": name}}),
            )
            .await?;
        }
        Ok(())
    }
}

async fn apply_rbac_object(admin: &Client, object: serde_json::Value) -> Result<(), EnvError> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let bad = |e: serde_json::Error| EnvError::Start { what: "deploy/ RBAC", detail: e.to_string() };
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match object["kind"].as_str().unwrap_or_default() {
        "Role" => {
            let role: Role = serde_json::from_value(object).map_err(bad)?;
            Api::<Role>::namespaced(admin.clone(), &namespace)
                .patch(&name, &params, &Patch::Apply(&role))
                .await?;
        }
        "RoleBinding" => {
            let b: RoleBinding = serde_json::from_value(object).map_err(bad)?;
            Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
                .patch(&name, &params, &Patch::Apply(&b))
                .await?;
        }
        "ClusterRole" => {
            let role: ClusterRole = serde_json::from_value(object).map_err(bad)?;
            Api::<ClusterRole>::all(admin.clone()).patch(&name, &params, &Patch::Apply(&role)).await?;
        }
        "ClusterRoleBinding" => {
            let b: ClusterRoleBinding = serde_json::from_value(object).map_err(bad)?;
            Api::<ClusterRoleBinding>::all(admin.clone()).patch(&name, &params, &Patch::Apply(&b)).await?;
        }
        other => {
            return Err(EnvError::Start {
                what: "deploy/ RBAC",
                detail: format!("unexpected kind {other:?}"),
            });
        }
    }
    Ok(())
}

/// Stand-in CRDs of the foreign kinds the operator reads or writes: `Infrastructure`,
/// `CredentialsRequest`, `ServiceMonitor`, `BackupStorageLocation`, `VolumeSnapshotLocation`,
/// `Schedule`, and the token-based-cluster facts `CloudCredential` and `Authentication`.
/// Their schemas are faithful subsets of the upstream CRDs (types, required fields, enums,
/// patterns, pruning, subresources), each naming the upstream file and version it mirrors (see
/// `testkit/crds/`), so the server rejects what a real cluster rejects.
pub fn foreign_crds() -> Result<Vec<CustomResourceDefinition>, EnvError> {
    const FILES: [&str; 8] = [
        include_str!("../crds/config.openshift.io_infrastructures.yaml"),
        include_str!("../crds/cloudcredential.openshift.io_credentialsrequests.yaml"),
        include_str!("../crds/monitoring.coreos.com_servicemonitors.yaml"),
        include_str!("../crds/velero.io_backupstoragelocations.yaml"),
        include_str!("../crds/velero.io_volumesnapshotlocations.yaml"),
        include_str!("../crds/velero.io_schedules.yaml"),
        include_str!("../crds/operator.openshift.io_cloudcredentials.yaml"),
        include_str!("../crds/config.openshift.io_authentications.yaml"),
    ];
    FILES
        .iter()
        .map(|yaml| {
            serde_saphyr::from_str(yaml)
                .map_err(|e| EnvError::Start { what: "stand-in CRDs", detail: e.to_string() })
        })
        .collect()
}

/// Applies `crds` server-side and waits until each is established.
pub async fn install_crds(
    client: &Client,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) -> Result<(), EnvError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for mut crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        let established = await_condition(api.clone(), &name, is_crd_established());
        match tokio::time::timeout(CRD_ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            _ => return Err(EnvError::CrdNotEstablished(name)),
        }
    }
    Ok(())
}

/// Marks the cluster token-based as the installer does for workload identity: the cluster's
/// `CloudCredential` in `Manual` mode and an `Authentication` with a service-account issuer (the
/// foreign CRDs must be installed).
pub async fn mark_token_based(client: &Client) -> Result<(), EnvError> {
    let params = PatchParams::apply("installer").force();
    for (api_version, kind, plural, spec) in [
        (
            "operator.openshift.io/v1",
            "CloudCredential",
            "cloudcredentials",
            json!({"credentialsMode": "Manual"}),
        ),
        (
            "config.openshift.io/v1",
            "Authentication",
            "authentications",
            json!({"serviceAccountIssuer": "https://oidc.example.com/c1"}),
        ),
    ] {
        let (group, version) = api_version.split_once('/').unwrap_or_default();
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let object =
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "cluster"}, "spec": spec});
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .patch("cluster", &params, &Patch::Apply(&object))
            .await?;
    }
    Ok(())
}

/// A running moto server speaking S3 and STS.
#[derive(Debug)]
pub struct S3Env {
    endpoint: String,
    python: PathBuf,
    port: u16,
    /// Where moto records requests, for [`S3Env::start_recorded`] instances.
    recording: Option<PathBuf>,
    child: Option<Child>,
    dir: ScratchDir,
}

static SHARED_S3: OnceLock<Result<S3Env, String>> = OnceLock::new();

impl S3Env {
    /// The instance shared by every test of this test binary, started on first use.
    pub fn shared() -> Result<&'static S3Env, EnvError> {
        let env = SHARED_S3.get_or_init(|| {
            let env = S3Env::start().map_err(|e| e.to_string())?;
            spawn_watchdog(std::process::id(), &[env.pid()], &env.dir).map_err(|e| e.to_string())?;
            Ok(env)
        });
        env.as_ref().map_err(|detail| EnvError::Start { what: "shared moto server", detail: detail.clone() })
    }

    /// Starts a dedicated moto server from the cached venv, stopped when dropped.
    pub fn start() -> Result<S3Env, EnvError> {
        Self::start_from(&cached_bin_dir("install-moto.sh")?)
    }

    /// Starts a dedicated moto server from the venv bin directory `bin`.
    pub fn start_from(bin: &Path) -> Result<S3Env, EnvError> {
        Self::start_in(bin, false)
    }

    /// Starts a dedicated moto server that records every request (moto's recorder), so that
    /// [`S3Env::restart`] brings its state back: moto keeps everything in memory.
    pub fn start_recorded() -> Result<S3Env, EnvError> {
        Self::start_in(&cached_bin_dir("install-moto.sh")?, true)
    }

    fn start_in(bin: &Path, recorded: bool) -> Result<S3Env, EnvError> {
        let python = bin.join("python");
        if !python.is_file() {
            return Err(EnvError::MissingBinary { what: "moto venv", path: python, build: "make testenv" });
        }
        let dir = ScratchDir::new("mvo-moto").map_err(io("creating the moto directory"))?;
        let port = free_port()?;
        let recording = recorded.then(|| dir.path().join("recording.jsonl"));
        let mut env =
            S3Env { endpoint: format!("http://127.0.0.1:{port}"), python, port, recording, child: None, dir };
        env.spawn()?;
        env.wait_ready()?;
        Ok(env)
    }

    fn spawn(&mut self) -> Result<(), EnvError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("moto.log"))
            .map_err(io("creating moto.log"))?;
        let log_err = log.try_clone().map_err(io("creating moto.log"))?;
        let mut command = Command::new(&self.python);
        command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(recording) = &self.recording {
            command.env("MOTO_ENABLE_RECORDING", "1").env("MOTO_RECORDER_FILEPATH", recording);
        }
        self.child = Some(command.spawn().map_err(io("starting moto"))?);
        Ok(())
    }

    /// Stops the server (SIGKILL: a crash), waits `down`, and starts it again on the same port.
    /// A [`S3Env::start_recorded`] server then replays its recording, so buckets and their
    /// settings come back; any other comes back empty. Blocks until it answers again.
    pub fn restart(&mut self, down: Duration) -> Result<(), EnvError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.spawn()?;
        self.wait_ready()?;
        if self.recording.is_some() {
            let address = self.endpoint.trim_start_matches("http://").to_owned();
            let replay = || -> std::io::Result<String> {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(&address)?;
                stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                let request = format!(
                    "POST /moto-api/recorder/replay-recording HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes())?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            };
            let answer = replay().map_err(io("replaying moto's recording"))?;
            if !answer.starts_with("HTTP/1.1 200") {
                return Err(EnvError::Start { what: "moto replay", detail: answer });
            }
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), EnvError> {
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        let address = self.endpoint.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&address).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
                return Err(EnvError::Start { what: "moto", detail: format!("exited with {status}: {log}") });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EnvError::Start {
            what: "moto",
            detail: format!("no answer on {address} in {MOTO_START_TIMEOUT:?}"),
        })
    }

    /// The S3/STS endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }
}

impl Drop for S3Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
