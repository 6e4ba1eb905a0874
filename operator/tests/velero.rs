//! Velero that really starts, against the real test API server: the pod spec Velero runs with
//! (writable temp dir, volumes, credential keys), short-lived credentials on token-based AWS STS
//! and GCP WIF clusters, the self-healing CRD lifecycle, and readiness that tells the truth.
//!
//! The server has no Job controller, kubelet or credential operator: the tests play them.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{Event, Pod, PodSpec, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::events::Reporter,
};
use mvo_core::{
    Credential, CredentialMaterial, Platform, ProviderConfig, Secret as SecretBytes, ShortLivedInput,
    StaticCredentialSource,
};
use mvo_operator::{
    crd::VeleroInstall,
    reconcile::{self, Context, build},
    startup,
};
use mvo_testkit::{
    InMemoryPlatform,
    env::{DeployRbac, KubeEnv, S3Env, foreign_crds, install_crds},
    jobs,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const INFRA: &str = "c1-x8k2p";
const ROLE: &str = "arn:aws:iam::123456789012:role/velero";
const GSA: &str = "velero-sa@mvo-project.iam.gserviceaccount.com";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool-1/providers/prov-1";

static CRDS: OnceCell<()> = OnceCell::const_new();

/// One namespace of an API server, with a reconcile context for one platform.
struct Fixture {
    client: Client,
    namespace: String,
    ctx: Arc<Context>,
}

impl Fixture {
    /// On the shared API server.
    async fn shared(platform: Arc<dyn Platform>, short_lived: Option<ShortLivedInput>) -> Fixture {
        let env = KubeEnv::shared().expect("test API server (run `make testenv`)");
        let client = env.client().await.expect("client");
        CRDS.get_or_init(|| async { install(&client).await }).await;
        let namespace = env.namespace(&client, "velero").await.expect("namespace");
        let operator = operator_client(env, &client, &namespace).await;
        Self::on(client, operator, namespace, platform, short_lived)
    }

    /// `client` (admin) plays the user and the cluster's other controllers; the reconciles act as
    /// the operator's ServiceAccount (`operator`) with `deploy/`'s RBAC.
    fn on(
        client: Client,
        operator: Client,
        namespace: String,
        platform: Arc<dyn Platform>,
        short_lived: Option<ShortLivedInput>,
    ) -> Fixture {
        let reporter = Reporter { controller: "test".into(), instance: None };
        let ctx = Context::new(operator, platform, INFRA.into(), reporter).with_short_lived(short_lived);
        Fixture { client, namespace, ctx: Arc::new(ctx) }
    }

    fn installs(&self) -> Api<VeleroInstall> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create(&self, spec: Value) {
        let vi: VeleroInstall = serde_json::from_value(json!({
            "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
            "metadata": {"name": "cluster"}, "spec": spec
        }))
        .expect("VeleroInstall");
        self.installs().create(&PostParams::default(), &vi).await.expect("create VeleroInstall");
    }

    async fn reconcile(&self) {
        let vi = self.installs().get("cluster").await.expect("VeleroInstall");
        reconcile::reconcile(Arc::new(vi), self.ctx.clone()).await.expect("reconcile");
    }

    async fn condition(&self, type_: &str) -> (String, String, String) {
        let vi = self.installs().get("cluster").await.expect("VeleroInstall");
        let c = vi
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {:?}", vi.status));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn dynamic(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    /// The credential operator: Velero's secret with `key`.
    async fn mint_secret(&self, key: &str) {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                            "stringData": {key: "minted"}});
        self.api::<Secret>()
            .patch("velero-iam-credentials", &PatchParams::apply("cco").force(), &Patch::Apply(&secret))
            .await
            .expect("secret");
    }

    async fn jobs(&self) -> Vec<Job> {
        self.api::<Job>().list(&Default::default()).await.expect("jobs").items
    }

    async fn job(&self) -> Job {
        let mut jobs = self.jobs().await;
        assert_eq!(jobs.len(), 1, "one CRD Job: {:?}", jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>());
        jobs.remove(0)
    }

    /// The Job controller and kubelet: the Job succeeded, its pod printed `log`. `owned`: the pod
    /// carries the Job's controller reference (else only its name label).
    async fn complete_job(&self, log: &str, owned: bool) -> Job {
        let job = self.job().await;
        jobs::complete_crd_job(&self.client, &job, log, owned).await.expect("CRD Job completed");
        job
    }

    /// The Deployment controller: the current generation rolled out.
    async fn roll_out(&self) {
        let deployments = self.api::<Deployment>();
        let generation = deployments.get("velero").await.expect("Deployment").metadata.generation;
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                       "availableReplicas": 1, "readyReplicas": 1}});
        deployments
            .patch_status("velero", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }

    /// A velero.io CRD name only this test uses (CRDs are cluster-scoped, the server shared).
    fn crd_name(&self, plural: &str) -> String {
        format!("{plural}{}.velero.io", self.namespace.rsplit('-').next().expect("suffix"))
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let events: Api<Event> = self.api();
        let all = events.list(&Default::default()).await.expect("events").items;
        all.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect()
    }
}

async fn install(client: &Client) {
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(client, crds).await.expect("CRDs");
}

fn crds_api(client: &Client) -> Api<CustomResourceDefinition> {
    Api::all(client.clone())
}

// ---------------------------------------------------------------------------------------------
// Pod spec conformance

/// Every way a pod spec fails on a real kubelet that the API server does not check: a container
/// with a read-only root and no writable `/tmp`, a mount of a missing volume, an env var naming a
/// secret key the credentials Secret does not carry (by `secretKeyRef`, or as a file path under
/// the mounted Secret).
fn conformance_failures(pod: &PodSpec, secret: &Secret) -> Vec<String> {
    let keys: BTreeSet<String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .chain(secret.string_data.iter().flatten().map(|(k, _)| k.clone()))
        .collect();
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mut failures = Vec::new();
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        for m in &mounts {
            if !volumes.iter().any(|v| v.name == m.name) {
                failures.push(format!("{}: mount {} names a missing volume", c.name, m.name));
            }
        }
        let read_only = c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem) == Some(true);
        let tmp = mounts.iter().find(|m| m.mount_path == "/tmp" && m.read_only != Some(true));
        let tmp_writable =
            tmp.is_some_and(|m| volumes.iter().any(|v| v.name == m.name && v.empty_dir.is_some()));
        if read_only && !tmp_writable {
            failures.push(format!("{}: read-only root filesystem without a writable /tmp", c.name));
        }
        let secret_mounts: Vec<&str> = mounts
            .iter()
            .filter(|m| {
                volumes.iter().any(|v| {
                    v.name == m.name
                        && v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(&secret_name)
                })
            })
            .map(|m| m.mount_path.as_str())
            .collect();
        for e in c.env.iter().flatten() {
            if let Some(r) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())
                && r.name == secret_name
                && !keys.contains(&r.key)
            {
                failures.push(format!("{}: env {} reads missing key {}", c.name, e.name, r.key));
            }
            for dir in &secret_mounts {
                if let Some(key) = e.value.as_deref().and_then(|v| v.strip_prefix(&format!("{dir}/")))
                    && !keys.contains(key)
                {
                    failures.push(format!("{}: env {} points at missing key {key}", c.name, e.name));
                }
            }
        }
    }
    failures
}

#[test]
fn the_conformance_check_catches_each_defect() {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"credentials": ""}}))
            .expect("secret");
    let pod: PodSpec = serde_json::from_value(json!({
        "containers": [{"name": "c", "securityContext": {"readOnlyRootFilesystem": true},
                        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}},
                                {"name": "B", "value": "/creds/service_account.json"}],
                        "volumeMounts": [{"name": "gone", "mountPath": "/x"}, {"name": "creds", "mountPath": "/creds"}]}],
        "volumes": [{"name": "creds", "secret": {"secretName": "s"}}]
    }))
    .expect("pod");
    let failures = conformance_failures(&pod, &secret);
    assert_eq!(failures.len(), 4, "{failures:#?}");
}

async fn aws_platform() -> Arc<dyn Platform> {
    let s3 = S3Env::shared().expect("moto (run `make testenv`)");
    let dir = std::env::temp_dir().join(format!("mvo-velero-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("aws_access_key_id"), "AKIAMVOTESTKEY").expect("key");
    std::fs::write(dir.join("aws_secret_access_key"), "secret").expect("secret");
    let config = ProviderConfig {
        platform: "AWS".into(),
        region: Some("eu-west-1".into()),
        infrastructure_name: INFRA.into(),
        credentials_dir: dir,
        endpoint: Some(s3.endpoint().to_owned()),
        ..Default::default()
    };
    Arc::new(mvo_provider_aws::AwsPlatform::new(&config).expect("AWS"))
}

fn gcp_platform() -> Arc<dyn Platform> {
    let plane = mvo_testkit::gcs::GcsControlPlane::new();
    let client = google_cloud_storage::client::StorageControl::from_stub(plane.stub("mvo-project"));
    let config = ProviderConfig {
        platform: "GCP".into(),
        region: Some("europe-west4".into()),
        facts: [(mvo_provider_gcp::PROJECT_ID_FACT.to_owned(), "mvo-project".to_owned())].into(),
        infrastructure_name: INFRA.into(),
        ..Default::default()
    };
    let credentials = StaticCredentialSource::new(Credential {
        material: CredentialMaterial::JsonDocument(SecretBytes::new("{}")),
        expires_at: None,
    });
    Arc::new(
        mvo_provider_gcp::GcpPlatform::builder(&config)
            .client(client)
            .credential_source(Arc::new(credentials))
            .build()
            .expect("GCP"),
    )
}

fn identity() -> ShortLivedInput {
    ShortLivedInput {
        role_arn: Some(ROLE.into()),
        service_account_email: Some(GSA.into()),
        audience: Some(AUDIENCE.into()),
    }
}

#[tokio::test]
async fn velero_pod_spec_conforms_on_aws_and_gcp_static_and_token_based() {
    for (cloud, key) in [("AWS", "credentials"), ("GCP", "service_account.json")] {
        for token_based in [false, true] {
            let platform = if cloud == "AWS" { aws_platform().await } else { gcp_platform() };
            let f = Fixture::shared(platform, token_based.then(identity)).await;
            f.create(json!({})).await;
            f.reconcile().await;
            // What the credential operator writes in either mode: one file under `key`.
            f.mint_secret(key).await;
            f.reconcile().await;
            let secret = f.api::<Secret>().get("velero-iam-credentials").await.expect("secret");
            let case = format!("{cloud} token_based={token_based}");
            let deployment = f.api::<Deployment>().get("velero").await.expect("Deployment");
            let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
            assert_eq!(conformance_failures(&pod, &secret), Vec::<String>::new(), "{case}: Velero");
            let job = f.job().await.spec.and_then(|s| s.template.spec).expect("job pod");
            assert_eq!(conformance_failures(&job, &secret), Vec::<String>::new(), "{case}: CRD Job");
            let token = pod.volumes.iter().flatten().find(|v| v.projected.is_some());
            assert_eq!(token.is_some(), token_based, "{case}: projected token volume");
            let (status, reason, _) = f.condition("CredentialsReady").await;
            assert_eq!((status.as_str(), reason.as_str()), ("True", "CredentialsAvailable"), "{case}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Short-lived credentials, end to end

/// A dedicated API server seeded as a token-based OpenShift cluster (the cluster-scoped
/// CloudCredential and Authentication would leak into other tests on the shared server).
async fn token_based_cluster() -> (KubeEnv, Client) {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let client = env.client().await.expect("client");
    install(&client).await;
    assert!(!startup::discover_token_based(&client).await.expect("facts"), "no objects: long-lived");
    mvo_testkit::env::mark_token_based(&client).await.expect("seed");
    assert!(startup::discover_token_based(&client).await.expect("facts"), "Manual + issuer: token-based");
    (env, client)
}

async fn token_based_fixture(env: &KubeEnv, client: &Client, platform: Arc<dyn Platform>) -> Fixture {
    let namespace = format!("velero-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).expect("ns"))
        .await
        .expect("namespace");
    let operator = operator_client(env, client, &namespace).await;
    let env_defaults = ShortLivedInput::default();
    let short_lived = startup::discover_token_based(&operator).await.expect("facts").then_some(env_defaults);
    Fixture::on(client.clone(), operator, namespace, platform, short_lived)
}

/// The operator's ServiceAccount with `deploy/`'s RBAC in `namespace`, and `deploy/`'s access to
/// the Velero CRDs for the CRD names this namespace's tests use in their place.
async fn operator_client(env: &KubeEnv, admin: &Client, namespace: &str) -> Client {
    let operator = env.operator_client(&[namespace]).await.expect("operator client");
    let suffix = namespace.rsplit('-').next().expect("suffix");
    let names = ["widgets"].map(|plural| format!("{plural}{suffix}.velero.io"));
    DeployRbac::from_repo()
        .expect("deploy/ RBAC")
        .grant_crd_names(admin, suffix, &names)
        .await
        .expect("CRD names");
    operator
}

#[tokio::test]
async fn sts_install_end_to_end() {
    let (env, client) = token_based_cluster().await;
    let f = token_based_fixture(&env, &client, aws_platform().await).await;
    f.create(json!({})).await;
    f.reconcile().await;
    let (status, reason, message) = f.condition("CredentialsReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ShortLivedIdentityMissing"));
    assert!(
        message.contains("spec.shortLivedCredentials.roleARN") && message.contains("MVO_VELERO_ROLE_ARN"),
        "names the field and the env var: {message}"
    );
    let requests = f.dynamic(&build::credentials_request());
    assert!(
        requests.get_opt("velero-iam-credentials").await.expect("get").is_none(),
        "no long-lived request"
    );
    assert!(f.api::<Deployment>().get_opt("velero").await.expect("get").is_none());

    f.installs()
        .patch(
            "cluster",
            &PatchParams::apply("admin").force(),
            &Patch::Apply(&json!({
            "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
            "metadata": {"name": "cluster"}, "spec": {"shortLivedCredentials": {"roleARN": ROLE}}})),
        )
        .await
        .expect("set role");
    f.reconcile().await;
    let request = requests.get("velero-iam-credentials").await.expect("CredentialsRequest");
    assert_eq!(request.data["spec"]["providerSpec"]["stsIAMRoleARN"], ROLE);
    assert_eq!(request.data["spec"]["cloudTokenPath"], "/var/run/secrets/openshift/serviceaccount/token");
    assert_token_mounted(&f).await;

    f.mint_secret("credentials").await;
    f.complete_job(&jobs::crd_job_output(&["backups.velero.io"]), true).await;
    f.reconcile().await;
    let bsl = f.dynamic(&build::backup_storage_location()).get("default").await.expect("BSL");
    assert_eq!(bsl.data["spec"]["config"]["enableSharedConfig"], "true");
    assert_eq!(bsl.data["spec"]["config"]["region"], "eu-west-1");
    f.roll_out().await;
    f.reconcile().await;
    assert_eq!(f.condition("Ready").await.0, "True");
}

#[tokio::test]
async fn wif_install_end_to_end() {
    let (env, client) = token_based_cluster().await;
    let f = token_based_fixture(&env, &client, gcp_platform()).await;
    f.create(json!({"shortLivedCredentials": {"serviceAccountEmail": GSA}})).await;
    f.reconcile().await;
    let (status, reason, message) = f.condition("CredentialsReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ShortLivedIdentityMissing"));
    assert!(
        message.contains("spec.shortLivedCredentials.audience") && !message.contains("serviceAccountEmail"),
        "names only what is missing: {message}"
    );
    // The schema refuses an audience that is not a pool provider.
    let bad = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall", "metadata": {"name": "cluster"},
                     "spec": {"shortLivedCredentials": {"serviceAccountEmail": GSA, "audience": "openshift"}}});
    let refused =
        f.installs().patch("cluster", &PatchParams::apply("admin").force(), &Patch::Apply(&bad)).await;
    assert!(refused.is_err(), "CRD validation");

    let good = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall", "metadata": {"name": "cluster"},
                      "spec": {"shortLivedCredentials": {"serviceAccountEmail": GSA, "audience": AUDIENCE}}});
    f.installs()
        .patch("cluster", &PatchParams::apply("admin").force(), &Patch::Apply(&good))
        .await
        .expect("spec");
    f.reconcile().await;
    let request =
        f.dynamic(&build::credentials_request()).get("velero-iam-credentials").await.expect("request");
    assert_eq!(request.data["spec"]["providerSpec"]["serviceAccountEmail"], GSA);
    assert_eq!(request.data["spec"]["providerSpec"]["audience"], AUDIENCE);
    assert_eq!(request.data["spec"]["cloudTokenPath"], "/var/run/secrets/openshift/serviceaccount/token");
    assert_token_mounted(&f).await;
    let deployment = f.api::<Deployment>().get("velero").await.expect("Deployment");
    let env = &deployment.spec.and_then(|s| s.template.spec).expect("pod").containers[0].env;
    assert!(
        env.iter().flatten().any(|e| e.name == "GOOGLE_APPLICATION_CREDENTIALS"
            && e.value.as_deref() == Some("/credentials/service_account.json")),
        "the external_account file is found by Google's libraries"
    );

    f.mint_secret("service_account.json").await;
    f.complete_job(&jobs::crd_job_output(&["backups.velero.io"]), true).await;
    f.reconcile().await;
    let bsl = f.dynamic(&build::backup_storage_location()).get("default").await.expect("BSL");
    assert_eq!(bsl.data["spec"]["config"]["serviceAccount"], GSA);
    let vsl = f.dynamic(&build::volume_snapshot_location()).get("default").await.expect("VSL");
    assert_eq!(vsl.data["spec"]["config"]["project"], "mvo-project");
}

async fn assert_token_mounted(f: &Fixture) {
    let deployment = f.api::<Deployment>().get("velero").await.expect("Deployment");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod");
    let volume = pod.volumes.iter().flatten().find(|v| v.projected.is_some()).expect("projected volume");
    let source = volume.projected.as_ref().and_then(|p| p.sources.clone()).expect("sources")[0]
        .service_account_token
        .clone()
        .expect("service account token");
    assert_eq!((source.audience.as_deref(), source.path.as_str()), (Some("openshift"), "token"));
    let mount =
        pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == volume.name).expect("mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/var/run/secrets/openshift/serviceaccount", Some(true))
    );
}

// ---------------------------------------------------------------------------------------------
// The CRD lifecycle

async fn in_memory() -> Fixture {
    Fixture::shared(Arc::new(InMemoryPlatform::new("eu-west-1")), None).await
}

/// Installs Velero up to Ready with one test CRD; returns its name.
async fn ready(f: &Fixture) -> String {
    f.create(json!({})).await;
    f.reconcile().await;
    f.mint_secret("credentials").await;
    let crd = f.crd_name("widgets");
    f.complete_job(&jobs::crd_job_output(&[&crd]), true).await;
    f.reconcile().await;
    f.roll_out().await;
    f.reconcile().await;
    assert_eq!(f.condition("Ready").await.0, "True", "{:?}", f.condition("VeleroReady").await);
    crd
}

#[tokio::test]
async fn a_deleted_velero_crd_is_restored_at_the_next_resync() {
    let f = in_memory().await;
    let crd = ready(&f).await;
    let crds = crds_api(&f.client);
    let job = f.job().await;
    // Steady state: verified from the record, no new Job.
    f.reconcile().await;
    assert_eq!(f.job().await.resource_version(), job.resource_version());

    // The Job is gone (TTL) and someone deletes the CRD: the Job runs again and restores it.
    f.api::<Job>().delete(&job.name_any(), &DeleteParams::background()).await.expect("ttl");
    for pod in f.api::<Pod>().list(&Default::default()).await.expect("pods").items {
        f.api::<Pod>().delete(&pod.name_any(), &DeleteParams::default()).await.expect("pod gone");
    }
    crds.delete(&crd, &DeleteParams::default()).await.expect("delete CRD");
    // The API server removes a CRD after its cleanup finalizer ran.
    for _ in 0..100 {
        if crds.get_opt(&crd).await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    f.reconcile().await;
    assert_eq!(f.condition("VeleroReady").await.1, "InstallingVeleroCRDs");
    let rerun = f.job().await;
    assert_ne!(rerun.uid(), job.uid(), "a new run of the Job");
    f.complete_job(&jobs::crd_job_output(&[&crd]), true).await;
    f.reconcile().await;
    assert!(crds.get_opt(&crd).await.expect("get").is_some(), "CRD restored");

    // Edited by someone: restored from the Job's output (still there) at the next pass.
    let edit = json!({"spec": {"versions": [{"name": "v1", "served": false, "storage": true,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    crds.patch(&crd, &PatchParams::default(), &Patch::Merge(&edit)).await.expect("edit");
    f.reconcile().await;
    let restored = crds.get(&crd).await.expect("CRD");
    assert!(restored.spec.versions[0].served, "edit reverted");
    assert_eq!(f.condition("VeleroReady").await.0, "True");
}

#[tokio::test]
async fn a_velero_crd_another_installer_applies_is_then_left_to_it_and_reported() {
    let f = in_memory().await;
    let crd = ready(&f).await;
    // OADP takes the CRD over with a server-side apply of the same content.
    let theirs: CustomResourceDefinition =
        serde_saphyr::from_str(&jobs::crd_job_output(&[&crd])).expect("crd");
    let crds = crds_api(&f.client);
    crds.patch(&crd, &PatchParams::apply("oadp-operator").force(), &Patch::Apply(&theirs))
        .await
        .expect("takeover");
    let before = crds.get(&crd).await.expect("crd");
    f.reconcile().await;
    f.reconcile().await;
    let after = crds.get(&crd).await.expect("crd");
    assert_eq!(after.resource_version(), before.resource_version(), "left alone");
    let (status, _, message) = f.condition("VeleroReady").await;
    assert_eq!(status, "True");
    assert!(message.contains(&crd), "reported: {message}");
    assert_eq!(f.events("VeleroCRDsManagedElsewhere").await.len(), 1, "one event");
}

#[tokio::test]
async fn a_changed_job_template_creates_a_new_job_and_never_patches_the_old_one() {
    let f = in_memory().await;
    let crd = ready(&f).await;
    let old = f.job().await;
    f.installs()
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"veleroImage": "velero/velero:v9.9.9"}})),
        )
        .await
        .expect("new image");
    f.reconcile().await;
    let new = f.job().await;
    assert_ne!(new.name_any(), old.name_any(), "the Job is named by its template");
    let image =
        new.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|p| p.containers[0].image.clone());
    assert_eq!(image, Some(Some("velero/velero:v9.9.9".into())));
    let updates: Vec<_> = new
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.operation.as_deref() != Some("Update"))
        .collect();
    assert!(updates.is_empty(), "created, never applied/patched: {updates:?}");
    assert!(f.api::<Job>().get_opt(&old.name_any()).await.expect("get").is_none(), "the old Job is replaced");
    assert_eq!(f.condition("VeleroReady").await.1, "InstallingVeleroCRDs", "new image: CRDs checked again");
    f.complete_job(&jobs::crd_job_output(&[&crd]), true).await;
    f.reconcile().await;
    f.roll_out().await;
    f.reconcile().await;
    assert_eq!(f.condition("VeleroReady").await.0, "True");
}

#[tokio::test]
async fn a_pod_the_job_does_not_own_is_ignored() {
    let f = in_memory().await;
    f.create(json!({})).await;
    f.reconcile().await;
    let crd = f.crd_name("forged");
    f.complete_job(&jobs::crd_job_output(&[&crd]), false).await;
    f.reconcile().await;
    assert!(crds_api(&f.client).get_opt(&crd).await.expect("get").is_none(), "log of a foreign pod applied");
    assert_eq!(f.condition("VeleroReady").await.1, "InstallingVeleroCRDs");
}

#[tokio::test]
async fn output_with_a_crd_outside_velero_io_is_refused_with_a_warning_and_nothing_applied() {
    let f = in_memory().await;
    f.create(json!({})).await;
    f.reconcile().await;
    let ours = f.crd_name("widgets");
    let other = format!("evil{}.example.com", f.namespace.rsplit('-').next().expect("suffix"));
    f.complete_job(&jobs::crd_job_output(&[&ours, &other]), true).await;
    f.reconcile().await;
    f.reconcile().await;
    let crds = crds_api(&f.client);
    assert!(crds.get_opt(&ours).await.expect("get").is_none(), "nothing applied");
    assert!(crds.get_opt(&other).await.expect("get").is_none(), "nothing applied");
    let (status, reason, message) = f.condition("VeleroReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "VeleroCRDsRefused"));
    assert!(message.contains(&other), "{message}");
    let warnings = f.events("VeleroCRDsRefused").await;
    assert_eq!(warnings.len(), 1, "one Warning: {warnings:?}");
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn a_failed_job_names_the_image_pull_and_runs_again_after_a_wait() {
    let f = in_memory().await;
    f.create(json!({})).await;
    f.reconcile().await;
    let job = f.job().await;
    let waiting = json!({"phase": "Pending", "containerStatuses": [{"name": "velero-crds", "image": "velero",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"velero\""}}}]});
    jobs::crd_job_pod(&f.client, &job, "", true, waiting).await.expect("CRD Job pod");
    f.reconcile().await;
    let (status, reason, message) = f.condition("VeleroReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "VeleroCRDJobStuck"));
    assert!(message.contains("ImagePullBackOff"), "{message}");

    // The deadline fails the Job: it waits before running again, then runs again.
    let just_now = k8s_openapi::jiff::Timestamp::now().to_string();
    let failed = |at: &str| {
        json!({"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
        "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline",
        "lastTransitionTime": at, "lastProbeTime": at}]}})
    };
    let jobs = f.api::<Job>();
    jobs.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&failed(&just_now)))
        .await
        .expect("failed");
    f.reconcile().await;
    let (_, reason, message) = f.condition("VeleroReady").await;
    assert_eq!(reason, "VeleroCRDJobFailed");
    assert!(message.contains("ImagePullBackOff") && message.contains("again in"), "{message}");
    assert!(jobs.get_opt(&job.name_any()).await.expect("get").is_some(), "not retried before the wait");

    jobs.patch_status(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&failed("2026-01-01T00:00:00Z")),
    )
    .await
    .expect("failed long ago");
    f.reconcile().await;
    assert!(jobs.get_opt(&job.name_any()).await.expect("get").is_none(), "failed Job removed to run again");
    f.reconcile().await;
    assert_ne!(f.job().await.uid(), job.uid(), "run again");
}

// ---------------------------------------------------------------------------------------------
// Readiness

#[tokio::test]
async fn velero_is_ready_only_when_the_current_generation_is_rolled_out() {
    let f = in_memory().await;
    ready(&f).await;
    // A spec change rolls out a new generation; the old pods' availability does not count.
    f.installs()
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"pluginImage": "plugin:v2"}})),
        )
        .await
        .expect("spec");
    f.reconcile().await;
    let (status, reason, message) = f.condition("VeleroReady").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "DeploymentUnavailable"));
    assert!(message.contains("not observed"), "{message}");
    let generation = f.api::<Deployment>().get("velero").await.expect("d").metadata.generation;
    let half = json!({"status": {"observedGeneration": generation, "replicas": 2, "updatedReplicas": 1,
                                 "availableReplicas": 1}});
    f.api::<Deployment>()
        .patch_status("velero", &PatchParams::default(), &Patch::Merge(&half))
        .await
        .expect("s");
    f.reconcile().await;
    assert!(f.condition("VeleroReady").await.2.contains("rolling out"));
    f.roll_out().await;
    f.reconcile().await;
    assert_eq!(f.condition("VeleroReady").await.0, "True");
}

#[tokio::test]
async fn credentials_are_ready_only_with_the_key_velero_reads() {
    let f = in_memory().await;
    f.create(json!({})).await;
    f.reconcile().await;
    f.mint_secret("service_account.json").await;
    f.reconcile().await;
    let (status, _, message) = f.condition("CredentialsReady").await;
    assert_eq!(status, "False");
    assert!(message.contains("\"credentials\""), "names the key: {message}");
    f.mint_secret("credentials").await;
    f.reconcile().await;
    assert_eq!(f.condition("CredentialsReady").await.0, "True");
}
