//! `make chaos`: the real operator binary, twice (two replicas competing for the Lease), against
//! the local environment while a seeded fault driver breaks things at random for `DURATION`;
//! named invariants are checked all through the run and at the end, then a table is printed.
//!
//! Every operator process talks to the API server and to moto through its own
//! [`FaultProxy`]s, so faults can hit one replica (a leader cut off from the API server while its
//! standby is not) and every cloud call is seen, with its body, and attributed to the process
//! that sent it. Leader election runs with shortened timings (`--lease-duration 5s
//! --renew-deadline 4s --retry-period 1s`) so a bounded run sees many takeovers.
//!
//! The same seed gives the same sequence of faults and pauses; how the processes interleave with
//! them still depends on the machine's timing.

#[allow(dead_code, reason = "the shared local-environment module serves the demos and the bench too")]
mod local;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{ConfigMap, Secret},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::watcher,
};
use local::{INFRA, Local, NAMESPACE, apply, operator_binary};
use mvo_core::bucket::{ABORT_UPLOADS_RULE_ID, BACKUP_EXPIRY_RULE_ID};
use mvo_operator::{
    controller,
    crd::VeleroInstall,
    reconcile::{bucket::RECONCILE_REQUESTED_AT, build, validate::DEFAULT_VELERO_IMAGE},
};
use mvo_testkit::{
    env::S3Env,
    proxy::{Exchange, FaultProxy, Mode},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::{RwLock, mpsc, watch},
    task::JoinSet,
};

/// Leader-election flags of every operator process: short, so a bounded run sees takeovers.
const LEASE_FLAGS: [&str; 6] = ["--lease-duration", "5s", "--renew-deadline", "4s", "--retry-period", "1s"];
/// A process's request may reach its proxy this long after the process ended or logged
/// `stopped acting` (bytes already in the socket).
const WRITE_GRACE: Duration = Duration::from_millis(500);
/// Budget from the last fault to Ready=True with everything restored.
const CONVERGE_BUDGET: Duration = Duration::from_secs(10);
/// The install's resync interval (spec.resyncInterval), the shortest the CRD accepts.
const RESYNC: Duration = Duration::from_secs(60);
/// How long the converged state is watched: longer than one resync (which is jittered +-10%).
const QUIET_WINDOW: Duration = Duration::from_secs(70);
/// Prefix of the tag keys and lifecycle rule IDs the driver adds as a foreign tool would.
const FOREIGN: &str = "chaos-foreign-";
/// The Secret the credential operator mints for Velero.
const VELERO_CREDENTIALS_SECRET: &str = "velero-iam-credentials";
/// The owner tags the operator sets.
const OUR_TAGS: [&str; 2] = [mvo_core::owner::INFRASTRUCTURE_NAME_TAG, mvo_core::owner::BACKUP_LOCATION_TAG];

// The invariants, by name.
const ONE_BUCKET: &str = "one_bucket_named_in_status";
const NO_DELETES: &str = "no_delete_bucket_or_objects_sent";
const FOREIGN_KEPT: &str = "foreign_tags_and_rules_kept";
const EXCLUSIVE: &str = "leadership_intervals_never_overlap";
const WRITES_INSIDE: &str = "cloud_writes_only_while_leading";
const NO_PANIC: &str = "no_panic_in_any_log";
const CONVERGED: &str = "ready_within_10s_after_last_fault";
const QUIET: &str = "quiet_after_convergence";
const INVARIANTS: [&str; 8] =
    [ONE_BUCKET, NO_DELETES, FOREIGN_KEPT, EXCLUSIVE, WRITES_INSIDE, NO_PANIC, CONVERGED, QUIET];

/// The fault kinds, drawn uniformly.
const FAULTS: [&str; 15] = [
    "apiserver_restart",
    "kube_stall_one_replica",
    "kube_reset_one_replica",
    "s3_restart",
    "s3_5xx",
    "s3_throttle_503_slowdown",
    "s3_timeout",
    "s3_reset",
    "owned_object_edit",
    "owned_object_delete",
    "bucket_tags_tampered",
    "bucket_public_access_opened",
    "bucket_lifecycle_changed",
    "credentials_rotated",
    "operator_sigkill",
];

/// Not a fault: a bucket check asked for with the annotation, counted with the faults.
const CHECK_REQUESTED: &str = "(bucket check requested, not a fault)";

/// Faults drawn but not injected (the driver's own call failed, e.g. the API server was down).
const NOT_INJECTED: &str = "(drawn, not injected: driver call failed)";

/// splitmix64: a seeded generator without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// One interval in which a process acted (from its `started acting` to `stopped acting` or death).
#[derive(Debug, Clone)]
struct Interval {
    slot: usize,
    pod: String,
    start: Timestamp,
    end: Option<Timestamp>,
}

/// A foreign tag or rule the driver wrote, and when.
#[derive(Debug, Clone)]
struct ForeignWrite {
    key: String,
    started: Timestamp,
    finished: Timestamp,
}

/// Everything observed, shared by the tasks.
#[derive(Debug, Default)]
struct Record {
    faults: BTreeMap<&'static str, u32>,
    violations: BTreeMap<&'static str, Vec<String>>,
    intervals: Vec<Interval>,
    exchanges: Vec<(usize, Exchange)>,
    /// Per slot: the foreign keys of the last tags / rules the process read.
    last_read: [(BTreeSet<String>, BTreeSet<String>); 2],
    foreign_tags: Vec<ForeignWrite>,
    foreign_rules: Vec<ForeignWrite>,
    bucket: Option<String>,
    exits: BTreeMap<String, u32>,
    max_rss_kib: u64,
}

impl Record {
    fn violation(&mut self, invariant: &'static str, detail: String) {
        eprintln!("VIOLATION {invariant}: {detail}");
        self.violations.entry(invariant).or_default().push(detail);
    }
}

type Shared = Arc<Mutex<Record>>;

fn lock(record: &Shared) -> parking_lot::MutexGuard<'_, Record> {
    record.lock()
}

fn ts(at: SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One operator replica's seat: its proxies, kubeconfig and current process.
struct Slot {
    index: usize,
    letter: char,
    kube_proxy: FaultProxy,
    s3_proxy: FaultProxy,
    kubeconfig: PathBuf,
    pid: AtomicU32,
}

/// The S3 operation of a request, named as the SDK names it.
fn operation(exchange: &Exchange) -> String {
    let (path, query) = exchange.target.split_once('?').unwrap_or((&exchange.target, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let sub = query.split('&').map(|p| p.split('=').next().unwrap_or_default()).find(|k| {
        ["tagging", "publicAccessBlock", "lifecycle", "encryption", "location", "delete", "policy", "acl"]
            .contains(k)
    });
    let method = exchange.method.as_str();
    if segments.is_empty() {
        if method == "POST" {
            let body = String::from_utf8_lossy(&exchange.body);
            let action = body.split('&').find_map(|p| p.strip_prefix("Action=")).unwrap_or("Unknown");
            return format!("sts:{action}");
        }
        return "ListBuckets".into();
    }
    let verb = match method {
        "GET" => "Get",
        "PUT" => "Put",
        "DELETE" => "Delete",
        "HEAD" => "Head",
        "POST" => "Post",
        other => other,
    };
    if segments.len() > 1 {
        return format!("{verb}Object");
    }
    match (method, sub) {
        ("POST", Some("delete")) => "DeleteObjects".into(),
        ("PUT", None) => "CreateBucket".into(),
        ("GET", None) => "ListObjects".into(),
        (_, None) => format!("{verb}Bucket"),
        (_, Some("tagging")) => format!("{verb}BucketTagging"),
        (_, Some("lifecycle")) => format!("{verb}BucketLifecycleConfiguration"),
        (_, Some("publicAccessBlock")) => format!("{verb}PublicAccessBlock"),
        (_, Some("encryption")) => format!("{verb}BucketEncryption"),
        (_, Some("location")) => format!("{verb}BucketLocation"),
        (_, Some(other)) => format!("{verb}Bucket:{other}"),
    }
}

fn is_write(op: &str) -> bool {
    !(op.starts_with("Get") || op.starts_with("Head") || op.starts_with("List") || op.starts_with("sts:"))
}

/// The text of every `<tag>…</tag>` in `xml`.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str()).skip(1).filter_map(|rest| rest.split(close.as_str()).next()).collect()
}

fn tags_of(xml: &str) -> BTreeMap<String, String> {
    elements(xml, "Tag")
        .into_iter()
        .map(|t| {
            let key = elements(t, "Key").first().copied().unwrap_or_default().to_owned();
            (key, elements(t, "Value").first().copied().unwrap_or_default().to_owned())
        })
        .collect()
}

fn rule_ids(xml: &str) -> BTreeSet<String> {
    elements(xml, "Rule").iter().filter_map(|r| elements(r, "ID").first().map(|s| (*s).to_owned())).collect()
}

fn foreign(keys: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    keys.into_iter().filter(|k| k.starts_with(FOREIGN)).collect()
}

/// Plain HTTP to moto, bypassing the proxies (moto checks no signature): the driver's own view.
async fn moto(endpoint: &str, method: &str, target: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await??;
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The shared state of the run.
struct Run {
    /// The environment; locked while the API server or moto restarts.
    env: tokio::sync::Mutex<Local>,
    /// The operator's mounted credentials directory.
    credentials: PathBuf,
    admin: Client,
    s3_endpoint: String,
    record: Shared,
    slots: Vec<Arc<Slot>>,
    /// Held for writing while moto restarts; the driver's own moto reads hold it for reading.
    moto_gate: RwLock<()>,
    work: PathBuf,
}

impl Run {
    fn installs(&self) -> Api<VeleroInstall> {
        Api::namespaced(self.admin.clone(), NAMESPACE)
    }
}

fn parse_args() -> anyhow::Result<(u64, Duration)> {
    let mut seed = std::env::var("SEED").ok().filter(|s| !s.is_empty());
    let mut duration = std::env::var("DURATION").ok().filter(|s| !s.is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next(),
            "--duration" => duration = args.next(),
            other => anyhow::bail!("unknown argument {other:?} (use --seed N --duration 180s)"),
        }
    }
    let seed = match seed {
        Some(s) => s.parse().with_context(|| format!("SEED {s:?} is not a number"))?,
        None => SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000_000,
    };
    let duration = match duration {
        Some(d) => {
            let digits = d.trim_end_matches('s');
            match digits.strip_suffix('m') {
                Some(minutes) => Duration::from_secs(minutes.parse::<u64>()? * 60),
                None => Duration::from_secs(digits.parse()?),
            }
        }
        None => Duration::from_secs(180),
    };
    Ok((seed, duration))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (seed, duration) = parse_args()?;
    println!(
        "chaos: seed {seed}, {} s of faults (rerun: make chaos SEED={seed} DURATION={}s)",
        duration.as_secs(),
        duration.as_secs()
    );
    let s3 = S3Env::start_recorded().context("starting moto (run `make testenv`)")?;
    let local = Local::start_with(s3).await?;
    let admin = local.client.clone();
    let work = std::env::temp_dir().join(format!("mvo-chaos-{seed}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let api_address: std::net::SocketAddr = local.kube.server().trim_start_matches("https://").parse()?;
    let s3_address: std::net::SocketAddr = local.s3.endpoint().trim_start_matches("http://").parse()?;
    let kubeconfig_text = std::fs::read_to_string(local.kube.operator_kubeconfig_path())?;
    let mut slots = Vec::new();
    for (index, letter) in ['a', 'b'].into_iter().enumerate() {
        let kube_proxy = FaultProxy::start(api_address).await?;
        let s3_proxy = FaultProxy::start_http(s3_address).await?;
        let kubeconfig = local.work.join(format!("operator-{letter}.kubeconfig"));
        let text = kubeconfig_text.replace(local.kube.server(), &format!("https://{}", kube_proxy.address()));
        std::fs::write(&kubeconfig, text)?;
        slots.push(Arc::new(Slot {
            index,
            letter,
            kube_proxy,
            s3_proxy,
            kubeconfig,
            pid: AtomicU32::new(0),
        }));
    }
    let run = Arc::new(Run {
        s3_endpoint: local.s3.endpoint().to_owned(),
        credentials: local.credentials.clone(),
        env: tokio::sync::Mutex::new(local),
        admin,
        record: Shared::default(),
        slots,
        moto_gate: RwLock::new(()),
        work: work.clone(),
    });

    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {"resyncInterval": "1m"}});
    run.installs().patch("cluster", &apply(), &Patch::Apply(&vi)).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    let mut kills = Vec::new();
    for slot in &run.slots {
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        kills.push(kill_tx);
        background.spawn(supervise(run.clone(), slot.clone(), kill_rx, stop_rx.clone()));
    }
    background.spawn(play_cluster(run.clone(), stop_rx.clone()));
    background.spawn(collect(run.clone(), stop_rx.clone()));
    background.spawn(watch_bucket(run.clone(), stop_rx.clone()));
    background.spawn(sample_rss(run.clone(), stop_rx.clone()));

    // Faults start once the install is Ready: before, there is nothing to break.
    let started = Instant::now();
    while !ready_and_converged(&run, &[]).await {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(90), "the install never became Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The owned objects the operator made (Jobs come and go; CredentialsRequests live elsewhere).
    let mut baseline = Vec::new();
    for kind in controller::owned_kinds()
        .into_iter()
        .filter(|k| !["Job", "CredentialsRequest"].contains(&k.kind.as_str()))
    {
        let api: Api<DynamicObject> = Api::namespaced_with(run.admin.clone(), NAMESPACE, &kind);
        for object in api.list(&Default::default()).await?.items {
            baseline.push((kind.clone(), object.name_any()));
        }
    }
    println!("chaos: install Ready after {:.1} s; injecting faults", started.elapsed().as_secs_f64());

    let mut rng = Rng(seed);
    let mut timed = JoinSet::new();
    let faults_end = Instant::now() + duration;
    let mut serial = 0u32;
    while Instant::now() < faults_end {
        tokio::time::sleep(rng.millis(300, 2500)).await;
        if Instant::now() >= faults_end {
            break;
        }
        let kind = FAULTS[rng.below(FAULTS.len())];
        serial += 1;
        match inject(&run, kind, &mut rng, &mut timed, &kills, serial).await {
            Ok(true) => *lock(&run.record).faults.entry(kind).or_default() += 1,
            Ok(false) => {}
            Err(err) => {
                eprintln!("chaos: {kind} could not be injected: {err:#}");
                *lock(&run.record).faults.entry(NOT_INJECTED).or_default() += 1;
            }
        }
        // The bucket is checked once per resync; asking for checks (the documented annotation)
        // puts cloud calls under the cloud faults and makes tampering get noticed sooner.
        let cloud_fault = kind.starts_with("s3_") || kind.starts_with("bucket_");
        if rng.below(if cloud_fault { 2 } else { 6 }) == 0 {
            let annotate =
                json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: whole_seconds_now()}}});
            if run
                .installs()
                .patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate))
                .await
                .is_ok()
            {
                *lock(&run.record).faults.entry(CHECK_REQUESTED).or_default() += 1;
            }
        }
    }

    // Heal: end every timed fault, every proxy forwards, moto is up.
    timed.shutdown().await;
    for slot in &run.slots {
        slot.kube_proxy.set(Mode::Forward);
        slot.s3_proxy.set(Mode::Forward);
    }
    drop(run.moto_gate.write().await);
    let healed = Instant::now();
    println!("chaos: last fault healed; requesting a bucket check and waiting for convergence");
    let requested = whole_seconds_now();
    let annotate = json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: requested}}});
    for _ in 0..50 {
        if run.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut converged = None;
    while healed.elapsed() < Duration::from_secs(120) {
        if ready_and_converged(&run, &baseline).await
            && bucket_compliant(&run, Some(&requested)).await.is_ok()
        {
            converged = Some(healed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match converged {
        Some(took) if took <= CONVERGE_BUDGET => {}
        Some(took) => {
            lock(&run.record).violation(CONVERGED, format!("converged after {:.1} s", took.as_secs_f64()))
        }
        None => {
            let why = bucket_compliant(&run, Some(&requested)).await.err().unwrap_or_default();
            lock(&run.record).violation(CONVERGED, format!("not converged within 120 s ({why})"));
        }
    }

    // Quiet: no cloud write, and at most one Kubernetes write per resync.
    let quiet = quiet_window(&run).await?;

    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    final_checks(&run).await;
    let failed = report(&run, seed, duration, converged, &quiet);
    println!("\noperator logs: {}", run.work.display());
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Now, in whole seconds: status timestamps have second precision, so a request made at
/// 12:00:00.4 would still look pending after a check written as 12:00:00.
fn whole_seconds_now() -> String {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()).to_string()
}

/// Applies one fault; `Ok(false)` when it does not apply now (e.g. no bucket yet).
async fn inject(
    run: &Arc<Run>,
    kind: &'static str,
    rng: &mut Rng,
    timed: &mut JoinSet<()>,
    kills: &[mpsc::UnboundedSender<Duration>],
    serial: u32,
) -> anyhow::Result<bool> {
    let slot = run.slots[rng.below(run.slots.len())].clone();
    let proxy_fault = |timed: &mut JoinSet<()>, s3: bool, mode: Mode, how_long: Duration, all: bool| {
        let targets: Vec<Arc<Slot>> = if all { run.slots.clone() } else { vec![slot.clone()] };
        let run = run.clone();
        timed.spawn(async move {
            let gate = if s3 { Some(run.moto_gate.read().await) } else { None };
            for t in &targets {
                if s3 { t.s3_proxy.set(mode) } else { t.kube_proxy.set(mode) }
            }
            drop(gate);
            tokio::time::sleep(how_long).await;
            let _gate = if s3 { Some(run.moto_gate.read().await) } else { None };
            for t in &targets {
                let proxy = if s3 { &t.s3_proxy } else { &t.kube_proxy };
                if proxy.mode() == mode {
                    proxy.set(Mode::Forward);
                }
            }
        });
    };
    // Cloud faults hit both replicas' proxies: only the leader calls the cloud, and which one
    // leads changes all the time.
    let all = true;
    match kind {
        "apiserver_restart" => {
            let run = run.clone();
            timed.spawn(async move {
                if let Err(err) = restart_apiserver(&run).await {
                    eprintln!("chaos: API server restart failed: {err:#}");
                }
            });
        }
        "kube_stall_one_replica" => proxy_fault(timed, false, Mode::Stall, rng.millis(2000, 8000), false),
        "kube_reset_one_replica" => proxy_fault(timed, false, Mode::Reset, rng.millis(500, 3000), false),
        "s3_restart" => {
            let down = rng.millis(500, 4000);
            let run = run.clone();
            timed.spawn(async move {
                if let Err(err) = restart_moto(&run, down).await {
                    eprintln!("chaos: moto restart failed: {err:#}");
                }
            });
        }
        "s3_5xx" => proxy_fault(timed, true, Mode::Fail(500), rng.millis(1000, 5000), all),
        "s3_throttle_503_slowdown" => proxy_fault(timed, true, Mode::Fail(503), rng.millis(1000, 6000), all),
        "s3_timeout" => proxy_fault(timed, true, Mode::Stall, rng.millis(3000, 25_000), all),
        "s3_reset" => proxy_fault(timed, true, Mode::Reset, rng.millis(500, 3000), all),
        "owned_object_edit" => {
            if rng.below(2) == 0 {
                let deployments: Api<Deployment> = Api::namespaced(run.admin.clone(), NAMESPACE);
                let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": format!("chaos/edited:{serial}")}]}}}});
                deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await?;
            } else {
                let bsl: Api<DynamicObject> =
                    Api::namespaced_with(run.admin.clone(), NAMESPACE, &build::backup_storage_location());
                let edit = json!({"spec": {"objectStorage": {"bucket": format!("chaos-edited-{serial}")}}});
                bsl.patch("default", &PatchParams::default(), &Patch::Merge(&edit)).await?;
            }
        }
        "owned_object_delete" => {
            let kinds: Vec<ApiResource> = controller::owned_kinds()
                .into_iter()
                .filter(|k| k.kind != "Job" && k.kind != "CredentialsRequest")
                .collect();
            let kind = &kinds[rng.below(kinds.len())];
            let api: Api<DynamicObject> = Api::namespaced_with(run.admin.clone(), NAMESPACE, kind);
            let objects = api.list(&Default::default()).await?.items;
            if objects.is_empty() {
                return Ok(false);
            }
            let name = objects[rng.below(objects.len())].name_any();
            api.delete(&name, &DeleteParams::background()).await?;
        }
        "bucket_tags_tampered" | "bucket_public_access_opened" | "bucket_lifecycle_changed" => {
            let Some(bucket) = lock(&run.record).bucket.clone() else { return Ok(false) };
            let _gate = run.moto_gate.read().await;
            tamper(run, kind, &bucket, rng, serial).await?;
        }
        "credentials_rotated" => {
            // As the kubelet updates a mounted Secret: new files, swapped in atomically.
            let dir = &run.credentials;
            for (file, value) in [
                ("aws_access_key_id", format!("AKIACHAOS{serial}")),
                ("aws_secret_access_key", format!("rotated-{serial}")),
            ] {
                let next = dir.join(format!(".{file}.next"));
                std::fs::write(&next, value)?;
                std::fs::rename(&next, dir.join(file))?;
            }
            let secrets: Api<Secret> = Api::namespaced(run.admin.clone(), NAMESPACE);
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": VELERO_CREDENTIALS_SECRET},
                                "stringData": {"credentials": format!("[default]\naws_access_key_id = AKIACHAOS{serial}\n")}});
            secrets.patch(VELERO_CREDENTIALS_SECRET, &apply(), &Patch::Apply(&secret)).await?;
        }
        "operator_sigkill" => {
            // Killed at once; comes back after up to 2 s, as a kubelet would restart it.
            kills[slot.index].send(rng.millis(0, 2000))?;
        }
        other => anyhow::bail!("unknown fault {other}"),
    }
    Ok(true)
}

async fn restart_apiserver(run: &Run) -> anyhow::Result<()> {
    let mut env = run.env.lock().await;
    Ok(tokio::task::block_in_place(|| env.kube.restart_apiserver())?)
}

async fn restart_moto(run: &Run, down: Duration) -> anyhow::Result<()> {
    let _gate = run.moto_gate.write().await;
    // A stopped server refuses connections; the proxies do that while moto is down and replays.
    for slot in &run.slots {
        slot.s3_proxy.set(Mode::Reset);
    }
    let outcome = restart_moto_process(run, down).await;
    for slot in &run.slots {
        slot.s3_proxy.set(Mode::Forward);
    }
    outcome
}

async fn restart_moto_process(run: &Run, down: Duration) -> anyhow::Result<()> {
    let mut env = run.env.lock().await;
    Ok(tokio::task::block_in_place(|| env.s3.restart(down))?)
}

/// One bucket tampering, as another tool or a human would do it directly on the bucket.
async fn tamper(run: &Run, kind: &str, bucket: &str, rng: &mut Rng, serial: u32) -> anyhow::Result<()> {
    let endpoint = &run.s3_endpoint;
    match kind {
        "bucket_tags_tampered" => {
            let (_, xml) = moto(endpoint, "GET", &format!("/{bucket}?tagging"), "").await?;
            let mut tags = tags_of(&xml);
            // Remove one or both of ours, add a foreign one (S3 allows 50 tags).
            if rng.below(2) == 0 {
                tags.remove(OUR_TAGS[0]);
            }
            tags.remove(OUR_TAGS[1]);
            let key = format!("{FOREIGN}{serial}");
            if tags.len() < 40 {
                tags.insert(key.clone(), format!("v{serial}"));
            }
            let body: String =
                tags.iter().map(|(k, v)| format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>")).collect();
            let started = Timestamp::now();
            let (status, answer) = moto(
                endpoint,
                "PUT",
                &format!("/{bucket}?tagging"),
                &format!("<Tagging><TagSet>{body}</TagSet></Tagging>"),
            )
            .await?;
            anyhow::ensure!(status < 300, "PutBucketTagging: {status} {answer}");
            lock(&run.record).foreign_tags.push(ForeignWrite { key, started, finished: Timestamp::now() });
        }
        "bucket_public_access_opened" => {
            let flags = ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"];
            let open = rng.below(flags.len());
            let body: String = flags
                .iter()
                .enumerate()
                .map(|(i, f)| format!("<{f}>{}</{f}>", i != open && rng.below(2) == 0))
                .collect();
            let (status, answer) = moto(
                endpoint,
                "PUT",
                &format!("/{bucket}?publicAccessBlock"),
                &format!("<PublicAccessBlockConfiguration>{body}</PublicAccessBlockConfiguration>"),
            )
            .await?;
            anyhow::ensure!(status < 300, "PutPublicAccessBlock: {status} {answer}");
        }
        _ => {
            let (status, xml) = moto(endpoint, "GET", &format!("/{bucket}?lifecycle"), "").await?;
            let mut rules: Vec<String> = if status == 200 {
                elements(&xml, "Rule").into_iter().map(str::to_owned).collect()
            } else {
                Vec::new()
            };
            // Drop one of ours, or weaken its expiry; add a foreign rule.
            match rng.below(2) {
                0 => rules.retain(|r| !r.contains(&format!("<ID>{ABORT_UPLOADS_RULE_ID}</ID>"))),
                _ => {
                    for rule in
                        rules.iter_mut().filter(|r| r.contains(&format!("<ID>{BACKUP_EXPIRY_RULE_ID}</ID>")))
                    {
                        *rule = rule.replace("<Days>", "<Days>1").to_string();
                    }
                }
            }
            let key = format!("{FOREIGN}rule-{serial}");
            if rules.len() < 40 {
                rules.push(format!(
                    "<ID>{key}</ID><Filter><Prefix>chaos-{serial}/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration>"
                ));
            }
            let body: String = rules.iter().map(|r| format!("<Rule>{r}</Rule>")).collect();
            let started = Timestamp::now();
            let (status, answer) = moto(
                endpoint,
                "PUT",
                &format!("/{bucket}?lifecycle"),
                &format!("<LifecycleConfiguration>{body}</LifecycleConfiguration>"),
            )
            .await?;
            anyhow::ensure!(status < 300, "PutBucketLifecycleConfiguration: {status} {answer}");
            lock(&run.record).foreign_rules.push(ForeignWrite { key, started, finished: Timestamp::now() });
        }
    }
    Ok(())
}

/// Runs one replica's operator processes one after another, like a kubelet: restarts it when it
/// exits (a replica that lost the Lease exits 1) and kills it on request.
async fn supervise(
    run: Arc<Run>,
    slot: Arc<Slot>,
    mut kill: mpsc::UnboundedReceiver<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut incarnation = 0;
    while !*stop.borrow() {
        incarnation += 1;
        let pod = format!("chaos-operator-{}-{incarnation}", slot.letter);
        let spawned = operator_binary().and_then(|bin| {
            let mut command = tokio::process::Command::new(bin);
            command
                .args(["run", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"])
                .args(LEASE_FLAGS)
                .env("KUBECONFIG", &slot.kubeconfig)
                .env("MVO_CLOUD_ENDPOINT", format!("http://{}", slot.s3_proxy.address()))
                .env("MVO_CREDENTIALS_DIR", &run.credentials)
                .env("POD_NAME", &pod)
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            Ok(command.spawn()?)
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                eprintln!("chaos: cannot start the operator: {err:#}");
                return;
            }
        };
        slot.pid.store(child.id().unwrap_or_default(), Ordering::Relaxed);
        let logs = child.stderr.take().map(|stderr| {
            tokio::spawn(read_logs(run.clone(), slot.index, pod.clone(), BufReader::new(stderr)))
        });
        let (how, pause) = tokio::select! {
            status = child.wait() => {
                let code = status.ok().and_then(|s| s.code()).map_or("signal".to_owned(), |c| format!("exit {c}"));
                (code, Duration::from_secs(1))
            }
            Some(delay) = kill.recv() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                ("SIGKILL".to_owned(), delay)
            }
            _ = stop.changed() => {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                ("SIGTERM at the end".to_owned(), Duration::ZERO)
            }
        };
        let ended = Timestamp::now();
        if let Some(logs) = logs {
            let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
        }
        {
            let mut record = lock(&run.record);
            for interval in record.intervals.iter_mut().filter(|i| i.pod == pod && i.end.is_none()) {
                interval.end = Some(ended);
            }
            *record.exits.entry(how).or_default() += 1;
        }
        tokio::time::sleep(pause).await;
    }
}

async fn read_logs(run: Arc<Run>, slot: usize, pod: String, stderr: BufReader<tokio::process::ChildStderr>) {
    let mut file = std::fs::File::create(run.work.join(format!("{pod}.log"))).ok();
    let mut lines = stderr.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(file) = file.as_mut() {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
        if line.contains("panicked at") {
            lock(&run.record).violation(NO_PANIC, format!("{pod}: {line}"));
        }
        let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
        let at = entry["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        match entry["fields"]["message"].as_str() {
            Some("started acting") => {
                lock(&run.record).intervals.push(Interval { slot, pod: pod.clone(), start: at, end: None });
            }
            Some("stopped acting") => {
                let mut record = lock(&run.record);
                for interval in record.intervals.iter_mut().filter(|i| i.pod == pod && i.end.is_none()) {
                    interval.end = Some(at);
                }
            }
            _ => {}
        }
    }
}

/// What the cluster's other controllers do: the credential operator mints Velero's secret, the
/// Job controller and kubelet complete the CRD Job and make the Deployment available.
async fn play_cluster(run: Arc<Run>, stop: watch::Receiver<bool>) {
    let crd_output = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: backups.velero.io\nspec:\n  group: velero.io\n  names: {kind: Backup, listKind: BackupList, plural: backups, singular: backup}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    let secrets: Api<Secret> = Api::namespaced(run.admin.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(run.admin.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(run.admin.clone(), NAMESPACE);
    let kubelet = PatchParams { field_manager: Some("chaos-kubelet".into()), ..Default::default() };
    while !*stop.borrow() {
        if matches!(secrets.get_opt(VELERO_CREDENTIALS_SECRET).await, Ok(None)) {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": VELERO_CREDENTIALS_SECRET},
                                "stringData": {"credentials": "[default]\naws_access_key_id = AKIADEMO\n"}});
            let _ = secrets.patch(VELERO_CREDENTIALS_SECRET, &apply(), &Patch::Apply(&secret)).await;
        }
        if let Ok(list) = jobs.list(&Default::default()).await {
            for job in list.items {
                let done = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0;
                if !done {
                    let _ = mvo_testkit::jobs::complete_crd_job(&run.admin, &job, crd_output, true).await;
                }
            }
        }
        if let Ok(Some(deployment)) = deployments.get_opt("velero").await {
            let generation = deployment.metadata.generation;
            let observed = deployment.status.as_ref().and_then(|s| s.observed_generation);
            if observed != generation {
                let available = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                                  "readyReplicas": 1, "availableReplicas": 1}});
                let _ = deployments.patch_status("velero", &kubelet, &Patch::Merge(&available)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Moves what the proxies saw into the record, checking deletes and foreign keys as it goes.
async fn collect(run: Arc<Run>, stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        collect_once(&run);
        if stopping {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn collect_once(run: &Run) {
    for slot in &run.slots {
        let mut batch = slot.s3_proxy.take_exchanges();
        batch.sort_by_key(|e| e.at);
        let mut record = lock(&run.record);
        for exchange in batch {
            let op = operation(&exchange);
            if matches!(op.as_str(), "DeleteBucket" | "DeleteObject" | "DeleteObjects") {
                record.violation(NO_DELETES, format!("replica {}: {op} {}", slot.letter, exchange.target));
            }
            let answered = exchange.status.is_some_and(|s| s < 300);
            let text = String::from_utf8_lossy(if op.starts_with("Get") {
                &exchange.response
            } else {
                &exchange.body
            })
            .into_owned();
            match op.as_str() {
                "GetBucketTagging" if answered => {
                    record.last_read[slot.index].0 = foreign(tags_of(&text).into_keys());
                }
                "GetBucketLifecycleConfiguration" if answered => {
                    record.last_read[slot.index].1 = foreign(rule_ids(&text));
                }
                "PutBucketTagging" => {
                    let written = foreign(tags_of(&text).into_keys());
                    let dropped: Vec<String> =
                        record.last_read[slot.index].0.difference(&written).cloned().collect();
                    if !dropped.is_empty() {
                        record.violation(
                            FOREIGN_KEPT,
                            format!("replica {} wrote tags without {dropped:?} it had read", slot.letter),
                        );
                    }
                }
                "PutBucketLifecycleConfiguration" => {
                    let written = foreign(rule_ids(&text));
                    let dropped: Vec<String> =
                        record.last_read[slot.index].1.difference(&written).cloned().collect();
                    if !dropped.is_empty() {
                        record.violation(
                            FOREIGN_KEPT,
                            format!("replica {} wrote rules without {dropped:?} it had read", slot.letter),
                        );
                    }
                }
                _ => {}
            }
            record.exchanges.push((slot.index, exchange));
        }
    }
}

/// Every second: at most one bucket, and once status names one, only that one.
async fn watch_bucket(run: Arc<Run>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        check_bucket(&run).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn check_bucket(run: &Run) -> Option<Vec<String>> {
    let named = run
        .installs()
        .get("cluster")
        .await
        .ok()?
        .status
        .and_then(|s| s.storage_bucket)
        .and_then(|b| b.name)
        .filter(|n| !n.is_empty());
    let buckets = {
        let _gate = run.moto_gate.read().await;
        let (status, xml) = moto(&run.s3_endpoint, "GET", "/", "").await.ok()?;
        if status != 200 {
            return None;
        }
        elements(&xml, "Name").into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let mut record = lock(&run.record);
    if buckets.len() > 1 {
        record.violation(ONE_BUCKET, format!("{} buckets: {buckets:?}", buckets.len()));
    }
    if let Some(named) = named {
        match &record.bucket {
            Some(known) if *known != named => {
                let detail = format!("status named {known}, now {named}");
                record.violation(ONE_BUCKET, detail);
            }
            _ => {}
        }
        record.bucket = Some(named.clone());
        if !buckets.is_empty() && buckets != [named.clone()] {
            record.violation(ONE_BUCKET, format!("status names {named}, moto has {buckets:?}"));
        }
    }
    Some(buckets)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()
}

async fn sample_rss(run: Arc<Run>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        for slot in &run.slots {
            if let Some(kib) = rss_kib(slot.pid.load(Ordering::Relaxed)) {
                let mut record = lock(&run.record);
                record.max_rss_kib = record.max_rss_kib.max(kib);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ready=True, one replica acting, and the owned objects the driver breaks are back.
async fn ready_and_converged(run: &Run, baseline: &[(ApiResource, String)]) -> bool {
    let acting = lock(&run.record).intervals.iter().filter(|i| i.end.is_none()).count();
    if acting != 1 {
        return false;
    }
    let Ok(vi) = run.installs().get("cluster").await else { return false };
    let Some(status) = vi.status else { return false };
    let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let Some(bucket) = status.storage_bucket.and_then(|b| b.name) else { return false };
    let deployments: Api<Deployment> = Api::namespaced(run.admin.clone(), NAMESPACE);
    let image = deployments
        .get_opt("velero")
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec?.template.spec?.containers.into_iter().find(|c| c.name == "velero")?.image);
    let bsl: Api<DynamicObject> =
        Api::namespaced_with(run.admin.clone(), NAMESPACE, &build::backup_storage_location());
    let bsl_bucket = bsl
        .get_opt("default")
        .await
        .ok()
        .flatten()
        .and_then(|b| b.data["spec"]["objectStorage"]["bucket"].as_str().map(str::to_owned));
    let mut all_present = true;
    for (kind, name) in baseline {
        let api: Api<DynamicObject> = Api::namespaced_with(run.admin.clone(), NAMESPACE, kind);
        all_present &= matches!(api.get_opt(name).await, Ok(Some(_)));
    }
    ready
        && all_present
        && image.as_deref() == Some(DEFAULT_VELERO_IMAGE)
        && bsl_bucket.as_deref() == Some(&bucket)
}

/// The bucket is hardened again with every foreign tag and rule still there; with `requested`,
/// also the operator has checked it since that time.
async fn bucket_compliant(run: &Run, requested: Option<&str>) -> Result<(), String> {
    let vi = run.installs().get("cluster").await.map_err(|e| e.to_string())?;
    let bucket_status = vi.status.and_then(|s| s.storage_bucket).ok_or("no bucket in status")?;
    if let Some(requested) = requested {
        let synced = bucket_status.last_sync_timestamp.map(|t| t.0.to_string()).unwrap_or_default();
        let (synced, requested) = (synced.parse::<Timestamp>().ok(), requested.parse::<Timestamp>().ok());
        if synced < requested {
            return Err("the requested bucket check has not run yet".into());
        }
    }
    let bucket = bucket_status.name.ok_or("no bucket name in status")?;
    let _gate = run.moto_gate.read().await;
    let get = async |sub: &str| {
        moto(&run.s3_endpoint, "GET", &format!("/{bucket}?{sub}"), "")
            .await
            .map(|(_, b)| b)
            .map_err(|e| e.to_string())
    };
    let pab = get("publicAccessBlock").await?;
    if elements(&pab, "BlockPublicAcls").first() != Some(&"true")
        || ["IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"]
            .iter()
            .any(|f| elements(&pab, f).first() != Some(&"true"))
    {
        return Err(format!("public access not blocked: {pab}"));
    }
    let tags = tags_of(&get("tagging").await?);
    if tags.get(OUR_TAGS[0]).map(String::as_str) != Some(INFRA) || !tags.contains_key(OUR_TAGS[1]) {
        return Err(format!("owner tags missing: {tags:?}"));
    }
    let lifecycle = get("lifecycle").await?;
    let rules = rule_ids(&lifecycle);
    if !rules.contains(BACKUP_EXPIRY_RULE_ID) || !rules.contains(ABORT_UPLOADS_RULE_ID) {
        return Err(format!("managed lifecycle rules missing: {rules:?}"));
    }
    let expiry = elements(&lifecycle, "Rule")
        .into_iter()
        .find(|r| r.contains(&format!("<ID>{BACKUP_EXPIRY_RULE_ID}</ID>")))
        .and_then(|r| elements(r, "Days").first().map(|d| (*d).to_owned()));
    if expiry != Some(mvo_core::bucket::DEFAULT_RETENTION_DAYS.to_string()) {
        return Err(format!("backup expiry is {expiry:?} days"));
    }
    Ok(())
}

/// Writes counted while the converged install is left alone.
#[derive(Debug, Default)]
struct Quiet {
    cloud_writes: BTreeMap<String, u32>,
    kube_writes: BTreeMap<String, u32>,
    allowed_kube_writes: u32,
}

async fn quiet_window(run: &Arc<Run>) -> anyhow::Result<Quiet> {
    collect_once(run);
    let first_new = lock(&run.record).exchanges.len();
    let counts: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let syncs: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut watches = JoinSet::new();
    let mut kinds: Vec<ApiResource> = controller::owned_kinds();
    kinds.push(ApiResource::erase::<VeleroInstall>(&()));
    kinds.push(ApiResource::erase::<ConfigMap>(&()));
    kinds.push(ApiResource::erase::<Secret>(&()));
    kinds.push(ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event")));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    for kind in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(run.admin.clone(), NAMESPACE, &kind);
        let (counts, syncs, ready) = (counts.clone(), syncs.clone(), ready_tx.clone());
        watches.spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            let mut listed = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        listed = true;
                        let _ = ready.send(());
                    }
                    Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) if listed => {
                        if let Some(synced) =
                            object.data["status"]["storageBucket"]["lastSyncTimestamp"].as_str()
                        {
                            syncs.lock().insert(synced.to_owned());
                        }
                        *counts.lock().entry(kind.kind.clone()).or_default() += 1;
                    }
                    _ => {}
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..watches.len() {
        tokio::time::timeout(Duration::from_secs(30), ready_rx.recv()).await?;
    }
    println!(
        "chaos: converged; watching {} s of quiet (one resync is {} s)",
        QUIET_WINDOW.as_secs(),
        RESYNC.as_secs()
    );
    tokio::time::sleep(QUIET_WINDOW).await;
    watches.shutdown().await;
    collect_once(run);
    // One write per resync: each resync writes its lastSyncTimestamp, so the distinct values seen
    // are the resyncs that ran (at least one: the window is longer than the jittered interval).
    let resyncs = syncs.lock().len() as u32;
    let mut quiet = Quiet {
        kube_writes: counts.lock().clone(),
        allowed_kube_writes: resyncs.max(1),
        ..Default::default()
    };
    let mut record = lock(&run.record);
    for (_, exchange) in record.exchanges.iter().skip(first_new) {
        let op = operation(exchange);
        if is_write(&op) {
            *quiet.cloud_writes.entry(op).or_default() += 1;
        }
    }
    let kube_total: u32 = quiet.kube_writes.values().sum();
    if !quiet.cloud_writes.is_empty() {
        let detail = format!("cloud writes: {:?}", quiet.cloud_writes);
        record.violation(QUIET, detail);
    }
    if kube_total > quiet.allowed_kube_writes {
        let detail = format!(
            "{kube_total} Kubernetes writes for {} resyncs: {:?}",
            quiet.allowed_kube_writes, quiet.kube_writes
        );
        record.violation(QUIET, detail);
    }
    Ok(quiet)
}

async fn final_checks(run: &Run) {
    match check_bucket(run).await {
        Some(buckets) => {
            let named = lock(&run.record).bucket.clone();
            if buckets.len() != 1 || named.as_ref() != buckets.first() {
                lock(&run.record).violation(ONE_BUCKET, format!("at the end: {buckets:?}, status {named:?}"));
            }
        }
        None => lock(&run.record).violation(ONE_BUCKET, "at the end: could not list buckets".into()),
    }
    let final_tags = bucket_keys(run, "tagging").await;
    let final_rules = bucket_keys(run, "lifecycle").await;
    let mut record = lock(&run.record);
    let grace = |at: Timestamp| at.checked_add(WRITE_GRACE).unwrap_or(at);

    // Leadership: no two intervals of different processes overlap.
    let intervals = record.intervals.clone();
    for (i, a) in intervals.iter().enumerate() {
        for b in intervals.iter().skip(i + 1) {
            let (a_end, b_end) = (a.end.unwrap_or(Timestamp::MAX), b.end.unwrap_or(Timestamp::MAX));
            if a.pod != b.pod && a.start < b_end && b.start < a_end {
                record.violation(
                    EXCLUSIVE,
                    format!(
                        "{} [{} .. {:?}] and {} [{} .. {:?}]",
                        a.pod, a.start, a.end, b.pod, b.start, b.end
                    ),
                );
            }
        }
    }
    // Every cloud write a replica sent lies inside one of its intervals.
    let outside: Vec<String> = record
        .exchanges
        .iter()
        .filter(|(_, e)| is_write(&operation(e)))
        .filter(|(slot, e)| {
            let at = ts(e.at);
            !intervals
                .iter()
                .any(|i| i.slot == *slot && i.start <= at && at <= grace(i.end.unwrap_or(Timestamp::MAX)))
        })
        .map(|(slot, e)| format!("replica {slot}: {} at {}", operation(e), ts(e.at)))
        .collect();
    for detail in outside {
        record.violation(WRITES_INSIDE, detail);
    }
    // Foreign tags and rules the driver wrote are all there at the end, unless a replica's
    // read-modify-write straddled the driver's write (S3 has no conditional tagging/lifecycle
    // writes); those are reported, not failed.
    let mut raced = 0;
    for (writes, present, op) in [
        (record.foreign_tags.clone(), final_tags, ("GetBucketTagging", "PutBucketTagging")),
        (
            record.foreign_rules.clone(),
            final_rules,
            ("GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration"),
        ),
    ] {
        let Some(present) = present else {
            record.violation(FOREIGN_KEPT, "at the end: could not read the bucket".into());
            continue;
        };
        for write in writes.iter().filter(|w| !present.contains(&w.key)) {
            if straddled(&record.exchanges, write, op) {
                raced += 1;
            } else {
                record.violation(FOREIGN_KEPT, format!("{} lost", write.key));
            }
        }
    }
    if raced > 0 {
        println!(
            "note: {raced} foreign tag(s)/rule(s) lost to a write racing the driver's (no conditional writes in S3)"
        );
    }
}

/// Whether some replica read before `write` finished and wrote after it started.
fn straddled(exchanges: &[(usize, Exchange)], write: &ForeignWrite, (get, put): (&str, &str)) -> bool {
    let mut last_get: [Option<Timestamp>; 2] = [None, None];
    for (slot, e) in exchanges {
        let op = operation(e);
        let at = ts(e.at);
        if op == get {
            last_get[*slot] = Some(at);
        } else if op == put && at >= write.started && last_get[*slot].is_some_and(|g| g <= write.finished) {
            return true;
        }
    }
    false
}

async fn bucket_keys(run: &Run, sub: &str) -> Option<BTreeSet<String>> {
    let bucket = lock(&run.record).bucket.clone()?;
    let (_, xml) = moto(&run.s3_endpoint, "GET", &format!("/{bucket}?{sub}"), "").await.ok()?;
    Some(if sub == "tagging" { foreign(tags_of(&xml).into_keys()) } else { foreign(rule_ids(&xml)) })
}

fn report(run: &Run, seed: u64, duration: Duration, converged: Option<Duration>, quiet: &Quiet) -> bool {
    let record = lock(&run.record);
    println!("\n== chaos: seed {seed}, {} s of faults", duration.as_secs());
    println!("\nfaults injected                              count");
    for (kind, n) in &record.faults {
        println!("  {kind:<42} {n}");
    }
    let injected: u32 = record.faults.iter().filter(|(k, _)| !k.starts_with('(')).map(|(_, n)| n).sum();
    println!("  {:<42} {injected}", "total injected");
    println!("\noperator process ends                        count");
    for (how, n) in &record.exits {
        println!("  {how:<42} {n}");
    }
    println!("  {:<42} {}", "leadership intervals", record.intervals.len());
    println!("\ninvariant                                    result");
    for name in INVARIANTS {
        match record.violations.get(name) {
            None => println!("  {name:<42} held"),
            Some(v) => {
                println!("  {name:<42} VIOLATED ({}x): {}", v.len(), v.first().map_or("", String::as_str))
            }
        }
    }
    println!(
        "\nconverged after the last fault               {}",
        converged.map_or("no".into(), |d| format!(
            "{:.1} s (budget {} s)",
            d.as_secs_f64(),
            CONVERGE_BUDGET.as_secs()
        ))
    );
    println!(
        "quiet window ({} s)                           {} cloud writes, {} Kubernetes writes ({:?}) in {} resync(s)",
        QUIET_WINDOW.as_secs(),
        quiet.cloud_writes.values().sum::<u32>(),
        quiet.kube_writes.values().sum::<u32>(),
        quiet.kube_writes,
        quiet.allowed_kube_writes
    );
    let mut calls: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    for (_, e) in &record.exchanges {
        let entry = calls.entry(operation(e)).or_default();
        entry.0 += 1;
        if e.injected {
            entry.1 += 1;
        } else if e.status.is_none() {
            entry.2 += 1;
        }
    }
    println!(
        "\ncloud calls by kind (both replicas)          sent   injected error   no answer (reset, refused)"
    );
    for (op, (real, injected, unanswered)) in &calls {
        println!("  {op:<42} {real:<6} {injected:<16} {unanswered}");
    }
    println!(
        "\nmax RSS of an operator process               {:.1} MiB ({})",
        record.max_rss_kib as f64 / 1024.0,
        if cfg!(debug_assertions) { "debug build" } else { "release build" }
    );
    !record.violations.is_empty()
}
