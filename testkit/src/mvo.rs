//! MVO's state: the objects the Go managed-velero-operator (0.2.x, `openshift/managed-velero-operator`)
//! leaves in its namespace, reproduced exactly so takeover tests and the demo start from what a
//! real cluster that ran MVO holds.
//!
//! Everything is written the way MVO writes it: plain create (and a status update) through a
//! controller-runtime client whose field manager is the binary name, `managed-velero-operator`,
//! so `managedFields` carry `Update` entries of that manager, never server-side apply.
//!
//! What MVO leaves (facts read from its source, not copied from it):
//! - `VeleroInstall/cluster` whose status holds only `storageBucket {name, provisioned: true,
//!   lastSyncTimestamp}` (MVO has no conditions).
//! - BSL `default`, VSL `default`, CredentialsRequest `velero-iam-credentials`, Deployment `velero`
//!   and Service `velero-metrics`, each with a controller owner reference to the VeleroInstall
//!   (controller-runtime's `SetControllerReference`: `controller` and `blockOwnerDeletion` true).
//! - ServiceMonitor `velero-metrics` whose controller owner is the Service, not the VeleroInstall.
//! - The Deployment built by Velero 1.11's `install.Deployment` plus MVO's overrides: the plugin as
//!   an init container named after its image path, `AWS_*` env from the secret (AWS) or the secret
//!   mounted at `/credentials` (GCP), every API default spelled out, images pinned by digest.
//! - The operator's own objects: operator-lib's leader-for-life ConfigMap lock
//!   `managed-velero-operator-lock` owned (plain, non-controller reference) by the MVO pod, the
//!   metrics Service/ServiceMonitor `managed-velero-operator-metrics` (port 8383), and the static
//!   CredentialsRequest `managed-velero-operator-iam-credentials-aws|gcp` in the namespace.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Pod, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// The field manager of every MVO write (controller-runtime uses the binary name).
pub const MVO_MANAGER: &str = "managed-velero-operator";
/// MVO's leader-for-life lock (operator-lib `leader.Become`).
pub const MVO_LOCK: &str = "managed-velero-operator-lock";
/// MVO's operator metrics Service and ServiceMonitor.
pub const MVO_OPERATOR_METRICS: &str = "managed-velero-operator-metrics";
/// The secret MVO's static CredentialsRequests mint for the operator.
pub const MVO_OPERATOR_SECRET: &str = "managed-velero-operator-iam-credentials";
/// MVO 0.2's pinned Velero image (OADP 1.2.5-3).
pub const MVO_VELERO_IMAGE: &str = "registry.redhat.io/oadp/oadp-velero-rhel8@sha256:035f48844600bd3beebd6740bf85cf54d98a9232f01c31621d4e995ff366690a";
/// MVO 0.2's pinned AWS plugin image.
pub const MVO_AWS_PLUGIN_IMAGE: &str = "registry.redhat.io/oadp/oadp-velero-plugin-for-aws-rhel8@sha256:317149aaba6bbe1600330a381ba2f8a7c2aba36db4f7cbd68545e037cfeed9db";
/// MVO 0.2's pinned GCP plugin image.
pub const MVO_GCP_PLUGIN_IMAGE: &str = "registry.redhat.io/oadp/oadp-velero-plugin-for-gcp-rhel8@sha256:1556f9a9d3cf8920ecda5f2a568f7277d339ec2725d2fd4a844d590c483a3bd6";
/// The Velero credentials secret and CredentialsRequest name.
const VELERO_CREDENTIALS: &str = "velero-iam-credentials";
/// Node role of infrastructure nodes.
const INFRA_NODE: &str = "node-role.kubernetes.io/infra";

/// The cloud of the cluster MVO ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MvoCloud {
    /// AWS in `region` (partition `aws`).
    Aws {
        /// The cluster's region.
        region: String,
    },
    /// GCP.
    Gcp,
}

impl MvoCloud {
    fn provider(&self) -> &'static str {
        match self {
            MvoCloud::Aws { .. } => "aws",
            MvoCloud::Gcp => "gcp",
        }
    }

    /// MVO's plugin image for this cloud.
    pub fn plugin_image(&self) -> &'static str {
        match self {
            MvoCloud::Aws { .. } => MVO_AWS_PLUGIN_IMAGE,
            MvoCloud::Gcp => MVO_GCP_PLUGIN_IMAGE,
        }
    }

    /// The name Velero's installer gives the plugin init container: the image path without the
    /// registry host and digest, `/` replaced by `-`.
    pub fn plugin_container(&self) -> String {
        let image = self.plugin_image();
        let path = image.split_once('/').map_or(image, |(_registry, path)| path);
        path.split('@').next().unwrap_or(path).replace(['/', '_', '.'], "-")
    }

    /// The BSL/VSL `config` MVO writes: the region on AWS, none on GCP.
    fn location_config(&self) -> Option<Value> {
        match self {
            MvoCloud::Aws { region } => Some(json!({"region": region})),
            MvoCloud::Gcp => None,
        }
    }
}

/// What [`install`] created, for tests to refer to.
#[derive(Debug, Clone)]
pub struct MvoState {
    /// The namespace standing for `openshift-velero`.
    pub namespace: String,
    /// The cloud.
    pub cloud: MvoCloud,
    /// The bucket MVO recorded in status.
    pub bucket: String,
    /// UID of `VeleroInstall/cluster`.
    pub install_uid: String,
    /// Name of the MVO operator pod that owns the lock.
    pub operator_pod: String,
}

/// The VeleroInstall kind.
pub fn velero_install_resource() -> ApiResource {
    resource("managed.openshift.io", "v1alpha2", "VeleroInstall")
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn mvo_write() -> PostParams {
    PostParams { field_manager: Some(MVO_MANAGER.into()), ..Default::default() }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The controller owner reference controller-runtime's `SetControllerReference` writes.
fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

/// Creates `object` (a full manifest) as MVO does: a plain create by MVO's manager.
async fn create(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    object: Value,
) -> kube::Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let object: DynamicObject = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
    api.create(&mvo_write(), &object).await
}

/// Creates MVO's whole state in `namespace` (which stands for `openshift-velero`) for a cluster on
/// `cloud` whose bucket is `bucket`. The VeleroInstall CRD and the foreign stand-in CRDs must be
/// installed. The MVO operator pod exists and is `Running`, so its lock is held.
pub async fn install(
    client: &Client,
    namespace: &str,
    cloud: &MvoCloud,
    bucket: &str,
) -> kube::Result<MvoState> {
    // The operator pod first: its lock is the first thing MVO writes.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod_name =
        format!("managed-velero-operator-7d9f5c6b8-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"name": "managed-velero-operator"}},
        "spec": {"serviceAccountName": "managed-velero-operator",
                 "containers": [{"name": "managed-velero-operator", "image": "quay.io/app-sre/managed-velero-operator@sha256:4b1d1c1f5e2e8a6f3c2d9b0a7e6f5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4",
                                 "command": ["managed-velero-operator"]}]}
    }))
    .map_err(kube::Error::SerdeError)?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let running = json!({"status": {"phase": "Running"}});
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&running)).await?;
    let pod_uid = pod.uid().unwrap_or_default();
    let lock: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": MVO_LOCK,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}]}
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<ConfigMap>::namespaced(client.clone(), namespace).create(&mvo_write(), &lock).await?;
    operator_metrics(client, namespace).await?;
    operator_credentials_request(client, namespace, cloud).await?;

    // The VeleroInstall (created by the bundle) and MVO's status write after provisioning.
    let installs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero_install_resource());
    let install: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
        "metadata": {"name": "cluster"}, "spec": {}
    }))
    .map_err(kube::Error::SerdeError)?;
    let mut install = installs.create(&PostParams::default(), &install).await?;
    let synced =
        Timestamp::now().checked_sub(std::time::Duration::from_secs(1800)).unwrap_or(Timestamp::UNIX_EPOCH);
    install.data["status"] = json!({"storageBucket": {"name": bucket, "provisioned": true,
                                                        "lastSyncTimestamp": synced.to_string()}});
    installs.replace_status("cluster", &mvo_write(), &install).await?;
    let uid = install.uid().unwrap_or_default();
    let owner = controller_ref("managed.openshift.io/v1alpha2", "VeleroInstall", "cluster", &uid);

    let velero = |kind: &str| resource("velero.io", "v1", kind);
    create(
        client,
        namespace,
        &velero("BackupStorageLocation"),
        backup_storage_location(cloud, bucket, &owner),
    )
    .await?;
    create(client, namespace, &velero("VolumeSnapshotLocation"), volume_snapshot_location(cloud, &owner))
        .await?;
    let cr = resource("cloudcredential.openshift.io", "v1", "CredentialsRequest");
    create(client, namespace, &cr, velero_credentials_request(namespace, cloud, bucket, &owner)).await?;
    create(client, namespace, &ApiResource::erase::<Deployment>(&()), deployment(cloud, &owner)).await?;
    let service =
        create(client, namespace, &ApiResource::erase::<Service>(&()), metrics_service(&owner)).await?;
    let service_owner = controller_ref("v1", "Service", "velero-metrics", &service.uid().unwrap_or_default());
    let monitor = resource("monitoring.coreos.com", "v1", "ServiceMonitor");
    create(client, namespace, &monitor, service_monitor(&service_owner)).await?;
    Ok(MvoState {
        namespace: namespace.to_owned(),
        cloud: cloud.clone(),
        bucket: bucket.to_owned(),
        install_uid: uid,
        operator_pod: pod_name,
    })
}

/// Deletes MVO's operator pod, as a rolling replacement does. Nothing garbage-collects the lock
/// on the test API server, so it stays, owned by a pod that no longer exists.
pub async fn stop_operator_pod(client: &Client, state: &MvoState) -> kube::Result<()> {
    Api::<Pod>::namespaced(client.clone(), &state.namespace)
        .delete(&state.operator_pod, &DeleteParams::default())
        .await
        .map(drop)
}

/// MVO's `velero` Deployment: Velero 1.11's installer output with MVO's overrides and every API
/// default MVO spells out, owned by `owner`.
pub fn deployment(cloud: &MvoCloud, owner: &Value) -> Value {
    let mut env = vec![
        json!({"name": "VELERO_SCRATCH_DIR", "value": "/scratch"}),
        json!({"name": "VELERO_NAMESPACE",
               "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}),
        json!({"name": "LD_LIBRARY_PATH", "value": "/plugins"}),
    ];
    let mut mounts = vec![
        json!({"name": "plugins", "mountPath": "/plugins"}),
        json!({"name": "scratch", "mountPath": "/scratch"}),
    ];
    let mut volumes =
        vec![json!({"name": "plugins", "emptyDir": {}}), json!({"name": "scratch", "emptyDir": {}})];
    match cloud {
        MvoCloud::Aws { .. } => {
            for (name, key) in [
                ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
            ] {
                env.push(json!({"name": name,
                                "valueFrom": {"secretKeyRef": {"name": VELERO_CREDENTIALS, "key": key}}}));
            }
        }
        MvoCloud::Gcp => {
            volumes.push(json!({"name": "cloud-credentials",
                                "secret": {"secretName": VELERO_CREDENTIALS, "defaultMode": 420}}));
            mounts.push(json!({"name": "cloud-credentials", "mountPath": "/credentials"}));
            env.push(json!({"name": "GOOGLE_APPLICATION_CREDENTIALS",
                            "value": "/credentials/service_account.json"}));
        }
    }
    mounts.push(json!({"name": "trusted-ca-bundle", "mountPath": "/etc/pki/ca-trust/extracted/pem", "readOnly": true}));
    volumes.push(json!({"name": "trusted-ca-bundle",
                        "configMap": {"name": "trusted-ca-bundle", "defaultMode": 420,
                                      "items": [{"key": "ca-bundle.crt", "path": "tls-ca-bundle.pem"}]}}));
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "velero", "labels": labels(&[("component", "velero")]), "ownerReferences": [owner]},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"deploy": "velero"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "template": {
                "metadata": {
                    "labels": labels(&[("component", "velero"), ("deploy", "velero")]),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8085",
                                    "prometheus.io/path": "/metrics"}
                },
                "spec": {
                    "restartPolicy": "Always",
                    "serviceAccountName": "velero",
                    "serviceAccount": "velero",
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                    "initContainers": [{
                        "name": cloud.plugin_container(),
                        "image": cloud.plugin_image(),
                        "imagePullPolicy": "IfNotPresent",
                        "volumeMounts": [{"name": "plugins", "mountPath": "/target"}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "containers": [{
                        "name": "velero",
                        "image": MVO_VELERO_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/velero"],
                        "args": ["server"],
                        "ports": [{"name": "metrics", "containerPort": 8085, "protocol": "TCP"}],
                        "env": env,
                        "volumeMounts": mounts,
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "volumes": volumes,
                    "tolerations": [{"key": INFRA_NODE, "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 1,
                            "preference": {"matchExpressions": [{"key": INFRA_NODE, "operator": "Exists"}]}
                        }],
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                            "matchExpressions": [{"key": "beta.kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]
                        }]}
                    }}
                }
            }
        }
    })
}

fn backup_storage_location(cloud: &MvoCloud, bucket: &str, owner: &Value) -> Value {
    let mut spec =
        json!({"provider": cloud.provider(), "objectStorage": {"bucket": bucket}, "default": true});
    if let Some(config) = cloud.location_config() {
        spec["config"] = config;
    }
    json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
           "metadata": {"name": "default", "labels": labels(&[("component", "velero")]), "ownerReferences": [owner]},
           "spec": spec})
}

fn volume_snapshot_location(cloud: &MvoCloud, owner: &Value) -> Value {
    let mut spec = json!({"provider": cloud.provider()});
    if let Some(config) = cloud.location_config() {
        spec["config"] = config;
    }
    json!({"apiVersion": "velero.io/v1", "kind": "VolumeSnapshotLocation",
           "metadata": {"name": "default", "labels": labels(&[("component", "velero")]), "ownerReferences": [owner]},
           "spec": spec})
}

fn velero_credentials_request(namespace: &str, cloud: &MvoCloud, bucket: &str, owner: &Value) -> Value {
    let provider_spec = match cloud {
        MvoCloud::Aws { .. } => json!({
            "apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderSpec",
            "statementEntries": [
                {"effect": "Allow", "resource": "*",
                 "action": ["ec2:DescribeVolumes", "ec2:DescribeSnapshots", "ec2:CreateTags",
                            "ec2:CreateVolume", "ec2:CreateSnapshot", "ec2:DeleteSnapshot"]},
                {"effect": "Allow", "resource": format!("arn:aws:s3:::{bucket}/*"),
                 "action": ["s3:GetObject", "s3:DeleteObject", "s3:PutObject", "s3:AbortMultipartUpload",
                            "s3:ListMultipartUploadParts"]},
                {"effect": "Allow", "resource": format!("arn:aws:s3:::{bucket}"), "action": ["s3:ListBucket"]}
            ]
        }),
        MvoCloud::Gcp => json!({
            "apiVersion": "cloudcredential.openshift.io/v1", "kind": "GCPProviderSpec",
            "predefinedRoles": ["roles/compute.storageAdmin", "roles/iam.serviceAccountUser",
                                "roles/cloudmigration.storageaccess"],
            "skipServiceCheck": true
        }),
    };
    json!({"apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
           "metadata": {"name": VELERO_CREDENTIALS, "ownerReferences": [owner]},
           "spec": {"secretRef": {"name": VELERO_CREDENTIALS, "namespace": namespace},
                    "providerSpec": provider_spec}})
}

fn metrics_service(owner: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "velero-metrics", "labels": {"name": "velero"}, "ownerReferences": [owner]},
           "spec": {"ports": [{"name": "metrics", "protocol": "TCP", "port": 8085, "targetPort": 8085}],
                    "selector": labels(&[("component", "velero"), ("deploy", "velero")]),
                    "type": "ClusterIP", "sessionAffinity": "None"}})
}

fn service_monitor(service_owner: &Value) -> Value {
    json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
           "metadata": {"name": "velero-metrics", "labels": {"name": "velero"}, "ownerReferences": [service_owner]},
           "spec": {"selector": {"matchLabels": {"name": "velero"}}, "endpoints": [{"port": "metrics"}]}})
}

/// MVO's own metrics Service and ServiceMonitor (operator-custom-metrics), unowned.
async fn operator_metrics(client: &Client, namespace: &str) -> kube::Result<()> {
    let selector = json!({"name": "managed-velero-operator"});
    create(
        client,
        namespace,
        &ApiResource::erase::<Service>(&()),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": MVO_OPERATOR_METRICS, "labels": selector},
            "spec": {"ports": [{"name": "http-metrics", "port": 8383, "protocol": "TCP", "targetPort": 8383}],
                     "selector": selector, "type": "ClusterIP", "sessionAffinity": "None"}
        }),
    )
    .await?;
    let monitor = resource("monitoring.coreos.com", "v1", "ServiceMonitor");
    create(
        client,
        namespace,
        &monitor,
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": MVO_OPERATOR_METRICS, "labels": selector},
            "spec": {"selector": {"matchLabels": selector}, "endpoints": [{"port": "http-metrics"}]}
        }),
    )
    .await
    .map(drop)
}

/// MVO's static CredentialsRequest for the operator's own access (deploy-extras), in the
/// operator's namespace, created by the bundle rather than by MVO.
async fn operator_credentials_request(
    client: &Client,
    namespace: &str,
    cloud: &MvoCloud,
) -> kube::Result<()> {
    let (name, provider_spec) = match cloud {
        MvoCloud::Aws { .. } => (
            "managed-velero-operator-iam-credentials-aws",
            json!({"apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderSpec",
                   "statementEntries": [{"effect": "Allow", "resource": "*",
                       "action": ["s3:CreateBucket", "s3:DeleteObjectTagging", "s3:GetBucketLocation",
                                  "s3:GetBucketTagging", "s3:ListAllMyBuckets", "s3:ListBucket", "s3:PutBucketAcl",
                                  "s3:PutBucketPublicAccessBlock", "s3:PutBucketTagging",
                                  "s3:PutEncryptionConfiguration", "s3:PutLifecycleConfiguration"]}]}),
        ),
        MvoCloud::Gcp => (
            "managed-velero-operator-iam-credentials-gcp",
            json!({"apiVersion": "cloudcredential.openshift.io/v1", "kind": "GCPProviderSpec",
                   "predefinedRoles": ["roles/storage.admin", "roles/iam.serviceAccountUser"],
                   "skipServiceCheck": true}),
        ),
    };
    let cr = resource("cloudcredential.openshift.io", "v1", "CredentialsRequest");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &cr);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
        "metadata": {"name": name},
        "spec": {"secretRef": {"name": MVO_OPERATOR_SECRET, "namespace": namespace}, "providerSpec": provider_spec}
    }))
    .map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &object).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_init_container_is_named_after_the_image_path() {
        let aws = MvoCloud::Aws { region: "eu-west-1".into() };
        assert_eq!(aws.plugin_container(), "oadp-oadp-velero-plugin-for-aws-rhel8");
        assert_eq!(MvoCloud::Gcp.plugin_container(), "oadp-oadp-velero-plugin-for-gcp-rhel8");
    }

    #[test]
    fn the_deployment_carries_mvo_credentials_wiring_and_pinned_images() {
        let owner = controller_ref("managed.openshift.io/v1alpha2", "VeleroInstall", "cluster", "u");
        let aws = deployment(&MvoCloud::Aws { region: "eu-west-1".into() }, &owner);
        let env = aws["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(env.contains("AWS_ACCESS_KEY_ID") && env.contains("AWS_SECRET_ACCESS_KEY"));
        let gcp = deployment(&MvoCloud::Gcp, &owner);
        let volumes = gcp["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(volumes.contains("cloud-credentials") && !gcp.to_string().contains("AWS_"));
        let pod = &aws["spec"]["template"]["spec"];
        for container in ["initContainers", "containers"].iter().flat_map(|l| pod[l].as_array().expect(l)) {
            assert!(container["image"].as_str().is_some_and(|i| i.contains("@sha256:")), "{container}");
        }
        let _: Deployment = serde_json::from_value(aws).expect("a valid Deployment");
        let _: Deployment = serde_json::from_value(gcp).expect("a valid Deployment");
    }
}
