//! The VeleroInstall status: conditions merged per type, and the one status write of a pass,
//! which sends only the fields the pass changed (and in plan mode describes them).

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    Context, Error,
    conditions::{self, PLATFORM_SUPPORTED, Report},
};
use crate::crd::{VeleroInstall, VeleroInstallStatus};

pub(super) fn merge(
    vi: &VeleroInstall,
    reports: &[Report],
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let existing = vi.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions::merge(existing, reports, vi.metadata.generation, Timestamp::now())
}

pub(super) fn platform_supported(ctx: &Context) -> Report {
    Report::ok(
        PLATFORM_SUPPORTED,
        "Supported",
        format!("{} in {}", ctx.platform.name(), ctx.platform.region()),
    )
}

/// Writes the status produced by `change` applied to the current status, unless it is equal.
pub(super) async fn write_status(
    ctx: &Context,
    vi: &VeleroInstall,
    change: impl FnOnce(&mut VeleroInstallStatus),
) -> Result<(), Error> {
    let current = vi.status.clone().unwrap_or_default();
    let mut next = current.clone();
    change(&mut next);
    if next == current {
        return Ok(());
    }
    // A plan always checks the bucket, so a new lastSyncTimestamp alone is not a change to show.
    let without_sync = |status: &VeleroInstallStatus| {
        let mut status = status.clone();
        if let Some(bucket) = status.storage_bucket.as_mut() {
            bucket.last_sync_timestamp = None;
        }
        status
    };
    let describe = || {
        (without_sync(&next) != without_sync(&current)).then(|| {
            format!(
                "update the status of VeleroInstall/{}: {}",
                vi.name_any(),
                describe_status_change(&current, &next)
            )
        })
    };
    let api: Api<VeleroInstall> = Api::namespaced(ctx.client.clone(), &vi.namespace().unwrap_or_default());
    let patch = json!({"status": status_patch(&current, &next)});
    ctx.writer
        .write(describe, || async {
            api.patch_status(&vi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
        })
        .await
        .map_err(|source| Error::UpdateStatus { source })?;
    Ok(())
}

/// The status fields `next` changes relative to `current`, and only those. A field this pass did
/// not change is not sent, so the snapshot the pass started from never overwrites what an earlier
/// step of the same pass (the bucket name persisted before creation) or another writer recorded.
pub(super) fn status_patch(current: &VeleroInstallStatus, next: &VeleroInstallStatus) -> serde_json::Value {
    let as_map = |status: &VeleroInstallStatus| match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(current), as_map(next));
    let mut patch = serde_json::Map::new();
    for (field, value) in &after {
        if before.get(field) != Some(value) {
            patch.insert(field.clone(), value.clone());
        }
    }
    for field in before.keys().filter(|f| !after.contains_key(*f)) {
        patch.insert(field.clone(), serde_json::Value::Null);
    }
    serde_json::Value::Object(patch)
}

/// The fields and conditions that differ between two statuses, for plan output.
pub(super) fn describe_status_change(current: &VeleroInstallStatus, next: &VeleroInstallStatus) -> String {
    let mut changes = Vec::new();
    if current.storage_bucket.as_ref().map(|b| (&b.name, b.provisioned))
        != next.storage_bucket.as_ref().map(|b| (&b.name, b.provisioned))
    {
        changes.push("storageBucket".to_owned());
    }
    if (current.observed_generation, &current.platform, &current.region)
        != (next.observed_generation, &next.platform, &next.region)
    {
        changes.push("observedGeneration/platform/region".to_owned());
    }
    for condition in &next.conditions {
        let before = current.conditions.iter().find(|c| c.type_ == condition.type_);
        let same = before.is_some_and(|b| {
            (&b.status, &b.reason, &b.message) == (&condition.status, &condition.reason, &condition.message)
        });
        if !same {
            changes.push(format!("{}={} ({})", condition.type_, condition.status, condition.reason));
        }
    }
    if changes.is_empty() { "timestamps".to_owned() } else { changes.join(", ") }
}
