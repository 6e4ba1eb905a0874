//! `deploy/` (SPEC 9) against the code and the test API server: every manifest of
//! `deploy/kustomization.yaml` applies server-side and is stored as written, the operator's
//! CredentialsRequests carry exactly the IAM the providers compute, the Deployment only sets env
//! vars the binary reads, and the RBAC follows least privilege on served verbs only (that it
//! grants what the code calls is proven by the operator tests, which run as the ServiceAccount).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::{ApiCapabilities, ApiResource, Discovery, Scope},
};
use mvo_testkit::env::{KubeEnv, foreign_crds, install_crds};
use serde_json::Value;

const FIELD_MANAGER: &str = "deploy-test";
const NAMESPACE: &str = "openshift-velero";
const OPERATOR: &str = "managed-velero-operator";
/// The secret the CredentialsRequests mint and the Deployment mounts.
const CREDENTIALS_SECRET: &str = "managed-velero-operator-iam-credentials";
/// Namespaces every OpenShift cluster has, which deploy/ uses without creating them.
const CLUSTER_NAMESPACES: [&str; 3] =
    ["kube-system", "openshift-cloud-credential-operator", "openshift-monitoring"];
/// Env vars of the Deployment that are not `run` flags: read by the operator directly.
const OTHER_ENV: [&str; 1] = [
    // The event reporter's (and the Lease holder's) instance name, operator/src/app.rs.
    "POD_NAME",
];

/// One document of a file listed in deploy/kustomization.yaml.
#[derive(Debug, Clone)]
struct Manifest {
    file: String,
    object: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
    fn gvk(&self) -> GroupVersionKind {
        let api_version = self.object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        GroupVersionKind::gvk(group, version, self.kind())
    }
    fn describe(&self) -> String {
        format!("{} {}/{} ({})", self.kind(), self.namespace().unwrap_or("-"), self.name(), self.file)
    }
    /// CRDs, then Namespaces, ServiceAccounts, roles and bindings, then the rest (as kustomize).
    fn apply_rank(&self) -> u8 {
        match self.kind() {
            "CustomResourceDefinition" => 0,
            "Namespace" => 1,
            "ServiceAccount" => 2,
            "Role" | "ClusterRole" => 3,
            "RoleBinding" | "ClusterRoleBinding" => 4,
            _ => 5,
        }
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of every file of deploy/kustomization.yaml, in file order.
fn manifests() -> Vec<Manifest> {
    let dir = deploy_dir();
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("reading deploy/{file}: {e}"))
    };
    let kustomization: Value =
        serde_saphyr::from_str(&read("kustomization.yaml")).expect("kustomization.yaml");
    assert_eq!(kustomization["kind"], "Kustomization");
    let files: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("kustomization resources")
        .iter()
        .map(|f| f.as_str().expect("resource path").to_owned())
        .collect();
    assert!(files.iter().any(|f| f == "crds/managed.openshift.io_veleroinstalls.yaml"), "CRD not listed");
    let listed: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    for entry in std::fs::read_dir(&dir).expect("deploy/") {
        let name = entry.expect("deploy/ entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(listed.contains(name.as_str()), "deploy/{name} is not listed in kustomization.yaml");
        }
    }
    let mut out = Vec::new();
    for file in files {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&read(&file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        for object in documents.into_iter().filter(|d| !d.is_null()) {
            out.push(Manifest { file: file.clone(), object });
        }
    }
    out
}

fn find<'a>(manifests: &'a [Manifest], kind: &str, namespace: Option<&str>, name: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|m| m.kind() == kind && m.namespace() == namespace && m.name() == name)
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {}/{name}", namespace.unwrap_or("-")))
}

/// The first field of `desired` that `live` lacks or holds with another value, as a path
/// (server defaults and bookkeeping may add keys; lists must match item by item).
fn difference(live: &Value, desired: &Value, path: &str) -> Option<String> {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().find_map(|(k, v)| match live.get(k) {
                Some(l) => difference(l, v, &format!("{path}.{k}")),
                None => Some(format!("{path}.{k}: missing")),
            })
        }
        (Value::Array(live), Value::Array(desired)) if live.len() == desired.len() => live
            .iter()
            .zip(desired)
            .enumerate()
            .find_map(|(i, (l, d))| difference(l, d, &format!("{path}[{i}]"))),
        // 36500.0 in YAML is stored as 36500: compare numbers by value.
        (Value::Number(l), Value::Number(d)) if l.as_f64() == d.as_f64() => None,
        (live, desired) => (live != desired).then(|| format!("{path}: {live} instead of {desired}")),
    }
}

fn contains(live: &Value, desired: &Value) -> bool {
    difference(live, desired, "").is_none()
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn operator_credentials_request<'a>(manifests: &'a [Manifest], cloud: &str) -> &'a Manifest {
    let name = format!("{CREDENTIALS_SECRET}-{cloud}");
    find(manifests, "CredentialsRequest", Some(NAMESPACE), &name)
}

#[test]
fn credentials_requests_carry_exactly_the_providers_iam() {
    let manifests = manifests();
    let aws = operator_credentials_request(&manifests, "aws");
    assert_eq!(
        aws.object["spec"]["providerSpec"],
        mvo_provider_aws::iam::operator_provider_spec(mvo_provider_aws::Partition::Aws),
        "deploy/{} drifted from mvo_provider_aws::iam::operator_provider_spec",
        aws.file
    );
    let gcp = operator_credentials_request(&manifests, "gcp");
    assert_eq!(
        gcp.object["spec"]["providerSpec"],
        mvo_provider_gcp::iam::operator_provider_spec(),
        "deploy/{} drifted from mvo_provider_gcp::iam::operator_provider_spec",
        gcp.file
    );
    let azure = operator_credentials_request(&manifests, "azure");
    assert_eq!(
        azure.object["spec"]["providerSpec"],
        mvo_provider_azure::iam::operator_provider_spec(),
        "deploy/{} drifted from mvo_provider_azure::iam::operator_provider_spec",
        azure.file
    );
    for (request, token_path) in [
        (aws, mvo_provider_aws::CLOUD_TOKEN_PATH),
        (gcp, mvo_provider_gcp::CLOUD_TOKEN_PATH),
        (azure, mvo_core::velero::CLOUD_TOKEN_PATH),
    ] {
        let spec = &request.object["spec"];
        assert_eq!(spec["secretRef"]["name"], CREDENTIALS_SECRET, "{}", request.describe());
        assert_eq!(spec["secretRef"]["namespace"], NAMESPACE, "{}", request.describe());
        assert_eq!(strings(&spec["serviceAccountNames"]), [OPERATOR], "{}", request.describe());
        assert_eq!(spec["cloudTokenPath"], token_path, "{}", request.describe());
    }
}

/// The operator's container in deploy/.
fn operator_pod(manifests: &[Manifest]) -> (Value, Value) {
    let deployment = find(manifests, "Deployment", Some(NAMESPACE), OPERATOR);
    let pod = deployment.object["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    (pod.clone(), containers[0].clone())
}

#[test]
fn the_deployment_only_sets_env_vars_the_binary_reads() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("managed-velero-operator run --help");
    assert!(help.status.success(), "run --help failed: {}", String::from_utf8_lossy(&help.stderr));
    let help = String::from_utf8_lossy(&help.stdout);

    let (pod, container) = operator_pod(&manifests());
    let env = container["env"].as_array().expect("env");
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().expect("env name")).collect();
    for name in &names {
        if name.starts_with("MVO_") || *name == "WATCH_NAMESPACE" {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "`run --help` does not mention env {name}:\n{help}"
            );
        } else {
            assert!(OTHER_ENV.contains(name), "env {name} is neither a `run` flag nor in OTHER_ENV");
        }
    }
    let value = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("env {name}"));
    assert_eq!(value("WATCH_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(value("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    // The credentials directory is where the (optional) secret is mounted.
    let credentials_dir = value("MVO_CREDENTIALS_DIR")["value"].as_str().expect("MVO_CREDENTIALS_DIR value");
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mount_of = |volume: &Value| {
        let name = &volume["name"];
        let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
        let mount = mounts.iter().find(|m| m["name"] == *name).expect("volume is mounted");
        assert_eq!(mount["readOnly"], true, "{name} mounted read-only");
        mount["mountPath"].as_str().expect("mountPath").to_owned()
    };
    let secret = volumes
        .iter()
        .find(|v| v["secret"]["secretName"] == CREDENTIALS_SECRET)
        .expect("credentials secret volume");
    assert_eq!(secret["secret"]["optional"], true, "the pod must start before the secret exists");
    assert_eq!(mount_of(secret), credentials_dir);

    // The projected token (STS / workload identity) is where the providers look for it.
    let token = volumes
        .iter()
        .find(|v| v["projected"]["sources"][0]["serviceAccountToken"].is_object())
        .expect("projected service-account token volume");
    let source = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "openshift");
    let token_file = format!("{}/{}", mount_of(token), source["path"].as_str().expect("token path"));
    assert_eq!(token_file, mvo_provider_aws::CLOUD_TOKEN_PATH);
    assert_eq!(token_file, mvo_provider_gcp::CLOUD_TOKEN_PATH);

    // Probes and metrics on the port `run` listens on by default.
    let port = &container["ports"][0];
    assert_eq!(port["name"], "metrics");
    let default_port = mvo_operator::cli::RunArgs::default().metrics_addr.port();
    assert_eq!(port["containerPort"], default_port, "MVO_METRICS_ADDR default port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // Restricted security context and the service account the RBAC binds.
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], OPERATOR);
}

/// The `(apiGroup, resource, verb)` triples a Role or ClusterRole grants, with the names the
/// rule is restricted to (empty: any).
fn grants(role: &Manifest) -> Vec<(String, String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role.object["rules"].as_array().expect("rules") {
        let names: Vec<String> = strings(&rule["resourceNames"]).into_iter().map(str::to_owned).collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.push((group.to_owned(), resource.to_owned(), verb.to_owned(), names.clone()));
                }
            }
        }
    }
    out
}

/// The operator's roles: its Role, its ClusterRole, and its kube-system Role.
fn operator_roles(manifests: &[Manifest]) -> [&Manifest; 3] {
    [
        find(manifests, "Role", Some(NAMESPACE), OPERATOR),
        find(manifests, "ClusterRole", None, OPERATOR),
        find(manifests, "Role", Some("kube-system"), "managed-velero-operator-cluster-config"),
    ]
}

/// That `deploy/`'s RBAC grants what the code calls is checked by running the code: every
/// operator test (reconcile, restart, startup, leader, secrets, demo, bench) acts as the
/// operator's ServiceAccount with exactly these roles on an API server that enforces RBAC, and
/// `reconcile.rs` proves that a verb removed from `role.yaml` fails the reconcile. This test keeps
/// the least-privilege rules no test run can show: no wildcards, no deletes, Secrets and
/// ConfigMaps only by name.
#[test]
fn rbac_follows_the_least_privilege_rules() {
    let manifests = manifests();
    let roles = operator_roles(&manifests);
    for role in roles {
        for (group, resource, verb, names) in grants(role) {
            assert!(
                ![&group, &resource, &verb].iter().any(|s| s.contains('*')),
                "{}: wildcard in {group}/{resource} {verb}",
                role.describe()
            );
            // The one deletion: a CRD Job, to run it again (Job templates are immutable).
            assert!(
                !verb.starts_with("delete") || (group == "batch" && resource == "jobs"),
                "{}: the operator never deletes ({resource})",
                role.describe()
            );
            // `create` cannot be restricted by name in RBAC.
            assert!(
                !matches!(resource.as_str(), "secrets" | "configmaps")
                    || !names.is_empty()
                    || verb == "create",
                "{}: {resource} must be restricted with resourceNames",
                role.describe()
            );
        }
    }
    let required = |kind: &str, ns: Option<&str>, name: &str, group: &str, resource: &str, verb: &str| {
        let role = find(&manifests, kind, ns, name);
        assert!(
            grants(role).iter().any(|(g, r, v, _)| g == group && r == resource && v == verb),
            "{} does not grant {verb} on {group}/{resource}",
            role.describe()
        );
    };
    required("Role", Some(NAMESPACE), OPERATOR, "managed.openshift.io", "veleroinstalls/status", "patch");
    required("Role", Some(NAMESPACE), OPERATOR, "events.k8s.io", "events", "create");
    for resource in ["services", "endpoints", "pods"] {
        required("Role", Some(NAMESPACE), "prometheus-k8s", "", resource, "list");
    }
}

#[test]
fn bindings_refer_to_roles_and_accounts_that_exist() {
    let manifests = manifests();
    let defined = |kind: &str, ns: Option<&str>, name: &str| {
        manifests.iter().any(|m| m.kind() == kind && m.namespace() == ns && m.name() == name)
    };
    // (subject, "Role <namespace>/<name>" or "ClusterRole <name>") of every binding.
    let mut bound: BTreeSet<(String, String)> = BTreeSet::new();
    for binding in manifests.iter().filter(|m| m.kind().ends_with("RoleBinding")) {
        let role = &binding.object["roleRef"];
        let role_name = role["name"].as_str().expect("roleRef name");
        let exists = match role["kind"].as_str() {
            Some("Role") => defined("Role", binding.namespace(), role_name),
            Some("ClusterRole") => defined("ClusterRole", None, role_name) || role_name == "cluster-admin",
            other => panic!("{}: roleRef kind {other:?}", binding.describe()),
        };
        assert!(exists, "{} refers to a role deploy/ does not define", binding.describe());
        for subject in binding.object["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["kind"], "ServiceAccount", "{}", binding.describe());
            let (ns, name) = (subject["namespace"].as_str(), subject["name"].as_str().unwrap_or_default());
            let known = defined("ServiceAccount", ns, name)
                || (ns, name) == (Some("openshift-monitoring"), "prometheus-k8s");
            assert!(known, "{}: unknown subject {ns:?}/{name}", binding.describe());
            let role = match role["kind"].as_str() {
                Some("Role") => format!("Role {}/{role_name}", binding.namespace().unwrap_or_default()),
                _ => format!("ClusterRole {role_name}"),
            };
            bound.insert((format!("{}/{name}", ns.unwrap_or_default()), role));
        }
    }
    let roles_of = |subject: &str| -> Vec<&str> {
        bound.iter().filter(|(s, _)| s == subject).map(|(_, role)| role.as_str()).collect()
    };
    assert_eq!(roles_of("openshift-velero/velero"), ["ClusterRole cluster-admin"]);
    assert_eq!(
        roles_of("openshift-velero/managed-velero-operator"),
        [
            "ClusterRole managed-velero-operator",
            "Role kube-system/managed-velero-operator-cluster-config",
            "Role openshift-velero/managed-velero-operator",
        ],
        "the operator is bound to exactly its three roles"
    );

    // Metrics: the ServiceMonitor selects the Service, which selects the operator's pods.
    let deployment = find(&manifests, "Deployment", Some(NAMESPACE), OPERATOR);
    let service = find(&manifests, "Service", Some(NAMESPACE), "managed-velero-operator-metrics");
    let monitor = find(&manifests, "ServiceMonitor", Some(NAMESPACE), "managed-velero-operator-metrics");
    assert!(contains(
        &deployment.object["spec"]["template"]["metadata"]["labels"],
        &service.object["spec"]["selector"]
    ));
    assert!(contains(
        &service.object["metadata"]["labels"],
        &monitor.object["spec"]["selector"]["matchLabels"]
    ));
    assert_eq!(service.object["spec"]["ports"][0]["name"], monitor.object["spec"]["endpoints"][0]["port"]);
}

/// Aggregated discovery, retried until it resolves `ready` (CRD groups appear asynchronously).
async fn discover(client: &Client, ready: impl Fn(&Discovery) -> bool) -> Discovery {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let discovery = Discovery::new(client.clone()).run_aggregated().await.expect("discovery");
        if ready(&discovery) || Instant::now() > deadline {
            return discovery;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The served resource `resource` (`plural` or `plural/subresource`) of `group`.
fn served(discovery: &Discovery, group: &str, resource: &str) -> Option<(ApiResource, ApiCapabilities)> {
    let (plural, sub) = resource.split_once('/').map_or((resource, None), |(p, s)| (p, Some(s)));
    let (ar, caps) =
        discovery.get(group)?.recommended_resources().into_iter().find(|(ar, _)| ar.plural == plural)?;
    match sub {
        None => Some((ar, caps)),
        Some(sub) => caps.subresources.into_iter().find(|(ar, _)| ar.plural == sub),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_applies_server_side_and_is_stored() {
    let manifests = manifests();
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");

    // The foreign kinds (stand-in CRDs) and the VeleroInstall CRD from deploy/ itself.
    let own: Vec<CustomResourceDefinition> = manifests
        .iter()
        .filter(|m| m.kind() == "CustomResourceDefinition")
        .map(|m| serde_json::from_value(m.object.clone()).expect("CRD"))
        .collect();
    assert_eq!(own.len(), 1, "deploy/ has the VeleroInstall CRD");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.extend(own);
    install_crds(&client, crds).await.expect("CRDs");

    let discovery = discover(&client, |d| manifests.iter().all(|m| d.resolve_gvk(&m.gvk()).is_some())).await;

    // Namespaces: those deploy/ creates, and the cluster's own ones it only uses.
    let created: BTreeSet<&str> =
        manifests.iter().filter(|m| m.kind() == "Namespace").map(Manifest::name).collect();
    for manifest in &manifests {
        if let Some(ns) = manifest.namespace() {
            assert!(
                created.contains(ns) || CLUSTER_NAMESPACES.contains(&ns),
                "{}: namespace {ns} is neither in deploy/ nor a cluster namespace",
                manifest.describe()
            );
        }
    }

    let mut ordered = manifests.clone();
    ordered.sort_by_key(Manifest::apply_rank);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for manifest in &ordered {
        let (ar, caps) = discovery
            .resolve_gvk(&manifest.gvk())
            .unwrap_or_else(|| panic!("{}: kind not served", manifest.describe()));
        let api: Api<DynamicObject> = match (&caps.scope, manifest.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            (Scope::Cluster, None) => Api::all_with(client.clone(), &ar),
            (scope, ns) => panic!("{}: scope {scope:?} but namespace {ns:?}", manifest.describe()),
        };
        api.patch(manifest.name(), &params, &Patch::Apply(&manifest.object))
            .await
            .unwrap_or_else(|e| panic!("{}: apply failed: {e}", manifest.describe()));
        let stored =
            api.get(manifest.name()).await.unwrap_or_else(|e| panic!("{}: {e}", manifest.describe()));
        let stored = serde_json::to_value(&stored).expect("stored object");
        if let Some(difference) = difference(&stored, &manifest.object, "") {
            panic!("{}: stored object differs from the manifest at {difference}", manifest.describe());
        }
        // An object of only name and namespace owns no field, so it has no managedFields entry.
        let top = manifest.object.as_object().map_or(0, |o| o.len()); // apiVersion, kind, metadata
        let metadata = manifest.object["metadata"].as_object();
        let owns_fields =
            top > 3 || metadata.is_some_and(|m| m.keys().any(|k| k != "name" && k != "namespace"));
        let managed = stored["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        assert!(
            !owns_fields
                || managed.iter().any(|f| f["manager"] == FIELD_MANAGER && f["operation"] == "Apply"),
            "{}: not applied by {FIELD_MANAGER}: {managed:?}",
            manifest.describe()
        );
    }

    // Every resource the operator's roles name is served, with every verb they grant.
    for role in operator_roles(&manifests) {
        for (group, resource, verb, _) in grants(role) {
            // `finalizers` exists for authorization only (owner references); its parent must be served.
            let checked = resource.strip_suffix("/finalizers").unwrap_or(&resource);
            let Some((_, caps)) = served(&discovery, &group, checked) else {
                panic!("{}: {group}/{checked} is not served", role.describe());
            };
            if checked == resource {
                assert!(
                    caps.supports_operation(&verb),
                    "{}: {group}/{resource} does not support {verb}",
                    role.describe()
                );
            }
        }
    }
}
