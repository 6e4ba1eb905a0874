//! `make demo-takeover`: the operator taking over a cluster that ran the Go MVO.
//!
//! Starts the local environment of `make demo` (real API server, moto), writes the state MVO
//! leaves (`mvo_testkit::mvo`: its Velero objects written by plain create/update, its running pod
//! holding the leader-for-life lock, its bucket in S3), starts `managed-velero-operator`, shows it
//! waiting while MVO's pod runs, removes that pod as a rolling replacement does, and shows the
//! result: same objects (same UIDs), one controller owner reference each, MVO's leftover fields
//! gone, the Deployment written once, and the image change reported by an event.

// Shared with `make demo` and `make bench`; this demo does not create the VeleroInstall itself.
#[allow(dead_code)]
mod local;

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use local::{INFRA, Local, NAMESPACE, REGION, step, stop, wait_for};
use mvo_core::Owner;
use mvo_operator::controller;
use mvo_testkit::mvo::{self, MvoCloud};
use serde_json::json;

const MVO_BUCKET: &str = "managed-velero-backups-7c1e9a40-3b2d-4f6a-9e18-5d0c2b7a4f93";

/// Creates MVO's bucket in moto with the owner tags MVO writes (plain S3 REST calls: moto does not
/// check signatures).
async fn create_mvo_bucket(endpoint: &str) -> anyhow::Result<()> {
    let url = format!("{endpoint}/{MVO_BUCKET}");
    let location = format!(
        "<CreateBucketConfiguration><LocationConstraint>{REGION}</LocationConstraint></CreateBucketConfiguration>"
    );
    let tags: String = Owner::new(INFRA)
        .tags()
        .iter()
        .map(|(k, v)| format!("<Tag><Key>{k}</Key><Value>{v}</Value></Tag>"))
        .collect();
    let tagging = format!("<Tagging><TagSet>{tags}</TagSet></Tagging>");
    for (url, body) in [(url.clone(), location), (format!("{url}?tagging"), tagging)] {
        // PutBucketTagging requires Content-MD5, and an XML content type keeps moto from reading
        // the body as a form; curl and openssl are what the testenv scripts use too.
        let script = r#"curl -sS -f -o /dev/null -X PUT -H "Content-Type: application/xml" -H "Content-MD5: $(printf %s "$1" | openssl md5 -binary | base64)" --data-binary "$1" "$2""#;
        let output =
            tokio::process::Command::new("sh").args(["-c", script, "put", &body, &url]).output().await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::ensure!(output.status.success(), "PUT {url} failed: {stderr}");
    }
    Ok(())
}

/// One line per Velero object: kind/name, uid, controller owner, field managers.
async fn print_objects(local: &Local) -> anyhow::Result<()> {
    for kind in controller::owned_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(local.client.clone(), NAMESPACE, &kind);
        for o in api.list(&Default::default()).await?.items {
            if o.owner_references().is_empty() {
                continue;
            }
            let controllers: Vec<String> = o
                .owner_references()
                .iter()
                .filter(|r| r.controller == Some(true))
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect();
            let managers: Vec<String> = o
                .managed_fields()
                .iter()
                .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
                .map(|m| {
                    format!(
                        "{}({})",
                        m.manager.as_deref().unwrap_or("?"),
                        m.operation.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            let name = format!("{}/{}", kind.kind, o.name_any());
            let uid = o.uid().unwrap_or_default();
            println!(
                "   {name:<44} uid {}..  controller {:<28} managers {}",
                &uid[..8],
                controllers.join("+"),
                managers.join(", ")
            );
        }
    }
    Ok(())
}

async fn print_deployment(deployments: &Api<Deployment>) -> anyhow::Result<()> {
    let d = deployments.get("velero").await?;
    let pod = d.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    println!("   generation         {}", d.metadata.generation.unwrap_or_default());
    for c in pod.init_containers.iter().flatten() {
        println!("   init container     {} ({})", c.name, c.image.as_deref().unwrap_or_default());
    }
    for c in &pod.containers {
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        println!("   container          {} ({})", c.name, c.image.as_deref().unwrap_or_default());
        println!("   env                {}", env.join(" "));
    }
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    println!("   volumes            {}", volumes.join(" "));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    step("Starting a local Kubernetes API server and an S3 server (moto), as `make demo` does");
    let local = Local::start().await?;
    println!("   API server {}   S3 {}", local.kube.server(), local.s3.endpoint());

    step("Writing the state the Go MVO leaves (mvo_testkit::mvo): its bucket, objects, running pod and lock");
    create_mvo_bucket(local.s3.endpoint()).await?;
    let state =
        mvo::install(&local.client, NAMESPACE, &MvoCloud::Aws { region: REGION.into() }, MVO_BUCKET).await?;
    let deployments: Api<Deployment> = Api::namespaced(local.client.clone(), NAMESPACE);
    let available = json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("velero", &PatchParams::default(), &Patch::Merge(&available)).await?;
    println!("   bucket {MVO_BUCKET} (in status.storageBucket)");
    println!("   MVO pod {} owns ConfigMap/{}", state.operator_pod, mvo::MVO_LOCK);
    print_objects(&local).await?;
    print_deployment(&deployments).await?;
    let generation_before = deployments.get("velero").await?.metadata.generation.unwrap_or_default();

    step("Starting managed-velero-operator while MVO's pod still runs (a rolling replacement)");
    let log = local.work.join("operator.log");
    let mut operator = local
        .operator(&[
            "run",
            "--leader-election",
            "false",
            "--log-format",
            "text",
            "--metrics-addr",
            "127.0.0.1:0",
        ])?
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("waiting for MVO's lock", Duration::from_secs(30), async || {
        read_log().contains("waiting: the Go MVO holds its leader-for-life lock").then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched =
        deployments.get("velero").await?.metadata.generation.unwrap_or_default() == generation_before;
    println!("   the operator logs that it waits; 3 s later MVO's Deployment is untouched: {untouched}");

    step("MVO's pod goes away (the rolling replacement finishes)");
    mvo::stop_operator_pod(&local.client, &state).await?;
    let ((), took) = wait_for("controller starting", Duration::from_secs(30), async || {
        read_log().contains("controller starting").then_some(())
    })
    .await?;
    println!("   the operator starts reconciling {} ms later", took.as_millis());

    step("Playing the cluster's controllers (credential operator, Job controller, kubelet)");
    local.play_cluster_controllers().await?;
    let ((), took) =
        wait_for("Ready", Duration::from_secs(60), async || local.condition_true("Ready").await).await?;
    println!("   Ready=True after {} ms", took.as_millis());

    step("After the takeover: same UIDs, one controller (the VeleroInstall), one field manager");
    print_objects(&local).await?;
    print_deployment(&deployments).await?;
    let generation_after = deployments.get("velero").await?.metadata.generation.unwrap_or_default();
    println!("   Deployment spec writes during the takeover: {}", generation_after - generation_before);
    let events: Api<Event> = Api::namespaced(local.client.clone(), NAMESPACE);
    for e in events.list(&Default::default()).await?.items {
        let reason = e.reason.unwrap_or_default();
        if matches!(reason.as_str(), "VeleroImageChanged" | "VeleroObjectsTakenOver") {
            println!("   event {reason}: {}", e.message.unwrap_or_default());
        }
    }
    let buckets = local.s3.endpoint().to_owned();
    let listing = tokio::process::Command::new("curl").args(["-sS", &buckets]).output().await?;
    let count = String::from_utf8_lossy(&listing.stdout).matches("<Name>").count();
    println!("   buckets in S3: {count} (MVO's, adopted)");

    step("Stopping");
    let status = stop(&mut operator).await?;
    println!("   operator exited with {status}; API server, etcd and moto stopped");
    Ok(())
}
