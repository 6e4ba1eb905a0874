//! `make bench`: measures the SPEC 14 budgets in one run against the local environment and prints
//! each figure next to its budget. Build with `--release` (the Makefile does) for meaningful
//! memory and latency figures. The container image size needs a container engine and is not
//! measured here.

mod local;

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use local::{Local, NAMESPACE, stop, wait_for};
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

/// One line of the result table.
struct Row {
    what: &'static str,
    measured: String,
    budget: &'static str,
    ok: Option<bool>,
}

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

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let local = Local::start().await?;
    let mut rows = Vec::new();

    // Cold start: process start to the controller running (startup checks done).
    let spawned = Instant::now();
    let mut operator = local
        .operator(&[
            "run",
            "--leader-election",
            "false",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
        ])?
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
    rows.push(Row {
        what: "cold start to controller running",
        measured: format!("{} ms", cold_start.as_millis()),
        budget: "<= 300 ms",
        ok: Some(cold_start <= Duration::from_millis(300)),
    });

    // Install: VeleroInstall created -> bucket and Velero objects in place, then -> Ready.
    let created = Instant::now();
    local.create_install().await?;
    wait_for("BucketReady", Duration::from_secs(30), async || local.condition_true("BucketReady").await)
        .await?;
    let bucket_ready = created.elapsed();
    rows.push(Row {
        what: "VeleroInstall -> bucket + objects applied",
        measured: format!("{} ms", bucket_ready.as_millis()),
        budget: "(part of the 2 s below)",
        ok: None,
    });
    local.play_cluster_controllers().await?;
    wait_for("Ready", Duration::from_secs(60), async || local.condition_true("Ready").await).await?;
    let ready = created.elapsed();
    rows.push(Row {
        what: "VeleroInstall -> Ready=True (bench plays CCO/Job/kubelet)",
        measured: format!("{} ms", ready.as_millis()),
        budget: "<= 2 s",
        ok: Some(ready <= Duration::from_secs(2)),
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Steady state: a forced bucket check on a compliant install.
    let before = scrape(&address).await?;
    let versions = resource_versions(&local).await?;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = scrape(&address).await?;
    let ((r0, w0), (r1, w1)) = (cloud_calls(&before), cloud_calls(&after));
    let changed: Vec<String> = resource_versions(&local)
        .await?
        .into_iter()
        .filter(|(k, v)| versions.get(k) != Some(v) && k != "VeleroInstall/cluster")
        .map(|(k, _)| k)
        .collect();
    rows.push(Row {
        what: "cloud calls per bucket check (steady)",
        measured: format!("{} reads, {} writes", r1 - r0, w1 - w0),
        budget: "<= 5 reads, 0 writes",
        ok: Some(r1 - r0 <= 5 && w1 == w0),
    });
    rows.push(Row {
        what: "Kubernetes writes per resync (steady)",
        measured: format!("1 status write (lastSyncTimestamp) + {} objects", changed.len()),
        budget: "<= 1 write",
        ok: Some(changed.is_empty()),
    });

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
    rows.push(Row {
        what: "reconciles per 60 BSL status writes (an hour)",
        measured: format!("{churn}"),
        budget: "<= 2",
        ok: Some(churn <= 2),
    });

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
    let median = latencies[latencies.len() / 2];
    rows.push(Row {
        what: "owned object drift reverted (median of 5)",
        measured: format!("{} ms", median.as_millis()),
        budget: "<= 1 s",
        ok: Some(median <= Duration::from_secs(1)),
    });

    let rss = rss_kib(pid).unwrap_or_default();
    rows.push(Row {
        what: "resident memory, steady state",
        measured: format!("{:.1} MiB", rss as f64 / 1024.0),
        budget: "<= 16 MiB (goal 8)",
        ok: Some(rss <= 16 * 1024),
    });
    rows.push(Row {
        what: "image size",
        measured: "not measured (no container engine here)".into(),
        budget: "<= 25 MB",
        ok: None,
    });
    stop(&mut operator).await?;

    let profile =
        if cfg!(debug_assertions) { "debug build: figures are pessimistic" } else { "release build" };
    println!("\nSPEC 14 budgets ({profile})\n");
    println!("{:<58} {:<40} {:<22} result", "measure", "measured", "budget");
    for row in &rows {
        let result = match row.ok {
            Some(true) => "ok",
            Some(false) => "OVER",
            None => "-",
        };
        println!("{:<58} {:<40} {:<22} {result}", row.what, row.measured, row.budget);
    }
    Ok(())
}
