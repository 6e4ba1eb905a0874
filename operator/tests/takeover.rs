//! Taking over a cluster that ran the Go MVO (SPEC 15), starting from `mvo_testkit::mvo`'s copy of
//! MVO's state on the real test API server: AWS (the in-memory cloud, provider `aws`) and GCP (the
//! GCP provider on the in-memory GCS control plane). One test per required behaviour and cloud.

use std::{collections::BTreeMap, process::Stdio, sync::Arc, time::Duration};

use google_cloud_storage::client::StorageControl;
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Event, Pod, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::events::Reporter,
};
use mvo_core::{Credential, CredentialMaterial, Owner, Platform, ProviderConfig, Secret as Sensitive};
use mvo_operator::{
    controller,
    crd::VeleroInstall,
    infrastructure::Infrastructure,
    mvo_lock::{self, LockState},
    reconcile::{self, Context, build, validate::DEFAULT_VELERO_IMAGE},
};
use mvo_testkit::{
    Backdoor, InMemoryPlatform,
    env::{DeployRbac, KubeEnv, foreign_crds, install_crds},
    gcs::{GcsBackdoor, GcsControlPlane, Received},
    jobs,
    mvo::{self, MVO_MANAGER, MVO_VELERO_IMAGE, MvoCloud, MvoState},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::{OnceCell, mpsc},
};

const INFRA: &str = "c1-x8k2p";
const AWS_REGION: &str = "eu-west-1";
const GCP_REGION: &str = "europe-west4";
const GCP_PROJECT: &str = "mvo-takeover-project";
/// The bucket MVO created and recorded (MVO names buckets `managed-velero-backups-<uuid>`).
const MVO_BUCKET: &str = "managed-velero-backups-1f0c3a2e-9b5d-4c8e-a7f1-0d2b6e4c8a91";

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Which cloud the cluster that ran MVO is on.
#[derive(Clone, Copy, Debug)]
enum Cloud {
    Aws,
    Gcp,
}

impl Cloud {
    fn mvo(self) -> MvoCloud {
        match self {
            Cloud::Aws => MvoCloud::Aws { region: AWS_REGION.into() },
            Cloud::Gcp => MvoCloud::Gcp,
        }
    }

    /// The key the cloud credential operator mints Velero's credentials under on this cloud.
    fn credentials_key(self) -> &'static str {
        match self {
            Cloud::Aws => "credentials",
            Cloud::Gcp => "service_account.json",
        }
    }
}

/// Bucket names in the cloud.
type Buckets = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// A namespace holding MVO's state, and the new operator's reconcile context.
struct Takeover {
    client: Client,
    ns: String,
    mvo: MvoState,
    ctx: Arc<Context>,
    buckets: Buckets,
}

async fn shared_client() -> Client {
    let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    CRDS.get_or_init(|| async {
        let mut crds = foreign_crds().expect("stand-in CRDs");
        crds.push(mvo_operator::crd::crd());
        install_crds(&client, crds).await.expect("CRDs");
    })
    .await;
    client
}

fn gcp_platform(plane: &GcsControlPlane) -> mvo_provider_gcp::GcpPlatform {
    let config = ProviderConfig {
        platform: mvo_provider_gcp::PLATFORM.into(),
        region: Some(GCP_REGION.into()),
        facts: [(mvo_provider_gcp::PROJECT_ID_FACT.to_owned(), GCP_PROJECT.to_owned())].into(),
        infrastructure_name: INFRA.into(),
        ..Default::default()
    };
    let credentials = mvo_core::StaticCredentialSource::new(Credential {
        material: CredentialMaterial::JsonDocument(Sensitive::new("{}")),
        expires_at: None,
    });
    mvo_provider_gcp::GcpPlatform::builder(&config)
        .client(StorageControl::from_stub(plane.stub(GCP_PROJECT)))
        .credential_source(Arc::new(credentials))
        .build()
        .expect("GCP platform")
}

/// The cloud with MVO's bucket in it, the platform the new operator uses, and a view of the
/// bucket names.
async fn cloud_with_mvo_bucket(cloud: Cloud) -> (Arc<dyn Platform>, Buckets) {
    match cloud {
        Cloud::Aws => {
            let platform = InMemoryPlatform::new(AWS_REGION);
            platform.cloud().insert_bucket("self", MVO_BUCKET, AWS_REGION, Owner::new(INFRA).tags());
            let view = platform.clone();
            (Arc::new(platform), Box::new(move || view.cloud().bucket_names()))
        }
        Cloud::Gcp => {
            let plane = GcsControlPlane::new();
            GcsBackdoor::new(plane.clone(), GCP_PROJECT)
                .create_plain_bucket(MVO_BUCKET, GCP_REGION, Owner::new(INFRA).labels())
                .await
                .expect("MVO's bucket");
            let platform = Arc::new(gcp_platform(&plane));
            let buckets = move || {
                let created = plane.received().into_iter().filter_map(|r| match r {
                    Received::CreateBucket { bucket, .. } => Some(bucket),
                    _ => None,
                });
                plane.bucket(MVO_BUCKET).map(|_| MVO_BUCKET.to_owned()).into_iter().chain(created).collect()
            };
            (platform, Box::new(buckets))
        }
    }
}

/// What makes this namespace's stand-in CRD names unique on the shared API server.
fn crd_suffix(namespace: &str) -> &str {
    namespace.rsplit('-').next().unwrap_or(namespace)
}

impl Takeover {
    /// MVO's state for `cloud` with Velero running and its secret minted, as on a real cluster.
    async fn new(cloud: Cloud) -> Takeover {
        let client = shared_client().await;
        let env = KubeEnv::shared().expect("test API server");
        let ns = env.namespace(&client, "takeover").await.expect("namespace");
        let (platform, buckets) = cloud_with_mvo_bucket(cloud).await;
        let mvo = mvo::install(&client, &ns, &cloud.mvo(), MVO_BUCKET).await.expect("MVO's state");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                            "stringData": {cloud.credentials_key(): "minted by the cloud credential operator"}});
        secrets
            .patch("velero-iam-credentials", &PatchParams::apply("cco").force(), &Patch::Apply(&secret))
            .await
            .expect("secret");
        let reporter = Reporter { controller: "test".into(), instance: None };
        // The operator code acts as its ServiceAccount with deploy/'s RBAC; the set-up is admin.
        let operator = env.operator_client(&[&ns]).await.expect("operator client");
        // The CRD name this namespace's CRD Job "prints" in place of the real Velero CRDs.
        DeployRbac::from_repo()
            .expect("deploy/ RBAC")
            .grant_crd_names(&client, crd_suffix(&ns), &[format!("widgets{}.velero.io", crd_suffix(&ns))])
            .await
            .expect("CRD names");
        let ctx = Arc::new(Context::new(operator, platform, INFRA.into(), reporter));
        let t = Takeover { client, ns, mvo, ctx, buckets };
        t.deployment_available().await;
        t
    }

    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, resource)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn install(&self) -> VeleroInstall {
        Api::<VeleroInstall>::namespaced(self.client.clone(), &self.ns).get("cluster").await.expect("install")
    }

    async fn reconcile(&self) {
        let vi = Arc::new(self.install().await);
        reconcile::reconcile(vi, self.ctx.clone()).await.expect("reconcile");
    }

    /// What the Deployment controller and kubelet report once Velero's current generation rolled out.
    async fn deployment_available(&self) {
        let generation = self.deployments().get("velero").await.expect("Deployment").metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                       "availableReplicas": 1, "readyReplicas": 1}});
        self.deployments()
            .patch_status("velero", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("Deployment status");
    }

    /// The Job controller and kubelet running the CRD Job: it succeeds and its pod, owned by the
    /// Job, "prints" one `velero.io` CRD (named per namespace: CRDs are cluster-wide).
    async fn complete_crds_job(&self) {
        let listed = Api::<Job>::namespaced(self.client.clone(), &self.ns).list(&Default::default()).await;
        let listed = listed.expect("jobs").items;
        assert_eq!(listed.len(), 1, "one CRD Job");
        let crd = format!("widgets{}.velero.io", crd_suffix(&self.ns));
        jobs::complete_crd_job(&self.client, &listed[0], &jobs::crd_job_output(&[&crd]), true)
            .await
            .expect("CRD Job completed");
    }

    /// The whole takeover: the first pass (CRD Job started, the other objects taken over), the
    /// Job completing, the pass that takes over the BSL and VSL, Velero rolling out.
    async fn take_over(&self) {
        self.reconcile().await;
        self.complete_crds_job().await;
        self.reconcile().await;
        self.deployment_available().await;
        self.reconcile().await;
    }

    /// Every object of MVO's Velero install, `Kind/name -> object`.
    async fn velero_objects(&self) -> BTreeMap<String, DynamicObject> {
        let mut objects = BTreeMap::new();
        for kind in controller::owned_kinds() {
            for object in self.api(&kind).list(&Default::default()).await.expect("list").items {
                objects.insert(format!("{}/{}", kind.kind, object.name_any()), object);
            }
        }
        objects
    }

    /// resourceVersions of the VeleroInstall and every owned object.
    async fn resource_versions(&self) -> Vec<String> {
        let mut versions = vec![self.install().await.resource_version().unwrap_or_default()];
        for (name, object) in self.velero_objects().await {
            versions.push(format!("{name}={}", object.resource_version().unwrap_or_default()));
        }
        versions
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let all = events.list(&Default::default()).await.expect("events").items;
        all.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect()
    }

    async fn condition(&self, type_: &str) -> String {
        let vi = self.install().await;
        let conditions = vi.status.map(|s| s.conditions).unwrap_or_default();
        conditions.into_iter().find(|c| c.type_ == type_).map(|c| c.status).unwrap_or_default()
    }
}

/// The Velero objects MVO owned through the VeleroInstall (directly or via the Service).
const MVO_OBJECTS: [&str; 6] = [
    "BackupStorageLocation/default",
    "CredentialsRequest/velero-iam-credentials",
    "Deployment/velero",
    "Service/velero-metrics",
    "ServiceMonitor/velero-metrics",
    "VolumeSnapshotLocation/default",
];

fn controller_refs(object: &DynamicObject) -> Vec<String> {
    object
        .owner_references()
        .iter()
        .filter(|r| r.controller == Some(true))
        .map(|r| format!("{}/{}/{}", r.kind, r.name, r.uid))
        .collect()
}

// --- No object deleted and re-created, the bucket adopted, one controller reference each.

async fn objects_are_kept_bucket_adopted_and_controlled_by_the_install(cloud: Cloud) {
    let t = Takeover::new(cloud).await;
    let before = t.velero_objects().await;
    for name in MVO_OBJECTS {
        assert!(before.contains_key(name), "fixture lacks {name}");
    }
    assert_eq!(
        controller_refs(&before["ServiceMonitor/velero-metrics"]).len(),
        1,
        "MVO's ServiceMonitor is controlled by the Service"
    );
    assert!(controller_refs(&before["ServiceMonitor/velero-metrics"])[0].starts_with("Service/"));

    t.take_over().await;
    assert_eq!(t.condition("Ready").await, "True", "{:?}", t.install().await.status);
    assert_eq!((t.buckets)(), [MVO_BUCKET], "the bucket is adopted, none created");
    let status = t.install().await.status.and_then(|s| s.storage_bucket).expect("storageBucket");
    assert_eq!((status.name.as_deref(), status.provisioned), (Some(MVO_BUCKET), true));

    let after = t.velero_objects().await;
    let expected = format!("VeleroInstall/cluster/{}", t.mvo.install_uid);
    for name in MVO_OBJECTS {
        assert_eq!(after[name].uid(), before[name].uid(), "{name} was deleted and re-created");
    }
    for (name, object) in &after {
        if MVO_OBJECTS.contains(&name.as_str()) || name.starts_with("Job/") {
            assert_eq!(
                controller_refs(object),
                std::slice::from_ref(&expected),
                "{name}: exactly one controller, the install"
            );
        } else {
            // MVO's operator-level objects (metrics, static CredentialsRequest) belong to the bundle.
            assert!(object.owner_references().is_empty(), "{name} must be left alone");
        }
    }
    assert_eq!(after["ServiceMonitor/velero-metrics"].owner_references().len(), 1, "the Service ref is gone");
}

#[tokio::test]
async fn aws_takeover_keeps_every_object_adopts_the_bucket_and_leaves_one_controller() {
    objects_are_kept_bucket_adopted_and_controlled_by_the_install(Cloud::Aws).await;
}

#[tokio::test]
async fn gcp_takeover_keeps_every_object_adopts_the_bucket_and_leaves_one_controller() {
    objects_are_kept_bucket_adopted_and_controlled_by_the_install(Cloud::Gcp).await;
}

// --- MVO's leftover fields removed, the Deployment written once, then zero writes per resync.

fn pod_spec(d: &Deployment) -> k8s_openapi::api::core::v1::PodSpec {
    d.spec.clone().and_then(|s| s.template.spec).expect("pod spec")
}

async fn leftovers_are_removed_in_one_write_then_nothing_is_written(cloud: Cloud) {
    let t = Takeover::new(cloud).await;
    let before = t.deployments().get("velero").await.expect("MVO's Deployment");
    let plugin = cloud.mvo().plugin_container();
    assert!(pod_spec(&before).init_containers.unwrap_or_default().iter().any(|c| c.name == plugin));

    t.take_over().await;
    let after = t.deployments().get("velero").await.expect("Deployment");
    assert_eq!(after.metadata.generation, before.metadata.generation.map(|g| g + 1), "one spec write");
    let pod = pod_spec(&after);
    let inits: Vec<String> = pod.init_containers.unwrap_or_default().into_iter().map(|c| c.name).collect();
    assert_eq!(inits, ["velero-plugin"], "MVO's init container {plugin} is removed");
    let velero = &pod.containers[0];
    let env: Vec<String> = velero.env.iter().flatten().map(|e| e.name.clone()).collect();
    assert!(!env.iter().any(|e| e.starts_with("AWS_ACCESS_KEY") || e.starts_with("AWS_SECRET")), "{env:?}");
    let expected_env: Vec<String> = build::velero_objects(
        &reconcile::validate::validate(&t.install().await, t.ctx.platform.as_ref()).expect("valid"),
        &t.ctx
            .platform
            .velero(&mvo_core::VeleroInput {
                bucket: MVO_BUCKET,
                section: &mvo_core::NO_SECTION,
                short_lived: None,
            })
            .expect("long-lived Velero facts"),
        build::VeleroCredentials::LongLived,
    )
    .into_iter()
    .find(|o| o.resource.kind == "Deployment")
    .map(|o| o.object["spec"]["template"]["spec"]["containers"][0]["env"].clone())
    .and_then(|e| e.as_array().cloned())
    .unwrap_or_default()
    .iter()
    .filter_map(|e| e["name"].as_str().map(str::to_owned))
    .collect();
    assert_eq!(env, expected_env, "exactly the env this operator declares");
    let volumes: Vec<String> = pod.volumes.iter().flatten().map(|v| v.name.clone()).collect();
    assert_eq!(volumes.iter().filter(|v| *v == "cloud-credentials").count(), 1, "{volumes:?}");
    let secret_volume = pod.volumes.iter().flatten().find(|v| v.name == "cloud-credentials").expect("volume");
    assert_eq!(
        secret_volume.secret.as_ref().and_then(|s| s.default_mode),
        None,
        "MVO's defaultMode: 420 is gone"
    );
    let affinity = pod.affinity.and_then(|a| a.node_affinity).expect("node affinity");
    assert!(
        affinity.required_during_scheduling_ignored_during_execution.is_none(),
        "MVO's amd64 rule is gone"
    );
    assert_ne!(
        after.spec.as_ref().and_then(|s| s.revision_history_limit),
        Some(2),
        "MVO's revisionHistoryLimit"
    );
    for (name, object) in
        t.velero_objects().await.into_iter().filter(|(n, _)| MVO_OBJECTS.contains(&n.as_str()))
    {
        let legacy = object
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(MVO_MANAGER) && m.operation.as_deref() == Some("Update"));
        assert!(!legacy, "{name} still has MVO's Update entry");
    }
    let service =
        t.api(&ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&())).get("velero-metrics").await;
    let service = service.expect("Service");
    assert_eq!(service.data["spec"]["selector"], json!({"deploy": "velero"}), "MVO's selector key is gone");
    let monitor = t.api(&build::service_monitor()).get("velero-metrics").await.expect("ServiceMonitor");
    assert!(monitor.labels().get("name").is_none(), "MVO's label is gone: {:?}", monitor.labels());

    let versions = t.resource_versions().await;
    t.reconcile().await;
    t.reconcile().await;
    assert_eq!(t.resource_versions().await, versions, "a resync after the takeover wrote to Kubernetes");
}

#[tokio::test]
async fn aws_takeover_removes_mvo_fields_in_one_write_then_writes_nothing() {
    leftovers_are_removed_in_one_write_then_nothing_is_written(Cloud::Aws).await;
}

#[tokio::test]
async fn gcp_takeover_removes_mvo_fields_in_one_write_then_writes_nothing() {
    leftovers_are_removed_in_one_write_then_nothing_is_written(Cloud::Gcp).await;
}

// --- No two CredentialsRequests target one Secret once deploy/ replaced MVO's bundle.

/// deploy/'s CredentialsRequests, placed in `namespace` (standing for `openshift-velero`).
fn deploy_credentials_requests(namespace: &str) -> Vec<Value> {
    ["credentials_request_aws.yaml", "credentials_request_gcp.yaml", "credentials_request_azure.yaml"]
        .iter()
        .map(|file| {
            let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).expect("deploy/ manifest");
            let mut object: Value = serde_saphyr::from_str(&text).expect("YAML");
            assert_eq!(object["metadata"]["namespace"], "openshift-velero", "{file} replaces MVO's in place");
            object["metadata"]["namespace"] = json!(namespace);
            object["spec"]["secretRef"]["namespace"] = json!(namespace);
            object
        })
        .collect()
}

/// The providerSpec kind the cloud credential operator acts on for `cloud` (it ignores the others).
fn acted_on(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "AWSProviderSpec",
        Cloud::Gcp => "GCPProviderSpec",
    }
}

async fn one_credentials_request_per_secret(cloud: Cloud) {
    let t = Takeover::new(cloud).await;
    // The administrator applies deploy/ (kubectl apply), then the operator takes over.
    let requests = t.api(&build::credentials_request());
    for object in deploy_credentials_requests(&t.ns) {
        let name = object["metadata"]["name"].as_str().expect("name").to_owned();
        requests
            .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&object))
            .await
            .expect("apply");
    }
    t.take_over().await;
    // The AWS case runs the operator on the in-memory cloud, whose Velero request has a kind of
    // its own; the credential operator acts on that one as on the cloud's.
    let velero_kind = t
        .ctx
        .platform
        .velero(&mvo_core::VeleroInput {
            bucket: MVO_BUCKET,
            section: &mvo_core::NO_SECTION,
            short_lived: None,
        })
        .expect("Velero facts")
        .credentials_request["kind"]
        .clone();
    let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let all: Api<DynamicObject> = Api::all_with(t.client.clone(), &build::credentials_request());
    for request in all.list(&Default::default()).await.expect("list").items {
        let secret = &request.data["spec"]["secretRef"];
        if secret["namespace"] != t.ns.as_str()
            || (request.data["spec"]["providerSpec"]["kind"] != acted_on(cloud)
                && request.data["spec"]["providerSpec"]["kind"] != velero_kind)
        {
            continue;
        }
        let key = format!(
            "{}/{}",
            secret["namespace"].as_str().unwrap_or(""),
            secret["name"].as_str().unwrap_or("")
        );
        targets.entry(key).or_default().push(format!(
            "{}/{}",
            request.namespace().unwrap_or_default(),
            request.name_any()
        ));
    }
    for (secret, requests) in &targets {
        assert_eq!(requests.len(), 1, "Secret {secret} is the target of {requests:?}");
    }
    assert!(targets.contains_key(&format!("{}/velero-iam-credentials", t.ns)), "{targets:?}");
    assert!(
        targets.contains_key(&format!("{}/managed-velero-operator-iam-credentials", t.ns)),
        "{targets:?}"
    );
}

#[tokio::test]
async fn aws_takeover_leaves_one_credentials_request_per_secret() {
    one_credentials_request_per_secret(Cloud::Aws).await;
}

#[tokio::test]
async fn gcp_takeover_leaves_one_credentials_request_per_secret() {
    one_credentials_request_per_secret(Cloud::Gcp).await;
}

// --- The image change is one rollout, reported by an event.

async fn image_change_is_one_rollout_with_an_event(cloud: Cloud) {
    let t = Takeover::new(cloud).await;
    let before = t.deployments().get("velero").await.expect("Deployment");
    assert_eq!(pod_spec(&before).containers[0].image.as_deref(), Some(MVO_VELERO_IMAGE));

    t.take_over().await;
    t.reconcile().await;
    let after = t.deployments().get("velero").await.expect("Deployment");
    assert_eq!(pod_spec(&after).containers[0].image.as_deref(), Some(DEFAULT_VELERO_IMAGE));
    assert_eq!(after.metadata.generation, before.metadata.generation.map(|g| g + 1), "one rollout");
    let events = t.events("VeleroImageChanged").await;
    assert_eq!(events.len(), 1, "one event for one rollout: {events:?}");
    let note = events[0].message.clone().unwrap_or_default();
    assert!(note.contains(MVO_VELERO_IMAGE) && note.contains(DEFAULT_VELERO_IMAGE), "{note}");
    assert!(note.contains(cloud.mvo().plugin_image()), "the plugin image change is named: {note}");
    let taken_over = t.events("VeleroObjectsTakenOver").await;
    let notes: Vec<String> = taken_over.iter().filter_map(|e| e.message.clone()).collect();
    assert!(notes.iter().any(|n| n.contains("Deployment/velero")), "the takeover is reported: {notes:?}");
}

#[tokio::test]
async fn aws_image_change_is_one_rollout_reported_by_an_event() {
    image_change_is_one_rollout_with_an_event(Cloud::Aws).await;
}

#[tokio::test]
async fn gcp_image_change_is_one_rollout_reported_by_an_event() {
    image_change_is_one_rollout_with_an_event(Cloud::Gcp).await;
}

// --- MVO's leader-for-life lock: held by a live pod, the operator waits; released, it proceeds.

#[tokio::test]
async fn the_lock_is_held_by_a_running_pod_and_released_by_an_evicted_or_deleted_one() {
    for cloud in [Cloud::Aws, Cloud::Gcp] {
        let t = Takeover::new(cloud).await;
        let state = mvo_lock::observe(&t.client, &t.ns).await.expect("observe");
        assert_eq!(state, LockState::Held { pod: t.mvo.operator_pod.clone() });
        let waiting = tokio::time::timeout(
            Duration::from_millis(500),
            mvo_lock::wait_until_released(&t.client, &t.ns, Duration::from_millis(50)),
        );
        assert!(waiting.await.is_err(), "must wait while MVO's pod runs");

        // Evicted (phase Failed): its containers no longer run, so the lock no longer counts.
        let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.ns);
        let evicted = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        pods.patch_status(&t.mvo.operator_pod, &PatchParams::default(), &Patch::Merge(&evicted))
            .await
            .expect("evicted");
        let state = mvo_lock::observe(&t.client, &t.ns).await.expect("observe");
        assert!(matches!(&state, LockState::Released { reason } if reason.contains("failed")), "{state:?}");
        let running = json!({"status": {"phase": "Running", "reason": null}});
        pods.patch_status(&t.mvo.operator_pod, &PatchParams::default(), &Patch::Merge(&running))
            .await
            .expect("running again");
        assert!(mvo_lock::observe(&t.client, &t.ns).await.expect("observe").is_held());

        mvo::stop_operator_pod(&t.client, &t.mvo).await.expect("MVO pod deleted");
        let state = mvo_lock::observe(&t.client, &t.ns).await.expect("observe");
        assert!(matches!(&state, LockState::Released { reason } if reason.contains("gone")), "{state:?}");
        tokio::time::timeout(
            Duration::from_secs(2),
            mvo_lock::wait_until_released(&t.client, &t.ns, Duration::from_millis(50)),
        )
        .await
        .expect("proceeds once the pod is gone");
    }
}

/// A running operator binary and its JSON log lines.
struct Operator {
    child: Child,
    logs: mpsc::UnboundedReceiver<Value>,
}

impl Operator {
    fn start(env: &KubeEnv) -> Operator {
        let mut child = Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"))
            .args([
                "run",
                "--leader-election",
                "false",
                "--log-format",
                "json",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            // deploy/'s RBAC is applied by the caller first (KubeEnv::operator_kubeconfig).
            .env("KUBECONFIG", env.operator_kubeconfig_path())
            .env("WATCH_NAMESPACE", "openshift-velero")
            .env("POD_NAME", "managed-velero-operator-rs-0")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("operator starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(entry);
                }
            }
        });
        Operator { child, logs }
    }

    async fn log(&mut self, message: &str, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, async {
            while let Some(entry) = self.logs.recv().await {
                if entry["fields"]["message"] == message {
                    return Some(entry);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// A dedicated API server with MVO's state in `openshift-velero` and the Infrastructure of `cloud`.
async fn cluster_that_ran_mvo(cloud: Cloud) -> (KubeEnv, Client, MvoState) {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(&client, crds).await.expect("CRDs");
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let params = PatchParams::apply("takeover-test").force();
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let platform = match cloud {
        Cloud::Aws => json!({"type": "AWS", "aws": {"region": AWS_REGION}}),
        Cloud::Gcp => json!({"type": "GCP", "gcp": {"region": GCP_REGION, "projectID": GCP_PROJECT}}),
    };
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "status": {"infrastructureName": INFRA, "platformStatus": platform}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    let state =
        mvo::install(&client, "openshift-velero", &cloud.mvo(), MVO_BUCKET).await.expect("MVO's state");
    (env, client, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_operator_waits_while_mvo_runs_and_starts_once_its_pod_is_gone() {
    let (env, client, state) = cluster_that_ran_mvo(Cloud::Aws).await;
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), "openshift-velero");
    let before = installs.get("cluster").await.expect("install").resource_version();

    env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC");
    let mut operator = Operator::start(&env);
    assert!(
        operator
            .log("waiting: the Go MVO holds its leader-for-life lock", Duration::from_secs(30))
            .await
            .is_some(),
        "announces that it waits for MVO"
    );
    assert!(
        operator.log("controller starting", Duration::from_secs(6)).await.is_none(),
        "must not reconcile while MVO's pod runs"
    );
    assert_eq!(installs.get("cluster").await.expect("install").resource_version(), before, "nothing written");

    mvo::stop_operator_pod(&client, &state).await.expect("MVO pod deleted");
    assert!(
        operator.log("controller starting", Duration::from_secs(15)).await.is_some(),
        "proceeds once MVO's pod is gone"
    );
    drop(operator.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_operator_proceeds_at_once_when_the_lock_owner_is_already_gone() {
    let (env, client, state) = cluster_that_ran_mvo(Cloud::Gcp).await;
    mvo::stop_operator_pod(&client, &state).await.expect("MVO pod deleted");
    let lock: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "openshift-velero");
    assert!(
        lock.get_opt(mvo::MVO_LOCK).await.expect("get").is_some(),
        "the lock outlives the pod here (no GC)"
    );

    env.operator_kubeconfig(&[]).await.expect("deploy/ RBAC");
    let mut operator = Operator::start(&env);
    let released = operator.log("the Go MVO's lock is no longer held", Duration::from_secs(30)).await;
    assert!(released.is_some(), "sees the lock's owner is gone");
    assert!(operator.log("controller starting", Duration::from_secs(10)).await.is_some());
    drop(operator.child);
}
