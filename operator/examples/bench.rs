//! `make bench`: measures the SPEC 14 budgets in one run against the local environment and prints
//! each figure next to its budget, then the footprint of every operator build on every cloud it
//! links. `make bench` builds the release binaries into `target/bench-builds/<build>/` (`all`,
//! `aws`, `gcp`, `azure`) and passes that directory: AWS runs on moto, Azure on Azurite, GCP with
//! `examples/gcp_plane_operator.rs` (the operator on the in-memory GCS control plane). The bench
//! itself may be a debug build: it only drives the environment and reads `/proc` of the operator.
//! The container image size needs a container engine and is not measured here.

mod local;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use local::{Local, NAMESPACE, operator_binary, stop, wait_for};
use mvo_core::metering::is_read;
use mvo_operator::{
    controller,
    reconcile::{build, validate::DEFAULT_VELERO_IMAGE},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::mpsc,
};

async fn scrape(address: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// `name{labels} value` lines of `metric`, as (labels, value).
fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|line| line.strip_prefix(metric))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Cloud (reads, writes) so far, from the operator's own metrics.
fn cloud_calls(text: &str) -> (u64, u64) {
    let mut reads = 0;
    let mut writes = 0;
    for (labels, value) in samples(text, "managed_velero_operator_cloud_api_calls_total") {
        let operation =
            labels.split("operation=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
        if is_read(operation) { reads += value as u64 } else { writes += value as u64 }
    }
    (reads, writes)
}

fn reconciles(text: &str) -> u64 {
    samples(text, "managed_velero_operator_reconciles_total").first().map_or(0, |(_, v)| *v as u64)
}

async fn resource_versions(local: &Local) -> anyhow::Result<BTreeMap<String, String>> {
    let mut versions = BTreeMap::new();
    let vi = local.installs().get("cluster").await?;
    versions.insert("VeleroInstall/cluster".into(), vi.resource_version().unwrap_or_default());
    for kind in controller::owned_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(local.client.clone(), NAMESPACE, &kind);
        for o in api.list(&Default::default()).await?.items {
            versions
                .insert(format!("{}/{}", kind.kind, o.name_any()), o.resource_version().unwrap_or_default());
        }
    }
    Ok(versions)
}

/// A `Vm*:` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field))?.split_whitespace().next()?.parse().ok()
}

/// Where the resident pages are, from `/proc/<pid>/smaps`, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Breakdown {
    /// Clean pages of the operator's code (`.text`), shared with the page cache.
    binary_code: u64,
    /// Clean pages of the binary's other mappings: read-only data, headers, unwind tables.
    binary_rodata: u64,
    /// Pages of the binary's mappings that were written (relocated `.data.rel.ro`, `.data`, `.bss`).
    binary_dirty: u64,
    /// Shared libraries (libc, libm, the dynamic loader; none in the static musl image).
    libraries: u64,
    /// The `brk` heap.
    heap: u64,
    /// Anonymous mappings: `mmap`ed allocations, malloc arenas of other threads, thread stacks.
    anonymous: u64,
    /// The main thread's stack.
    stack: u64,
    threads: u64,
}

fn breakdown(pid: u32, binary: &Path) -> Option<Breakdown> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let binary = std::fs::canonicalize(binary).ok()?;
    let mut out = Breakdown::default();
    let mut path = String::new();
    let mut executable = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: `start-end perms offset dev inode [path]`.
            executable = words.next().is_some_and(|perms| perms.contains('x'));
            path = words.nth(3).unwrap_or_default().to_owned();
            continue;
        }
        let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or_default();
        let own = Path::new(&path) == binary;
        match first {
            "Rss:" if own && executable => out.binary_code += kib,
            "Rss:" if own => out.binary_rodata += kib,
            "Anonymous:" if own => {
                let clean = if executable { &mut out.binary_code } else { &mut out.binary_rodata };
                *clean -= kib.min(*clean);
                out.binary_dirty += kib;
            }
            "Rss:" if path == "[heap]" => out.heap += kib,
            "Rss:" if path == "[stack]" => out.stack += kib,
            "Rss:" if path.is_empty() => out.anonymous += kib,
            "Rss:" if path.starts_with('/') => out.libraries += kib,
            _ => {}
        }
    }
    out.threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()?;
    Some(out)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The clouds the bench can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }

    fn environment(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS on moto",
            Cloud::Gcp => "GCP on the in-memory GCS plane",
            Cloud::Azure => "Azure on Azurite",
        }
    }

    async fn start(self) -> anyhow::Result<Local> {
        match self {
            Cloud::Aws => Local::start().await,
            Cloud::Gcp => Local::start_gcp().await,
            Cloud::Azure => Local::start_azure().await,
        }
    }
}

/// One operator build: the shipped binary and, when it links GCP, its twin on the GCS plane.
struct Build {
    name: String,
    binary: PathBuf,
    gcp_plane: Option<PathBuf>,
    clouds: Vec<Cloud>,
}

/// The builds under `dir` (`<dir>/<build>/managed-velero-operator`), all clouds first; without a
/// directory, the operator binary next to the bench, on AWS.
fn builds(dir: Option<PathBuf>) -> anyhow::Result<Vec<Build>> {
    let Some(dir) = dir else {
        let binary = operator_binary()?;
        return Ok(vec![Build { name: "all".into(), binary, gcp_plane: None, clouds: vec![Cloud::Aws] }]);
    };
    let mut builds = Vec::new();
    for name in ["all", "aws", "gcp", "azure"] {
        let binary = dir.join(name).join("managed-velero-operator");
        if !binary.is_file() {
            continue;
        }
        let gcp_plane = Some(dir.join(name).join("gcp_plane_operator")).filter(|p| p.is_file());
        let clouds = match name {
            "all" => vec![Cloud::Aws, Cloud::Gcp, Cloud::Azure],
            "aws" => vec![Cloud::Aws],
            "gcp" => vec![Cloud::Gcp],
            _ => vec![Cloud::Azure],
        };
        builds.push(Build { name: name.into(), binary, gcp_plane, clouds });
    }
    anyhow::ensure!(!builds.is_empty(), "no operator builds under {}", dir.display());
    Ok(builds)
}

/// The figures of one build on one cloud.
struct Run {
    cold_start: Duration,
    bucket_ready: Duration,
    ready: Duration,
    check_reads: u64,
    check_writes: u64,
    changed: usize,
    churn: u64,
    drift: Duration,
    steady_kib: u64,
    peak_kib: u64,
    breakdown: Breakdown,
}

/// The resyncs before the steady-state memory is read.
const RESYNCS: usize = 10;

/// Forces one bucket check on the compliant install and waits until it is recorded.
async fn force_bucket_check(local: &Local) -> anyhow::Result<()> {
    let last_sync = |vi: &mvo_operator::crd::VeleroInstall| {
        vi.status.as_ref().and_then(|s| s.storage_bucket.as_ref()).and_then(|b| b.last_sync_timestamp.clone())
    };
    let synced = last_sync(&local.installs().get("cluster").await?);
    let requested = Timestamp::now().checked_add(Duration::from_secs(1))?.to_string();
    let annotate =
        json!({"metadata": {"annotations": {"managed.openshift.io/reconcile-requested-at": requested}}});
    local.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate)).await?;
    wait_for("bucket check", Duration::from_secs(30), async || {
        let vi = local.installs().get("cluster").await.ok()?;
        (last_sync(&vi) != synced).then_some(())
    })
    .await?;
    Ok(())
}

/// Runs `binary` on a fresh local cluster on `cloud` through install, 10 resyncs, an hour of
/// Velero status writes and 5 drift reverts.
async fn measure(cloud: Cloud, binary: &Path) -> anyhow::Result<Run> {
    let local = cloud.start().await?;

    // The whole binary in the page cache, as on a node right after the image was pulled: the
    // kernel maps cached pages around every fault (fault-around), so what is cached decides how
    // much of the code a run makes resident, and a binary partly evicted by earlier builds would
    // measure smaller than in a cluster.
    std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;

    // Cold start: process start to the controller running (startup checks done).
    let spawned = Instant::now();
    let args = ["run", "--leader-election", "false", "--log-format", "json", "--metrics-addr", "127.0.0.1:0"];
    // MVO_BENCH_WRAP: a profiler to run the operator under (`valgrind --tool=massif`, which keeps
    // the pid and stops cleanly on SIGTERM); the figures are then the profiler's, not comparable.
    let wrap = std::env::var("MVO_BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut operator = match wrap.next() {
        Some(tool) => {
            let mut all: Vec<&str> = wrap.collect();
            let binary = binary.to_str().context("operator path")?;
            all.push(binary);
            all.extend(args);
            local.operator_at(tool.into(), &all)
        }
        None => local.operator_at(binary.to_owned(), &args),
    };
    // The Deployment's environment: a developer's RUST_BACKTRACE would make every error value
    // that captures a backtrace (azure_core's do, for answers handled as normal) walk the stack
    // through the unwind tables, megabytes of the binary the operator never reads in a cluster.
    let mut operator = operator
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = operator.id().context("operator pid")?;
    let mut lines = BufReader::new(operator.stderr.take().context("stderr")?).lines();
    let (tx, mut logs) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(entry);
            }
        }
    });
    let mut address = String::new();
    let cold_start = loop {
        let entry =
            tokio::time::timeout(Duration::from_secs(30), logs.recv()).await?.context("operator exited")?;
        match entry["fields"]["message"].as_str() {
            Some("serving /metrics, /healthz and /readyz") => {
                address = entry["fields"]["address"].as_str().unwrap_or_default().to_owned();
            }
            Some("controller starting") => break spawned.elapsed(),
            _ => {}
        }
    };

    // Install: VeleroInstall created -> bucket and Velero objects in place, then -> Ready.
    let created = Instant::now();
    local.create_install().await?;
    wait_for("BucketReady", Duration::from_secs(30), async || local.condition_true("BucketReady").await)
        .await?;
    let bucket_ready = created.elapsed();
    local.play_cluster_controllers().await?;
    wait_for("Ready", Duration::from_secs(60), async || local.condition_true("Ready").await).await?;
    let ready = created.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Steady state: forced bucket checks on a compliant install; the first one's calls and
    // writes are counted.
    let before = scrape(&address).await?;
    let versions = resource_versions(&local).await?;
    force_bucket_check(&local).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = scrape(&address).await?;
    let ((r0, w0), (r1, w1)) = (cloud_calls(&before), cloud_calls(&after));
    let changed = resource_versions(&local)
        .await?
        .into_iter()
        .filter(|(k, v)| versions.get(k) != Some(v) && k != "VeleroInstall/cluster")
        .count();
    for _ in 1..RESYNCS {
        // The request must be newer than the last check, which has a resolution of a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        force_bucket_check(&local).await?;
    }

    // Velero writes its BSL status every minute: an hour of it must not cause reconciles. The BSL
    // CRD has no status subresource (Velero v1.17), so Velero patches the object itself and every
    // write also bumps metadata.generation.
    let before = reconciles(&scrape(&address).await?);
    let bsl: Api<DynamicObject> =
        Api::namespaced_with(local.client.clone(), NAMESPACE, &build::backup_storage_location());
    for minute in 0..60 {
        let status = json!({"status": {"phase": "Available", "lastSyncedTime": format!("2026-01-01T00:{minute:02}:00Z")}});
        bsl.patch("default", &PatchParams::default(), &Patch::Merge(&status)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let churn = reconciles(&scrape(&address).await?) - before;

    // Drift of an owned object: median of 5 reverts.
    let deployments: Api<Deployment> = Api::namespaced(local.client.clone(), NAMESPACE);
    let mut latencies = Vec::new();
    for i in 0..5 {
        let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": format!("drift:{i}")}]}}}});
        deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await?;
        let ((), took) = wait_for("revert", Duration::from_secs(10), async || {
            let image = deployments
                .get("velero")
                .await
                .ok()?
                .spec?
                .template
                .spec?
                .containers
                .first()?
                .image
                .clone()?;
            (image == DEFAULT_VELERO_IMAGE).then_some(())
        })
        .await?;
        latencies.push(took);
    }
    latencies.sort();
    let drift = latencies[latencies.len() / 2];

    tokio::time::sleep(Duration::from_secs(1)).await;
    let steady_kib = status_kib(pid, "VmRSS:").unwrap_or_default();
    let peak_kib = status_kib(pid, "VmHWM:").unwrap_or_default();
    let breakdown = breakdown(pid, binary).unwrap_or_default();
    stop(&mut operator).await?;
    Ok(Run {
        cold_start,
        bucket_ready,
        ready,
        check_reads: r1 - r0,
        check_writes: w1 - w0,
        changed,
        churn,
        drift,
        steady_kib,
        peak_kib,
        breakdown,
    })
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "OVER",
        None => "-",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let builds = builds(std::env::args_os().nth(1).map(PathBuf::from))?;
    let mut runs = Vec::new();
    for build in &builds {
        for &cloud in &build.clouds {
            let binary = match cloud {
                Cloud::Gcp => match &build.gcp_plane {
                    Some(binary) => binary,
                    None => {
                        eprintln!("bench: {} build: no gcp_plane_operator, GCP not measured", build.name);
                        continue;
                    }
                },
                _ => &build.binary,
            };
            eprintln!("bench: {} build on {}", build.name, cloud.environment());
            let run = measure(cloud, binary)
                .await
                .with_context(|| format!("{} build on {}", build.name, cloud.name()))?;
            runs.push((build, cloud, run));
        }
    }

    // SPEC 14, as always measured: the first run, the all-cloud build on AWS.
    let (all, first_cloud, spec) = runs.first().context("no run")?;
    let size = std::fs::metadata(&all.binary)?.len();
    let rows = [
        (
            "cold start to controller running",
            format!("{} ms", spec.cold_start.as_millis()),
            "<= 300 ms",
            Some(spec.cold_start <= Duration::from_millis(300)),
        ),
        (
            "VeleroInstall -> bucket + objects applied",
            format!("{} ms", spec.bucket_ready.as_millis()),
            "(part of the 2 s below)",
            None,
        ),
        (
            "VeleroInstall -> Ready=True (bench plays CCO/Job/kubelet)",
            format!("{} ms", spec.ready.as_millis()),
            "<= 2 s",
            Some(spec.ready <= Duration::from_secs(2)),
        ),
        (
            "cloud calls per bucket check (steady)",
            format!("{} reads, {} writes", spec.check_reads, spec.check_writes),
            "<= 5 reads, 0 writes",
            Some(spec.check_reads <= 5 && spec.check_writes == 0),
        ),
        (
            "Kubernetes writes per resync (steady)",
            format!("1 status write (lastSyncTimestamp) + {} objects", spec.changed),
            "<= 1 write",
            Some(spec.changed == 0),
        ),
        (
            "reconciles per 60 BSL status writes (an hour)",
            format!("{}", spec.churn),
            "<= 2",
            Some(spec.churn <= 2),
        ),
        (
            "owned object drift reverted (median of 5)",
            format!("{} ms", spec.drift.as_millis()),
            "<= 1 s",
            Some(spec.drift <= Duration::from_secs(1)),
        ),
        (
            "resident memory, steady state (after 10 resyncs)",
            format!("{} MiB", mib(spec.steady_kib)),
            "<= 16 MiB (goal 8)",
            Some(spec.steady_kib <= 16 * 1024),
        ),
        (
            "binary size (stripped)",
            format!("{:.1} MB", size as f64 / 1e6),
            "<= 20 MB",
            Some(size <= 20_000_000),
        ),
        ("image size", "not measured (no container engine here)".into(), "<= 25 MB", None),
    ];
    println!("\nSPEC 14 budgets (release build `{}`, {})\n", all.name, first_cloud.environment());
    println!("{:<58} {:<40} {:<22} result", "measure", "measured", "budget");
    for (what, measured, budget, ok) in &rows {
        println!("{what:<58} {measured:<40} {budget:<22} {}", verdict(*ok));
    }

    // Footprint per build and cloud. Targets: the all-cloud build <= 12 MiB steady, a
    // single-cloud build <= 10 MiB.
    println!("\nFootprint per build and cloud (MiB; binary in MB; RSS after {RESYNCS} resyncs)\n");
    println!(
        "{:<6} {:<6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5} {:>8} {:>7}  result",
        "build",
        "cloud",
        "binary",
        "steady",
        "VmHWM",
        "code",
        "rodata",
        "bindirt",
        "libs",
        "heap",
        "anon",
        "stack",
        "thrds",
        "cold",
        "Ready",
        "drift"
    );
    for (build, cloud, run) in &runs {
        let target = if build.name == "all" { 12 } else { 10 };
        let size = std::fs::metadata(&build.binary)?.len();
        let b = run.breakdown;
        println!(
            "{:<6} {:<6} {:>7.1} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>4}ms {:>6}ms {:>5}ms  {} (<= {target} MiB)",
            build.name,
            cloud.name(),
            size as f64 / 1e6,
            mib(run.steady_kib),
            mib(run.peak_kib),
            mib(b.binary_code),
            mib(b.binary_rodata),
            mib(b.binary_dirty),
            mib(b.libraries),
            mib(b.heap),
            mib(b.anonymous),
            mib(b.stack),
            b.threads,
            run.cold_start.as_millis(),
            run.ready.as_millis(),
            run.drift.as_millis(),
            verdict(Some(run.steady_kib <= target * 1024)),
        );
    }
    println!(
        "\ncode, rodata: clean pages of the operator binary's code and of its other mappings (read-only \
         data, unwind tables); bindirt: its written pages (relocations, .data); libs: \
         shared libraries; heap: brk heap; anon: other anonymous mappings (mmap allocations, other \
         threads' arenas and stacks). GCP runs use gcp_plane_operator (the operator with the GCS plane \
         linked in), whose binary is larger than the shipped one; the size column is the shipped binary's."
    );
    Ok(())
}
