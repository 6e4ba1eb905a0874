//! `make bundle`: writes the OLM bundle (`bundle/manifests/`, `bundle/metadata/annotations.yaml`)
//! from `deploy/`, so deploy/ stays the one source of truth and regenerating after an RBAC change
//! is all a change needs (`make check-bundle` fails CI when the bundle is stale).
//!
//! What goes where:
//! - the Deployment becomes the CSV's install strategy (`install.spec.deployments`), unchanged;
//! - the rules of every Role in the operator's namespace bound to one of deploy/'s
//!   ServiceAccounts become that account's `permissions`;
//! - the rules of every ClusterRole bound to such an account become its `clusterPermissions`,
//!   and so do the rules of Roles in other namespaces (kube-system): a CSV can only grant
//!   permissions in the install namespace or cluster-wide, and those Roles name their objects by
//!   `resourceNames`, which keeps them as narrow cluster-wide; `cluster-admin` (built-in, not in
//!   deploy/) is written out as its wildcard rules;
//! - the CRD and the other objects OLM installs from a bundle (Service, ServiceMonitor,
//!   ConfigMap, Roles and bindings for other subjects) are copied as they are;
//! - Namespace and ServiceAccounts are OLM's to create; anything else (the CredentialsRequests)
//!   is not installable from a bundle and is listed on stderr and in the CSV description.
//!
//! Run: `cargo run -p mvo-operator --example bundle` (from anywhere: paths are the workspace's).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// OLM package and channel of this operator.
const PACKAGE: &str = "managed-velero-operator";
const CHANNEL: &str = "stable";

/// Kinds OLM creates from a bundle's manifests besides the CSV and CRDs.
const BUNDLE_KINDS: &[&str] = &[
    "Service",
    "ServiceMonitor",
    "ConfigMap",
    "Secret",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "PrometheusRule",
    "PodDisruptionBudget",
    "PriorityClass",
];

/// One document of deploy/.
struct Object {
    file: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let objects = load(&root.join("deploy"))?;
    let bundle = root.join("bundle");
    let manifests = bundle.join("manifests");
    let metadata = bundle.join("metadata");
    for dir in [&manifests, &metadata] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let (csv, copied, skipped) = build(&objects, &examples(&root.join("deploy/examples"))?)?;
    write(&manifests.join(format!("{PACKAGE}.clusterserviceversion.yaml")), &csv)?;
    for object in copied {
        let file = match object.kind() {
            "CustomResourceDefinition" => Path::new(&object.file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}.yaml", object.name())),
            kind => format!("{}_{}.yaml", object.name(), kind.to_ascii_lowercase()),
        };
        write(&manifests.join(file), &object.value)?;
    }
    write(&metadata.join("annotations.yaml"), &annotations())?;
    for object in skipped {
        eprintln!("bundle: not installable by OLM, apply separately: {} {}", object.kind(), object.name());
    }
    Ok(())
}

/// Every document of every file that deploy/kustomization.yaml lists, in order.
fn load(deploy: &Path) -> anyhow::Result<Vec<Object>> {
    let read = |file: &str| {
        std::fs::read_to_string(deploy.join(file)).with_context(|| format!("reading deploy/{file}"))
    };
    let kustomization: Value = serde_saphyr::from_str(&read("kustomization.yaml")?)?;
    let files = kustomization["resources"].as_array().context("deploy/kustomization.yaml: no resources")?;
    let mut objects = Vec::new();
    for file in files {
        let file = file.as_str().context("a resource that is not a path")?;
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&read(file)?).with_context(|| format!("parsing deploy/{file}"))?;
        objects.extend(
            documents.into_iter().filter(|d| !d.is_null()).map(|value| Object { file: file.into(), value }),
        );
    }
    Ok(objects)
}

/// The example VeleroInstalls of deploy/examples/, for the CSV's `alm-examples`.
fn examples(dir: &Path) -> anyhow::Result<Vec<Value>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)?;
        out.extend(documents.into_iter().filter(|d| !d.is_null()));
    }
    Ok(out)
}

/// The CSV, the objects copied into the bundle, and the objects OLM cannot install.
fn build<'a>(
    objects: &'a [Object],
    examples: &[Value],
) -> anyhow::Result<(Value, Vec<&'a Object>, Vec<&'a Object>)> {
    let deployments: Vec<&Object> = objects.iter().filter(|o| o.kind() == "Deployment").collect();
    let [deployment] = deployments[..] else { bail!("deploy/ must hold exactly one Deployment") };
    let namespace = deployment.namespace().context("the Deployment has no namespace")?;
    let accounts: Vec<&str> = objects
        .iter()
        .filter(|o| o.kind() == "ServiceAccount" && o.namespace() == Some(namespace))
        .map(Object::name)
        .collect();
    let find = |kind: &str, ns: Option<&str>, name: &str| {
        objects.iter().find(|o| o.kind() == kind && o.namespace() == ns && o.name() == name)
    };
    // The ServiceAccount of deploy/ a binding grants to, if any.
    let bound_account = |binding: &Object| -> Option<String> {
        binding.value["subjects"].as_array()?.iter().find_map(|s| {
            let ns = s["namespace"].as_str().or(binding.namespace());
            let name = s["name"].as_str()?;
            (s["kind"] == "ServiceAccount" && ns == Some(namespace) && accounts.contains(&name))
                .then(|| name.to_owned())
        })
    };

    let mut permissions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut cluster_permissions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut consumed: Vec<*const Object> = Vec::new();
    let mut copied = Vec::new();
    let mut skipped = Vec::new();
    for binding in objects.iter().filter(|o| matches!(o.kind(), "RoleBinding" | "ClusterRoleBinding")) {
        let Some(account) = bound_account(binding) else { continue };
        let role_kind = binding.value["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding.value["roleRef"]["name"].as_str().unwrap_or_default();
        let role_ns = if role_kind == "Role" { binding.namespace() } else { None };
        let rules = match find(role_kind, role_ns, role_name) {
            Some(role) => {
                consumed.push(role);
                role.value["rules"].as_array().cloned().unwrap_or_default()
            }
            None if role_kind == "ClusterRole" && role_name == "cluster-admin" => vec![
                json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
            None => {
                bail!("{} {}: its {role_kind} {role_name} is not in deploy/", binding.kind(), binding.name())
            }
        };
        consumed.push(binding);
        let target = if binding.kind() == "RoleBinding" && binding.namespace() == Some(namespace) {
            &mut permissions
        } else {
            &mut cluster_permissions
        };
        target.entry(account).or_default().extend(rules);
    }
    for object in objects {
        if consumed.contains(&(object as *const Object)) {
            continue;
        }
        match object.kind() {
            "Deployment" | "Namespace" | "ServiceAccount" => {}
            "CustomResourceDefinition" => copied.push(object),
            kind if BUNDLE_KINDS.contains(&kind) => copied.push(object),
            _ => skipped.push(object),
        }
    }

    let as_list = |map: BTreeMap<String, Vec<Value>>| -> Vec<Value> {
        map.into_iter()
            .map(|(account, rules)| json!({"serviceAccountName": account, "rules": rules}))
            .collect()
    };
    let crds: Vec<Value> = copied
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
        .map(|crd| owned_crd(&crd.value))
        .collect::<anyhow::Result<_>>()?;
    let image = deployment.value["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    let version = env!("CARGO_PKG_VERSION");
    let mut description = String::from(
        "Provisions a hardened backup bucket in the cluster's cloud (AWS S3, Google Cloud Storage or an Azure Blob container) and \
         installs a configured Velero in this namespace. Create VeleroInstall/cluster to start.",
    );
    if !skipped.is_empty() {
        let names: Vec<String> = skipped.iter().map(|o| format!("{} {}", o.kind(), o.name())).collect();
        description.push_str(&format!(
            "\n\nApply these objects of deploy/ separately (OLM does not install their kind): {}.",
            names.join(", ")
        ));
    }
    let csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{PACKAGE}.v{version}"),
            "namespace": "placeholder",
            "annotations": {
                "alm-examples": serde_json::to_string_pretty(examples)?,
                "capabilities": "Basic Install",
                "containerImage": image,
                "operatorframework.io/suggested-namespace": namespace,
                "operators.operatorframework.io/builder": "operator/examples/bundle.rs",
            },
        },
        "spec": {
            "displayName": "Managed Velero Operator",
            "description": description,
            "version": version,
            "maturity": "alpha",
            "provider": {"name": "managed-velero-operator-rs"},
            "keywords": ["velero", "backup", "openshift"],
            "installModes": [
                {"type": "OwnNamespace", "supported": true},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": false},
            ],
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [{
                        "name": deployment.name(),
                        "label": deployment.value["metadata"]["labels"],
                        "spec": deployment.value["spec"],
                    }],
                    "permissions": as_list(permissions),
                    "clusterPermissions": as_list(cluster_permissions),
                },
            },
            "customresourcedefinitions": {"owned": crds},
        },
    });
    Ok((csv, copied, skipped))
}

/// The CSV's description of an owned CRD: its served storage version, with a descriptor for
/// every spec and status field the schema documents.
fn owned_crd(crd: &Value) -> anyhow::Result<Value> {
    let spec = &crd["spec"];
    let version = spec["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["storage"] == true))
        .context("a CRD without a storage version")?;
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut spec_descriptors = Vec::new();
    descriptors(&schema["properties"]["spec"], "", &mut spec_descriptors);
    let mut status_descriptors = Vec::new();
    descriptors(&schema["properties"]["status"], "", &mut status_descriptors);
    Ok(json!({
        "name": crd["metadata"]["name"],
        "version": version["name"],
        "kind": spec["names"]["kind"],
        "displayName": spec["names"]["kind"],
        "description": schema["description"],
        "specDescriptors": spec_descriptors,
        "statusDescriptors": status_descriptors,
    }))
}

/// One descriptor per documented property below `schema`, depth first, in schema order.
fn descriptors(schema: &Value, prefix: &str, out: &mut Vec<Value>) {
    let Some(properties) = schema["properties"].as_object() else { return };
    for (name, property) in properties {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let mut descriptor = json!({
            "path": path,
            "displayName": display_name(name),
            "description": property["description"].as_str().unwrap_or_default(),
        });
        if name == "conditions" {
            descriptor["x-descriptors"] = json!(["urn:alm:descriptor:io.kubernetes.conditions"]);
        }
        out.push(descriptor);
        // Nested settings are described field by field; lists and maps as a whole.
        if property["type"] == "object" && name != "resources" {
            descriptors(property, &path, out);
        }
    }
}

/// `backupRetentionDays` -> `Backup Retention Days`.
fn display_name(field: &str) -> String {
    let mut out = String::new();
    let mut previous_upper = true;
    for c in field.chars() {
        if out.is_empty() {
            out.extend(c.to_uppercase());
        } else {
            // A new word at a lower-to-upper step; `kmsKeyID` keeps `ID` together.
            if c.is_uppercase() && !previous_upper {
                out.push(' ');
            }
            out.push(c);
        }
        previous_upper = c.is_uppercase();
    }
    out
}

fn annotations() -> Value {
    json!({"annotations": {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
    }})
}

fn write(path: &Path, value: &Value) -> anyhow::Result<()> {
    let yaml = serde_saphyr::to_string(value)?;
    let text = format!(
        "# Generated by `make bundle` from deploy/ (operator/examples/bundle.rs). Do not edit.\n{yaml}"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
