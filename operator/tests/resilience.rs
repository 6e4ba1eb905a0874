//! Resilience against the real test API server, moto and the testkit fault proxy: a pass whose
//! cloud never answers is cut at its deadline; an owned object deleted while the controller's
//! watches were down is restored at once, not at the next resync; the API server refuses a
//! resync interval out of bounds; startup waits out an unreachable API server for a while.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::events::Reporter,
};
use mvo_core::Platform;
use mvo_operator::{
    controller,
    crd::VeleroInstall,
    reconcile::{self, Context},
    startup,
};
use mvo_testkit::{
    FaultProxy, InMemoryPlatform, ProxyMode,
    env::{KubeEnv, S3Env, foreign_crds, install_crds},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INFRA: &str = "c1-res7x";
const REGION: &str = "eu-west-1";

/// The admin client (the test plays the user and the cluster's other controllers), the
/// operator's ServiceAccount with `deploy/`'s RBAC in the test's namespace, and that namespace.
async fn setup(env: &KubeEnv) -> (Client, Client, String) {
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let namespace = env.namespace(&client, "resilience").await.expect("namespace");
    let operator = env.operator_client(&[&namespace]).await.expect("operator client");
    (client, operator, namespace)
}

fn install(spec: Value) -> VeleroInstall {
    serde_json::from_value(json!({
        "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
        "metadata": {"name": "cluster"}, "spec": spec
    }))
    .expect("VeleroInstall")
}

fn context(client: &Client, platform: Arc<dyn Platform>) -> Context {
    let reporter = Reporter { controller: "test".into(), instance: None };
    Context::new(client.clone(), platform, INFRA.into(), reporter)
}

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    while started.elapsed() < within {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not seen within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_whose_cloud_never_answers_is_cut_at_its_deadline() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let (client, operator, namespace) = setup(env).await;
    let s3 = S3Env::shared().expect("moto (run `make testenv`)");
    let upstream: SocketAddr = s3.endpoint().trim_start_matches("http://").parse().expect("moto address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let credentials_dir = std::env::temp_dir().join(format!("mvo-res-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&credentials_dir).expect("dir");
    std::fs::write(credentials_dir.join("aws_access_key_id"), "AKIAMVOTESTKEY").expect("key id");
    std::fs::write(credentials_dir.join("aws_secret_access_key"), "secret").expect("secret");
    let config = mvo_core::ProviderConfig {
        platform: "AWS".into(),
        region: Some(REGION.into()),
        infrastructure_name: INFRA.into(),
        credentials_dir: credentials_dir.clone(),
        endpoint: Some(format!("http://{}", proxy.address())),
        ..Default::default()
    };
    let aws: Arc<dyn Platform> = Arc::new(mvo_provider_aws::AwsPlatform::new(&config).expect("AWS platform"));
    let mut ctx = context(&operator, aws);
    ctx.pass_deadline = Duration::from_secs(3);
    let ctx = Arc::new(ctx);
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), &namespace);
    installs.create(&PostParams::default(), &install(json!({}))).await.expect("create");

    // The cloud accepts connections and never answers: without a deadline the pass hangs.
    proxy.set(ProxyMode::Stall);
    let vi = Arc::new(installs.get("cluster").await.expect("get"));
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(15), reconcile::reconcile(vi, ctx.clone()))
        .await
        .expect("the pass ends on its own");
    let took = started.elapsed();
    let err = outcome.expect_err("a pass that could not finish fails");
    assert_eq!(err.category(), "ReconcileDeadline");
    assert!(err.is_retryable(), "retried with backoff");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "cut at the deadline: {took:?}");
    let vi = installs.get("cluster").await.expect("get");
    let ready = vi
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ReconcileDeadline"));
    assert!(ctx.health.live().is_ok(), "a cancelled pass is not left behind as stuck");

    // The cloud comes back: the next pass succeeds with the same context.
    proxy.set(ProxyMode::Forward);
    let vi = Arc::new(installs.get("cluster").await.expect("get"));
    reconcile::reconcile(vi, ctx).await.expect("the next pass succeeds");
    std::fs::remove_dir_all(&credentials_dir).expect("cleanup");
}

/// A client of `env` whose connections go through `proxy`.
/// The operator's ServiceAccount (RBAC applied by [`setup`]) reaching the API server through
/// `proxy`.
async fn operator_client_through(env: &KubeEnv, proxy: &FaultProxy) -> Client {
    let mut kubeconfig = Kubeconfig::read_from(env.operator_kubeconfig_path()).expect("kubeconfig");
    for cluster in &mut kubeconfig.clusters {
        if let Some(cluster) = cluster.cluster.as_mut() {
            cluster.server = Some(format!("https://{}", proxy.address()));
        }
    }
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(mvo_operator::health::with_deadlines(config)).expect("client")
}

/// Compacts etcd's history up to now through its JSON gateway, as a long-running cluster has
/// done: a watch cannot resume from an old resourceVersion and must re-list.
async fn compact_etcd(env: &KubeEnv) {
    let pid = env.pids()[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("API server command line");
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let etcd = args
        .iter()
        .position(|a| a == "--etcd-servers")
        .and_then(|i| args.get(i + 1))
        .expect("--etcd-servers")
        .trim_start_matches("http://")
        .to_owned();
    let range = post(&etcd, "/v3/kv/range", &json!({"key": "AA=="})).await;
    let revision = range["header"]["revision"].as_str().expect("revision").to_owned();
    post(&etcd, "/v3/kv/compaction", &json!({"revision": revision, "physical": true})).await;
}

async fn post(address: &str, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect etcd");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_object_deleted_while_the_watches_were_down_is_restored_at_once() {
    let mut env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let (client, _operator, namespace) = setup(&env).await;
    let upstream: SocketAddr = env.server().trim_start_matches("https://").parse().expect("server address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let platform = InMemoryPlatform::new(REGION);
    let ctx = Arc::new(context(&operator_client_through(&env, &proxy).await, Arc::new(platform.clone())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = {
        let namespace = namespace.clone();
        tokio::spawn(async move {
            controller::watch_and_reconcile(ctx, &namespace, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), &namespace);
    installs.create(&PostParams::default(), &install(json!({}))).await.expect("create");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    eventually("Velero installed", Duration::from_secs(20), async || {
        deployments.get_opt("velero").await.ok().flatten().is_some()
    })
    .await;
    // The passes of the install are over within a few seconds; the next one is the requeue
    // while waiting for Velero, 30 s +-10% after them.
    let installed = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The controller loses the API server (its connections hang); meanwhile the Deployment is
    // deleted, etcd's history is compacted and the API server restarts. Whether the resumed watch
    // replays the deletion or has to re-list (the unit test
    // `an_object_missing_from_a_relist_triggers_its_owner` covers that path), the Deployment
    // must come back long before the next scheduled pass.
    proxy.set(ProxyMode::Stall);
    deployments.delete("velero", &DeleteParams::default()).await.expect("delete");
    compact_etcd(&env).await;
    env.restart_apiserver().expect("restart");
    let client = env.client().await.expect("client after restart");
    let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
    eventually("API server back", Duration::from_secs(30), async || {
        deployments.get_opt("velero").await.is_ok()
    })
    .await;
    assert!(
        deployments.get_opt("velero").await.expect("get").is_none(),
        "deleted while the watches were down"
    );
    proxy.set(ProxyMode::Forward);

    // No pass is due before the requeue ~27 s after the install: only the re-list can bring the
    // Deployment back sooner.
    let took = eventually("Deployment restored", Duration::from_secs(40), async || {
        deployments.get_opt("velero").await.ok().flatten().is_some()
    })
    .await;
    let since_install = installed.elapsed();
    eprintln!("restored {took:?} after the watches came back, {since_install:?} after the install");
    assert!(
        since_install < Duration::from_secs(22),
        "restored by a requeue, not the re-list: {since_install:?}"
    );
    assert_eq!(platform.cloud().bucket_names().len(), 1, "still one bucket");
    let _ = stop.send(());
    controller.await.expect("controller stops");
}

#[tokio::test]
async fn the_api_server_refuses_a_resync_interval_out_of_bounds() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let (client, _operator, namespace) = setup(env).await;
    let installs: Api<VeleroInstall> = Api::namespaced(client, &namespace);
    for huge in ["999999999999999999h", "25h", "30s", "1000000000h"] {
        let err = installs
            .create(&PostParams::default(), &install(json!({"resyncInterval": huge})))
            .await
            .expect_err(huge);
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 422), "{huge}: {err}");
    }
    installs.create(&PostParams::default(), &install(json!({"resyncInterval": "24h"}))).await.expect("24h");
}

#[tokio::test]
async fn a_lasting_failure_is_reported_once_per_reason_and_retried_slowly() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let (client, operator, namespace) = setup(env).await;
    let platform = InMemoryPlatform::new(REGION);
    let ctx = Arc::new(context(&operator, Arc::new(platform.clone())));
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), &namespace);
    installs.create(&PostParams::default(), &install(json!({}))).await.expect("create");
    for _ in 0..3 {
        platform.cloud().inject(mvo_testkit::Fault::PermissionDenied);
        let vi = Arc::new(installs.get("cluster").await.expect("get"));
        let err = reconcile::reconcile(vi.clone(), ctx.clone()).await.expect_err("refused");
        assert!(!err.is_retryable());
        let action = reconcile::error_policy(vi, &err, ctx.clone());
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(Duration::from_secs(3600)),
            "retried at the resync, neither in the fast backoff nor never"
        );
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &namespace);
    let warnings = events.list(&Default::default()).await.expect("events").items;
    let denied: Vec<_> =
        warnings.iter().filter(|e| e.reason.as_deref() == Some("PermissionDenied")).collect();
    assert_eq!(denied.len(), 1, "one event for three passes failing the same way: {warnings:?}");
    let repeats = denied[0].series.as_ref().and_then(|s| s.count).or(denied[0].count).unwrap_or(1);
    assert_eq!(repeats, 1, "not even a series of repeats: {:?}", denied[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reaches_the_cloud_through_the_cluster_proxy() {
    use kube::api::{Patch, PatchParams};
    use mvo_operator::infrastructure::Infrastructure;

    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let s3 = S3Env::shared().expect("moto (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let params = PatchParams::apply("proxy-test").force();
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "status": {"infrastructureName": "proxied", "platformStatus": {"type": "AWS", "aws": {"region": REGION}}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    let credentials = std::env::temp_dir().join(format!("mvo-proxy-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&credentials).expect("dir");
    std::fs::write(credentials.join("aws_access_key_id"), "AKIAMVOTESTKEY").expect("key id");
    std::fs::write(credentials.join("aws_secret_access_key"), "secret").expect("secret");

    // The cluster-wide proxy, as OpenShift injects it: the cloud only through the proxy, the API
    // server (in NO_PROXY, as the cluster network is) directly.
    let proxy = FaultProxy::start_connect().await.expect("proxy");
    let proxy_url = format!("http://{}", proxy.address());
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["run", "--leader-election", "false", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", env.operator_kubeconfig(&[]).await.expect("operator kubeconfig"))
        .env("WATCH_NAMESPACE", "openshift-velero")
        // moto by name, so that NO_PROXY can tell it from the API server (127.0.0.1).
        .env("MVO_CLOUD_ENDPOINT", s3.endpoint().replace("127.0.0.1", "localhost"))
        .env("MVO_CREDENTIALS_DIR", &credentials)
        .env("HTTP_PROXY", &proxy_url)
        .env("NO_PROXY", "127.0.0.1,kubernetes.default.svc")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(credentials.join("operator.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), "openshift-velero");
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall", "metadata": {"name": "cluster"}, "spec": {}});
    installs.patch("cluster", &params, &Patch::Apply(&vi)).await.expect("VeleroInstall");
    let mut provisioned = false;
    for _ in 0..300 {
        let vi = installs.get("cluster").await.expect("get");
        if vi.status.and_then(|s| s.storage_bucket).is_some_and(|b| b.provisioned) {
            provisioned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(credentials.join("operator.log")).unwrap_or_default();
    assert!(provisioned, "bucket provisioned through the proxy; operator log:\n{log}");
    assert!(proxy.connections() > 0, "the cloud calls went through the proxy");
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    std::fs::remove_dir_all(&credentials).expect("cleanup");
}

/// Found by `make chaos`: a replica (re)started while the API server was unreachable exited at
/// its first startup read, so an outage turned into a crash loop. Startup now retries a step
/// that fails transiently for a while, and still gives up after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_waits_out_an_unreachable_api_server_for_a_while() {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let (_client, _operator, namespace) = setup(env).await;
    let upstream: SocketAddr = env.server().trim_start_matches("https://").parse().expect("address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let operator = operator_client_through(env, &proxy).await;
    proxy.set(ProxyMode::Reset);
    let started = tokio::time::Instant::now();
    let heal = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set(ProxyMode::Forward);
    };
    let probe = startup::retry_transient("crd", Duration::from_secs(30), || {
        startup::ensure_crd_installed(&operator, &namespace)
    });
    let (outcome, ()) = tokio::join!(probe, heal);
    assert!(outcome.is_ok(), "startup went on once the API server answered: {outcome:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it did wait for the API server");

    proxy.set(ProxyMode::Reset);
    let started = tokio::time::Instant::now();
    let outcome = startup::retry_transient("crd", Duration::from_secs(3), || {
        startup::ensure_crd_installed(&operator, &namespace)
    })
    .await;
    assert!(
        matches!(&outcome, Err(err) if err.is_transient()),
        "a lasting outage still ends startup: {outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "within the retry period");
}
