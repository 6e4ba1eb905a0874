//! Apply: makes the Velero objects in Kubernetes match what `build` produced, reading before
//! writing so a compliant object costs one GET and no write.
//!
//! Writes with server-side apply under one field manager, forced, so edits by others to fields
//! we own are reverted. Fields we do not set (server defaults, other managers' fields) are left
//! alone: an object is compliant when everything we want is present in it.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::Value;
use tracing::info;

use super::{Error, build::DesiredObject, plan::Plan};

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

/// Applies `object` in `namespace` unless it is already compliant.
pub async fn apply(
    client: &Client,
    namespace: &str,
    object: &DesiredObject,
    plan: Option<&Plan>,
) -> Result<Applied, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &object.resource);
    let live =
        api.get_opt(&object.name).await.map_err(|source| Error::Read { what: object.describe(), source })?;
    let outcome = match &live {
        None => Applied::Created,
        Some(live) => {
            let live = serde_json::to_value(live).unwrap_or_default();
            if contains(&live, &object.object) {
                return Ok(Applied::Unchanged);
            }
            Applied::Corrected
        }
    };
    if let Some(plan) = plan {
        let verb = if outcome == Applied::Created { "create" } else { "restore drifted fields of" };
        plan.record(format!("kubernetes: {verb} {}", object.describe()));
        return Ok(outcome);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&object.name, &params, &Patch::Apply(&object.object))
        .await
        .map_err(|source| Error::Apply { object: object.describe(), source })?;
    info!(object = %object.describe(), outcome = ?outcome, "applied");
    Ok(outcome)
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
