//! SPEC 10.6: credentials never appear in logs, events, status or metrics. A full run of the
//! real binary with debug logging provisions a bucket in moto with distinctive credentials; then
//! everything it wrote is scanned for them.

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure};
use mvo_testkit::env::{KubeEnv, S3Env, foreign_crds, install_crds};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "openshift-velero";
const KEY_ID: &str = "AKIAMVOLEAKCHECK0001";
const SECRET: &str = "mvo-leak-check-9f3c2b7e-secret-access-key";

async fn scrape(address: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_logs_events_status_or_metrics() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let s3 = S3Env::shared().expect("moto (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let params = PatchParams::apply("secrets-test").force();
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "status": {"infrastructureName": "leakcheck", "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    let credentials = std::env::temp_dir().join(format!("mvo-leak-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&credentials).expect("dir");
    std::fs::write(credentials.join("aws_access_key_id"), KEY_ID).expect("key id");
    std::fs::write(credentials.join("aws_secret_access_key"), SECRET).expect("secret");

    let log = credentials.join("operator.log");
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["run", "--leader-election", "true", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC"))
        .env("WATCH_NAMESPACE", NAMESPACE)
        .env("MVO_CLOUD_ENDPOINT", s3.endpoint())
        .env("MVO_CREDENTIALS_DIR", &credentials)
        .env("RUST_LOG", "trace,hyper=debug,h2=info,tower=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");

    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), NAMESPACE);
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall", "metadata": {"name": "cluster"}, "spec": {}});
    installs.patch("cluster", &params, &Patch::Apply(&vi)).await.expect("VeleroInstall");
    let mut provisioned = false;
    for _ in 0..600 {
        let vi = installs.get("cluster").await.expect("get");
        if vi.status.and_then(|s| s.storage_bucket).is_some_and(|b| b.provisioned) {
            provisioned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(provisioned, "the run must reach the cloud for the scan to mean anything");

    let logs = std::fs::read_to_string(&log).expect("read log");
    let address = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| l["fields"]["address"].as_str().map(str::to_owned))
        .expect("metrics address logged");
    let metrics = scrape(&address).await;
    let pid = operator.id().expect("running").to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    operator.wait().await.expect("stopped");

    let logs = std::fs::read_to_string(&log).expect("read log");
    assert!(logs.lines().count() > 20, "trace logging produced too little to be a real scan");
    let events =
        Api::<Event>::namespaced(client.clone(), NAMESPACE).list(&Default::default()).await.expect("events");
    let status = serde_json::to_string(&installs.get("cluster").await.expect("get")).expect("json");
    let events = serde_json::to_string(&events.items).expect("json");
    for (what, text) in [("logs", &logs), ("events", &events), ("status", &status), ("metrics", &metrics)] {
        assert!(!text.contains(SECRET), "the secret access key leaked into {what}");
    }
    std::fs::remove_dir_all(&credentials).expect("cleanup");
}
