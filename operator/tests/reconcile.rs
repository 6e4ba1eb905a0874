//! The reconcile pipeline against the real test API server, with the in-memory cloud where the
//! cloud is not the point. Each test works in its own namespace of one shared API server.
//! The operator code under test runs as the operator's ServiceAccount with exactly `deploy/`'s
//! RBAC (its Role granted in the test namespace, see `DeployRbac::grant_in`); the test's own
//! set-up, which plays the user and the cluster's other controllers, is admin.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::events::Reporter,
};
use mvo_core::{Platform, bucket::BUCKET_NAME_PREFIX};
use mvo_operator::{
    controller,
    crd::VeleroInstall,
    reconcile::{self, Context, build},
};
use mvo_testkit::{
    Fault, InMemoryCloud, InMemoryPlatform,
    env::{DeployRbac, KubeEnv, foreign_crds, install_crds},
    jobs,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const INFRA: &str = "c1-x8k2p";
const REGION: &str = "eu-west-1";

static CRDS: OnceCell<()> = OnceCell::const_new();

struct Fixture {
    /// Admin: the test itself, the user and the cluster's other controllers.
    client: Client,
    /// The operator's ServiceAccount with deploy/'s RBAC: everything the operator code does.
    operator: Client,
    namespace: String,
    platform: InMemoryPlatform,
    ctx: Arc<Context>,
}

impl Fixture {
    async fn new() -> Fixture {
        Self::with_platform(InMemoryPlatform::new(REGION)).await
    }

    /// A fixture whose reconciles use `cloud` instead of the in-memory platform.
    async fn with_cloud(cloud: Arc<dyn Platform>) -> Fixture {
        let mut f = Self::new().await;
        let recorder = Reporter { controller: "test".into(), instance: None };
        f.ctx = Arc::new(Context::new(f.operator.clone(), cloud, INFRA.into(), recorder));
        f
    }

    /// A fixture whose operator has `deploy/role.yaml` edited by `edit` in the test namespace
    /// (the rest of deploy/'s RBAC as shipped).
    async fn with_role(edit: impl Fn(&str) -> String) -> Fixture {
        let mut f = Self::new().await;
        let env = KubeEnv::shared().expect("test API server");
        let namespace = env.namespace(&f.client, "reconcile-rbac").await.expect("namespace");
        let role = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/role.yaml"))
            .expect("deploy/role.yaml");
        let edited = edit(&role);
        assert_ne!(edited, role, "the edit no longer matches deploy/role.yaml");
        DeployRbac::from_yaml(&[&edited])
            .expect("edited role")
            .grant_in(&f.client, &namespace)
            .await
            .expect("grant");
        f.namespace = namespace;
        f
    }

    async fn with_platform(platform: InMemoryPlatform) -> Fixture {
        let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
        let client = env.client().await.expect("client");
        CRDS.get_or_init(|| async {
            let mut crds = foreign_crds().expect("stand-in CRDs");
            crds.push(mvo_operator::crd::crd());
            install_crds(&client, crds).await.expect("CRDs");
        })
        .await;
        let namespace = env.namespace(&client, "reconcile").await.expect("namespace");
        let operator = env.operator_client(&[&namespace]).await.expect("operator client");
        // The CRD names this namespace's tests use in place of the real Velero CRDs.
        let suffix = namespace.rsplit('-').next().expect("suffix");
        let names = ["widgets", "gadgets", "gizmos"].map(|plural| format!("{plural}{suffix}.velero.io"));
        DeployRbac::from_repo()
            .expect("deploy/ RBAC")
            .grant_crd_names(&client, suffix, &names)
            .await
            .expect("CRD names");
        let recorder = Reporter { controller: "test".into(), instance: None };
        let dyn_platform: Arc<dyn Platform> = Arc::new(platform.clone());
        let ctx = Arc::new(Context::new(operator.clone(), dyn_platform, INFRA.into(), recorder));
        Fixture { client, operator, namespace, platform, ctx }
    }

    fn cloud(&self) -> &InMemoryCloud {
        self.platform.cloud()
    }

    fn installs(&self) -> Api<VeleroInstall> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create(&self, name: &str, spec: Value) -> VeleroInstall {
        let vi: VeleroInstall = serde_json::from_value(json!({
            "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("VeleroInstall");
        self.installs().create(&PostParams::default(), &vi).await.expect("create VeleroInstall")
    }

    async fn get(&self, name: &str) -> VeleroInstall {
        self.installs().get(name).await.expect("get VeleroInstall")
    }

    async fn reconcile(&self, name: &str) -> Result<kube::runtime::controller::Action, reconcile::Error> {
        reconcile::reconcile(Arc::new(self.get(name).await), self.ctx.clone()).await
    }

    async fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        let vi = self.get(name).await;
        let c = vi
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", vi.status));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    async fn object(&self, resource: &ApiResource, name: &str) -> Option<DynamicObject> {
        self.api(resource).get_opt(name).await.expect("get object")
    }

    /// What the cluster's credential operator, the Job controller and the kubelet would do:
    /// mint Velero's secret, run the CRD Job (its pod "prints" one CRD unique to this test) and
    /// make the Deployment available.
    async fn make_velero_ready(&self) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                            "stringData": {"credentials": "[default]\n"}});
        secrets
            .patch("velero-iam-credentials", &PatchParams::apply("cco").force(), &Patch::Apply(&secret))
            .await
            .expect("secret");
        self.complete_crds_job(&[&self.test_crd_name()]).await;
        self.roll_out_velero().await;
    }

    /// The Deployment controller and kubelet: the current generation rolled out and available.
    async fn roll_out_velero(&self) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let generation = deployments.get("velero").await.expect("Deployment").metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                       "availableReplicas": 1, "readyReplicas": 1}});
        deployments
            .patch_status("velero", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }

    /// A velero.io CRD name no other test uses (CRDs are cluster-scoped, the server is shared).
    fn test_crd_name(&self) -> String {
        self.crd_name("widgets")
    }

    fn crd_name(&self, plural: &str) -> String {
        let suffix = self.namespace.rsplit('-').next().expect("suffix");
        format!("{plural}{suffix}.velero.io")
    }

    /// The CRD Job the operator created (exactly one).
    async fn crds_job(&self) -> k8s_openapi::api::batch::v1::Job {
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut listed = jobs.list(&Default::default()).await.expect("jobs").items;
        assert_eq!(
            listed.len(),
            1,
            "one CRD Job: {:?}",
            listed.iter().map(|j| j.name_any()).collect::<Vec<_>>()
        );
        listed.remove(0)
    }

    /// Marks the CRD Job succeeded with a pod whose log holds `crd_names` as Velero prints them.
    async fn complete_crds_job(&self, crd_names: &[&str]) {
        self.complete_crds_job_with(&jobs::crd_job_output(crd_names), true).await;
    }

    /// Marks the CRD Job succeeded with a pod whose log is `log`; `owned` gives the pod the Job's
    /// controller owner reference (as the Job controller does), else only the name label.
    async fn complete_crds_job_with(&self, log: &str, owned: bool) {
        let job = self.crds_job().await;
        jobs::complete_crd_job(&self.client, &job, log, owned).await.expect("CRD Job completed");
    }

    async fn resource_versions(&self) -> Vec<String> {
        let mut versions = vec![self.get("cluster").await.resource_version().unwrap_or_default()];
        for kind in controller::owned_kinds() {
            for o in self.api(&kind).list(&Default::default()).await.expect("list").items {
                versions.push(format!(
                    "{}/{}={}",
                    kind.kind,
                    o.name_any(),
                    o.resource_version().unwrap_or_default()
                ));
            }
        }
        versions
    }

    fn buckets(&self) -> Vec<String> {
        self.cloud().bucket_names()
    }
}

fn bucket_of(vi: &VeleroInstall) -> (Option<String>, bool, bool) {
    let s = vi.status.as_ref().and_then(|s| s.storage_bucket.clone()).unwrap_or_default();
    (s.name, s.provisioned, s.last_sync_timestamp.is_some())
}

#[tokio::test]
async fn fresh_install_reaches_ready_and_then_writes_nothing() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;

    f.reconcile("cluster").await.expect("first reconcile");
    let vi = f.get("cluster").await;
    let (name, provisioned, synced) = bucket_of(&vi);
    let name = name.expect("bucket name in status");
    assert!(name.starts_with(BUCKET_NAME_PREFIX) && provisioned && synced);
    assert_eq!(f.buckets(), std::slice::from_ref(&name), "exactly one bucket");
    let status = vi.status.as_ref().expect("status");
    assert_eq!((status.platform.as_deref(), status.region.as_deref()), (Some("InMemory"), Some(REGION)));
    assert_eq!(status.observed_generation, vi.metadata.generation);
    assert_eq!(f.condition("cluster", "BucketReady").await.0, "True");
    assert_eq!(f.condition("cluster", "VeleroReady").await.1, "InstallingVeleroCRDs");
    assert!(f.object(&build::backup_storage_location(), "default").await.is_none(), "BSL waits for the CRDs");

    f.make_velero_ready().await;
    f.reconcile("cluster").await.expect("second reconcile");
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(f.client.clone());
    let crd = crds.get(&f.test_crd_name()).await.expect("CRD from the Job's log applied");
    assert_eq!(
        crd.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("managed-velero-operator")
    );
    let bsl = f.object(&build::backup_storage_location(), "default").await.expect("BSL");
    assert_eq!(bsl.data["spec"]["objectStorage"]["bucket"], name.as_str());
    for kind in controller::owned_kinds() {
        let expected = match kind.kind.as_str() {
            "Deployment" => "velero".to_owned(),
            "Job" => f.crds_job().await.name_any(),
            "Service" | "ServiceMonitor" => "velero-metrics".to_owned(),
            "CredentialsRequest" => "velero-iam-credentials".to_owned(),
            _ => "default".to_owned(),
        };
        let object = f.object(&kind, &expected).await.unwrap_or_else(|| panic!("{} missing", kind.kind));
        let managers: Vec<_> =
            object.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
        assert!(managers.contains(&"managed-velero-operator".to_owned()), "{managers:?}");
    }
    assert_eq!(f.condition("cluster", "Ready").await.0, "True");

    // Steady state: nothing written to Kubernetes or the cloud.
    let versions = f.resource_versions().await;
    let cloud_writes = f.cloud().writes();
    let cloud_reads = f.cloud().reads();
    let action = f.reconcile("cluster").await.expect("steady reconcile");
    assert_eq!(f.resource_versions().await, versions, "steady state wrote to Kubernetes");
    assert_eq!(
        (f.cloud().writes(), f.cloud().reads()),
        (cloud_writes, cloud_reads),
        "bucket check not due yet"
    );
    assert!(format!("{action:?}").contains("requeue_after: Some"), "{action:?}");
}

#[tokio::test]
async fn requested_check_reads_the_cloud_and_corrects_drift() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("install");
    let name = bucket_of(&f.get("cluster").await).0.expect("name");
    f.cloud().tamper(&name, |b| b.public_access = Default::default()).expect("tamper");

    let now =
        k8s_openapi::jiff::Timestamp::now().checked_add(Duration::from_secs(1)).expect("ts").to_string();
    let annotate = json!({"metadata": {"annotations": {"managed.openshift.io/reconcile-requested-at": now}}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    let writes = f.cloud().writes();
    f.reconcile("cluster").await.expect("requested check");
    assert_eq!(f.cloud().writes(), writes + 1, "exactly the public access block is rewritten");
    assert!(f.cloud().bucket(&name).expect("bucket").public_access.is_fully_blocked());
}

#[tokio::test]
async fn a_cluster_that_ran_mvo_keeps_its_bucket() {
    let f = Fixture::new().await;
    let mvo_bucket = "managed-velero-backups-1f0c3a2e-9b5d-4c8e-a7f1-0d2b6e4c8a91";
    f.cloud().insert_bucket("self", mvo_bucket, REGION, mvo_core::Owner::new(INFRA).tags());
    f.create("cluster", json!({})).await;
    let status = json!({"status": {"storageBucket": {"name": mvo_bucket, "provisioned": true,
                                     "lastSyncTimestamp": "2026-01-01T00:00:00Z"}}});
    f.installs()
        .patch_status("cluster", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("MVO status");

    f.reconcile("cluster").await.expect("adopt");
    assert_eq!(f.buckets(), [mvo_bucket], "no new bucket");
    assert_eq!(bucket_of(&f.get("cluster").await).0.as_deref(), Some(mvo_bucket));
    let hardened = f.cloud().bucket(mvo_bucket).expect("bucket");
    assert!(hardened.public_access.is_fully_blocked() && hardened.encryption.is_some());
}

#[tokio::test]
async fn recovery_adopts_the_tagged_bucket_and_refuses_ambiguity() {
    let f = Fixture::new().await;
    f.cloud().insert_bucket("self", "ours-1", REGION, mvo_core::Owner::new(INFRA).tags());
    f.cloud().insert_bucket("self", "theirs", REGION, mvo_core::Owner::new("other-cluster").tags());
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("recover");
    assert_eq!(bucket_of(&f.get("cluster").await).0.as_deref(), Some("ours-1"));

    let g = Fixture::new().await;
    g.cloud().insert_bucket("self", "ours-a", REGION, mvo_core::Owner::new(INFRA).tags());
    g.cloud().insert_bucket("self", "ours-b", REGION, mvo_core::Owner::new(INFRA).tags());
    g.create("cluster", json!({})).await;
    g.reconcile("cluster").await.expect("ambiguous is a condition, not an error");
    let (status, reason, message) = g.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AmbiguousBuckets"));
    assert!(message.contains("ours-a") && message.contains("ours-b"), "{message}");
    assert_eq!(bucket_of(&g.get("cluster").await).0, None, "nothing adopted");
    assert!(g.object(&build::backup_storage_location(), "default").await.is_none());
}

#[tokio::test]
async fn a_name_taken_by_another_account_is_replaced_and_left_alone() {
    let f = Fixture::new().await;
    let taken = "managed-velero-backups-taken";
    f.cloud().insert_bucket("another-account", taken, REGION, Default::default());
    f.create("cluster", json!({})).await;
    let status = json!({"status": {"storageBucket": {"name": taken, "provisioned": false}}});
    f.installs()
        .patch_status("cluster", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");

    f.reconcile("cluster").await.expect("reconcile");
    let name = bucket_of(&f.get("cluster").await).0.expect("name");
    assert_ne!(name, taken);
    assert_eq!(f.buckets().len(), 2);
    assert_eq!(f.cloud().bucket(taken).expect("theirs").tags, Default::default(), "their bucket untouched");
}

#[tokio::test]
async fn a_crash_between_naming_and_creating_leaves_exactly_one_bucket() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    // Recovery finds nothing, the new name is persisted, then creation fails: the state a crash
    // between the two steps leaves behind.
    f.cloud().inject_at("CreateBucket", Fault::Unavailable);
    let err = f.reconcile("cluster").await.expect_err("creation fails");
    assert!(err.is_retryable());
    let (named, provisioned, _) = bucket_of(&f.get("cluster").await);
    let named = named.expect("name persisted before creation");
    assert!(!provisioned);
    assert!(f.buckets().is_empty());
    let (status, reason, _) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unavailable"));

    f.reconcile("cluster").await.expect("after restart");
    assert_eq!(f.buckets(), std::slice::from_ref(&named), "same name, exactly one bucket");
    assert_eq!(bucket_of(&f.get("cluster").await), (Some(named), true, true));
}

#[tokio::test]
async fn a_bucket_deleted_out_of_band_is_recreated_with_the_same_name() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("install");
    let name = bucket_of(&f.get("cluster").await).0.expect("name");
    let platform = f.platform.clone();
    mvo_testkit::Backdoor::delete_bucket(&platform, &name).await.expect("delete");
    let annotate =
        json!({"metadata": {"annotations": {"managed.openshift.io/reconcile-requested-at": "now"}}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    f.reconcile("cluster").await.expect("recreate");
    assert_eq!(f.buckets(), [name]);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.namespace);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"BucketMissing".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"BucketCreated".to_owned()), "{reasons:?}");
}

#[tokio::test]
async fn only_the_install_named_cluster_is_reconciled() {
    let f = Fixture::new().await;
    f.create("other", json!({})).await;
    f.reconcile("other").await.expect("ignored");
    let (status, reason, _) = f.condition("other", "Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UnsupportedName"));
    assert!(f.buckets().is_empty());
    assert!(f.object(&ApiResource::erase::<Deployment>(&()), "velero").await.is_none());
}

#[tokio::test]
async fn invalid_spec_is_a_condition_naming_the_field() {
    let f = Fixture::new().await;
    // The schema cannot know the cloud: a GCP key on an AWS-like platform passes it.
    let key = "projects/p/locations/l/keyRings/r/cryptoKeys/k";
    f.create("cluster", json!({"storageBucket": {"kmsKeyName": key}})).await;
    f.reconcile("cluster").await.expect("invalid spec is not an error");
    let (status, reason, message) = f.condition("cluster", "Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("spec.storageBucket.kmsKeyName"), "{message}");
    assert!(f.buckets().is_empty());
}

#[tokio::test]
async fn the_schema_rejects_bad_specs() {
    let f = Fixture::new().await;
    for spec in [
        json!({"backupRetentionDays": 0}),
        json!({"resyncInterval": "soon"}),
        json!({"resyncInterval": "30s"}),
        json!({"resyncInterval": "25h"}),
        json!({"storageBucket": {"kmsKeyID": "arn:aws:kms:eu-west-1:123456789012:key/k", "kmsKeyName": "x"}}),
        json!({"storageBucket": {"name": "Not_A_Bucket"}}),
        json!({"storageBucket": {"adoptUnmarkedBucket": true}}),
    ] {
        let vi: VeleroInstall = serde_json::from_value(json!({
            "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
            "metadata": {"name": "cluster"}, "spec": spec
        }))
        .expect("object");
        let err = f.installs().create(&PostParams::default(), &vi).await.expect_err("rejected");
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 422), "{spec}: {err}");
    }
}

#[tokio::test]
async fn the_controller_restores_edited_and_deleted_objects() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    let ctx = f.ctx.clone();
    let namespace = f.namespace.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        controller::watch_and_reconcile(ctx, &namespace, async move {
            let _ = stopped.await;
        })
        .await
    });
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.namespace);
    let image = |d: &Deployment| {
        d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers[0].image.clone())
    };
    let wait_for = |what: &'static str, check: Box<dyn Fn(Option<Deployment>) -> bool + Send>| {
        let deployments = deployments.clone();
        async move {
            for _ in 0..100 {
                if check(deployments.get_opt("velero").await.expect("get")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{what} not seen within 5 s");
        }
    };
    wait_for("installed Deployment", Box::new(|d| d.is_some())).await;

    let edit =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "velero", "image": "evil:latest"}]}}}});
    deployments.patch("velero", &PatchParams::default(), &Patch::Strategic(&edit)).await.expect("edit");
    let started = std::time::Instant::now();
    wait_for(
        "image restored",
        Box::new(move |d| d.as_ref().and_then(image).is_some_and(|i| i != "evil:latest")),
    )
    .await;
    let restore_latency = started.elapsed();

    deployments.delete("velero", &DeleteParams::default()).await.expect("delete");
    wait_for("Deployment re-created", Box::new(|d| d.is_some())).await;

    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(f.client.clone(), &f.namespace);
    services.delete("velero-metrics", &DeleteParams::default()).await.expect("delete Service");
    for _ in 0..100 {
        if services.get_opt("velero-metrics").await.expect("get").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(services.get_opt("velero-metrics").await.expect("get").is_some(), "Service not re-created");
    let _ = stop.send(());
    controller.await.expect("controller stops");
    assert!(restore_latency < Duration::from_secs(2), "edit reverted after {restore_latency:?}");
}

#[tokio::test]
async fn aws_on_moto_waits_for_credentials_then_installs_without_leaking_them() {
    let s3 = mvo_testkit::env::S3Env::shared().expect("moto (run `make testenv`)");
    let credentials_dir = std::env::temp_dir().join(format!("mvo-creds-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&credentials_dir).expect("dir");
    let config = mvo_core::ProviderConfig {
        platform: "AWS".into(),
        region: Some(REGION.into()),
        infrastructure_name: INFRA.into(),
        credentials_dir: credentials_dir.clone(),
        endpoint: Some(s3.endpoint().to_owned()),
        ..Default::default()
    };
    let aws: Arc<dyn Platform> = Arc::new(mvo_provider_aws::AwsPlatform::new(&config).expect("AWS platform"));
    let f = Fixture::with_cloud(aws.clone()).await;
    f.create("cluster", json!({})).await;

    let err = f.reconcile("cluster").await.expect_err("no credentials yet");
    assert!(err.is_retryable(), "missing credentials are retried with backoff");
    let (status, reason, message) = f.condition("cluster", "CredentialsReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "CredentialsUnusable"));
    assert!(message.contains("aws_access_key_id"), "names the missing key: {message}");

    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET";
    std::fs::write(credentials_dir.join("aws_access_key_id"), "AKIAMVOTESTKEY").expect("key id");
    std::fs::write(credentials_dir.join("aws_secret_access_key"), secret).expect("secret");
    f.reconcile("cluster").await.expect("install with credentials");
    let vi = f.get("cluster").await;
    let name = bucket_of(&vi).0.expect("bucket");
    let state = aws
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .observe_bucket(&name)
        .await
        .expect("bucket exists in S3");
    assert!(state.public_access.is_fully_blocked());
    assert_eq!(f.condition("cluster", "BucketReady").await.0, "True");

    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.namespace);
    let everything = format!(
        "{}{}",
        serde_json::to_string(&vi).expect("json"),
        serde_json::to_string(&events.list(&Default::default()).await.expect("events").items).expect("json")
    );
    assert!(!everything.contains(secret), "credential leaked into status or events");
    std::fs::remove_dir_all(&credentials_dir).expect("cleanup");
}

#[tokio::test]
async fn velero_crds_of_another_installer_are_left_alone_and_reported() {
    let f = Fixture::new().await;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(f.client.clone());
    // Two installers, neither labelled: one applied its CRD (Helm-like), one created it (Update).
    let (applied, created) = (f.crd_name("gadgets"), f.crd_name("gizmos"));
    let parse = |name: &str| -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
        serde_saphyr::from_str(&jobs::crd_job_output(&[name])).expect("crd")
    };
    crds.patch(&applied, &PatchParams::apply("helm").force(), &Patch::Apply(&parse(&applied)))
        .await
        .expect("Helm's CRD");
    let params = PostParams { field_manager: Some("olm".into()), ..Default::default() };
    crds.create(&params, &parse(&created)).await.expect("OLM's CRD");
    let before: Vec<_> = [&applied, &created].map(|n| n.to_owned()).to_vec();
    let mut snapshots = Vec::new();
    for name in &before {
        snapshots.push(crds.get(name).await.expect("theirs"));
    }
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("install");
    f.make_velero_ready().await;
    // Velero's image prints the same CRDs (with our spec): they must still be left alone.
    f.complete_crds_job(&[&f.test_crd_name(), &applied, &created]).await;
    f.reconcile("cluster").await.expect("CRDs");
    f.reconcile("cluster").await.expect("again");

    for before in &snapshots {
        let after = crds.get(&before.name_any()).await.expect("still there");
        let managers: Vec<_> =
            after.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
        assert!(
            !managers.contains(&"managed-velero-operator".to_owned()),
            "we wrote to theirs: {managers:?}"
        );
        assert_eq!((after.labels(), &after.spec), (before.labels(), &before.spec));
    }
    assert!(crds.get(&f.test_crd_name()).await.is_ok(), "our CRD applied");
    let (status, _, message) = f.condition("cluster", "VeleroReady").await;
    assert_eq!(status, "True");
    assert!(message.contains(&applied) && message.contains(&created), "{message}");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.namespace);
    let reported: Vec<_> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("VeleroCRDsManagedElsewhere"))
        .collect();
    assert_eq!(reported.len(), 1, "one event, not one per pass: {reported:?}");
}

#[tokio::test]
async fn permission_denied_is_a_condition_naming_the_permission_and_not_retried_quickly() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    f.cloud().inject_at("CreateBucket", Fault::PermissionDenied);
    let err = f.reconcile("cluster").await.expect_err("denied");
    assert!(!err.is_retryable(), "a missing permission waits for the resync, not a backoff storm");
    let vi = Arc::new(f.get("cluster").await);
    let action = reconcile::error_policy(vi, &err, f.ctx.clone());
    assert!(format!("{action:?}").contains("3600s"), "retried at the resync interval: {action:?}");
    let (status, reason, message) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PermissionDenied"));
    assert!(message.contains("CreateBucket"), "names the refused call: {message}");
}

#[tokio::test]
async fn a_schedule_whose_backups_outlive_the_lifecycle_is_warned_about() {
    let f = Fixture::new().await;
    f.create("cluster", json!({"backupRetentionDays": 30})).await;
    f.reconcile("cluster").await.expect("install");
    let schedules =
        f.api(&ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("velero.io", "v1", "Schedule")));
    for (name, ttl) in [("daily", "240h0m0s"), ("quarterly", "2160h0m0s")] {
        let schedule = json!({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": name},
                              "spec": {"schedule": "0 1 * * *", "template": {"ttl": ttl}}});
        schedules
            .patch(name, &PatchParams::apply("admin").force(), &Patch::Apply(&schedule))
            .await
            .expect("schedule");
    }
    f.make_velero_ready().await;
    f.reconcile("cluster").await.expect("reconcile");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.namespace);
    let warnings: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScheduleOutlivesRetention"))
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("quarterly") && !warnings[0].contains("daily"), "{}", warnings[0]);
}

#[tokio::test]
async fn plan_mode_reports_what_would_change_and_writes_nothing() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    let plan_once = async || {
        let recorder = Reporter { controller: "plan".into(), instance: None };
        let cloud: Arc<dyn Platform> = Arc::new(f.platform.clone());
        let (ctx, plan) = Context::for_plan(f.operator.clone(), cloud, INFRA.into(), recorder);
        reconcile::reconcile(Arc::new(f.get("cluster").await), Arc::new(ctx))
            .await
            .expect("planned reconcile");
        plan.changes()
    };

    let versions = f.resource_versions().await;
    let changes = plan_once().await;
    assert!(
        changes.iter().any(|c| c.starts_with("cloud: create bucket managed-velero-backups-")),
        "{changes:?}"
    );
    assert!(changes.iter().any(|c| c.contains("record bucket name")), "{changes:?}");
    assert!(changes.contains(&"kubernetes: create Deployment/velero".to_owned()), "{changes:?}");
    assert!(
        changes.iter().any(|c| c.starts_with("kubernetes: event Normal BucketCreated: ")),
        "the events a plan would send are listed: {changes:?}"
    );
    assert!(events_of(&f).await.is_empty(), "plan posted events");
    assert!(f.buckets().is_empty(), "plan created a bucket");
    assert_eq!(f.cloud().writes(), 0);
    assert_eq!(f.resource_versions().await, versions, "plan wrote to Kubernetes");
    assert!(f.object(&ApiResource::erase::<Deployment>(&()), "velero").await.is_none());

    f.reconcile("cluster").await.expect("real install");
    let name = bucket_of(&f.get("cluster").await).0.expect("bucket");
    f.cloud().tamper(&name, |b| b.public_access = Default::default()).expect("tamper");
    let versions = f.resource_versions().await;
    let writes = f.cloud().writes();
    let changes = plan_once().await;
    assert!(changes.contains(&format!("cloud: correct public_access of bucket {name}")), "{changes:?}");
    assert_eq!(f.cloud().writes(), writes, "plan corrected the bucket");
    assert!(!f.cloud().bucket(&name).expect("bucket").public_access.is_fully_blocked());
    assert_eq!(f.resource_versions().await, versions, "plan wrote to Kubernetes");
}

#[tokio::test]
async fn a_verb_missing_from_deploy_rbac_fails_the_reconcile_with_a_condition_naming_it() {
    let f = Fixture::with_role(|role| {
        role.replace(
            "resources: [deployments]\n    verbs: [get, list, watch, create, patch]",
            "resources: [deployments]\n    verbs: [get, list, watch, create]",
        )
    })
    .await;
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect_err("the Deployment apply is forbidden");
    let (status, _, message) = f.condition("cluster", "VeleroReady").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("cannot patch resource \"deployments\" in API group \"apps\""),
        "the condition names the missing permission: {message}"
    );
    assert!(message.contains(mvo_testkit::env::OPERATOR_USER), "{message}");
}

/// Reasons and messages of the Events about the install, oldest first.
async fn events_of(f: &Fixture) -> Vec<(String, String, String)> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(f.client.clone(), &f.namespace);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn request_bucket_check(f: &Fixture) {
    let now =
        k8s_openapi::jiff::Timestamp::now().checked_add(Duration::from_secs(1)).expect("ts").to_string();
    let annotate = json!({"metadata": {"annotations": {"managed.openshift.io/reconcile-requested-at": now}}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
}

#[tokio::test]
async fn a_provisioned_bucket_marked_by_another_cluster_is_never_replaced() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("install");
    f.make_velero_ready().await;
    f.reconcile("cluster").await.expect("Velero installed");
    let name = bucket_of(&f.get("cluster").await).0.expect("bucket");
    let other = "other-cluster-q2w3e";
    f.cloud().tamper(&name, |b| b.tags = mvo_core::Owner::new(other).tags()).expect("re-marked");
    request_bucket_check(&f).await;
    let writes = f.cloud().writes();

    let action = f.reconcile("cluster").await.expect("a condition, not an error");
    assert_eq!(f.buckets(), std::slice::from_ref(&name), "no replacement bucket");
    assert_eq!(f.cloud().writes(), writes, "wrote to the other cluster's bucket");
    assert_eq!(f.cloud().bucket(&name).expect("bucket").tags, mvo_core::Owner::new(other).tags());
    let (bucket, provisioned, _) = bucket_of(&f.get("cluster").await);
    assert_eq!((bucket.as_deref(), provisioned), (Some(name.as_str()), true), "status kept");
    let (status, reason, message) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "BucketOwnedByAnotherCluster"));
    assert!(message.contains(INFRA) && message.contains(other) && message.contains(&name), "{message}");
    assert_eq!(f.condition("cluster", "Ready").await.0, "False");
    assert!(
        events_of(&f).await.iter().any(|(t, r, _)| t == "Warning" && r == "BucketOwnedByAnotherCluster"),
        "{:?}",
        events_of(&f).await
    );
    let bsl = f.object(&build::backup_storage_location(), "default").await.expect("BSL");
    assert_eq!(bsl.data["spec"]["objectStorage"]["bucket"], name.as_str(), "Velero still points at it");
    assert!(format!("{action:?}").contains("requeue_after: Some"), "re-checked periodically: {action:?}");

    // The next pass checks again (no stale "ready" from the old sync) and still refuses.
    let reads = f.cloud().reads();
    f.reconcile("cluster").await.expect("re-check");
    assert!(f.cloud().reads() > reads, "the bucket was not checked again");
    assert_eq!(f.condition("cluster", "BucketReady").await.1, "BucketOwnedByAnotherCluster");
    assert_eq!(f.buckets(), [name]);
}

#[tokio::test]
async fn an_inherited_bucket_now_in_another_account_is_never_replaced() {
    let f = Fixture::new().await;
    let mvo_bucket = "managed-velero-backups-5e1d7c3a-0b2f-4a6e-9c8d-7f3b1a2e4d6c";
    f.cloud().insert_bucket("another-account", mvo_bucket, REGION, Default::default());
    f.create("cluster", json!({})).await;
    let status = json!({"status": {"storageBucket": {"name": mvo_bucket, "provisioned": true,
                                     "lastSyncTimestamp": "2026-01-01T00:00:00Z"}}});
    f.installs()
        .patch_status("cluster", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("MVO status");
    f.reconcile("cluster").await.expect("a condition, not an error");
    assert_eq!(f.buckets(), [mvo_bucket], "no replacement bucket");
    assert_eq!(bucket_of(&f.get("cluster").await).0.as_deref(), Some(mvo_bucket));
    let (status, reason, message) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "BucketOwnedByAnotherCluster"));
    assert!(message.contains("another account or project"), "{message}");
    assert!(f.object(&build::backup_storage_location(), "default").await.is_none(), "nothing installed");
}

#[tokio::test]
async fn an_unmarked_bucket_named_in_the_spec_needs_an_explicit_opt_in() {
    let f = Fixture::new().await;
    let theirs = format!("team-backups-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let team = mvo_core::Tags::from([("team".to_owned(), "storage".to_owned())]);
    f.cloud().insert_bucket("self", &theirs, REGION, team.clone());
    f.create("cluster", json!({"storageBucket": {"name": theirs}})).await;
    f.reconcile("cluster").await.expect("a condition, not an error");
    let (status, reason, message) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UnmarkedBucketNotAdopted"));
    assert!(message.contains("adoptUnmarkedBucket"), "{message}");
    assert_eq!(f.cloud().writes(), 0, "wrote to a bucket it was not allowed to adopt");
    assert_eq!(f.cloud().bucket(&theirs).expect("bucket").tags, team);

    let opt_in = json!({"spec": {"storageBucket": {"name": theirs, "adoptUnmarkedBucket": true}}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&opt_in)).await.expect("opt in");
    f.reconcile("cluster").await.expect("adopt");
    assert_eq!(f.condition("cluster", "BucketReady").await.0, "True");
    let adopted = f.cloud().bucket(&theirs).expect("bucket");
    assert!(mvo_core::Owner::new(INFRA).owns_tags(&adopted.tags), "{:?}", adopted.tags);
    assert_eq!(adopted.tags.get("team").map(String::as_str), Some("storage"));
    assert_eq!(f.buckets(), std::slice::from_ref(&theirs));
    assert!(expiry_days(&f, &theirs).is_empty(), "an adopted bucket got an expiry rule nobody asked for");

    let retention = json!({"spec": {"storageBucket": {"name": theirs, "adoptUnmarkedBucket": true}, "backupRetentionDays": 45}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&retention)).await.expect("ask");
    f.reconcile("cluster").await.expect("expiry asked for");
    assert_eq!(expiry_days(&f, &theirs), [45]);
    let recorded = f.get("cluster").await.status.and_then(|s| s.managed_bucket).expect("record");
    assert!(recorded.adopted_unmarked, "adoption is remembered once the owner marks are written");
}

#[tokio::test]
async fn a_stale_status_snapshot_never_overwrites_the_persisted_bucket_name() {
    let f = Fixture::new().await;
    let taken = "managed-velero-backups-taken-by-another-account";
    f.cloud().insert_bucket("another-account", taken, REGION, Default::default());
    f.create("cluster", json!({})).await;
    let status = json!({"status": {"storageBucket": {"name": taken, "provisioned": false}}});
    f.installs()
        .patch_status("cluster", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    // The generated name collides, a new one is persisted, the bucket is created, and then the
    // answer is lost: the pass fails after the name was persisted.
    f.cloud().inject_after("CreateBucket", Fault::Unavailable);
    f.reconcile("cluster").await.expect_err("creation reported as failed");
    let persisted = bucket_of(&f.get("cluster").await).0.expect("name");
    assert_ne!(persisted, taken, "the failure report rewrote the stale name over the persisted one");
    assert!(f.cloud().bucket(&persisted).is_some(), "the recorded name is the bucket that was created");

    f.reconcile("cluster").await.expect("next pass");
    let ours: Vec<String> = f.buckets().into_iter().filter(|b| b != taken).collect();
    assert_eq!(ours, std::slice::from_ref(&persisted), "exactly one bucket of ours");
    assert_eq!(bucket_of(&f.get("cluster").await), (Some(persisted), true, true));
}

#[tokio::test]
async fn a_repeated_event_reason_carries_the_new_facts() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    f.reconcile("cluster").await.expect("install");
    let first = bucket_of(&f.get("cluster").await).0.expect("bucket");
    // An administrator starts over: the bucket is gone and the status forgets it.
    mvo_testkit::Backdoor::delete_bucket(&f.platform, &first).await.expect("delete");
    let forget = json!({"status": {"storageBucket": null}});
    f.installs()
        .patch_status("cluster", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .expect("reset");
    f.reconcile("cluster").await.expect("second bucket");
    let second = bucket_of(&f.get("cluster").await).0.expect("bucket");
    assert_ne!(first, second);
    let created: Vec<String> =
        events_of(&f).await.into_iter().filter(|(_, r, _)| r == "BucketCreated").map(|(_, _, m)| m).collect();
    assert!(created.iter().any(|m| m.contains(&second)), "the new bucket is in no event: {created:?}");
    assert!(created.iter().any(|m| m.contains(&first)), "the first bucket's event is kept: {created:?}");
}

fn expiry_days(f: &Fixture, bucket: &str) -> Vec<u32> {
    f.cloud()
        .bucket(bucket)
        .expect("bucket")
        .lifecycle
        .iter()
        .filter_map(|r| match r.action {
            mvo_core::LifecycleAction::Expire { days } if r.prefix == "backups/" => Some(days),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn lowering_retention_below_the_longest_schedule_ttl_is_refused() {
    let f = Fixture::new().await;
    f.create("cluster", json!({"backupRetentionDays": 120})).await;
    f.reconcile("cluster").await.expect("install");
    let name = bucket_of(&f.get("cluster").await).0.expect("bucket");
    assert_eq!(expiry_days(&f, &name), [120]);
    let recorded = f.get("cluster").await.status.and_then(|s| s.managed_bucket).expect("record");
    assert_eq!((recorded.name.as_str(), recorded.backup_expiry_days), (name.as_str(), Some(120)));
    f.make_velero_ready().await;
    let schedules =
        f.api(&ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("velero.io", "v1", "Schedule")));
    // No ttl: Velero keeps its backups 720h. The quarterly one keeps them 90 days.
    for (name, template) in [("daily", json!({})), ("quarterly", json!({"ttl": "2160h0m0s"}))] {
        let schedule = json!({"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": name},
                              "spec": {"schedule": "0 1 * * *", "template": template}});
        schedules
            .patch(name, &PatchParams::apply("admin").force(), &Patch::Apply(&schedule))
            .await
            .expect("schedule");
    }
    let lower = |days: u32| json!({"spec": {"backupRetentionDays": days}});
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&lower(60))).await.expect("lower");
    f.reconcile("cluster").await.expect("a condition, not an error");
    assert_eq!(expiry_days(&f, &name), [120], "the rule was lowered under Velero's retention");
    let (status, reason, message) = f.condition("cluster", "BucketReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "RetentionBelowBackupTTL"));
    assert!(message.contains("quarterly") && message.contains("backupRetentionDays=60"), "{message}");
    let recorded = f.get("cluster").await.status.and_then(|s| s.managed_bucket).expect("record");
    assert_eq!(recorded.backup_expiry_days, Some(120), "the record keeps what is on the bucket");
    assert!(events_of(&f).await.iter().any(|(t, r, _)| t == "Warning" && r == "RetentionBelowBackupTTL"));

    // Equal to the longest TTL: applied, with a warning.
    f.installs().patch("cluster", &PatchParams::default(), &Patch::Merge(&lower(90))).await.expect("90");
    f.reconcile("cluster").await.expect("equal is allowed");
    assert_eq!(expiry_days(&f, &name), [90]);
    assert_eq!(f.condition("cluster", "BucketReady").await.0, "True");
    assert!(events_of(&f).await.iter().any(|(t, r, _)| t == "Warning" && r == "RetentionEqualsBackupTTL"));
}

#[tokio::test]
async fn a_pass_working_from_a_stale_snapshot_cannot_record_a_second_name() {
    let f = Fixture::new().await;
    f.create("cluster", json!({})).await;
    let stale = f.get("cluster").await;
    // A first pass records its name, then fails before the bucket exists.
    f.cloud().inject_at("CreateBucket", Fault::Unavailable);
    f.reconcile("cluster").await.expect_err("creation fails");
    let first = bucket_of(&f.get("cluster").await).0.expect("name persisted");

    // A concurrent pass that read the object before that write picks its own name: the
    // resourceVersion precondition refuses it, and it creates nothing.
    let err = reconcile::reconcile(Arc::new(stale), f.ctx.clone()).await.expect_err("stale pass");
    assert_eq!(err.category(), "UpdateStatusFailed", "{err}");
    assert!(f.buckets().is_empty(), "the stale pass created a bucket: {:?}", f.buckets());
    assert_eq!(bucket_of(&f.get("cluster").await).0.as_deref(), Some(first.as_str()));

    f.reconcile("cluster").await.expect("next pass");
    assert_eq!(f.buckets(), std::slice::from_ref(&first), "exactly one bucket, the recorded one");
}
