//! Apply: makes the Velero objects in Kubernetes match what `build` produced, reading before
//! writing so a compliant object costs one GET and no write.
//!
//! Writes with server-side apply under one field manager, forced, so edits by others to fields
//! we own are reverted. Fields we do not set (server defaults, other managers' fields) are left
//! alone: an object is compliant when everything we want is present in it. An object the Go MVO
//! wrote, or one with a foreign controller reference, is first handed over to our manager
//! ([`super::takeover`]) so the apply removes what we do not declare.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::Value;
use tracing::info;

use super::{Error, build::DesiredObject, takeover, writer::Writer};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "managed-velero-operator";

/// What applying one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The live object already had every desired field.
    Unchanged,
    /// The object did not exist and was created.
    Created,
    /// The object existed with drifted fields, which were restored.
    Corrected,
    /// The object was written by another operator (the Go MVO) or had a foreign controller
    /// reference; ownership was handed over and it was applied.
    TakenOver,
}

/// True when every field of `desired` is present in `live` with the same value.
/// Objects may carry extra keys (server defaults); arrays must match element by element.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(k, v)| live.get(k).is_some_and(|l| contains(l, v)))
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (live, desired) => live == desired,
    }
}

/// What one apply did, and the images a workload rolled from and to when they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What was done.
    pub applied: Applied,
    /// `(before, after)` images of the pod template, when an existing workload's images changed.
    pub images: Option<(Vec<String>, Vec<String>)>,
}

impl From<Applied> for Outcome {
    fn from(applied: Applied) -> Self {
        Outcome { applied, images: None }
    }
}

/// Applies `object` in `namespace` unless it is already compliant.
pub async fn apply(
    client: &Client,
    namespace: &str,
    object: &DesiredObject,
    writer: &Writer,
) -> Result<Outcome, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &object.resource);
    let live =
        api.get_opt(&object.name).await.map_err(|source| Error::Read { what: object.describe(), source })?;
    let owner_uid = object.object["metadata"]["ownerReferences"][0]["uid"].as_str().unwrap_or_default();
    let mut outcome = Outcome::from(Applied::Created);
    if let Some(live) = &live {
        let live = serde_json::to_value(live).unwrap_or_default();
        let handover = takeover::handover(&live, owner_uid);
        if handover.is_none() && contains(&live, &object.object) {
            return Ok(Applied::Unchanged.into());
        }
        let (before, after) = (takeover::images(&live), takeover::images(&object.object));
        outcome.images = (before != after).then_some((before, after));
        outcome.applied = match handover {
            None => Applied::Corrected,
            Some(managed_fields) => {
                hand_over(&api, object, &live, managed_fields, writer).await?;
                Applied::TakenOver
            }
        };
    }
    let verb = match outcome.applied {
        Applied::Created => "create",
        Applied::TakenOver => "take over (hand field ownership to this operator, then apply)",
        _ => "restore drifted fields of",
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = writer
        .write(
            || Some(format!("{verb} {}", object.describe())),
            || async { api.patch(&object.name, &params, &Patch::Apply(&object.object)).await },
        )
        .await
        .map_err(|source| Error::Apply { object: object.describe(), source })?;
    if written.is_some() {
        info!(object = %object.describe(), outcome = ?outcome.applied, "applied");
    }
    Ok(outcome)
}

/// Writes `managed_fields` into the live object, guarded by its resourceVersion: a metadata-only
/// write (no generation change, no rollout) after which our apply owns what MVO owned.
async fn hand_over(
    api: &Api<DynamicObject>,
    object: &DesiredObject,
    live: &Value,
    managed_fields: Vec<Value>,
    writer: &Writer,
) -> Result<(), Error> {
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": live["metadata"]["resourceVersion"],
        "managedFields": managed_fields,
    }});
    // The plan line of the apply that follows names the take-over.
    let written = writer
        .write(
            || None,
            || async { api.patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch)).await },
        )
        .await
        .map_err(|source| Error::Apply { object: object.describe(), source })?;
    if written.is_some() {
        info!(object = %object.describe(), "field ownership handed over to this operator");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_defaults_do_not_count_as_drift() {
        let desired = json!({"spec": {"replicas": 1, "template": {"containers": [{"name": "velero"}]}}});
        let live = json!({
            "metadata": {"resourceVersion": "7"},
            "spec": {"replicas": 1, "strategy": {"type": "RollingUpdate"},
                     "template": {"containers": [{"name": "velero", "terminationMessagePath": "/dev/termination-log"}]}}
        });
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changed_missing_or_extra_list_items_are_drift() {
        let desired = json!({"spec": {"replicas": 1, "args": ["server"]}});
        assert!(!contains(&json!({"spec": {"replicas": 2, "args": ["server"]}}), &desired));
        assert!(!contains(&json!({"spec": {"args": ["server"]}}), &desired));
        assert!(!contains(&json!({"spec": {"replicas": 1, "args": ["server", "--debug"]}}), &desired));
    }
}
