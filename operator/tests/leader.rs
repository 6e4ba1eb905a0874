//! Leader election and the HTTP endpoints, with two real operator processes against one test API
//! server: exactly one reconciles, the other stands by and takes over when the first stops or
//! when its renewals hang (a stalled connection, through the testkit fault proxy), never before
//! the first stopped acting; the leader serves /metrics, /healthz and /readyz.

use std::{path::Path, process::Stdio, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use mvo_operator::{infrastructure::Infrastructure, leader::LEASE_NAME};
use mvo_testkit::{
    FaultProxy, ProxyMode,
    env::{KubeEnv, foreign_crds, install_crds},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

const NAMESPACE: &str = "openshift-velero";
/// Short Lease timings, so takeovers happen within seconds (the defaults are OpenShift's).
const TIMINGS: [&str; 6] = ["--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s"];

/// A running operator process and its JSON log lines.
struct Operator {
    child: Child,
    logs: mpsc::UnboundedReceiver<Value>,
}

impl Operator {
    fn start(env: &KubeEnv, pod: &str) -> Operator {
        Self::start_with(&env.operator_kubeconfig_path(), pod)
    }

    fn start_with(kubeconfig: &Path, pod: &str) -> Operator {
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
            .args(TIMINGS)
            // deploy/'s RBAC is applied by the test before (KubeEnv::operator_kubeconfig).
            .env("KUBECONFIG", kubeconfig)
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
        // Keep draining logs so a full pipe cannot block the process while it stops.
        let mut logs = std::mem::replace(&mut self.logs, mpsc::unbounded_channel().1);
        let drain = tokio::spawn(async move {
            let mut tail = Vec::new();
            while let Some(entry) = logs.recv().await {
                tail.push(entry);
            }
            tail
        });
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
        let status =
            tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("stops in time");
        let code = status.expect("exit status").code();
        if code != Some(0) {
            for entry in drain.await.unwrap_or_default() {
                eprintln!("{entry}");
            }
        }
        code
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

/// When a log line was written, from its `timestamp` field.
fn logged_at(entry: &Value) -> Timestamp {
    entry["timestamp"].as_str().and_then(|t| t.parse().ok()).expect("timestamp")
}

/// The API server and the objects the operator needs to start.
async fn cluster() -> (KubeEnv, kube::Client) {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let params = PatchParams::apply("leader-test").force();
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "status": {"infrastructureName": "c1", "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC");
    (env, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() {
    let (env, client) = cluster().await;
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
    // Ready once the caches have synced, shortly after the controller starts.
    let mut ready = false;
    for _ in 0..100 {
        ready = get(&address, "/readyz").await.0 == 200;
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        while let Ok(entry) = first.logs.try_recv() {
            println!("LOG {entry}");
        }
    }
    assert!(ready, "the leader becomes ready");

    let mut second = Operator::start(&env, "replica-b");
    let serving = second
        .log("serving /metrics, /healthz and /readyz", Duration::from_secs(30))
        .await
        .expect("endpoints");
    let standby_address = serving["fields"]["address"].as_str().expect("address").to_owned();
    assert!(second.log("standing by: another replica leads", Duration::from_secs(30)).await.is_some());
    assert_eq!(get(&standby_address, "/readyz").await.0, 200, "a standby is ready");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_stops_acting_before_the_standby_starts() {
    let (env, client) = cluster().await;
    // The first replica reaches the API server through a proxy that will stop forwarding: its
    // renewal calls then hang (the TCP connection stays up), as with a half-open connection.
    let upstream = env.server().trim_start_matches("https://").parse().expect("server address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let kubeconfig = std::fs::read_to_string(env.operator_kubeconfig_path()).expect("kubeconfig");
    let proxied = env.kubeconfig_path().with_file_name("proxied.kubeconfig");
    std::fs::write(&proxied, kubeconfig.replace(env.server(), &format!("https://{}", proxy.address())))
        .expect("write kubeconfig");

    let mut first = Operator::start_with(&proxied, "replica-a");
    assert!(first.log("started acting", Duration::from_secs(30)).await.is_some(), "first replica leads");
    let mut second = Operator::start(&env, "replica-b");
    assert!(second.log("standing by: another replica leads", Duration::from_secs(30)).await.is_some());

    proxy.set(ProxyMode::Stall);
    // Renew deadline 4 s after the last renewal (at most a retry period ago), plus slack.
    let stopped = first
        .log("stopped acting", Duration::from_secs(10))
        .await
        .expect("the leader stops acting when it cannot renew within the renew deadline");
    assert_eq!(stopped["fields"]["reason"], "RenewDeadline", "{stopped}");
    let started = second
        .log("started acting", Duration::from_secs(20))
        .await
        .expect("the standby takes over once the Lease stopped changing for its duration");
    assert!(
        logged_at(&stopped) < logged_at(&started),
        "leadership intervals overlap: first stopped at {}, second started at {}",
        logged_at(&stopped),
        logged_at(&started)
    );
    let status = tokio::time::timeout(Duration::from_secs(10), first.child.wait())
        .await
        .expect("the old leader exits")
        .expect("status");
    assert_eq!(status.code(), Some(1), "losing the Lease exits non-zero, to restart as a candidate");
    let lease = Api::<Lease>::namespaced(client, NAMESPACE).get(LEASE_NAME).await.expect("Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("replica-b"));
    assert_eq!(second.stop().await, Some(0));
}
