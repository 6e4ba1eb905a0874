//! Velero CRDs: reads what the CRD Job printed (the Velero image's own CRDs) and applies them,
//! leaving alone CRDs another installer (OLM/OADP, Helm) manages.
//!
//! Reads the Job, its pod and the pod's log; writes CRDs (server-side apply) and one annotation
//! on the Job recording that its CRDs were applied, so later passes cost one Job read.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, LogParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tracing::info;

use super::{Error, apply::FIELD_MANAGER, plan::Plan};

/// Annotation on the CRD Job once its CRDs are applied.
pub const CRDS_APPLIED: &str = "managed.openshift.io/crds-applied";
/// Label the operator puts on CRDs it manages.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Where the Velero CRDs stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdsOutcome {
    /// The Job has not finished yet.
    Pending,
    /// The Job failed; the message says why.
    JobFailed(String),
    /// The CRDs are applied; `foreign` lists those left to another installer.
    Applied {
        /// CRD names managed by another installer, left alone.
        foreign: Vec<String>,
    },
}

/// Why the Job's output could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the CRD Job printed no usable CustomResourceDefinitions: {0}")]
pub struct BadOutput(String);

/// Extracts the CRDs from `velero install --crds-only --dry-run -o yaml` output: YAML documents,
/// each a CRD or a `List` of them.
pub fn parse_crds(output: &str) -> Result<Vec<CustomResourceDefinition>, BadOutput> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(output).map_err(|e| BadOutput(e.to_string()))?;
    let mut crds = Vec::new();
    for doc in documents {
        let items = match doc.get("kind").and_then(Value::as_str) {
            Some("List") => doc.get("items").and_then(Value::as_array).cloned().unwrap_or_default(),
            _ => vec![doc],
        };
        for item in items.into_iter().filter(|i| i["kind"] == "CustomResourceDefinition") {
            crds.push(serde_json::from_value(item).map_err(|e| BadOutput(e.to_string()))?);
        }
    }
    if crds.is_empty() {
        return Err(BadOutput("no CustomResourceDefinition in the output".into()));
    }
    Ok(crds)
}

/// True when `labels` show that an installer other than this operator manages the CRD.
pub fn managed_by_another_installer(labels: &BTreeMap<String, String>) -> bool {
    labels.keys().any(|k| k.starts_with("operators.coreos.com/"))
        || labels.get(MANAGED_BY).is_some_and(|v| v != FIELD_MANAGER)
}

/// Applies the CRDs printed by Job `job_name` once it has succeeded.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    job_name: &str,
    plan: Option<&Plan>,
) -> Result<CrdsOutcome, Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let read = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Read { what, source }
    };
    let Some(job) = jobs.get_opt(job_name).await.map_err(read(&format!("Job/{job_name}")))? else {
        return Ok(CrdsOutcome::Pending);
    };
    if let Some(applied) = job.annotations().get(CRDS_APPLIED) {
        let foreign =
            applied.split(',').filter(|s| !s.is_empty() && *s != "true").map(str::to_owned).collect();
        return Ok(CrdsOutcome::Applied { foreign });
    }
    let status = job.status.clone().unwrap_or_default();
    if status.succeeded.unwrap_or(0) < 1 {
        let failed = status.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
        return Ok(match failed {
            Some(c) => {
                CrdsOutcome::JobFailed(c.message.clone().unwrap_or_else(|| "the CRD Job failed".into()))
            }
            None => CrdsOutcome::Pending,
        });
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job_name}");
    let pod_list = pods.list(&ListParams::default().labels(&selector)).await.map_err(read("CRD Job pods"))?;
    let Some(pod) = pod_list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
    else {
        return Ok(CrdsOutcome::JobFailed(format!(
            "Job {job_name} succeeded but its pod is gone; delete the Job to rerun it"
        )));
    };
    let output = pods.logs(&pod.name_any(), &LogParams::default()).await.map_err(read("CRD Job log"))?;
    let crds = match parse_crds(&output) {
        Ok(crds) => crds,
        Err(err) => return Ok(CrdsOutcome::JobFailed(err.to_string())),
    };
    if let Some(plan) = plan {
        let names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
        plan.record(format!(
            "kubernetes: apply the Velero CRDs printed by Job/{job_name}: {}",
            names.join(", ")
        ));
        return Ok(CrdsOutcome::Applied { foreign: Vec::new() });
    }
    let foreign = apply_crds(client, crds).await?;
    let marker = if foreign.is_empty() { "true".to_owned() } else { foreign.join(",") };
    let annotate = json!({"metadata": {"annotations": {CRDS_APPLIED: marker}}});
    jobs.patch(job_name, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .map_err(|source| Error::Apply { object: format!("Job/{job_name}"), source })?;
    Ok(CrdsOutcome::Applied { foreign })
}

async fn apply_crds(client: &Client, crds: Vec<CustomResourceDefinition>) -> Result<Vec<String>, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut foreign = Vec::new();
    for mut crd in crds {
        let name = crd.name_any();
        let existing =
            api.get_opt(&name).await.map_err(|source| Error::Read { what: format!("CRD {name}"), source })?;
        if existing.is_some_and(|e| managed_by_another_installer(e.labels())) {
            foreign.push(name);
            continue;
        }
        crd.labels_mut().insert(MANAGED_BY.into(), FIELD_MANAGER.into());
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.metadata.creation_timestamp = None;
        crd.status = None;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| Error::Apply { object: format!("CustomResourceDefinition/{name}"), source })?;
    }
    info!(foreign = ?foreign, "Velero CRDs applied");
    Ok(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: backups.velero.io\nspec:\n  group: velero.io\n  names: {kind: Backup, plural: backups}\n  scope: Namespaced\n  versions: []\n";

    #[test]
    fn parses_documents_and_lists() {
        let two = format!("{CRD}---\n{}", CRD.replace("backups", "restores").replace("Backup", "Restore"));
        let names: Vec<String> = parse_crds(&two).expect("crds").iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["backups.velero.io", "restores.velero.io"]);
        let list = format!("apiVersion: v1\nkind: List\nitems:\n- {}", CRD.trim_end().replace('\n', "\n  "));
        assert_eq!(parse_crds(&list).expect("list").len(), 1);
    }

    #[test]
    fn empty_or_garbage_output_is_refused() {
        assert!(parse_crds("").is_err());
        assert!(parse_crds("an error happened: [").is_err());
        assert!(parse_crds("apiVersion: v1\nkind: ConfigMap\n").is_err());
    }

    #[test]
    fn olm_and_helm_crds_belong_to_them() {
        let labels = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(managed_by_another_installer(&labels(
            "operators.coreos.com/oadp-operator.openshift-adp",
            ""
        )));
        assert!(managed_by_another_installer(&labels(MANAGED_BY, "Helm")));
        assert!(!managed_by_another_installer(&labels(MANAGED_BY, FIELD_MANAGER)));
        assert!(!managed_by_another_installer(&BTreeMap::new()), "MVO's unlabelled CRDs are taken over");
    }
}
