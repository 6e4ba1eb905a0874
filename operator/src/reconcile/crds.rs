//! Velero CRDs: a lifecycle that heals itself. The CRDs come from the Velero image (a Job prints
//! them); what was applied is recorded, and every pass verifies it cheaply.
//!
//! Each pass reads the record (ConfigMap [`CRDS_RECORD`]) and the recorded CRDs: when the Job of
//! the current template was applied and every CRD is still present with the recorded spec hash,
//! nothing else happens (no Job). Otherwise the Job named by the hash of its whole template is
//! created (never patched: Job templates are immutable; Jobs of earlier templates are deleted),
//! its output is read from the pod it owns, and only CustomResourceDefinitions of group
//! `velero.io` are accepted. A failed Job is deleted and run again after a growing wait.
//!
//! CRDs whose spec another field manager owns (OLM/OADP, Helm, `kubectl apply`, with or without
//! labels; Apply or Update) belong to another installer and are left alone. On a CRD this
//! operator installed (in the record), only another manager's server-side apply counts as a
//! takeover; another manager's Update is an edit, reverted like any drift.
//!
//! Reads Jobs, their pods and logs, CRDs and the record; writes CRDs (server-side apply), the
//! record, and creates/deletes CRD Jobs. Events are the caller's.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ConfigMap, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tracing::info;

use super::{
    Error,
    apply::FIELD_MANAGER,
    build::{CRDS_JOB_COMPONENT, stable_hash},
    writer::Writer,
};

/// ConfigMap recording which CRD Job was applied and the spec hash of each CRD it applied.
pub const CRDS_RECORD: &str = "velero-crds";
/// The only API group accepted from the Job's output.
pub const VELERO_GROUP: &str = "velero.io";
/// Annotation on each applied CRD: the hash of its spec as applied (also kept in the record).
pub const SPEC_HASH: &str = "managed.openshift.io/spec-hash";
/// First wait before a failed Job runs again; doubles per failure up to [`RETRY_MAX`].
const RETRY_MIN_SECS: i64 = 30;
const RETRY_MAX_SECS: i64 = 1800;
/// Container waiting reasons that mean the Job cannot start on its own.
const STUCK_REASONS: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
];

/// Where the Velero CRDs stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrdsOutcome {
    /// Waiting for the Job; the message says for what.
    Pending(String),
    /// The Job failed or cannot run; it is retried after a growing wait.
    JobFailed {
        /// PascalCase condition reason.
        reason: &'static str,
        /// What failed, naming the container's reason (e.g. `ImagePullBackOff`).
        message: String,
    },
    /// The Job printed something other than `velero.io` CRDs; nothing was applied.
    Refused {
        /// What was refused.
        message: String,
        /// True the first time this Job's output is refused (one Warning event).
        first: bool,
    },
    /// The CRDs are present and as applied.
    Applied {
        /// CRD names managed by another installer, left alone.
        foreign: Vec<String>,
        /// True when `foreign` differs from what the previous pass recorded (one event).
        foreign_changed: bool,
    },
}

/// Why the Job's output could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the CRD Job printed no usable CustomResourceDefinitions: {0}")]
pub struct BadOutput(String);

/// Extracts the objects from `velero install --crds-only --dry-run -o yaml` output: YAML
/// documents, each an object or a `List` of them.
fn parse_objects(output: &str) -> Result<Vec<Value>, BadOutput> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(output).map_err(|e| BadOutput(e.to_string()))?;
    let mut objects = Vec::new();
    for doc in documents.into_iter().filter(|d| !d.is_null()) {
        match doc.get("kind").and_then(Value::as_str) {
            Some("List") => {
                objects.extend(doc.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
            }
            _ => objects.push(doc),
        }
    }
    if objects.is_empty() {
        return Err(BadOutput("no object in the output".into()));
    }
    Ok(objects)
}

/// What the Job's output holds.
#[derive(Debug)]
pub enum Output {
    /// Only CRDs of group `velero.io`.
    Crds(Vec<CustomResourceDefinition>),
    /// Objects that are not `velero.io` CRDs, described as `Kind/name (group)`.
    Refused(Vec<String>),
}

/// Parses the Job's output and accepts it only when every object is a `velero.io` CRD.
pub fn parse_crds(output: &str) -> Result<Output, BadOutput> {
    let mut crds = Vec::new();
    let mut refused = Vec::new();
    for object in parse_objects(output)? {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("<no kind>").to_owned();
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<no name>").to_owned();
        let group = object.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_owned();
        let is_crd = kind == "CustomResourceDefinition"
            && object.get("apiVersion").and_then(Value::as_str) == Some("apiextensions.k8s.io/v1");
        if !is_crd || group != VELERO_GROUP || name != format!("{}.{VELERO_GROUP}", plural(&object)) {
            refused.push(format!("{kind}/{name} (group {group:?})"));
            continue;
        }
        crds.push(serde_json::from_value(object).map_err(|e| BadOutput(e.to_string()))?);
    }
    Ok(if refused.is_empty() { Output::Crds(crds) } else { Output::Refused(refused) })
}

fn plural(object: &Value) -> &str {
    object.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default()
}

/// The field managers other than this operator that own fields of the CRD's spec: such a CRD
/// belongs to another installer. `applied_only` counts only server-side appliers (used for CRDs
/// this operator installed: an `Update` on them is an edit to revert, an apply is an installer
/// taking them over).
pub fn foreign_spec_managers(crd: &CustomResourceDefinition, applied_only: bool) -> Vec<String> {
    crd.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|m| !applied_only || m.operation.as_deref() == Some("Apply"))
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").is_some()))
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// The spec hash recorded for a CRD: of its spec as the API server holds it (defaults included),
/// so an edit by anyone changes it.
fn spec_hash(crd: &CustomResourceDefinition) -> String {
    format!("{:016x}", stable_hash(&serde_json::to_vec(&crd.spec).unwrap_or_default()))
}

/// What the operator recorded about the CRDs, in ConfigMap [`CRDS_RECORD`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    /// The Job whose output was applied.
    job: String,
    /// CRD name -> spec hash, for the CRDs applied.
    applied: BTreeMap<String, String>,
    /// CRDs left to another installer.
    foreign: Vec<String>,
    /// The Job whose output was refused (so the Warning is published once).
    refused: String,
    /// The Job being retried and how often it failed.
    failed_job: String,
    failures: u32,
}

impl Record {
    fn from_config_map(cm: Option<ConfigMap>) -> Record {
        let data = cm.and_then(|c| c.data).unwrap_or_default();
        let get = |k: &str| data.get(k).cloned().unwrap_or_default();
        Record {
            job: get("job"),
            applied: serde_json::from_str(&get("applied")).unwrap_or_default(),
            foreign: serde_json::from_str(&get("foreign")).unwrap_or_default(),
            refused: get("refused"),
            failed_job: get("failedJob"),
            failures: get("failures").parse().unwrap_or(0),
        }
    }

    fn data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("job".into(), self.job.clone()),
            ("applied".into(), json!(self.applied).to_string()),
            ("foreign".into(), json!(self.foreign).to_string()),
            ("refused".into(), self.refused.clone()),
            ("failedJob".into(), self.failed_job.clone()),
            ("failures".into(), self.failures.to_string()),
        ])
    }
}

/// The wait after `failures` failed runs: 30 s doubling to 30 min.
fn retry_after(failures: u32) -> i64 {
    RETRY_MIN_SECS.saturating_mul(1 << failures.min(16)).min(RETRY_MAX_SECS)
}

/// Runs the CRD lifecycle for the desired Job (see the module header).
pub struct Crds<'a> {
    /// Kubernetes client.
    pub client: &'a Client,
    /// The operator's namespace.
    pub namespace: &'a str,
    /// The desired Job, named by its template hash.
    pub job: &'a Job,
    /// Where the writes go.
    pub writer: &'a Writer,
}

fn read(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Read { what, source }
}

fn write(object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Apply { object, source }
}

impl Crds<'_> {
    fn job_name(&self) -> String {
        self.job.name_any()
    }

    /// One pass of the lifecycle.
    pub async fn ensure(&self) -> Result<CrdsOutcome, Error> {
        let configmaps: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
        let record = Record::from_config_map(
            configmaps.get_opt(CRDS_RECORD).await.map_err(read(format!("ConfigMap/{CRDS_RECORD}")))?,
        );
        let job_name = self.job_name();
        if record.job == job_name && self.verify(&record).await? {
            return Ok(CrdsOutcome::Applied { foreign: record.foreign.clone(), foreign_changed: false });
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        self.delete_stale_jobs(&jobs).await?;
        let Some(job) = jobs.get_opt(&job_name).await.map_err(read(format!("Job/{job_name}")))? else {
            self.create_job(&jobs).await?;
            return Ok(CrdsOutcome::Pending(format!("waiting for the Velero CRD Job {job_name}")));
        };
        let status = job.status.clone().unwrap_or_default();
        let pod = self.owned_pod(&job).await?;
        if status.succeeded.unwrap_or(0) >= 1 {
            let Some(pod) = pod else {
                // The Job's pod is gone (deleted, or the log is no longer kept): run it again.
                self.delete_job(&jobs).await?;
                return Ok(CrdsOutcome::Pending(format!("Job {job_name} lost its pod; running it again")));
            };
            let finished = status.completion_time.as_ref().map(|t| t.0);
            return self.apply_output(&configmaps, &jobs, record, &pod, finished).await;
        }
        let failed = status.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
        let stuck = pod.as_ref().and_then(stuck_reason);
        match (failed, stuck) {
            (Some(condition), _) => {
                let since = condition.last_transition_time.as_ref().map(|t| t.0);
                let why = pod
                    .as_ref()
                    .and_then(terminated_reason)
                    .or_else(|| condition.message.clone())
                    .unwrap_or_else(|| "failed".into());
                self.retry(
                    &configmaps,
                    &jobs,
                    record,
                    since,
                    "VeleroCRDJobFailed",
                    format!("Job {job_name} failed: {why}"),
                )
                .await
            }
            (None, Some(reason)) => Ok(CrdsOutcome::JobFailed {
                reason: "VeleroCRDJobStuck",
                message: format!("the pod of Job {job_name} cannot run: {reason}"),
            }),
            (None, None) => Ok(CrdsOutcome::Pending(format!("waiting for the Velero CRD Job {job_name}"))),
        }
    }

    /// True when every recorded CRD is present with its recorded spec hash and every foreign one
    /// is still there (a deleted foreign CRD is ours to install).
    async fn verify(&self, record: &Record) -> Result<bool, Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for (name, hash) in &record.applied {
            let live = api.get_opt(name).await.map_err(read(format!("CRD {name}")))?;
            if live.as_ref().map(spec_hash).as_ref() != Some(hash) {
                info!(crd = %name, "Velero CRD missing or changed; running the CRD Job again");
                return Ok(false);
            }
            // Another installer applied it (even unchanged): decided again, and reported.
            if live.is_some_and(|crd| !foreign_spec_managers(&crd, true).is_empty()) {
                return Ok(false);
            }
        }
        for name in &record.foreign {
            if api.get_opt(name).await.map_err(read(format!("CRD {name}")))?.is_none() {
                return Ok(false);
            }
        }
        Ok(!record.applied.is_empty() || !record.foreign.is_empty())
    }

    async fn create_job(&self, jobs: &Api<Job>) -> Result<(), Error> {
        let name = self.job_name();
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let describe = || Some(format!("create Job/{name} to print the Velero CRDs"));
        match self.writer.write(describe, || jobs.create(&params, self.job)).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another pass: same name, same template.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => Err(Error::Apply { object: format!("Job/{name}"), source }),
        }
    }

    async fn delete_job(&self, jobs: &Api<Job>) -> Result<(), Error> {
        let name = self.job_name();
        let describe = || Some(format!("delete Job/{name} to run it again"));
        match self
            .writer
            .write(describe, || async { jobs.delete(&name, &DeleteParams::background()).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::Apply { object: format!("Job/{name}"), source }),
        }
    }

    /// Jobs of earlier templates are replaced, never patched.
    async fn delete_stale_jobs(&self, jobs: &Api<Job>) -> Result<(), Error> {
        let selector = format!("component={CRDS_JOB_COMPONENT}");
        let current = self.job_name();
        let listed = jobs.list(&ListParams::default().labels(&selector)).await.map_err(read("CRD Jobs"))?;
        for stale in listed.items.iter().filter(|j| j.name_any() != current) {
            let name = stale.name_any();
            let describe = || Some(format!("delete Job/{name} (an earlier template)"));
            match self
                .writer
                .write(describe, || async { jobs.delete(&name, &DeleteParams::background()).await })
                .await
            {
                Ok(None) => {}
                Ok(Some(_)) => info!(job = %name, "deleted the CRD Job of an earlier template"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(Error::Apply { object: format!("Job/{name}"), source }),
            }
        }
        Ok(())
    }

    /// The pod the Job controls: found by the Job's name label, accepted only with an owner
    /// reference to this Job's UID (a pod merely carrying the label is not its output).
    async fn owned_pod(&self, job: &Job) -> Result<Option<Pod>, Error> {
        let Some(uid) = job.uid() else { return Ok(None) };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.namespace);
        let selector = format!("batch.kubernetes.io/job-name={}", job.name_any());
        let listed =
            pods.list(&ListParams::default().labels(&selector)).await.map_err(read("CRD Job pods"))?;
        let mut owned: Vec<Pod> = listed
            .items
            .into_iter()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true)))
            .collect();
        // Prefer the pod that succeeded, then the newest.
        owned.sort_by_key(|p| {
            let succeeded = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
            (succeeded, p.creation_timestamp().map(|t| t.0))
        });
        Ok(owned.pop())
    }

    async fn apply_output(
        &self,
        configmaps: &Api<ConfigMap>,
        jobs: &Api<Job>,
        mut record: Record,
        pod: &Pod,
        finished: Option<Timestamp>,
    ) -> Result<CrdsOutcome, Error> {
        let job_name = self.job_name();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.namespace);
        let output = pods.logs(&pod.name_any(), &LogParams::default()).await.map_err(read("CRD Job log"))?;
        let crds = match parse_crds(&output) {
            Ok(Output::Crds(crds)) => crds,
            Ok(Output::Refused(objects)) => {
                let first = record.refused != job_name;
                record.refused = job_name.clone();
                self.save(configmaps, &record).await?;
                return Ok(CrdsOutcome::Refused {
                    message: format!(
                        "Job {job_name} printed objects that are not {VELERO_GROUP} CustomResourceDefinitions; nothing was applied: {}",
                        objects.join(", ")
                    ),
                    first,
                });
            }
            Err(err) => {
                let message = format!("Job {job_name}: {err}");
                return self
                    .retry(configmaps, jobs, record, finished, "VeleroCRDOutputUnusable", message)
                    .await;
            }
        };
        let ours: BTreeSet<String> = record.applied.keys().cloned().collect();
        let (applied, foreign) = apply_crds(self.client, crds, &ours, self.writer).await?;
        let foreign_changed = foreign != record.foreign;
        record = Record { job: job_name, applied, foreign: foreign.clone(), ..Record::default() };
        self.save(configmaps, &record).await?;
        Ok(CrdsOutcome::Applied { foreign, foreign_changed })
    }

    /// A failed run: report it, and once the wait since `since` is over, delete the Job so the
    /// next pass runs it again.
    async fn retry(
        &self,
        configmaps: &Api<ConfigMap>,
        jobs: &Api<Job>,
        mut record: Record,
        since: Option<Timestamp>,
        reason: &'static str,
        message: String,
    ) -> Result<CrdsOutcome, Error> {
        let job_name = self.job_name();
        let failures = if record.failed_job == job_name { record.failures } else { 0 };
        let wait = retry_after(failures);
        let elapsed = since.map_or(i64::MAX, |t| Timestamp::now().as_second() - t.as_second());
        if elapsed >= wait {
            record.failed_job = job_name;
            record.failures = failures.saturating_add(1);
            self.save(configmaps, &record).await?;
            self.delete_job(jobs).await?;
            return Ok(CrdsOutcome::JobFailed { reason, message: format!("{message}; running it again") });
        }
        Ok(CrdsOutcome::JobFailed {
            reason,
            message: format!("{message}; running it again in {}s", wait - elapsed),
        })
    }

    async fn save(&self, configmaps: &Api<ConfigMap>, record: &Record) -> Result<(), Error> {
        let owner = self.job.owner_references().first().cloned();
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CRDS_RECORD, "namespace": self.namespace, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
            "data": record.data(),
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // The operator's own bookkeeping: not a change a person reviews in a plan.
        self.writer
            .write(|| None, || async { configmaps.patch(CRDS_RECORD, &params, &Patch::Apply(&cm)).await })
            .await
            .map_err(write(format!("ConfigMap/{CRDS_RECORD}")))?;
        Ok(())
    }
}

/// The waiting reason of a container that cannot start (e.g. `ImagePullBackOff: <message>`).
fn stuck_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK_REASONS.contains(&reason).then(|| match &waiting.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason.to_owned(),
        })
    })
}

/// Why the container ended, or why it never started.
fn terminated_reason(pod: &Pod) -> Option<String> {
    stuck_reason(pod).or_else(|| {
        let status = pod.status.as_ref()?;
        status.container_statuses.iter().flatten().find_map(|c| {
            let terminated = c.state.as_ref()?.terminated.as_ref()?;
            Some(format!(
                "{} (exit code {})",
                terminated.reason.clone().unwrap_or_else(|| "Error".into()),
                terminated.exit_code
            ))
        })
    })
}

/// Applies the CRDs that are absent or only ours; returns the spec hashes of those applied and
/// the names of those left to another installer. `ours` are the CRDs this operator installed
/// before (from the record): edits to them are drift and reverted.
async fn apply_crds(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
    ours: &BTreeSet<String>,
    writer: &Writer,
) -> Result<(BTreeMap<String, String>, Vec<String>), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = BTreeMap::new();
    let mut foreign = Vec::new();
    for mut crd in crds {
        let name = crd.name_any();
        let existing = api.get_opt(&name).await.map_err(read(format!("CRD {name}")))?;
        if let Some(existing) = existing {
            let managers = foreign_spec_managers(&existing, ours.contains(&name));
            if !managers.is_empty() {
                info!(crd = %name, managers = ?managers, "CRD managed by another installer; left alone");
                foreign.push(name);
                continue;
            }
        }
        crd.metadata = kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into())])),
            annotations: Some(BTreeMap::from([(SPEC_HASH.into(), spec_hash(&crd))])),
            ..Default::default()
        };
        crd.status = None;
        let describe =
            || Some(format!("apply CustomResourceDefinition/{name} (printed by the Velero CRD Job)"));
        let live = writer
            .write(describe, || async { api.patch(&name, &params, &Patch::Apply(&crd)).await })
            .await
            .map_err(write(format!("CustomResourceDefinition/{name}")))?;
        applied.insert(name, spec_hash(live.as_ref().unwrap_or(&crd)));
    }
    info!(applied = ?applied.keys().collect::<Vec<_>>(), foreign = ?foreign, "Velero CRDs applied");
    Ok((applied, foreign))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    use super::*;

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: backups.velero.io\nspec:\n  group: velero.io\n  names: {kind: Backup, plural: backups}\n  scope: Namespaced\n  versions: []\n";

    fn names(output: &str) -> Vec<String> {
        match parse_crds(output).expect("parses") {
            Output::Crds(crds) => crds.iter().map(|c| c.name_any()).collect(),
            Output::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    #[test]
    fn parses_documents_and_lists() {
        let two = format!("{CRD}---\n{}", CRD.replace("backups", "restores").replace("Backup", "Restore"));
        assert_eq!(names(&two), ["backups.velero.io", "restores.velero.io"]);
        let list = format!("apiVersion: v1\nkind: List\nitems:\n- {}", CRD.trim_end().replace('\n', "\n  "));
        assert_eq!(names(&list).len(), 1);
    }

    #[test]
    fn empty_or_garbage_output_is_unusable() {
        assert!(parse_crds("").is_err());
        assert!(parse_crds("an error happened: [").is_err());
    }

    #[test]
    fn anything_but_velero_crds_refuses_the_whole_output() {
        let other_group = CRD.replace("velero.io", "example.com");
        let mixed = format!("{CRD}---\n{other_group}");
        assert!(
            matches!(parse_crds(&mixed), Ok(Output::Refused(r)) if r.len() == 1 && r[0].contains("example.com"))
        );
        let configmap = format!("{CRD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
        assert!(matches!(parse_crds(&configmap), Ok(Output::Refused(_))));
        let misnamed = CRD.replace("name: backups.velero.io", "name: backups.evil.io");
        assert!(matches!(parse_crds(&misnamed), Ok(Output::Refused(_))), "name must be plural.velero.io");
    }

    fn crd_managed_by(entries: &[(&str, &str, Value)]) -> CustomResourceDefinition {
        let mut crd: CustomResourceDefinition = serde_saphyr::from_str(CRD).expect("crd");
        crd.metadata.managed_fields = Some(
            entries
                .iter()
                .map(|(manager, subresource, fields)| ManagedFieldsEntry {
                    manager: Some((*manager).into()),
                    operation: Some("Update".into()),
                    subresource: (!subresource.is_empty()).then(|| (*subresource).into()),
                    fields_v1: Some(FieldsV1(fields.clone())),
                    ..Default::default()
                })
                .collect(),
        );
        crd
    }

    #[test]
    fn another_manager_of_spec_fields_makes_a_crd_foreign() {
        let spec = json!({"f:spec": {"f:group": {}}});
        let ours = crd_managed_by(&[(FIELD_MANAGER, "", spec.clone())]);
        assert!(foreign_spec_managers(&ours, false).is_empty());
        let status_only = crd_managed_by(&[
            (FIELD_MANAGER, "", spec.clone()),
            ("kube-apiserver", "status", json!({"f:status": {}})),
        ]);
        assert!(foreign_spec_managers(&status_only, false).is_empty(), "status writers do not own the CRD");
        let labels_only = crd_managed_by(&[("kubectl-label", "", json!({"f:metadata": {"f:labels": {}}}))]);
        assert!(foreign_spec_managers(&labels_only, false).is_empty());
        let theirs = crd_managed_by(&[(FIELD_MANAGER, "", spec.clone()), ("helm", "", spec)]);
        assert_eq!(foreign_spec_managers(&theirs, false), ["helm"], "an Update by another manager");
        assert!(foreign_spec_managers(&theirs, true).is_empty(), "on our CRD an Update is an edit to revert");
    }

    #[test]
    fn retries_wait_longer_each_time() {
        let waits: Vec<i64> = (0..8).map(retry_after).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800, 1800]);
    }
}
