//! The operator binary on an Azure cluster: an `Infrastructure` of type `Azure` (resource group
//! and cloud name in `platformStatus.azure`, region only in the install-config fallback), the
//! storage account named in the VeleroInstall's Azure section, the Blob container in a real
//! Azurite (HTTPS, bearer token, the cluster CA bundle), until `Ready`.
//!
//! The binary runs as the operator's ServiceAccount with `deploy/`'s RBAC. The test plays the
//! cluster's other controllers (credential operator, Job controller, kubelet), which the test
//! API server lacks. No Entra ID emulator exists: the credentials secret holds a pre-issued
//! token (`azure_bearer_token`) that Azurite accepts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Namespace, Secret},
};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use mvo_core::{Owner, Platform, ProviderConfig};
use mvo_operator::{crd::VeleroInstall, infrastructure::Infrastructure, reconcile::build};
use mvo_provider_azure::AzurePlatform;
use mvo_testkit::env::{AZURITE_ACCOUNT, AzuriteEnv, KubeEnv, foreign_crds, install_crds};
use serde_json::{Value, json};

const NAMESPACE: &str = "openshift-velero";
const INFRA: &str = "azure-cluster-x8k2p";
const REGION: &str = "eastus";
const RESOURCE_GROUP: &str = "azure-cluster-x8k2p-rg";
const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";

fn apply() -> PatchParams {
    PatchParams::apply("azure-test").force()
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not seen within 60 s");
}

async fn condition(installs: &Api<VeleroInstall>, type_: &str) -> Option<(String, String, String)> {
    let vi = installs.get("cluster").await.ok()?;
    vi.status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn azure_cluster(client: &Client) {
    let mut crds = foreign_crds().expect("stand-in CRDs");
    crds.push(mvo_operator::crd::crd());
    install_crds(client, crds).await.expect("CRDs");
    for ns in [NAMESPACE, "kube-system"] {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        Api::<Namespace>::all(client.clone()).patch(ns, &apply(), &Patch::Apply(object)).await.expect("ns");
    }
    let infra: Api<Infrastructure> = Api::all(client.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                        "metadata": {"name": "cluster"}, "spec": {"platformSpec": {"type": "Azure"}}});
    infra.patch("cluster", &apply(), &Patch::Apply(&object)).await.expect("Infrastructure");
    // As OpenShift on Azure reports it: no region in platformStatus.azure.
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "status": {
        "infrastructureName": INFRA, "platform": "Azure",
        "platformStatus": {"type": "Azure", "azure": {"resourceGroupName": RESOURCE_GROUP, "cloudName": "AzurePublicCloud"}}}});
    infra.patch_status("cluster", &apply(), &Patch::Apply(&status)).await.expect("status");
    let install_config = format!(
        "apiVersion: v1\nmetadata:\n  name: azure-cluster\nplatform:\n  azure:\n    region: {REGION}\n    baseDomainResourceGroupName: dns-rg\n    cloudName: AzurePublicCloud\n"
    );
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-config-v1"},
                            "data": {"install-config": install_config}});
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .patch("cluster-config-v1", &apply(), &Patch::Apply(&config_map))
        .await
        .expect("install-config");
}

/// What the credential operator writes into `velero-iam-credentials` for a service principal
/// (its key names, `azure_resourcegroup` included); the file Velero reads is not among them.
fn minted(client_secret: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("azure_client_id".to_owned(), "velero-app".to_owned()),
        ("azure_client_secret".to_owned(), client_secret.to_owned()),
        ("azure_tenant_id".to_owned(), "tenant".to_owned()),
        ("azure_subscription_id".to_owned(), SUBSCRIPTION.to_owned()),
        ("azure_resourcegroup".to_owned(), RESOURCE_GROUP.to_owned()),
        ("azure_resource_prefix".to_owned(), INFRA.to_owned()),
        ("azure_region".to_owned(), REGION.to_owned()),
    ])
}

/// Writes Velero's secret as the credential operator does (the whole data, replaced).
async fn mint(client: &Client, data: &BTreeMap<String, String>) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                        "stringData": data});
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .patch("velero-iam-credentials", &apply(), &Patch::Apply(&secret))
        .await
        .expect("Velero's secret");
}

/// The file in the operator's rendered secret, if it exists.
async fn rendered(client: &Client) -> Option<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get_opt("velero-cloud-credentials")
        .await
        .ok()??;
    String::from_utf8(secret.data?.get("cloud")?.0.clone()).ok()
}

/// The Job controller and kubelet (the CRD Job prints one Velero CRD) and the Deployment
/// controller (the rollout is available).
async fn play_cluster_controllers(client: &Client) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let job =
        wait_for("CRD Job", async || jobs.list(&Default::default()).await.ok()?.items.into_iter().next())
            .await;
    let output = mvo_testkit::jobs::crd_job_output(&["backups.velero.io"]);
    mvo_testkit::jobs::complete_crd_job(client, &job, &output, true).await.expect("CRD Job");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let generation =
        wait_for("Deployment", async || deployments.get_opt("velero").await.ok()?).await.metadata.generation;
    let available = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                      "readyReplicas": 1, "availableReplicas": 1}});
    deployments
        .patch_status("velero", &PatchParams::default(), &Patch::Merge(&available))
        .await
        .expect("rollout");
}

/// The operator binary as its ServiceAccount against Azurite, with the credentials directory and
/// CA bundle under `work` (see [`start_operator`]); the caller adds the subcommand.
async fn operator_command(env: &KubeEnv, azurite: &AzuriteEnv, work: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_managed-velero-operator"));
    command
        .env("KUBECONFIG", env.operator_kubeconfig(&[]).await.expect("operator kubeconfig"))
        .env("WATCH_NAMESPACE", NAMESPACE)
        .env("MVO_CLOUD_ENDPOINT", azurite.endpoint())
        .env("MVO_CREDENTIALS_DIR", work.join("credentials"))
        .env("MVO_TRUSTED_CA_BUNDLE", work.join("tls-ca-bundle.pem"))
        .env("NO_COLOR", "1");
    command
}

/// The operator binary as its ServiceAccount, on Azurite with a bearer token and the subscription
/// in its credentials directory (no tenant); returns the process, its log file, the token and
/// the work directory (`credentials/`, `tls-ca-bundle.pem`).
async fn start_operator(
    env: &KubeEnv,
    azurite: &AzuriteEnv,
    name: &str,
) -> (tokio::process::Child, PathBuf, String, PathBuf) {
    let work = std::env::temp_dir().join(format!("mvo-azure-{name}-{}", uuid::Uuid::new_v4().simple()));
    let credentials = work.join("credentials");
    std::fs::create_dir_all(&credentials).expect("dir");
    let token = AzuriteEnv::bearer_token(Duration::from_secs(3600));
    std::fs::write(credentials.join("azure_bearer_token"), &token).expect("token");
    std::fs::write(credentials.join("azure_subscription_id"), SUBSCRIPTION).expect("subscription");
    let bundle = work.join("tls-ca-bundle.pem");
    std::fs::write(&bundle, azurite.ca_pem()).expect("CA bundle");
    let log = work.join("operator.log");
    let operator = operator_command(env, azurite, &work)
        .await
        .args(["run", "--leader-election", "false", "--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("operator starts");
    (operator, log, token, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_cluster_reaches_ready_with_a_private_container_in_the_named_account() {
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let azurite = AzuriteEnv::start().expect("Azurite (run `make testenv`)");
    let client = env.client().await.expect("client");
    azure_cluster(&client).await;

    let (mut operator, log, token, work) = start_operator(&env, &azurite, "op").await;
    let credentials = work.join("credentials");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Without the account: the condition names the field to set, nothing is created.
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), NAMESPACE);
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {}});
    installs.patch("cluster", &apply(), &Patch::Apply(&vi)).await.expect("VeleroInstall");
    let (status, reason, message) = wait_for("BucketReady=False", async || {
        condition(&installs, "BucketReady").await.filter(|c| c.0 == "False")
    })
    .await;
    assert!(message.contains("spec.azure.storageAccount"), "{status} {reason}: {message}\n{}", log_text());

    // A bad account name is refused by the CRD schema.
    let bad = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                     "metadata": {"name": "cluster"}, "spec": {"azure": {"storageAccount": "Not-An-Account"}}});
    let err = installs.patch("cluster", &apply(), &Patch::Apply(&bad)).await.expect_err("schema refuses");
    assert!(err.to_string().contains("storageAccount"), "{err}");

    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {"azure": {"storageAccount": AZURITE_ACCOUNT}}});
    installs.patch("cluster", &apply(), &Patch::Apply(&vi)).await.expect("account named");
    let container = wait_for("container provisioned", async || {
        let bucket = installs.get("cluster").await.ok()?.status?.storage_bucket?;
        bucket.provisioned.then_some(bucket.name?)
    })
    .await;
    let status = installs.get("cluster").await.expect("get").status.expect("status");
    assert_eq!((status.platform.as_deref(), status.region.as_deref()), (Some("Azure"), Some(REGION)));

    // The container as Azurite holds it: private, with both owner marks.
    let config = ProviderConfig {
        platform: "Azure".into(),
        region: Some(REGION.into()),
        infrastructure_name: INFRA.into(),
        credentials_dir: credentials.clone(),
        endpoint: Some(azurite.endpoint().to_owned()),
        ..Default::default()
    };
    let azure =
        AzurePlatform::builder(&config).trust_pem(azurite.ca_pem().to_vec()).build().expect("platform");
    let store = azure.object_store(&json!({"storageAccount": AZURITE_ACCOUNT})).expect("store");
    let state = store.observe_bucket(&container).await.expect("container in Azurite");
    assert!(state.public_access.is_fully_blocked(), "{state:?}");
    assert!(Owner::new(INFRA).owns_tags(&state.tags), "{:?}", state.tags);

    // Velero's objects name the account, the cluster's resource group and the subscription.
    let bsl: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &build::backup_storage_location());
    let credentials_requests: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &build::credentials_request());
    let request = wait_for("CredentialsRequest", async || {
        credentials_requests.get_opt("velero-iam-credentials").await.ok()?
    })
    .await;
    assert_eq!(request.data["spec"]["providerSpec"]["kind"], "AzureProviderSpec");
    // The credential operator's secret, half written: CredentialsReady names the missing key.
    let mut partial = minted("velero-secret");
    partial.remove("azure_client_id");
    mint(&client, &partial).await;
    play_cluster_controllers(&client).await;
    let (_, reason, message) = wait_for("CredentialsReady names the key", async || {
        condition(&installs, "CredentialsReady")
            .await
            .filter(|c| c.0 == "False" && c.2.contains("azure_client_id"))
    })
    .await;
    assert_eq!(reason, "WaitingForCredentials", "{message}");
    assert!(rendered(&client).await.is_none(), "nothing rendered from a partial secret");
    mint(&client, &minted("velero-secret")).await;
    let bsl = wait_for("BSL", async || bsl.get_opt("default").await.ok()?).await;
    let spec: &Value = &bsl.data["spec"];
    assert_eq!(spec["provider"], "azure");
    assert_eq!(spec["objectStorage"]["bucket"], container.as_str());
    assert_eq!(spec["config"]["storageAccount"], AZURITE_ACCOUNT);
    assert_eq!(spec["config"]["resourceGroup"], RESOURCE_GROUP);
    assert_eq!(spec["config"]["subscriptionId"], SUBSCRIPTION);
    wait_for("Ready", async || condition(&installs, "Ready").await.filter(|c| c.0 == "True")).await;
    let (_, _, message) = condition(&installs, "BucketReady").await.expect("BucketReady");
    assert!(
        message.contains("left to the") || message.contains("account"),
        "BucketReady says what the account keeps: {message}"
    );
    let deployment: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pod = deployment.get("velero").await.expect("velero").spec.expect("spec").template.spec.expect("pod");
    let images: Vec<String> = pod.init_containers.iter().flatten().filter_map(|c| c.image.clone()).collect();
    assert!(images.iter().any(|i| i.contains("velero-plugin-for-microsoft-azure")), "{images:?}");
    let container_env: Vec<(String, String)> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let file_env = ("AZURE_CREDENTIALS_FILE".to_owned(), "/credentials/cloud".to_owned());
    assert!(container_env.contains(&file_env), "{container_env:?}");
    assert!(!log_text().contains(&token), "the token leaked into the operator log");

    // Velero reads the operator's rendered file, not the credential operator's secret: the
    // cluster's resource group and cloud name from the Infrastructure, the rest from the secret.
    let file = |secret: &str| {
        format!(
            "AZURE_SUBSCRIPTION_ID={SUBSCRIPTION}\nAZURE_TENANT_ID=tenant\nAZURE_CLIENT_ID=velero-app\n\
             AZURE_CLIENT_SECRET={secret}\nAZURE_RESOURCE_GROUP={RESOURCE_GROUP}\nAZURE_CLOUD_NAME=AzurePublicCloud\n"
        )
    };
    assert_eq!(rendered(&client).await.as_deref(), Some(file("velero-secret").as_str()));
    let derived = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get("velero-cloud-credentials")
        .await
        .expect("derived");
    let owner = &derived.metadata.owner_references.expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VeleroInstall", "cluster", Some(true))
    );
    let volume =
        pod.volumes.iter().flatten().find(|v| v.name == "cloud-credentials").expect("credentials volume");
    assert_eq!(
        volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
        Some("velero-cloud-credentials")
    );
    let (status, _, message) = condition(&installs, "CredentialsReady").await.expect("CredentialsReady");
    assert!(status == "True" && message.contains("velero-cloud-credentials"), "{message}");

    // A rotation reaches the rendered file through the watch on the source secret, not a resync.
    mint(&client, &minted("rotated-secret")).await;
    wait_for("rotation rendered", async || rendered(&client).await.filter(|f| *f == file("rotated-secret")))
        .await;
    assert!(!log_text().contains("rotated-secret"), "the client secret leaked into the operator log");

    // Plan mode: the missing rendered secret is listed, not written.
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .delete("velero-cloud-credentials", &Default::default())
        .await
        .expect("delete the rendered secret");
    let plan = operator_command(&env, &azurite, &work)
        .await
        .args(["plan", "--log-format", "text"])
        .output()
        .await
        .expect("plan runs");
    let out = format!("{}{}", String::from_utf8_lossy(&plan.stdout), String::from_utf8_lossy(&plan.stderr));
    assert!(plan.status.success(), "{out}");
    assert!(out.contains("create Secret/velero-cloud-credentials"), "{out}");
    assert!(!out.contains("rotated-secret"), "the plan printed a secret: {out}");
    assert!(rendered(&client).await.is_none(), "plan wrote the rendered secret");

    std::fs::remove_dir_all(&work).expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_based_azure_cluster_gives_velero_a_federated_identity() {
    const APP: &str = "11111111-2222-3333-4444-555555555555";
    const TENANT: &str = "66666666-7777-8888-9999-000000000000";
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let azurite = AzuriteEnv::start().expect("Azurite (run `make testenv`)");
    let client = env.client().await.expect("client");
    azure_cluster(&client).await;
    mvo_testkit::env::mark_token_based(&client).await.expect("token-based facts");

    // The operator's own credentials carry the subscription but (here) no tenant.
    let (mut operator, log, _, work) = start_operator(&env, &azurite, "wi").await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Without Velero's identity: CredentialsReady names the section's fields, nothing requested.
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), NAMESPACE);
    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {"azure": {"storageAccount": AZURITE_ACCOUNT}}});
    installs.patch("cluster", &apply(), &Patch::Apply(&vi)).await.expect("VeleroInstall");
    let (_, reason, message) = wait_for("CredentialsReady=False", async || {
        condition(&installs, "CredentialsReady").await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "ShortLivedIdentityMissing", "{message}\n{}", log_text());
    assert!(
        message.contains("spec.azure.veleroClientID") && message.contains("spec.azure.tenantID"),
        "{message}"
    );
    assert!(!message.contains("subscriptionID"), "the operator's credentials give it: {message}");
    let credentials_requests: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &build::credentials_request());
    assert!(credentials_requests.get_opt("velero-iam-credentials").await.expect("get").is_none());

    let vi = json!({"apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                    "metadata": {"name": "cluster"}, "spec": {"azure": {
                        "storageAccount": AZURITE_ACCOUNT, "veleroClientID": APP, "tenantID": TENANT}}});
    installs.patch("cluster", &apply(), &Patch::Apply(&vi)).await.expect("identity named");
    let request = wait_for("CredentialsRequest", async || {
        credentials_requests.get_opt("velero-iam-credentials").await.ok()?
    })
    .await;
    let spec = &request.data["spec"];
    assert_eq!(spec["providerSpec"]["azureClientID"], APP);
    assert_eq!(spec["providerSpec"]["azureTenantID"], TENANT);
    assert_eq!(spec["providerSpec"]["azureSubscriptionID"], SUBSCRIPTION);
    assert_eq!(spec["providerSpec"]["azureRegion"], REGION);
    assert_eq!(spec["cloudTokenPath"], "/var/run/secrets/openshift/serviceaccount/token");

    // What the credential operator writes for a federated identity: no secret, no group.
    let minted = BTreeMap::from([
        ("azure_client_id".to_owned(), APP.to_owned()),
        ("azure_tenant_id".to_owned(), TENANT.to_owned()),
        ("azure_subscription_id".to_owned(), SUBSCRIPTION.to_owned()),
        ("azure_region".to_owned(), REGION.to_owned()),
        (
            "azure_federated_token_file".to_owned(),
            "/var/run/secrets/openshift/serviceaccount/token".to_owned(),
        ),
    ]);
    mint(&client, &minted).await;
    play_cluster_controllers(&client).await;
    wait_for("Ready", async || condition(&installs, "Ready").await.filter(|c| c.0 == "True")).await;
    assert_eq!(
        rendered(&client).await.as_deref(),
        Some(
            format!(
                "AZURE_SUBSCRIPTION_ID={SUBSCRIPTION}\nAZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID={APP}\n\
                 AZURE_RESOURCE_GROUP={RESOURCE_GROUP}\nAZURE_CLOUD_NAME=AzurePublicCloud\n"
            )
            .as_str()
        )
    );
    let deployment: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pod = deployment.get("velero").await.expect("velero").spec.expect("spec").template.spec.expect("pod");
    let container_env: BTreeMap<String, String> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for (name, value) in [
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/openshift/serviceaccount/token"),
        ("AZURE_CREDENTIALS_FILE", "/credentials/cloud"),
    ] {
        assert_eq!(container_env.get(name).map(String::as_str), Some(value), "{name}: {container_env:?}");
    }
    let projection = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.projected.as_ref()?.sources.as_ref()?.first()?.service_account_token.clone())
        .expect("projected token");
    assert_eq!((projection.audience.as_deref(), projection.path.as_str()), (Some("openshift"), "token"));
    let mounted = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/var/run/secrets/openshift/serviceaccount");
    assert!(mounted, "the token is mounted where AZURE_FEDERATED_TOKEN_FILE points");

    let _ = operator.start_kill();
    let _ = operator.wait().await;
    std::fs::remove_dir_all(&work).expect("cleanup");
}
