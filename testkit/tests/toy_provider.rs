//! Adding a cloud is one crate: this test crate registers a toy provider for a platform type the
//! operator has never heard of (`External`, OpenShift's type for clouds it has no code for), and
//! the operator's own startup and reconcile path take it from `Infrastructure` to `Ready` with no
//! operator source change:
//!
//! - the registry hands the operator the toy's facts reader, which finds no region in
//!   `platformStatus.external` and so makes the operator read the install-config fallback;
//! - the toy's spec section (`spec.toy`) is merged into the CRD the operator generates, checked
//!   by the toy's validator, and reaches the toy's object store on every reconcile;
//! - owner marks, the KMS field and Velero's facts are the toy's declarations.
//!
//! Runs against a dedicated strict test API server (the Infrastructure is cluster-scoped) as the
//! operator's ServiceAccount with deploy/'s RBAC.

use std::sync::{Arc, LazyLock};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::Reporter,
};
use mvo_core::{
    Capabilities, CredentialSource, FactsInput, ObjectStore, Platform, ProviderConfig, ProviderFacts,
    ProviderRegistration, Registry, Result, SectionError, ShortLivedError, SpecFields, SpecSection, TagStyle,
    VeleroFacts, VeleroInput,
};
use mvo_operator::{
    crd::VeleroInstall,
    infrastructure::Infrastructure,
    reconcile::{self, Context},
    startup::{self, ProviderSettings},
};
use mvo_testkit::{
    InMemoryCloud, InMemoryPlatform,
    env::{DeployRbac, KubeEnv, foreign_crds, install_crds},
    jobs, memory,
};
use serde_json::{Value, json};

/// The platform type: a real OpenShift type (the Infrastructure CRD refuses others) that no
/// provider crate of this repository serves.
const TOY: &str = "External";
/// The toy cloud every toy platform of this process works in.
static CLOUD: LazyLock<InMemoryCloud> = LazyLock::new(InMemoryCloud::new);

/// The toy provider: the in-memory cloud's buckets, its own name, facts and spec section.
#[derive(Debug)]
struct ToyPlatform {
    region: String,
}

/// `spec.toy`: which toy account holds the bucket.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ToySpec {
    /// The account buckets are created in (lowercase letters and digits).
    #[schemars(length(min = 3, max = 24), regex(pattern = r"^[a-z0-9]+$"))]
    account: Option<String>,
}

fn account(section: &Value) -> String {
    section.get("account").and_then(Value::as_str).unwrap_or(memory::DEFAULT_ACCOUNT).to_owned()
}

/// What the schema cannot say: the account `root` is reserved.
fn validate(section: &Value) -> std::result::Result<(), SectionError> {
    match account(section).as_str() {
        "root" => Err(SectionError { field: "spec.toy.account".into(), message: "root is reserved".into() }),
        _ => Ok(()),
    }
}

static SECTION: SpecSection = SpecSection { key: "toy", schema: |g| g.subschema_for::<ToySpec>(), validate };

impl Platform for ToyPlatform {
    fn name(&self) -> &'static str {
        TOY
    }

    fn region(&self) -> &str {
        &self.region
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { workload_identity: false, kms: false, ..Capabilities::ALL }
    }

    fn tag_style(&self) -> TagStyle {
        TagStyle::Tags
    }

    fn spec_fields(&self) -> SpecFields {
        SpecFields { kms_key: None, section: Some(&SECTION) }
    }

    fn object_store(&self, section: &Value) -> Result<Arc<dyn ObjectStore>> {
        InMemoryPlatform::in_cloud(CLOUD.clone(), &account(section), &self.region).object_store(section)
    }

    fn credential_source(&self) -> Arc<dyn CredentialSource> {
        Arc::new(mvo_core::StaticCredentialSource::access_key("toy", "toy-secret"))
    }

    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError> {
        if input.short_lived.is_some() {
            return Err(ShortLivedError::NotSupported);
        }
        let mut facts = memory::velero_facts(&self.region, input.bucket);
        facts.location.provider = "toy".into();
        facts.location.backup_config.insert("account".into(), account(input.section));
        facts.plugin_image = "registry.example/velero/velero-plugin-for-toy:v1".into();
        Ok(facts)
    }
}

fn build(config: &ProviderConfig) -> Result<Arc<dyn Platform>> {
    Ok(Arc::new(ToyPlatform { region: config.require_region()?.to_owned() }))
}

/// The toy's region: `platformStatus.external.region` (never set by OpenShift), else the
/// install-config's `platform.external.region`.
fn read_facts(input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
    let region = input.field("region")?;
    Ok(ProviderFacts { complete: region.is_some(), region, ..Default::default() })
}

// The one registration line a new provider crate adds.
mvo_core::register_provider!(
    ProviderRegistration::new(TOY, build).with_facts("external", read_facts).with_section(&SECTION)
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_never_heard_of_the_platform_reconciles_it_to_ready() {
    assert!(Registry::global().expect("registry").platforms().contains(&TOY));
    let env = KubeEnv::start().expect("test API server (run `make testenv`)");
    let admin = env.client().await.expect("client");
    let mut crds = foreign_crds().expect("stand-in CRDs");
    let generated = mvo_operator::crd::crd();
    assert!(
        serde_json::to_value(&generated).expect("crd")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            ["properties"]["spec"]["properties"]["toy"]["properties"]["account"]["pattern"]
            .is_string(),
        "the toy's section is merged into the generated CRD"
    );
    assert_ne!(generated, VeleroInstall::crd());
    crds.push(generated);
    install_crds(&admin, crds).await.expect("CRDs");
    let namespace = env.namespace(&admin, "toy").await.expect("namespace");
    let suffix = namespace.rsplit('-').next().expect("suffix").to_owned();
    let crd_name = format!("widgets{suffix}.velero.io");
    DeployRbac::from_repo()
        .expect("deploy/ RBAC")
        .grant_crd_names(&admin, &suffix, std::slice::from_ref(&crd_name))
        .await
        .expect("CRD names");

    // The cluster: an Infrastructure of the unknown type, the region only in the install-config.
    let params = PatchParams::apply("toy-test").force();
    let infra: Api<Infrastructure> = Api::all(admin.clone());
    let object = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                        "metadata": {"name": "cluster"}, "spec": {}});
    infra.patch("cluster", &params, &Patch::Apply(&object)).await.expect("Infrastructure");
    let status = json!({"apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
                        "status": {"infrastructureName": "toy-c1", "platformStatus": {"type": TOY}}});
    infra.patch_status("cluster", &params, &Patch::Apply(&status)).await.expect("status");
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(admin.clone(), "kube-system");
    let install_config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-config-v1"},
        "data": {"install-config": "platform:\n  external:\n    region: toy-west-1\n"}});
    configmaps
        .patch("cluster-config-v1", &params, &Patch::Apply(&install_config))
        .await
        .expect("install-config");

    // The operator's startup path, as its ServiceAccount.
    let operator = env.operator_client(&[&namespace]).await.expect("operator client");
    let registry = Registry::global().expect("registry");
    let facts = startup::discover_facts(&operator, registry).await.expect("facts");
    assert_eq!((facts.platform.as_str(), facts.provider.region.as_deref()), (TOY, Some("toy-west-1")));
    let platform = startup::select_platform(registry, &facts, &ProviderSettings::default()).expect("toy");
    let reporter = Reporter { controller: "toy-test".into(), instance: None };
    let ctx = Arc::new(Context::new(operator.clone(), platform, facts.infrastructure_name, reporter));

    // A reserved account is refused by the toy's validator, with the field named.
    let installs: Api<VeleroInstall> = Api::namespaced(admin.clone(), &namespace);
    let vi: VeleroInstall = serde_json::from_value(json!({
        "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
        "metadata": {"name": "cluster"}, "spec": {"toy": {"account": "root"}}
    }))
    .expect("VeleroInstall");
    installs.create(&PostParams::default(), &vi).await.expect("create");
    let reconcile = || async {
        reconcile::reconcile(Arc::new(installs.get("cluster").await.expect("get")), ctx.clone()).await
    };
    reconcile().await.expect("invalid spec is a condition, not an error");
    let ready = condition(&installs, "Ready").await;
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "InvalidSpec"));
    assert!(ready.2.starts_with("spec.toy.account: root is reserved"), "{}", ready.2);
    assert!(CLOUD.bucket_names().is_empty());

    // The section reaches the store: the bucket is made in account `acme`.
    let fix = json!({"spec": {"toy": {"account": "acme"}}});
    installs.patch("cluster", &PatchParams::default(), &Patch::Merge(&fix)).await.expect("fix spec");
    reconcile().await.expect("first pass");
    let buckets = CLOUD.bucket_names();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    let foreign = InMemoryPlatform::in_cloud(CLOUD.clone(), "other", "toy-west-1");
    let denied =
        foreign.object_store(&mvo_core::NO_SECTION).expect("store").observe_bucket(&buckets[0]).await;
    assert!(denied.is_err(), "the bucket belongs to account acme");
    let owned = InMemoryPlatform::in_cloud(CLOUD.clone(), "acme", "toy-west-1");
    let state = owned.object_store(&mvo_core::NO_SECTION).expect("store").observe_bucket(&buckets[0]).await;
    assert!(mvo_core::Owner::new("toy-c1").owns_tags(&state.expect("acme's bucket").tags));

    // The cluster's other controllers: credential operator, CRD Job, Deployment rollout.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "velero-iam-credentials"},
                        "stringData": {"credentials": "toy"}});
    secrets.patch("velero-iam-credentials", &params, &Patch::Apply(&secret)).await.expect("secret");
    let job_api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), &namespace);
    let job = job_api.list(&Default::default()).await.expect("jobs").items.remove(0);
    jobs::complete_crd_job(&admin, &job, &jobs::crd_job_output(&[&crd_name]), true).await.expect("CRD Job");
    reconcile().await.expect("second pass");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    let generation = deployments.get("velero").await.expect("Deployment").metadata.generation;
    let rolled = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                                   "availableReplicas": 1, "readyReplicas": 1}});
    deployments
        .patch_status("velero", &PatchParams::default(), &Patch::Merge(&rolled))
        .await
        .expect("rollout");
    reconcile().await.expect("third pass");

    let ready = condition(&installs, "Ready").await;
    assert_eq!(ready.0, "True", "{ready:?}");
    let vi = installs.get("cluster").await.expect("get");
    let status = vi.status.expect("status");
    assert_eq!((status.platform.as_deref(), status.region.as_deref()), (Some(TOY), Some("toy-west-1")));
    let bsl = mvo_operator::reconcile::build::backup_storage_location();
    let bsl: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), &namespace, &bsl);
    let bsl = bsl.get("default").await.expect("BSL");
    assert_eq!(
        (bsl.data["spec"]["provider"].as_str(), bsl.data["spec"]["config"]["account"].as_str()),
        (Some("toy"), Some("acme"))
    );
    let pod =
        deployments.get("velero").await.expect("Deployment").spec.and_then(|s| s.template.spec).expect("pod");
    let plugin = pod.init_containers.unwrap_or_default().into_iter().find_map(|c| c.image);
    assert_eq!(plugin.as_deref(), Some("registry.example/velero/velero-plugin-for-toy:v1"));
}

async fn condition(installs: &Api<VeleroInstall>, type_: &str) -> (String, String, String) {
    let vi = installs.get("cluster").await.expect("get");
    let c = vi
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", vi.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}
