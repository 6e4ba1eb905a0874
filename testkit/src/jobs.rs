//! The Job controller and kubelet for the Velero CRD Job, played by tests.
//!
//! The test API server runs no controllers: a Job never gets a pod and never finishes. Tests and
//! the demos play that part here, once, as Kubernetes does it: the Job is marked succeeded, and a
//! pod labelled with the Job's name and (when `owned`) controlled by the Job "prints" the CRD
//! YAML through the server's `mvo-test-apiserver/log` annotation, which `pods/log` serves.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// The annotation whose value the test API server serves as the pod's log.
pub const POD_LOG_ANNOTATION: &str = "mvo-test-apiserver/log";

/// CRDs as `velero install --crds-only --dry-run -o yaml` prints them, one per `plural.group`
/// name (a name without a dot is used as the plural of group `velero.io`).
pub fn crd_job_output(crd_names: &[&str]) -> String {
    crd_names
        .iter()
        .map(|name| {
            let (plural, group) = name.split_once('.').unwrap_or((name, "velero.io"));
            let kind = format!("W{plural}");
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {plural}}}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Creates the pod of `job` whose log is `log` and sets its `status` (e.g. `{"phase":
/// "Succeeded"}`, or a waiting container). `owned`: the pod carries the Job's controller
/// reference, as the Job controller sets it; otherwise only the Job's name label (an imposter).
///
/// Errors: the API server's, when `admin` may not write pods in the Job's namespace.
pub async fn crd_job_pod(
    admin: &Client,
    job: &Job,
    log: &str,
    owned: bool,
    status: Value,
) -> kube::Result<()> {
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let owner = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                        "uid": job.uid().unwrap_or_default(), "controller": true, "blockOwnerDeletion": true}]);
    let pod_name = format!("{name}-{}", if owned { "x7k2p" } else { "imposter" });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name,
                     "labels": {"batch.kubernetes.io/job-name": name, "job-name": name},
                     "ownerReferences": if owned { owner } else { json!([]) },
                     "annotations": {POD_LOG_ANNOTATION: log}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "velero-crds", "image": "velero"}]}
    });
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    pods.patch(&pod_name, &PatchParams::apply("kubelet").force(), &Patch::Apply(&pod)).await?;
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
    Ok(())
}

/// Marks `job` succeeded and creates its finished pod whose log is `log` (see [`crd_job_pod`]).
///
/// Errors: the API server's.
pub async fn complete_crd_job(admin: &Client, job: &Job, log: &str, owned: bool) -> kube::Result<()> {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &job.namespace().unwrap_or_default());
    let status = json!({"status": {"succeeded": 1, "completionTime": "2026-01-01T00:00:00Z"}});
    jobs.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    crd_job_pod(admin, job, log, owned, json!({"phase": "Succeeded"})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_names_each_crd_plural_dot_group() {
        let out = crd_job_output(&["widgets.velero.io", "evil.example.com"]);
        assert_eq!(out.matches("kind: CustomResourceDefinition").count(), 2);
        assert!(out.contains("name: widgets.velero.io\n") && out.contains("group: example.com\n"), "{out}");
        assert!(out.contains("---\n"));
    }
}
