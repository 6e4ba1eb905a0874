//! Leader election and the HTTP endpoints, with two real operator processes against one test API
//! server: exactly one reconciles, the other stands by and takes over when the first stops; the
//! leader serves /metrics, /healthz and /readyz.

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, CustomResourceExt,
    api::{Patch, PatchParams},
};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure, leader::LEASE_NAME};
use mvo_testkit::env::{KubeEnv, foreign_crds, install_crds};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

const NAMESPACE: &str = "openshift-velero";

/// A running operator process and its JSON log lines.
struct Operator {
    child: Child,
    logs: mpsc::UnboundedReceiver<Value>,
}

impl Operator {
    fn start(env: &KubeEnv, pod: &str) -> Operator {
        let mut child = Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
            .args([
                "run",
                "--leader-election",
                "true",
                "--log-format",
                "json",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            // deploy/'s RBAC is applied by the test before (KubeEnv::operator_kubeconfig).
            .env("KUBECONFIG", env.operator_kubeconfig_path())
            .env("WATCH_NAMESPACE", NAMESPACE)
            .env("POD_NAME", pod)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("operator starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(entry);
                }
            }
        });
        Operator { child, logs }
    }

    /// Waits for a log line with `message`; `None` when it does not come within `timeout`.
    async fn log(&mut self, message: &str, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, async {
            while let Some(entry) = self.logs.recv().await {
                if entry["fields"]["message"] == message {
                    return Some(entry);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
        let status =
            tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("stops in time");
        status.expect("exit status").code()
    }
}

async fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(VeleroInstall::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let params = PatchParams::apply("leader-test").force();
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "status": {"infrastructureName": "c1", "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC");

    let mut first = Operator::start(&env, "replica-a");
    let serving = first
        .log("serving /metrics, /healthz and /readyz", Duration::from_secs(30))
        .await
        .expect("endpoints");
    let address = serving["fields"]["address"].as_str().expect("address").to_owned();
    assert!(first.log("controller starting", Duration::from_secs(30)).await.is_some(), "first replica leads");
    let (code, body) = get(&address, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("managed_velero_operator_build_info"), "{body}");
    assert_eq!(get(&address, "/healthz").await.0, 200);
    assert_eq!(get(&address, "/readyz").await.0, 200);

    let mut second = Operator::start(&env, "replica-b");
    assert!(second.log("standing by: another replica leads", Duration::from_secs(30)).await.is_some());
    assert!(
        second.log("controller starting", Duration::from_secs(3)).await.is_none(),
        "the standby must not reconcile while the leader renews"
    );

    assert_eq!(first.stop().await, Some(0), "the leader stops cleanly and releases the Lease");
    assert!(
        second.log("controller starting", Duration::from_secs(15)).await.is_some(),
        "the standby takes over after the leader stops"
    );
    let lease = Api::<Lease>::namespaced(client, NAMESPACE).get(LEASE_NAME).await.expect("Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("replica-b"));
    assert_eq!(second.stop().await, Some(0));
}
