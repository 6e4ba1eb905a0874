//! Build: the Velero objects of SPEC section 7, as pure functions of the VeleroInstall, the
//! validated spec, the bucket and what the platform says Velero needs. Reads nothing, writes
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
            PreferredSchedulingTerm, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
            ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Resource, ResourceExt,
    api::{ApiResource, GroupVersionKind},
};
use mvo_core::{Platform, velero::VELERO_CREDENTIALS_SECRET};
use serde_json::{Value, json};

use super::validate::DesiredInstall;
use crate::crd::VeleroInstall;

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

fn metadata(name: &str, install: &VeleroInstall, owner: &OwnerReference) -> Value {
    json!({
        "name": name,
        "namespace": install.namespace(),
        "labels": labels(),
        "ownerReferences": [owner],
    })
}

/// Every Velero object for `install` with `bucket`, in apply order.
pub fn velero_objects(
    install: &VeleroInstall,
    desired: &DesiredInstall,
    bucket: &str,
    platform: &dyn Platform,
) -> Vec<DesiredObject> {
    // The reconciled object always comes from the API server, so it has a UID; without one the
    // objects are built unowned rather than not at all.
    let owner = install.controller_owner_ref(&()).unwrap_or_default();
    let location = platform.location_config(bucket);
    let namespace = install.namespace().unwrap_or_default();
    let meta = |name: &str| metadata(name, install, &owner);
    vec![
        DesiredObject::new(
            credentials_request(),
            VELERO_CREDENTIALS_SECRET,
            json!({
                "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
                "metadata": meta(VELERO_CREDENTIALS_SECRET),
                "spec": {
                    "secretRef": {"name": VELERO_CREDENTIALS_SECRET, "namespace": namespace},
                    "serviceAccountNames": [VELERO],
                    "providerSpec": platform.velero_credentials_request(bucket),
                }
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
            json!(deployment(install, desired, platform, &owner)),
        ),
        DesiredObject::new(
            ApiResource::erase::<Service>(&()),
            METRICS,
            json!(metrics_service(install, &owner)),
        ),
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

fn object_meta(name: &str, install: &VeleroInstall, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: install.namespace(),
        labels: Some(labels()),
        owner_references: Some(vec![owner.clone()]),
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

/// Name of the Job that prints the CRDs of `velero_image`; one per image, so an image change
/// runs a new Job and upgrades the CRDs.
pub fn crds_job_name(velero_image: &str) -> String {
    // FNV-1a: stable across builds and Rust versions, unlike DefaultHasher.
    let hash = velero_image
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("velero-crds-{:08x}", hash as u32)
}

/// The Job that runs the Velero image's own `velero install --crds-only --dry-run -o yaml`, so
/// the CRDs always match the image (the Velero Helm chart's approach). It needs no API access.
pub fn crds_job(install: &VeleroInstall, desired: &DesiredInstall) -> DesiredObject {
    let owner = install.controller_owner_ref(&()).unwrap_or_default();
    let name = crds_job_name(&desired.velero_image);
    let job = Job {
        metadata: object_meta(&name, install, &owner),
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels()), ..Default::default() }),
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
                        security_context: Some(restricted()),
                        ..Default::default()
                    }],
                    security_context: Some(restricted_pod()),
                    tolerations: Some(vec![infra_toleration()]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    DesiredObject::new(ApiResource::erase::<Job>(&()), &name, json!(job))
}

fn infra_toleration() -> Toleration {
    Toleration {
        key: Some(INFRA_NODE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }
}

/// Node role of infrastructure nodes, where Velero prefers to run.
const INFRA_NODE: &str = "node-role.kubernetes.io/infra";

/// The Velero server Deployment.
pub fn deployment(
    install: &VeleroInstall,
    desired: &DesiredInstall,
    platform: &dyn Platform,
    owner: &OwnerReference,
) -> Deployment {
    let wiring = platform.velero_credentials();
    let mut container_env = vec![
        env("VELERO_SCRATCH_DIR", "/scratch"),
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
        volume_mounts: Some(vec![
            mount("plugins", "/plugins", false),
            mount("scratch", "/scratch", false),
            mount("cloud-credentials", &wiring.mount_path, true),
            mount(TRUSTED_CA_BUNDLE, "/etc/pki/ca-trust/extracted/pem", true),
        ]),
        resources: Some(desired.resources.clone()),
        readiness_probe: Some(metrics_probe()),
        liveness_probe: Some(metrics_probe()),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let plugin = Container {
        name: "velero-plugin".into(),
        image: Some(desired.plugin_image.clone()),
        volume_mounts: Some(vec![mount("plugins", "/target", false)]),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let volumes = vec![
        empty_dir("plugins"),
        empty_dir("scratch"),
        Volume {
            name: "cloud-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(VELERO_CREDENTIALS_SECRET.into()),
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
    Deployment {
        metadata: object_meta(VELERO, install, owner),
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

fn metrics_service(install: &VeleroInstall, owner: &OwnerReference) -> Service {
    Service {
        metadata: object_meta(METRICS, install, owner),
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
    use mvo_testkit::InMemoryPlatform;

    use super::*;
    use crate::{crd::VeleroInstallSpec, reconcile::validate::validate};

    fn install() -> VeleroInstall {
        let mut vi = VeleroInstall::new("cluster", VeleroInstallSpec::default());
        vi.metadata.namespace = Some("openshift-velero".into());
        vi.metadata.uid = Some("3f0c0a52-1b7e-4c55-9d0e-7e3b1a2c4d5e".into());
        vi
    }

    fn objects() -> Vec<DesiredObject> {
        let platform = InMemoryPlatform::new("eu-west-1");
        let desired = validate(&VeleroInstallSpec::default(), &platform).expect("valid");
        velero_objects(&install(), &desired, "managed-velero-backups-x", &platform)
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
        assert_eq!(bsl["spec"]["provider"], "aws");
        assert_eq!(bsl["spec"]["config"]["region"], "eu-west-1");
        assert_eq!(bsl["spec"]["default"], true);
        assert_eq!(find(&objects, "VolumeSnapshotLocation")["spec"]["config"]["region"], "eu-west-1");
        let cr = find(&objects, "CredentialsRequest");
        assert_eq!(cr["spec"]["secretRef"]["name"], "velero-iam-credentials");
        assert_eq!(cr["spec"]["providerSpec"]["kind"], "AWSProviderSpec");
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
        for name in
            ["VELERO_SCRATCH_DIR", "VELERO_NAMESPACE", "LD_LIBRARY_PATH", "AWS_SHARED_CREDENTIALS_FILE"]
        {
            assert!(env.contains(&name), "{name} missing from {env:?}");
        }
        let sc = velero.security_context.as_ref().expect("security context");
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        assert!(velero.readiness_probe.is_some() && velero.liveness_probe.is_some());
        let requests = velero.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests["cpu"].0, "500m");
        let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["plugins", "scratch", "cloud-credentials", "trusted-ca-bundle"]);
        assert_eq!(
            pod.init_containers.expect("init")[0].image.as_deref(),
            Some("docker.io/velero/velero-plugin-for-aws:v1.13.0")
        );
        let seccomp = pod.security_context.and_then(|s| s.seccomp_profile).expect("seccomp");
        assert_eq!(seccomp.type_, "RuntimeDefault");
    }

    #[test]
    fn crds_job_runs_the_velero_image_itself() {
        let platform = InMemoryPlatform::new("eu-west-1");
        let desired = validate(&VeleroInstallSpec::default(), &platform).expect("valid");
        let job = crds_job(&install(), &desired);
        assert_eq!(job.name, crds_job_name(&desired.velero_image));
        let container = &job.object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], desired.velero_image.as_str());
        assert_eq!(container["args"], json!(["install", "--crds-only", "--dry-run", "-o", "yaml"]));
        assert_eq!(job.object["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_ne!(crds_job_name("velero:v1.17.0"), crds_job_name("velero:v1.17.1"));
        assert_eq!(crds_job_name("velero:v1.17.0"), crds_job_name("velero:v1.17.0"));
    }

    #[test]
    fn building_is_deterministic() {
        assert_eq!(objects(), objects());
    }
}
