//! SPEC 11 startup rows against the real test API server: the real binary exits with one clear
//! line and code 3 for every unsuitable cluster, and gets past startup on a suitable one. Also the
//! command line as a user types it: flags before or after the subcommand, `--version`, the log
//! format chosen by environment.

use std::{process::Output, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use mvo_testkit::env::{KubeEnv, foreign_crds, install_crds};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const EXIT_UNSUITABLE: i32 = 3;

struct Cluster {
    env: KubeEnv,
    client: Client,
}

impl Cluster {
    /// A dedicated API server: the scenarios below change the cluster-scoped Infrastructure.
    async fn start() -> Cluster {
        let env = KubeEnv::start().expect("test API server (run `make testenv`)");
        let client = env.client().await.expect("client");
        install_crds(&client, foreign_crds().expect("stand-in CRDs")).await.expect("CRDs");
        Cluster { env, client }
    }

    async fn set_infrastructure(&self, status: Value) {
        let api: Api<mvo_operator::infrastructure::Infrastructure> = Api::all(self.client.clone());
        let object = json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
            "metadata": {"name": "cluster"}, "spec": {}
        });
        let params = PatchParams::apply("startup-test").force();
        api.patch("cluster", &params, &Patch::Apply(&object)).await.expect("apply Infrastructure");
        let status =
            json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": status});
        api.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    }

    async fn set_install_config(&self, install_config: &str) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-config-v1"},
            "data": {"install-config": install_config}
        });
        api.patch("cluster-config-v1", &PatchParams::apply("startup-test").force(), &Patch::Apply(&object))
            .await
            .expect("apply ConfigMap");
    }

    async fn delete_install_config(&self) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        let _ = api.delete("cluster-config-v1", &DeleteParams::default()).await;
    }

    /// Runs `managed-velero-operator run` against this cluster.
    async fn run_operator(&self) -> Output {
        let bin = env!("CARGO_BIN_EXE_managed-velero-operator");
        tokio::process::Command::new(bin)
            .args([
                "run",
                "--leader-election",
                "false",
                "--log-format",
                "json",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", self.env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC"))
            .env("WATCH_NAMESPACE", "openshift-velero")
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output()
            .await
            .expect("operator runs")
    }
}

/// The one line an administrator reads, from a JSON-mode run: every stderr line is JSON and
/// exactly one of them is an error.
fn one_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .filter(|entry| entry["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected in:\n{stderr}");
    errors[0]["fields"]["message"].as_str().expect("message").to_owned()
}

fn assert_refused(output: &Output, needle: &str) {
    let line = one_line(output);
    assert_eq!(
        output.status.code(),
        Some(EXIT_UNSUITABLE),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(line.contains(needle), "expected {needle:?} in {line:?}");
    assert_eq!(line.matches(needle).count(), 1, "the cause is repeated in {line:?}");
}

/// Runs the binary with `args` outside any cluster: no kubeconfig, no operator env.
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"));
    command.args(args).kill_on_drop(true);
    for var in [
        "RUST_LOG",
        "KUBERNETES_SERVICE_HOST",
        "WATCH_NAMESPACE",
        "MVO_LOG_FORMAT",
        "MVO_METRICS_ADDR",
        "NO_COLOR",
        "MVO_ALLOW_ANY_NAMESPACE",
    ] {
        command.env_remove(var);
    }
    command.env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.expect("binary runs")
}

#[tokio::test]
async fn flags_work_before_and_after_the_subcommand_and_without_one() {
    let wrong_namespace = r#"the operator must run in namespace "openshift-velero", not "dev""#;
    let forms: [&[&str]; 5] = [
        &["--namespace", "dev", "--log-format", "json"],
        &["--namespace", "dev", "--log-format", "json", "run"],
        &["--log-format", "json", "run", "--namespace", "dev"],
        &["run", "--namespace", "dev", "--log-format", "json"],
        &["plan", "--namespace=dev", "--log-format=json"],
    ];
    for form in forms {
        let output = run_binary(form, &[]).await;
        assert_eq!(output.status.code(), Some(EXIT_UNSUITABLE), "{form:?}: {output:?}");
        assert!(one_line(&output).contains(wrong_namespace), "{form:?}: {output:?}");
    }
    // --metrics-addr after the subcommand parses too (a bad value is refused by that flag's parser).
    let output = run_binary(&["run", "--metrics-addr", "not-an-address"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "usage error expected: {output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--metrics-addr"), "{output:?}");
}

#[tokio::test]
async fn version_flag_and_subcommand_print_the_same() {
    let subcommand = run_binary(&["version"], &[]).await;
    assert!(subcommand.status.success(), "{subcommand:?}");
    let text = String::from_utf8(subcommand.stdout).expect("UTF-8");
    assert!(text.starts_with(&format!("managed-velero-operator {} (", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("providers: AWS, Azure, GCP"), "{text}");
    for flag in ["--version", "-V"] {
        let output = run_binary(&[flag], &[]).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8(output.stdout).expect("UTF-8"), text, "{flag}");
    }
}

#[tokio::test]
async fn a_startup_failure_is_one_plain_line_when_piped_and_one_json_line_in_cluster() {
    // Outside a cluster, piped: text, one line, no colour codes.
    let output = run_binary(&["--namespace", "dev"], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_UNSUITABLE), "{stderr}");
    assert_eq!(
        stderr,
        "managed-velero-operator: the operator must run in namespace \"openshift-velero\", not \"dev\" (pass --allow-any-namespace for development)\n"
    );
    // In a cluster (Kubernetes sets KUBERNETES_SERVICE_HOST): one JSON line, nothing else.
    let output = run_binary(&["--namespace", "dev"], &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(one_line(&output).contains(r#"not "dev""#), "{stderr}");
    // An explicit format beats the environment.
    let output = run_binary(
        &["--namespace", "dev", "--log-format", "text"],
        &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
    )
    .await;
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("managed-velero-operator: "), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_openshift_config_api_is_refused() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let cluster = Cluster { client: env.client().await.expect("client"), env };
    assert_refused(
        &cluster.run_operator().await,
        "Infrastructure/cluster (config.openshift.io/v1) not found",
    );

    // The same failure with the format left to the environment, stderr piped: text log lines
    // (the "starting" line comes first) without colour codes, and the one failure line last.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["--leader-election", "false", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", cluster.env.kubeconfig_path())
        .env("WATCH_NAMESPACE", "openshift-velero")
        .env("RUST_LOG", "info")
        .env_remove("MVO_LOG_FORMAT")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NO_COLOR")
        .kill_on_drop(true)
        .output()
        .await
        .expect("operator runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_UNSUITABLE), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape codes in piped output: {stderr:?}");
    assert!(stderr.lines().any(|l| l.contains("INFO") && l.contains("starting")), "{stderr}");
    let failures: Vec<&str> = stderr.lines().filter(|l| l.starts_with("managed-velero-operator: ")).collect();
    assert_eq!(failures.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), failures.first().copied(), "{stderr}");
    assert!(failures[0].contains("Infrastructure/cluster (config.openshift.io/v1) not found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsuitable_clusters_are_refused_with_one_clear_line() {
    let cluster = Cluster::start().await;

    let output = cluster.run_operator().await;
    assert_refused(&output, "Infrastructure/cluster (config.openshift.io/v1) not found");

    cluster
        .set_infrastructure(json!({"infrastructureName": "c1", "platformStatus": {"type": "BareMetal"}}))
        .await;
    assert_refused(&cluster.run_operator().await, "supported platforms: AWS, Azure, GCP");

    // No platform type at all: the same list of what this build supports.
    cluster.set_infrastructure(json!({"infrastructureName": "c1"})).await;
    let output = cluster.run_operator().await;
    assert_refused(&output, "Infrastructure/cluster reports no platform type");
    assert_refused(&output, "; supported platforms: AWS, Azure, GCP");

    cluster.set_infrastructure(json!({"infrastructureName": "c1", "platformStatus": {"type": "AWS"}})).await;
    assert_refused(&cluster.run_operator().await, "ConfigMap kube-system/cluster-config-v1 has no key");

    cluster.set_install_config("platform: [unclosed").await;
    assert_refused(
        &cluster.run_operator().await,
        r#"malformed "install-config" in ConfigMap kube-system/cluster-config-v1"#,
    );

    cluster.set_install_config("platform:\n  none: {}\n").await;
    assert_refused(&cluster.run_operator().await, "platform AWS needs a region");
    cluster.delete_install_config().await;

    cluster
        .set_infrastructure(json!({
            "infrastructureName": "c1",
            "platformStatus": {"type": "GCP", "gcp": {"region": "us-central1"}}
        }))
        .await;
    cluster.set_install_config("platform:\n  gcp:\n    region: us-central1\n").await;
    assert_refused(&cluster.run_operator().await, "platform GCP needs a project ID");

    cluster
        .set_infrastructure(json!({
            "infrastructureName": "c1",
            "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}
        }))
        .await;
    assert_refused(&cluster.run_operator().await, "veleroinstalls.managed.openshift.io is not installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suitable_cluster_passes_startup_and_stops_on_sigterm() {
    let cluster = Cluster::start().await;
    install_crds(&cluster.client, [mvo_operator::crd::crd()]).await.expect("VeleroInstall CRD");
    // An old cluster: deprecated status.platform and the region only in install-config.
    cluster.set_infrastructure(json!({"infrastructureName": "c1-x8k2p", "platform": "AWS"})).await;
    cluster.set_install_config("apiVersion: v1\nplatform:\n  aws:\n    region: us-east-2\n").await;

    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["run", "--leader-election", "false", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", cluster.env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC"))
        .env("WATCH_NAMESPACE", "openshift-velero")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");
    let mut lines = BufReader::new(operator.stderr.take().expect("stderr")).lines();
    let mut resolved = None;
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
            match entry["fields"]["message"].as_str() {
                Some("cluster facts resolved") => resolved = Some(entry),
                Some("controller starting") => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the controller did not start");
    let resolved = resolved.expect("facts logged before the controller starts");
    assert_eq!(resolved["fields"]["platform"], "AWS");
    assert_eq!(resolved["fields"]["region"], "us-east-2");
    assert_eq!(resolved["fields"]["infrastructure"], "c1-x8k2p");

    let pid = operator.id().expect("running").to_string();
    let sent = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(sent.success());
    let status = match tokio::time::timeout(Duration::from_secs(10), operator.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let mut rest = Vec::new();
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
            {
                rest.push(line);
            }
            panic!("operator did not stop within 10 s of SIGTERM; its log:\n{}", rest.join("\n"));
        }
    };
    assert_eq!(status.expect("exit status").code(), Some(0), "graceful shutdown exits 0");
}
