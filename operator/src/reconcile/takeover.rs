//! Takeover: how an object another writer left becomes wholly ours in the next apply.
//!
//! The Go MVO wrote its objects with plain create/update under the field manager
//! `managed-velero-operator` (operation `Update`), and its ServiceMonitor names the Service as its
//! controller. Server-side apply alone cannot finish such an object: it only removes fields that
//! our own Apply entry owned before, so MVO's extra fields (its plugin init container, `AWS_*` env,
//! the GCP credentials volume) would stay forever and the object would be re-applied on every
//! pass; and applying our owner reference beside a foreign controller reference makes two
//! controllers, which the API server refuses (422).
//!
//! [`handover`] computes the object's `managedFields` with MVO's `Update` entry folded into our
//! `Apply` entry and every foreign controller owner reference moved to it, the way `kubectl`
//! upgrades client-side-applied objects. Written once (a metadata-only write, guarded by the
//! resourceVersion), it makes the following forced apply remove exactly what we do not declare,
//! in one write the API server accepts. Pure: this module reads and writes nothing.

use serde_json::{Map, Value, json};

use super::apply::FIELD_MANAGER;

/// The `managedFields` to write before applying `live`, or `None` when the object needs no
/// handover (no `Update` entry of our manager name, no controller reference but `owner_uid`).
pub fn handover(live: &Value, owner_uid: &str) -> Option<Vec<Value>> {
    let entries = live["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    let is_main = |e: &Value| e["subresource"].as_str().unwrap_or_default().is_empty();
    let is_legacy = |e: &Value| e["manager"] == FIELD_MANAGER && e["operation"] == "Update" && is_main(e);
    let is_ours = |e: &Value| e["manager"] == FIELD_MANAGER && e["operation"] == "Apply" && is_main(e);
    let foreign: Vec<String> = live["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["controller"] == true && r["uid"] != owner_uid)
        .filter_map(|r| r["uid"].as_str().map(owner_key))
        .collect();
    if foreign.is_empty() && !entries.iter().any(is_legacy) {
        return None;
    }
    let mut ours = entries.iter().find(|e| is_ours(e)).cloned().unwrap_or_else(|| {
        json!({"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": live["apiVersion"],
               "fieldsType": "FieldsV1", "fieldsV1": {}})
    });
    let mut kept = Vec::new();
    for mut entry in entries {
        if is_ours(&entry) {
            continue;
        }
        if is_legacy(&entry) {
            union(&mut ours["fieldsV1"], &entry["fieldsV1"]);
            continue;
        }
        for key in &foreign {
            remove_owner_key(&mut entry["fieldsV1"], key);
        }
        if entry["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()) {
            kept.push(entry);
        }
    }
    // Indexing a missing key inserts null, so only build the path when there is a key to add.
    if !foreign.is_empty() {
        let references: Map<String, Value> = foreign.into_iter().map(|key| (key, json!({}))).collect();
        union(&mut ours["fieldsV1"], &json!({"f:metadata": {"f:ownerReferences": references}}));
    }
    kept.push(ours);
    Some(kept)
}

/// The field-set key of the owner reference with `uid` (ownerReferences are keyed by uid).
fn owner_key(uid: &str) -> String {
    format!("k:{}", json!({"uid": uid}))
}

/// Adds every path of `other` to `set` (both FieldsV1 trees).
fn union(set: &mut Value, other: &Value) {
    let Some(other) = other.as_object() else { return };
    if !set.is_object() {
        *set = Value::Object(Map::new());
    }
    if let Some(set) = set.as_object_mut() {
        for (key, child) in other {
            union(set.entry(key.clone()).or_insert_with(|| json!({})), child);
        }
    }
}

/// Removes the owner reference `key` from a FieldsV1 tree, and the maps it leaves empty.
fn remove_owner_key(fields: &mut Value, key: &str) {
    let Some(metadata) = fields.get_mut("f:metadata").and_then(Value::as_object_mut) else { return };
    let Some(references) = metadata.get_mut("f:ownerReferences").and_then(Value::as_object_mut) else {
        return;
    };
    references.remove(key);
    if references.keys().all(|k| k == ".") {
        metadata.remove("f:ownerReferences");
    }
    if metadata.is_empty()
        && let Some(fields) = fields.as_object_mut()
    {
        fields.remove("f:metadata");
    }
}

/// The images of a workload's pod template, init containers first; empty for other kinds.
pub fn images(object: &Value) -> Vec<String> {
    let pod = &object["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> Value {
        json!({"manager": manager, "operation": operation, "apiVersion": "v1", "fieldsType": "FieldsV1",
               "fieldsV1": fields})
    }

    #[test]
    fn an_object_we_applied_needs_no_handover() {
        let live = json!({"metadata": {
            "ownerReferences": [{"uid": "vi", "controller": true}],
            "managedFields": [entry(FIELD_MANAGER, "Apply", json!({"f:spec": {}})),
                              entry("kubectl-edit", "Update", json!({"f:spec": {"f:x": {}}}))]
        }});
        assert_eq!(handover(&live, "vi"), None);
    }

    #[test]
    fn mvo_update_entry_is_folded_into_ours() {
        let live = json!({"apiVersion": "apps/v1", "metadata": {
            "ownerReferences": [{"uid": "vi", "controller": true}],
            "managedFields": [
                entry(FIELD_MANAGER, "Update", json!({"f:spec": {"f:a": {}, "f:b": {}}})),
                entry("kube-controller-manager", "Update", json!({"f:status": {}})),
                entry(FIELD_MANAGER, "Update", json!({"f:status": {"f:c": {}}})),
            ]
        }});
        let mut live = live;
        live["metadata"]["managedFields"][2]["subresource"] = json!("status");
        let fields = handover(&live, "vi").expect("handover");
        assert_eq!(fields.len(), 3, "{fields:?}");
        let ours = &fields[2];
        assert_eq!(
            (ours["manager"].as_str(), ours["operation"].as_str()),
            (Some(FIELD_MANAGER), Some("Apply"))
        );
        assert_eq!(ours["fieldsV1"], json!({"f:spec": {"f:a": {}, "f:b": {}}}));
        assert_eq!(fields[1]["subresource"], "status", "status entries are not ours to take");
    }

    #[test]
    fn a_foreign_controller_reference_moves_to_us() {
        let service = owner_key("svc");
        let live = json!({"metadata": {
            "ownerReferences": [{"uid": "svc", "controller": true}, {"uid": "plain"}],
            "managedFields": [
                entry("someone", "Update", json!({"f:metadata": {"f:ownerReferences": {".": {}, service.clone(): {}}}, "f:spec": {}})),
                entry(FIELD_MANAGER, "Apply", json!({"f:spec": {"f:x": {}}})),
            ]
        }});
        let fields = handover(&live, "vi").expect("handover");
        assert_eq!(fields[0]["fieldsV1"], json!({"f:spec": {}}));
        assert_eq!(fields[1]["fieldsV1"]["f:metadata"]["f:ownerReferences"][&service], json!({}));
        assert_eq!(fields[1]["fieldsV1"]["f:spec"], json!({"f:x": {}}), "our own fields stay");
        assert_eq!(owner_key("a"), r#"k:{"uid":"a"}"#);
    }

    #[test]
    fn images_lists_init_containers_first() {
        let d = json!({"spec": {"template": {"spec": {"containers": [{"image": "v"}], "initContainers": [{"image": "p"}]}}}});
        assert_eq!(images(&d), ["p", "v"]);
        assert!(images(&json!({"spec": {}})).is_empty());
    }
}
