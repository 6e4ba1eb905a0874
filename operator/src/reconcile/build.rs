//! Build: the Velero objects of SPEC section 7, as pure functions of the validated install
//! (identity and spec) and what the platform says Velero needs. Reads nothing, writes
//! nothing; `apply` sends the result with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        batch::v1::{Job, JobSpec},
        core::v1::{
            Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, NodeAffinity, NodeSelectorRequirement,
            NodeSelectorTerm, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
            PreferredSchedulingTerm, Probe, ProjectedVolumeSource, SeccompProfile, SecretVolumeSource,
            SecurityContext, Service, ServiceAccountTokenProjection, ServicePort, ServiceSpec, Toleration,
            Volume, VolumeMount, VolumeProjection,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::api::{ApiResource, GroupVersionKind};
use mvo_core::{
    VeleroFacts,
    velero::{CLOUD_TOKEN_AUDIENCE, CLOUD_TOKEN_PATH, VELERO_CREDENTIALS_SECRET},
};
use serde_json::{Value, json};

use super::validate::{DesiredInstall, InstallIdentity};

/// Name of the Velero Deployment, its service account and the BSL/VSL (`default`).
pub const VELERO: &str = "velero";
/// Name of the default BackupStorageLocation and VolumeSnapshotLocation.
pub const DEFAULT_LOCATION: &str = "default";
/// Name of the metrics Service and ServiceMonitor.
pub const METRICS: &str = "velero-metrics";
/// Velero's metrics port.
pub const METRICS_PORT: i32 = 8085;
/// ConfigMap the cluster's network operator fills with the trusted CA bundle.
pub const TRUSTED_CA_BUNDLE: &str = "trusted-ca-bundle";

/// One object to apply: where it lives in the API and its full desired content.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// Group, version, kind and plural of the object.
    pub resource: ApiResource,
    /// Its name.
    pub name: String,
    /// The object, with apiVersion, kind and metadata (owner reference included).
    pub object: Value,
}

impl DesiredObject {
    fn new(resource: ApiResource, name: &str, object: Value) -> Self {
        DesiredObject { resource, name: name.to_owned(), object }
    }

    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The BackupStorageLocation kind.
pub fn backup_storage_location() -> ApiResource {
    resource("velero.io", "v1", "BackupStorageLocation")
}

/// The VolumeSnapshotLocation kind.
pub fn volume_snapshot_location() -> ApiResource {
    resource("velero.io", "v1", "VolumeSnapshotLocation")
}

/// The CredentialsRequest kind.
pub fn credentials_request() -> ApiResource {
    resource("cloudcredential.openshift.io", "v1", "CredentialsRequest")
}

/// The ServiceMonitor kind.
pub fn service_monitor() -> ApiResource {
    resource("monitoring.coreos.com", "v1", "ServiceMonitor")
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("component".to_owned(), VELERO.to_owned()), ("deploy".to_owned(), VELERO.to_owned())])
}

fn metadata(name: &str, install: &InstallIdentity) -> Value {
    json!({
        "name": name,
        "namespace": install.namespace,
        "labels": labels(),
        "ownerReferences": [install.owner],
    })
}

/// How Velero authenticates to the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VeleroCredentials {
    /// Keys minted by the cloud credential operator.
    LongLived,
    /// A projected service-account token exchanged for short-lived credentials (AWS STS, GCP
    /// workload identity federation); the provider's facts name the identity.
    ShortLived,
}

/// Every Velero object for the desired install with the provider's `velero` facts, in apply
/// order.
pub fn velero_objects(
    desired: &DesiredInstall,
    velero: &VeleroFacts,
    credentials: VeleroCredentials,
) -> Vec<DesiredObject> {
    // The reconciled object always comes from the API server, so it has a UID; without one the
    // objects are built unowned rather than not at all.
    let install = &desired.install;
    let (location, provider_spec) = (&velero.location, &velero.credentials_request);
    let namespace = &install.namespace;
    let meta = |name: &str| metadata(name, install);
    let mut request_spec = json!({
        "secretRef": {"name": VELERO_CREDENTIALS_SECRET, "namespace": namespace},
        "serviceAccountNames": [VELERO],
        "providerSpec": provider_spec,
    });
    if credentials == VeleroCredentials::ShortLived {
        // The credential operator writes this path into the credentials file it creates.
        request_spec["cloudTokenPath"] = json!(CLOUD_TOKEN_PATH);
    }
    vec![
        DesiredObject::new(
            credentials_request(),
            VELERO_CREDENTIALS_SECRET,
            json!({
                "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
                "metadata": meta(VELERO_CREDENTIALS_SECRET),
                "spec": request_spec,
            }),
        ),
        DesiredObject::new(
            backup_storage_location(),
            DEFAULT_LOCATION,
            json!({
                "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                "metadata": meta(DEFAULT_LOCATION),
                "spec": {
                    "provider": location.provider,
                    "objectStorage": {"bucket": location.bucket},
                    "config": location.backup_config,
                    "default": true,
                }
            }),
        ),
        DesiredObject::new(
            volume_snapshot_location(),
            DEFAULT_LOCATION,
            json!({
                "apiVersion": "velero.io/v1", "kind": "VolumeSnapshotLocation",
                "metadata": meta(DEFAULT_LOCATION),
                "spec": {"provider": location.provider, "config": location.snapshot_config}
            }),
        ),
        DesiredObject::new(
            ApiResource::erase::<Deployment>(&()),
            VELERO,
            json!(deployment(desired, velero, credentials)),
        ),
        DesiredObject::new(ApiResource::erase::<Service>(&()), METRICS, json!(metrics_service(install))),
        DesiredObject::new(
            service_monitor(),
            METRICS,
            json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": meta(METRICS),
                "spec": {
                    "selector": {"matchLabels": labels()},
                    "namespaceSelector": {"matchNames": [namespace]},
                    "endpoints": [{"port": "metrics", "interval": "30s"}],
                }
            }),
        ),
    ]
}

pub(crate) fn object_meta(name: &str, install: &InstallIdentity) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(install.namespace.clone()),
        labels: Some(labels()),
        owner_references: Some(vec![install.owner.clone()]),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}

fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

fn metrics_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/metrics".into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(30),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

/// FNV-1a of `bytes`: stable across builds and Rust versions, unlike DefaultHasher.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Name of the Job with `spec`: a hash of the whole spec (pod template included), so any change
/// of what the Job runs creates a new Job instead of patching an immutable template.
pub fn crds_job_name(spec: &JobSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    format!("velero-crds-{:012x}", stable_hash(&bytes) & 0xffff_ffff_ffff)
}

/// Label on every CRD Job, to find those of earlier templates.
pub const CRDS_JOB_COMPONENT: &str = "velero-crds";

/// Finished CRD Jobs are removed by the TTL controller after an hour; the operator has recorded
/// what it applied by then and does not need the Job again unless the CRDs drift.
const CRDS_JOB_TTL_SECONDS: i32 = 3600;

/// The Job that runs the Velero image's own `velero install --crds-only --dry-run -o yaml`, so
/// the CRDs always match the image (the Velero Helm chart's approach). It needs no API access.
pub fn crds_job(desired: &DesiredInstall) -> Job {
    let job_labels = BTreeMap::from([("component".to_owned(), CRDS_JOB_COMPONENT.to_owned())]);
    let spec = JobSpec {
        backoff_limit: Some(3),
        ttl_seconds_after_finished: Some(CRDS_JOB_TTL_SECONDS),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(job_labels.clone()), ..Default::default() }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                automount_service_account_token: Some(false),
                containers: vec![Container {
                    name: "velero-crds".into(),
                    image: Some(desired.velero_image.clone()),
                    command: Some(vec!["/velero".into()]),
                    args: Some(
                        ["install", "--crds-only", "--dry-run", "-o", "yaml"].map(String::from).to_vec(),
                    ),
                    // The CLI's logging and client config may touch the temp dir.
                    volume_mounts: Some(vec![mount(TMP_VOLUME, "/tmp", false)]),
                    security_context: Some(restricted()),
                    ..Default::default()
                }],
                volumes: Some(vec![empty_dir(TMP_VOLUME)]),
                security_context: Some(restricted_pod()),
                tolerations: Some(vec![infra_toleration()]),
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let name = crds_job_name(&spec);
    let mut metadata = object_meta(&name, &desired.install);
    metadata.labels = Some(job_labels);
    Job { metadata, spec: Some(spec), ..Default::default() }
}

fn infra_toleration() -> Toleration {
    Toleration {
        key: Some(INFRA_NODE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }
}

/// The projected service-account token volume on token-based clusters.
const TOKEN_VOLUME: &str = "bound-sa-token";

/// Directory of [`CLOUD_TOKEN_PATH`].
fn token_dir() -> &'static str {
    CLOUD_TOKEN_PATH.rsplit_once('/').map_or(CLOUD_TOKEN_PATH, |(dir, _)| dir)
}

/// Velero's service-account token for the cloud's token exchange: audience `openshift`, file
/// name as in [`CLOUD_TOKEN_PATH`], refreshed by the kubelet before it expires.
fn token_volume() -> Volume {
    let file = CLOUD_TOKEN_PATH.rsplit_once('/').map_or(CLOUD_TOKEN_PATH, |(_, file)| file);
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(CLOUD_TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(3600),
                    path: file.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The writable temp dir of every container with a read-only root filesystem.
pub const TMP_VOLUME: &str = "tmp";
/// Velero's writable home directory (kopia's repository config and cache).
const HOME_VOLUME: &str = "home";
const HOME_DIR: &str = "/home/velero";

/// Node role of infrastructure nodes, where Velero prefers to run.
const INFRA_NODE: &str = "node-role.kubernetes.io/infra";

/// The Velero server Deployment.
pub fn deployment(
    desired: &DesiredInstall,
    facts: &VeleroFacts,
    credentials: VeleroCredentials,
) -> Deployment {
    let wiring = &facts.credentials;
    let token = credentials == VeleroCredentials::ShortLived;
    let mut container_env = vec![
        env("VELERO_SCRATCH_DIR", "/scratch"),
        // On OpenShift the restricted SCC runs the pod under a random UID without a passwd entry,
        // so HOME falls back to `/`: kopia then writes its repository config and cache to
        // `/udmrepo` and `/.cache` on the read-only root (velero#6909). Point it at an emptyDir.
        env("HOME", HOME_DIR),
        EnvVar {
            name: "VELERO_NAMESPACE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env("LD_LIBRARY_PATH", "/plugins"),
    ];
    container_env.extend(wiring.env.iter().map(|(k, v)| env(k, v)));
    let velero = Container {
        name: VELERO.into(),
        image: Some(desired.velero_image.clone()),
        command: Some(vec!["/velero".into()]),
        args: Some(vec!["server".into()]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(container_env),
        volume_mounts: Some(
            vec![
                mount("plugins", "/plugins", false),
                mount("scratch", "/scratch", false),
                // Plugin sockets (go-plugin), restic's temporary credentials file and the SDKs'
                // temporary files go to the temp dir (oadp-operator#703, velero#3358).
                mount(TMP_VOLUME, "/tmp", false),
                mount(HOME_VOLUME, HOME_DIR, false),
                mount("cloud-credentials", &wiring.mount_path, true),
                mount(TRUSTED_CA_BUNDLE, "/etc/pki/ca-trust/extracted/pem", true),
            ]
            .into_iter()
            .chain(token.then(|| mount(TOKEN_VOLUME, token_dir(), true)))
            .collect(),
        ),
        resources: Some(desired.resources.clone()),
        readiness_probe: Some(metrics_probe()),
        liveness_probe: Some(metrics_probe()),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let plugin = Container {
        name: "velero-plugin".into(),
        image: Some(desired.plugin_image.clone().unwrap_or_else(|| facts.plugin_image.clone())),
        // The plugin image copies its binaries with `cp`, which needs no temp dir; the mount is
        // there so no tool in a future plugin image fails on the read-only root.
        volume_mounts: Some(vec![mount("plugins", "/target", false), mount(TMP_VOLUME, "/tmp", false)]),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let mut volumes = vec![
        empty_dir("plugins"),
        empty_dir("scratch"),
        empty_dir(TMP_VOLUME),
        empty_dir(HOME_VOLUME),
        Volume {
            name: "cloud-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(wiring.secret_name().into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TRUSTED_CA_BUNDLE.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: TRUSTED_CA_BUNDLE.into(),
                items: Some(vec![KeyToPath {
                    key: "ca-bundle.crt".into(),
                    path: "tls-ca-bundle.pem".into(),
                    ..Default::default()
                }]),
                // The bundle is injected by the network operator; Velero must start without it.
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if token {
        volumes.push(token_volume());
    }
    Deployment {
        metadata: object_meta(VELERO, &desired.install),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("deploy".into(), VELERO.into())])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels()), ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(VELERO.into()),
                    init_containers: Some(vec![plugin]),
                    containers: vec![velero],
                    volumes: Some(volumes),
                    restart_policy: Some("Always".into()),
                    security_context: Some(restricted_pod()),
                    tolerations: Some(vec![infra_toleration()]),
                    affinity: Some(Affinity {
                        node_affinity: Some(NodeAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                PreferredSchedulingTerm {
                                    weight: 1,
                                    preference: NodeSelectorTerm {
                                        match_expressions: Some(vec![NodeSelectorRequirement {
                                            key: INFRA_NODE.into(),
                                            operator: "Exists".into(),
                                            ..Default::default()
                                        }]),
                                        ..Default::default()
                                    },
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn metrics_service(install: &InstallIdentity) -> Service {
    Service {
        metadata: object_meta(METRICS, install),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("deploy".into(), VELERO.into())])),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use mvo_testkit::{
        InMemoryPlatform,
        memory::{self, velero_facts},
    };

    use super::*;
    use crate::{
        crd::VeleroInstallSpec,
        reconcile::validate::{stored, validate},
    };

    fn objects() -> Vec<DesiredObject> {
        objects_for("managed-velero-backups-x", VeleroCredentials::LongLived)
    }

    fn objects_for(bucket: &str, credentials: VeleroCredentials) -> Vec<DesiredObject> {
        let platform = InMemoryPlatform::new("eu-west-1");
        let desired = validate(&stored(VeleroInstallSpec::default()), &platform).expect("valid");
        velero_objects(&desired, &velero_facts("eu-west-1", bucket), credentials)
    }

    fn find<'a>(objects: &'a [DesiredObject], kind: &str) -> &'a Value {
        &objects.iter().find(|o| o.resource.kind == kind).unwrap_or_else(|| panic!("{kind} missing")).object
    }

    #[test]
    fn every_object_has_the_mvo_name_and_a_controller_owner() {
        let objects = objects();
        let names: Vec<String> = objects.iter().map(DesiredObject::describe).collect();
        assert_eq!(
            names,
            [
                "CredentialsRequest/velero-iam-credentials",
                "BackupStorageLocation/default",
                "VolumeSnapshotLocation/default",
                "Deployment/velero",
                "Service/velero-metrics",
                "ServiceMonitor/velero-metrics",
            ]
        );
        for o in &objects {
            let owner = &o.object["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "VeleroInstall", "{}", o.describe());
            assert_eq!(owner["controller"], true);
            assert_eq!(o.object["metadata"]["namespace"], "openshift-velero");
        }
    }

    #[test]
    fn locations_point_at_the_bucket() {
        let objects = objects();
        let bsl = find(&objects, "BackupStorageLocation");
        assert_eq!(bsl["spec"]["objectStorage"]["bucket"], "managed-velero-backups-x");
        assert_eq!(bsl["spec"]["provider"], memory::VELERO_PROVIDER);
        assert_eq!(bsl["spec"]["config"]["region"], "eu-west-1");
        assert_eq!(bsl["spec"]["default"], true);
        assert_eq!(find(&objects, "VolumeSnapshotLocation")["spec"]["config"]["region"], "eu-west-1");
        let cr = find(&objects, "CredentialsRequest");
        assert_eq!(cr["spec"]["secretRef"]["name"], "velero-iam-credentials");
        assert_eq!(
            cr["spec"]["providerSpec"],
            velero_facts("eu-west-1", "managed-velero-backups-x").credentials_request
        );
    }

    #[test]
    fn deployment_has_the_velero_shape() {
        let objects = objects();
        let d: Deployment = serde_json::from_value(find(&objects, "Deployment").clone()).expect("deployment");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("velero"));
        let velero = &pod.containers[0];
        assert_eq!(velero.command.as_deref(), Some(&["/velero".to_owned()][..]));
        assert_eq!(velero.args.as_deref(), Some(&["server".to_owned()][..]));
        assert_eq!(velero.ports.as_ref().expect("ports")[0].container_port, 8085);
        let env: Vec<&str> = velero.env.iter().flatten().map(|e| e.name.as_str()).collect();
        for name in ["VELERO_SCRATCH_DIR", "VELERO_NAMESPACE", "LD_LIBRARY_PATH", memory::CREDENTIALS_ENV] {
            assert!(env.contains(&name), "{name} missing from {env:?}");
        }
        let sc = velero.security_context.as_ref().expect("security context");
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        assert!(velero.readiness_probe.is_some() && velero.liveness_probe.is_some());
        let requests = velero.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests["cpu"].0, "500m");
        let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["plugins", "scratch", "tmp", "home", "cloud-credentials", "trusted-ca-bundle"]);
        assert_eq!(pod.init_containers.expect("init")[0].image.as_deref(), Some(memory::VELERO_PLUGIN_IMAGE));
        let seccomp = pod.security_context.and_then(|s| s.seccomp_profile).expect("seccomp");
        assert_eq!(seccomp.type_, "RuntimeDefault");
    }

    #[test]
    fn crds_job_runs_the_velero_image_itself_and_is_named_by_its_template() {
        let platform = InMemoryPlatform::new("eu-west-1");
        let desired = validate(&stored(VeleroInstallSpec::default()), &platform).expect("valid");
        let job = crds_job(&desired);
        let spec = job.spec.clone().expect("spec");
        assert_eq!(job.metadata.name, Some(crds_job_name(&spec)));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.clone().expect("pod");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(desired.velero_image.as_str()));
        assert_eq!(json!(container.args), json!(["install", "--crds-only", "--dry-run", "-o", "yaml"]));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let mut changed = spec.clone();
        changed.template.spec.as_mut().expect("pod").containers[0].image = Some("velero:v1.17.1".into());
        assert_ne!(crds_job_name(&changed), crds_job_name(&spec), "image is part of the name");
        let mut changed = spec.clone();
        changed.template.spec.as_mut().expect("pod").tolerations = None;
        assert_ne!(crds_job_name(&changed), crds_job_name(&spec), "any template change renames the Job");
        assert_eq!(crds_job_name(&spec), crds_job_name(&spec.clone()));
    }

    #[test]
    fn short_lived_credentials_mount_the_projected_token_and_set_the_token_path() {
        let objects = objects_for("b", VeleroCredentials::ShortLived);
        let cr = find(&objects, "CredentialsRequest");
        assert_eq!(cr["spec"]["cloudTokenPath"], CLOUD_TOKEN_PATH);
        assert_eq!(cr["spec"]["providerSpec"], velero_facts("eu-west-1", "b").credentials_request);
        let d: Deployment = serde_json::from_value(find(&objects, "Deployment").clone()).expect("deployment");
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
        let token = pod.volumes.iter().flatten().find(|v| v.name == TOKEN_VOLUME).expect("token volume");
        let projection = token.projected.as_ref().and_then(|p| p.sources.as_ref()).expect("sources")[0]
            .service_account_token
            .clone()
            .expect("token projection");
        assert_eq!((projection.audience.as_deref(), projection.path.as_str()), (Some("openshift"), "token"));
        let mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == TOKEN_VOLUME);
        assert_eq!(mount.map(|m| m.mount_path.as_str()), Some("/var/run/secrets/openshift/serviceaccount"));
        let long_lived = objects_for("b", VeleroCredentials::LongLived);
        assert!(find(&long_lived, "CredentialsRequest")["spec"].get("cloudTokenPath").is_none());
    }

    #[test]
    fn building_is_deterministic() {
        assert_eq!(objects(), objects());
    }
}
