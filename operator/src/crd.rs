//! The `VeleroInstall` API (`managed.openshift.io/v1alpha2`): spec, status and the generated CRD.
//!
//! Status keeps MVO's JSON field names (`storageBucket.name`, `.provisioned`,
//! `.lastSyncTimestamp`) so a cluster that ran MVO is adopted with its bucket. Every spec field
//! is optional; an empty spec means MVO's behaviour. What the schema can check, it checks, so the
//! API server rejects bad specs before the operator sees them.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use mvo_core::SpecSection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only `VeleroInstall` name the operator reconciles.
pub const RECONCILED_NAME: &str = "cluster";

/// Desired state of the Velero installation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "managed.openshift.io",
    version = "v1alpha2",
    kind = "VeleroInstall",
    namespaced,
    status = "VeleroInstallStatus",
    shortname = "vi",
    doc = "A managed Velero installation: a hardened backup bucket and a configured Velero in this namespace.",
    printcolumn = r#"{"name":"Bucket","type":"string","description":"Name of the storage bucket","jsonPath":".status.storageBucket.name"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"boolean","description":"Has the storage bucket been successfully provisioned","jsonPath":".status.storageBucket.provisioned"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.storageBucket.lastSyncTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VeleroInstallSpec {
    /// The bucket to use instead of a generated one, and its encryption key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bucket: Option<StorageBucketSpec>,

    /// Days after which objects under `backups/` expire (default 90). Must exceed the longest
    /// TTL of any Velero Schedule, or backups disappear before Velero expires them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub backup_retention_days: Option<u32>,

    /// How often bucket settings are re-checked, as a Go-style duration such as `60m` or `1h30m`
    /// (default `60m`, at least `1m`, at most `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,9}(s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('24h')").message("must be between 1m and 24h"))]
    pub resync_interval: Option<String>,

    /// Velero server image (default: the pinned release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub velero_image: Option<String>,

    /// Velero cloud plugin image (default: the pinned release for the cluster's cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub plugin_image: Option<String>,

    /// Resources of the Velero container (default requests 500m CPU / 128Mi, limits 1 CPU / 512Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Velero's cloud identity on clusters whose credential operator only mints short-lived
    /// credentials (CloudCredential `credentialsMode: Manual` with a service-account issuer: AWS
    /// STS, GCP workload identity federation). Ignored elsewhere. Defaults come from the
    /// operator's `MVO_VELERO_*` environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_lived_credentials: Option<ShortLivedCredentialsSpec>,

    /// The providers' own sections (`spec.<key>`), as plain JSON: their schemas are merged into
    /// the CRD by [`crd`] from the registry, so the operator's types never name a cloud's fields.
    #[serde(flatten)]
    #[schemars(skip)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

impl VeleroInstallSpec {
    /// The provider section `key` as given, or `Value::Null` when absent.
    pub fn section(&self, key: Option<&str>) -> &serde_json::Value {
        key.and_then(|k| self.sections.get(k)).unwrap_or(&mvo_core::NO_SECTION)
    }
}

/// Velero's role (AWS) or service account and pool provider (GCP) on token-based clusters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShortLivedCredentialsSpec {
    /// AWS: the IAM role Velero assumes with its projected service-account token.
    #[serde(default, rename = "roleARN", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"))]
    pub role_arn: Option<String>,

    /// GCP: the Google service account Velero impersonates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
    ))]
    pub service_account_email: Option<String>,

    /// GCP: the workload identity pool provider, as
    /// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^//iam\.googleapis\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$"
    ))]
    pub audience: Option<String>,
}

/// The bucket to adopt and how to encrypt it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.kmsKeyID) && has(self.kmsKeyName))").message("set kmsKeyID (AWS) or kmsKeyName (GCP), not both"))]
#[x_kube(validation = Rule::new("!has(self.adoptUnmarkedBucket) || has(self.name)").message("adoptUnmarkedBucket needs name"))]
pub struct StorageBucketSpec {
    /// An existing bucket to use instead of creating one. A bucket that carries this cluster's
    /// owner tags/labels is used as is; one without owner marks only with `adoptUnmarkedBucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub name: Option<String>,

    /// Confirms that the bucket in `name` may be adopted although it carries no owner marks
    /// (it was made outside this operator). The operator then writes its owner marks and enforces
    /// its settings on it, but adds the `backups/` expiry rule only when `backupRetentionDays` is
    /// set explicitly. Without it such a bucket is left untouched and `BucketReady` says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_unmarked_bucket: Option<bool>,

    /// AWS KMS key ARN for SSE-KMS default encryption (default: SSE-S3).
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws(-cn|-us-gov)?:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+$"))]
    pub kms_key_id: Option<String>,

    /// GCP KMS key resource name for default encryption (default: Google-managed keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$"))]
    pub kms_key_name: Option<String>,
}

/// Observed state. The first three fields are MVO's, with MVO's JSON names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VeleroInstallStatus {
    /// The backup bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bucket: Option<StorageBucketStatus>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The cloud platform the operator runs on (`AWS`, `GCP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,

    /// The region the bucket lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// What this operator last did to the bucket beyond MVO's fields: how it was adopted and the
    /// lifecycle expiry it applied (the managed rule is identified by this record, not by shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_bucket: Option<ManagedBucketStatus>,

    /// `PlatformSupported`, `BucketReady`, `CredentialsReady`, `VeleroReady` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// MVO's `status.storageBucket`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageBucketStatus {
    /// Name of the storage bucket created to store Velero backups. Chosen and recorded before the
    /// bucket is created, so a crash in between never leaks a bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,

    /// True once the bucket has been provisioned.
    #[serde(default)]
    pub provisioned: bool,

    /// When the bucket's settings were last checked and enforced successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_timestamp: Option<Time>,
}

/// The operator's own record of its bucket (not part of MVO's status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedBucketStatus {
    /// The bucket this record is about; a record of another bucket is ignored.
    #[schemars(length(max = 63))]
    pub name: String,

    /// The bucket carried no owner marks and was adopted because
    /// `spec.storageBucket.adoptUnmarkedBucket` confirmed it: it gets no `backups/` expiry rule
    /// unless `spec.backupRetentionDays` is set.
    #[serde(default)]
    pub adopted_unmarked: bool,

    /// Days of the `backups/` expiry rule this operator applied last; absent when it applied none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_expiry_days: Option<u32>,
}

/// `conditions` as a list-map keyed by `type`, so server-side apply merges them per type.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// The CRD with every linked provider's spec section merged into `spec`, exactly as
/// `deploy/crds/` holds it for the default build.
pub fn crd() -> CustomResourceDefinition {
    let sections: Vec<&SpecSection> = mvo_core::Registry::global()
        .map(|r| r.registrations().filter_map(|r| r.section).collect())
        .unwrap_or_default();
    crd_with(&sections)
}

/// The CRD with `sections` merged into `spec`, each with the same structural-schema rules kube
/// applies to the operator's own types.
pub fn crd_with(sections: &[&SpecSection]) -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = VeleroInstall::crd();
    let mut generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    for section in sections {
        let mut schema = (section.schema)(&mut generator);
        for transform in generator.transforms_mut() {
            transform.transform(&mut schema);
        }
        let Ok(props) = serde_json::to_value(&schema).and_then(serde_json::from_value::<JSONSchemaProps>)
        else {
            continue;
        };
        let spec = crd.spec.versions.iter_mut().filter_map(|v| {
            v.schema.as_mut()?.open_api_v3_schema.as_mut()?.properties.as_mut()?.get_mut("spec")
        });
        for spec in spec {
            spec.properties.get_or_insert_default().insert(section.key.to_owned(), props.clone());
        }
    }
    crd
}

/// The CRD as YAML, exactly as `deploy/crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&crd())
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(crd()).expect("crd serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn deploy_crd_is_up_to_date() {
        let committed = include_str!("../../deploy/crds/managed.openshift.io_veleroinstalls.yaml");
        let generated = crd_yaml().expect("crd yaml");
        assert!(committed == generated, "deploy/crds is stale: run `make crds` and commit the result");
    }

    #[test]
    fn identity_matches_mvo() {
        let crd = VeleroInstall::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("veleroinstalls.managed.openshift.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "VeleroInstall");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha2");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<&str> =
            version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["Bucket", "Provisioned", "Last Sync", "Ready"]);
    }

    #[test]
    fn status_keeps_mvo_field_names() {
        let bucket = &schema()["properties"]["status"]["properties"]["storageBucket"]["properties"];
        assert_eq!(bucket["name"]["type"], "string");
        assert_eq!(bucket["name"]["maxLength"], 63);
        assert_eq!(bucket["provisioned"]["type"], "boolean");
        assert_eq!(bucket["lastSyncTimestamp"]["format"], "date-time");
    }

    #[test]
    fn conditions_are_a_list_map_keyed_by_type() {
        let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }

    #[test]
    fn spec_is_validated_by_the_schema() {
        let spec = &schema()["properties"]["spec"]["properties"];
        assert_eq!(spec["backupRetentionDays"]["minimum"].as_f64(), Some(1.0));
        assert!(spec["resyncInterval"]["pattern"].is_string());
        assert_eq!(spec["resyncInterval"]["maxLength"], 32);
        let bounds = spec["resyncInterval"]["x-kubernetes-validations"].to_string();
        assert!(bounds.contains("duration('24h')"), "{bounds}");
        let bucket = &spec["storageBucket"];
        assert!(bucket["properties"]["kmsKeyID"]["pattern"].is_string());
        let rules = bucket["x-kubernetes-validations"].to_string();
        assert!(rules.contains("has(self.kmsKeyID) && has(self.kmsKeyName)"), "{rules}");
    }

    #[derive(JsonSchema, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct ToySpec {
        /// The toy account.
        #[schemars(length(min = 3, max = 24), regex(pattern = r"^[a-z0-9]+$"))]
        account_name: Option<String>,
    }

    fn accept(_: &Value) -> Result<(), mvo_core::SectionError> {
        Ok(())
    }

    static TOY: SpecSection =
        SpecSection { key: "toy", schema: |g| g.subschema_for::<ToySpec>(), validate: accept };

    #[test]
    fn provider_sections_are_merged_into_the_spec_and_kept_on_objects() {
        let crd = serde_json::to_value(crd_with(&[&TOY])).expect("crd serialises");
        let spec =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let account = &spec["toy"]["properties"]["accountName"];
        assert_eq!((account["type"].as_str(), account["maxLength"].as_u64()), (Some("string"), Some(24)));
        assert_eq!(account["pattern"], "^[a-z0-9]+$");
        assert!(spec["storageBucket"].is_object(), "the operator's own fields stay");
        assert!(spec["toy"].get("$schema").is_none() && spec["toy"].get("definitions").is_none());

        let vi: VeleroInstall = serde_json::from_value(json!({
            "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
            "metadata": {"name": "cluster"}, "spec": {"toy": {"accountName": "abc"}, "backupRetentionDays": 3}
        }))
        .expect("parses");
        assert_eq!(vi.spec.section(Some("toy")), &json!({"accountName": "abc"}));
        assert_eq!(vi.spec.section(Some("other")), &Value::Null);
        assert_eq!(vi.spec.section(None), &Value::Null);
        assert_eq!(serde_json::to_value(&vi.spec).expect("serialises")["toy"]["accountName"], "abc");
    }

    #[test]
    fn an_mvo_object_deserialises_and_keeps_its_bucket() {
        let mvo = json!({
            "apiVersion": "managed.openshift.io/v1alpha2",
            "kind": "VeleroInstall",
            "metadata": {"name": "cluster", "namespace": "openshift-velero"},
            "spec": {},
            "status": {"storageBucket": {
                "name": "managed-velero-backups-1f0c3a2e-9b5d-4c8e-a7f1-0d2b6e4c8a91",
                "provisioned": true,
                "lastSyncTimestamp": "2026-11-01T10:00:00Z"
            }}
        });
        let vi: VeleroInstall = serde_json::from_value(mvo.clone()).expect("MVO object parses");
        assert_eq!(vi.spec, VeleroInstallSpec::default());
        let bucket = vi.status.as_ref().and_then(|s| s.storage_bucket.as_ref()).expect("bucket status");
        assert!(bucket.provisioned);
        assert_eq!(serde_json::to_value(&vi).expect("serialises")["status"], mvo["status"]);
    }
}
