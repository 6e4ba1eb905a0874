//! [`GcsControlPlane`]: an in-memory Google Cloud Storage bucket control plane behind the official
//! `google-cloud-storage` crate's stub seam, so a real `StorageControl` client (built with
//! `StorageControl::from_stub`) can be tested without a network or an emulator.
//!
//! It owns the GCS semantics the GCP provider depends on, as GCS answers over gRPC:
//! - bucket names are global across projects; creating a taken name is `FAILED_PRECONDITION`
//!   whoever owns it (GCS's gRPC API answers so; Google's C++ client remaps it to
//!   `ALREADY_EXISTS` for that reason), and names GCS reserves (starting with `goog`, containing
//!   `google` or a close misspelling) are `INVALID_ARGUMENT`;
//! - each stub handed out by [`GcsControlPlane::stub`] calls as one project, which has IAM on its
//!   own buckets only: reading or updating another project's bucket is `PERMISSION_DENIED` (403);
//! - `GetBucket` honours its `read_mask`: fields the mask does not name are not returned
//!   (no mask or `*`: every field), unknown paths are `INVALID_ARGUMENT`;
//! - `UpdateBucket` applies its `update_mask` field by field: only named fields change, unknown or
//!   immutable paths are `INVALID_ARGUMENT`, `labels` / `lifecycle` are replaced as a whole (so a
//!   client that does not merge loses foreign labels, as on GCS), `labels.<key>` sets or removes
//!   one label and `*` replaces every mutable field;
//! - `metageneration` starts at 1 and grows on every update; `if_metageneration_match` is enforced
//!   with `FAILED_PRECONDITION` (HTTP 412);
//! - `project` is reported in project-number form (`projects/<number>`), as GCS does, while
//!   requests may name a project by ID or number;
//! - labels follow Google's label rules (keys start with a lowercase letter, international ones
//!   included; keys and values hold lowercase letters, digits, `_` and `-`; at most 63 characters
//!   each and 64 labels), lifecycle holds at most 100 rules, KMS key names have the resource-name
//!   form and must be in the bucket's location (`INVALID_ARGUMENT` otherwise);
//! - organisation policy and Cloud KMS refusals, as GCS reports them:
//!   [`GcsControlPlane::require_cmek`] makes a project refuse buckets without a default KMS key
//!   (`FAILED_PRECONDITION` naming `constraints/gcp.restrictNonCmekServices`), and
//!   [`GcsControlPlane::deny_kms_key`] makes the Cloud Storage service agent unable to use a key
//!   (`PERMISSION_DENIED` on the Cloud KMS key when a create or update sets it);
//! - `ListBuckets` is per project, sorted by name, paginated, filtered by prefix.
//!
//! Test controls: [`GcsControlPlane::fail_next`] fails the next call with a status code,
//! [`GcsControlPlane::refuse_inspection`] makes one bucket refuse reads, and every request the
//! stubs receive is recorded ([`GcsControlPlane::received`], [`GcsControlPlane::read_masks`]) so
//! tests can assert on update and read masks.
//! [`GcsBackdoor`] implements the contract suite's [`Backdoor`] on top of it.
//!
//! Where it differs from real GCS (deliberately kept simple):
//! - no objects API: objects exist only through [`GcsControlPlane::put_object`], for safety checks;
//! - IAM is "a project may do everything to its own buckets and nothing to others"; there are no
//!   policies, public buckets or cross-project grants;
//! - a bucket refusing inspection is reported in `ListBucketsResponse::unreachable` when the
//!   request asks for partial success, and fails the page with `UNAVAILABLE` otherwise (real GCS
//!   uses `unreachable` for unavailable locations; with `storage.buckets.list` it lists every
//!   bucket with its metadata, which is why [`GcsBackdoor`] does not offer
//!   [`Backdoor::refuse_inspection`] to the contract suite);
//! - update-mask paths supported: `*`, `labels`, `labels.<key>`, `lifecycle`, `iam_config`,
//!   `iam_config.uniform_bucket_level_access[.enabled]`, `iam_config.public_access_prevention`,
//!   `encryption`, `encryption.default_kms_key`, `versioning`, `storage_class`,
//!   `default_event_based_hold`, `soft_delete_policy`, `autoclass`; read-mask paths: `*`, every
//!   top-level field, and the nested paths above;
//! - `ListBuckets` ignores its `read_mask` (full metadata is always listed); ACLs, timestamps,
//!   etags beyond a metageneration-derived value, retention locks and soft delete are not modelled;
//! - lifecycle rules are only checked for a known action type, a non-empty condition and their
//!   number; a KMS key's location must equal the bucket's (dual-region rules are not modelled);
//! - label characters: "international lowercase" is a letter that is not upper case (Unicode
//!   `Ll` and `Lo`, plus the rare `Lt`/`Lm` letters Google may refuse);
//! - disabling uniform bucket-level access is always allowed (GCS limits it to 90 days).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use google_cloud_gax::{
    error::{
        Error as GaxError,
        rpc::{Code, Status},
    },
    options::RequestOptions,
    response::Response,
};
use google_cloud_storage::model::{
    Bucket, CreateBucketRequest, DeleteBucketRequest, GetBucketRequest, ListBucketsRequest,
    ListBucketsResponse, UpdateBucketRequest,
    bucket::{
        Encryption as GcsEncryption, IamConfig, Lifecycle,
        iam_config::UniformBucketLevelAccess,
        lifecycle::{
            Rule,
            rule::{Action, Condition},
        },
    },
};
use google_cloud_wkt::FieldMask;
use mvo_core::{
    Encryption, Error, LifecycleAction, LifecycleRule, PublicAccessBlock, Result, Tags,
    bucket::is_valid_bucket_name,
};

use crate::contract::{Backdoor, Fault};

type GaxResult<T> = std::result::Result<T, GaxError>;

/// Prefix of the resource name of every bucket (`projects/_/buckets/<name>`).
pub const BUCKET_NAME_PREFIX: &str = "projects/_/buckets/";
/// Public access prevention value that blocks public access.
pub const PAP_ENFORCED: &str = "enforced";
/// Public access prevention value that defers to the organisation policy.
pub const PAP_INHERITED: &str = "inherited";
/// Page size when neither the request nor [`GcsControlPlane::with_page_size`] sets one.
const DEFAULT_PAGE_SIZE: usize = 1000;

/// The resource name of bucket `name`.
pub fn bucket_resource(name: &str) -> String {
    format!("{BUCKET_NAME_PREFIX}{name}")
}

/// One request a stub received, as the control plane saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// `GetBucket` of a bucket (short name).
    GetBucket {
        /// Bucket name.
        bucket: String,
    },
    /// `CreateBucket`.
    CreateBucket {
        /// Bucket name.
        bucket: String,
        /// The calling project.
        project: String,
    },
    /// `ListBuckets` of a project.
    ListBuckets {
        /// The `parent` of the request.
        parent: String,
        /// The `prefix` filter.
        prefix: String,
    },
    /// `UpdateBucket`.
    UpdateBucket {
        /// Bucket name.
        bucket: String,
        /// The update mask paths, as sent.
        paths: Vec<String>,
        /// The metageneration precondition, as sent.
        if_metageneration_match: Option<i64>,
    },
    /// `DeleteBucket`.
    DeleteBucket {
        /// Bucket name.
        bucket: String,
    },
}

impl Received {
    /// True for calls that may change something (create, update, delete).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Received::CreateBucket { .. } | Received::UpdateBucket { .. } | Received::DeleteBucket { .. }
        )
    }
}

#[derive(Debug)]
struct Stored {
    bucket: Bucket,
    /// Project ID of the owner.
    project: String,
    /// Other projects granted bucket-level admin (read and update) on it.
    shared_with: BTreeSet<String>,
    refuses_inspection: bool,
    objects: BTreeSet<String>,
}

impl Stored {
    /// Whether `project` has IAM on this bucket: its owner, or a project it was shared with.
    fn allows(&self, project: &str) -> bool {
        self.project == project || self.shared_with.contains(project)
    }
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, Stored>,
    /// Project ID -> project number, assigned on first use.
    projects: BTreeMap<String, u64>,
    /// Queued faults: (operation the fault waits for, or any; code; message).
    faults: VecDeque<(Option<&'static str>, Code, String)>,
    received: Vec<Received>,
    /// The read mask of every GetBucket, in order (`None`: no mask sent).
    read_masks: Vec<Option<Vec<String>>>,
    page_size: Option<usize>,
    /// Project IDs whose organisation policy requires a default KMS key on new buckets.
    cmek_required: BTreeSet<String>,
    /// KMS keys the Cloud Storage service agent has no permission to use.
    denied_kms_keys: BTreeSet<String>,
}

impl State {
    fn project_number(&mut self, project: &str) -> u64 {
        let next = 100_000_000_000 + self.projects.len() as u64 + 1;
        *self.projects.entry(project.to_owned()).or_insert(next)
    }

    /// The project ID that `projects/<id or number>` names, if known.
    fn resolve_project(&mut self, resource: &str) -> Option<String> {
        let ident = resource.strip_prefix("projects/")?;
        if ident.is_empty() || ident == "_" {
            return None;
        }
        if let Some((id, _)) = self.projects.iter().find(|(_, n)| n.to_string() == ident) {
            return Some(id.clone());
        }
        // Unknown numeric identifiers are unknown projects, not project IDs.
        if ident.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.project_number(ident);
        Some(ident.to_owned())
    }

    /// Whether the Cloud Storage service agent may make `key` the default key of a bucket in
    /// `location`: in the same location (`INVALID_ARGUMENT` otherwise) and not denied
    /// (`PERMISSION_DENIED` on the Cloud KMS key otherwise). An empty key is Google-managed.
    fn check_kms_use(&self, key: &str, location: &str) -> GaxResult<()> {
        if key.is_empty() {
            return Ok(());
        }
        let key_location = kms_key_location(key).unwrap_or_default();
        if !key_location.eq_ignore_ascii_case(location) {
            return Err(invalid(format!(
                "Cloud KMS key {key} is in location {key_location:?}, which cannot protect a bucket in \
                 location {location:?}: the key must be in the bucket's location"
            )));
        }
        if self.denied_kms_keys.contains(key) {
            return Err(status(Code::PermissionDenied, KMS_DENIED_MESSAGE));
        }
        Ok(())
    }

    /// The first queued fault for `operation` (or for any operation), removed from the queue.
    fn take_fault(&mut self, operation: &str) -> GaxResult<()> {
        let position = self.faults.iter().position(|(op, _, _)| op.is_none_or(|op| op == operation));
        match position.and_then(|i| self.faults.remove(i)) {
            Some((_, code, message)) => Err(status(code, message)),
            None => Ok(()),
        }
    }
}

fn status(code: Code, message: impl Into<String>) -> GaxError {
    GaxError::service(Status::default().set_code(code).set_message(message))
}

fn invalid(message: impl Into<String>) -> GaxError {
    status(Code::InvalidArgument, message)
}

/// The short bucket name from a resource name `projects/_/buckets/<name>`.
fn short_name(resource: &str) -> GaxResult<&str> {
    resource
        .strip_prefix(BUCKET_NAME_PREFIX)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(format!("invalid bucket resource name {resource:?}")))
}

/// Most labels a bucket may carry.
pub const MAX_LABELS: usize = 64;
/// Most lifecycle rules a bucket may carry.
pub const MAX_LIFECYCLE_RULES: usize = 100;
/// Most characters in a label key or value.
const MAX_LABEL_CHARS: usize = 63;

/// A lowercase letter in Google's label rules (`\p{Ll}` or `\p{Lo}`): any letter that is not
/// upper case, so `é`, `ß` and CJK characters count, `A` and `É` do not.
fn label_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_uppercase()
}

fn label_char(c: char) -> bool {
    label_letter(c) || c.is_numeric() || c == '_' || c == '-'
}

/// Whether `key` is a valid GCS label key: `[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}`.
pub fn is_valid_label_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(label_letter) && key.chars().count() <= MAX_LABEL_CHARS && chars.all(label_char)
}

/// Whether `value` is a valid GCS label value: `[\p{Ll}\p{Lo}\p{N}_-]{0,63}`.
pub fn is_valid_label_value(value: &str) -> bool {
    value.chars().count() <= MAX_LABEL_CHARS && value.chars().all(label_char)
}

/// Whether GCS reserves `name`: it starts with `goog`, or contains `google` or the close
/// misspelling Google's naming rules give as example (`g00gle`: zeros for the o's). Other
/// misspellings GCS may refuse are not modelled.
pub fn is_reserved_bucket_name(name: &str) -> bool {
    let folded = name.replace('0', "o");
    name.starts_with("goog") || folded.contains("google")
}

fn validate_labels(labels: &HashMap<String, String>) -> GaxResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!("a bucket may carry at most {MAX_LABELS} labels")));
    }
    for (key, value) in labels {
        if !is_valid_label_key(key) || !is_valid_label_value(value) {
            return Err(invalid(format!("invalid label {key:?}={value:?}")));
        }
    }
    Ok(())
}

/// Whether `key` has the form `projects/*/locations/*/keyRings/*/cryptoKeys/*`.
pub fn is_valid_kms_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts[6] == "cryptoKeys"
        && [1, 3, 5, 7].iter().all(|i| !parts[*i].is_empty())
}

/// The location of a KMS key name (`projects/*/locations/<location>/...`).
fn kms_key_location(key: &str) -> Option<&str> {
    key.split('/').nth(3)
}

fn kms_key_of(bucket: &Bucket) -> &str {
    bucket.encryption.as_ref().map(|e| e.default_kms_key.as_str()).unwrap_or_default()
}

/// The message GCS answers when its service agent may not use a bucket's default KMS key.
pub const KMS_DENIED_MESSAGE: &str = "Permission denied on Cloud KMS key. Please ensure that your Cloud \
     Storage service account has been authorized to use this key.";
/// The organisation-policy constraint [`GcsControlPlane::require_cmek`] enforces.
pub const CMEK_CONSTRAINT: &str = "constraints/gcp.restrictNonCmekServices";

fn validate_encryption(encryption: Option<&GcsEncryption>) -> GaxResult<()> {
    match encryption {
        Some(e) if !e.default_kms_key.is_empty() && !is_valid_kms_key(&e.default_kms_key) => {
            Err(invalid(format!("invalid KMS key name {:?}", e.default_kms_key)))
        }
        _ => Ok(()),
    }
}

fn validate_lifecycle(lifecycle: Option<&Lifecycle>) -> GaxResult<()> {
    let rules = lifecycle.map(|l| l.rule.as_slice()).unwrap_or_default();
    if rules.len() > MAX_LIFECYCLE_RULES {
        return Err(invalid(format!(
            "a bucket may carry at most {MAX_LIFECYCLE_RULES} lifecycle rules, not {}",
            rules.len()
        )));
    }
    for rule in rules {
        let action = rule.action.as_ref().map(|a| a.r#type.as_str()).unwrap_or_default();
        if !["Delete", "SetStorageClass", "AbortIncompleteMultipartUpload"].contains(&action) {
            return Err(invalid(format!("unknown lifecycle action {action:?}")));
        }
        if rule.condition.as_ref().is_none_or(|c| *c == Condition::default()) {
            return Err(invalid("a lifecycle rule needs a condition"));
        }
    }
    Ok(())
}

fn validate_pap(value: &str) -> GaxResult<String> {
    match value {
        "" | PAP_INHERITED | "unspecified" => Ok(PAP_INHERITED.to_owned()),
        PAP_ENFORCED => Ok(PAP_ENFORCED.to_owned()),
        other => Err(invalid(format!("invalid public access prevention {other:?}"))),
    }
}

/// The fields `*` replaces in an update: every mutable field the plane models.
const MUTABLE_FIELDS: [&str; 9] = [
    "labels",
    "lifecycle",
    "iam_config",
    "encryption",
    "versioning",
    "storage_class",
    "default_event_based_hold",
    "soft_delete_policy",
    "autoclass",
];

/// Applies one update-mask path from `from` onto `to`.
fn apply_path(path: &str, from: &Bucket, to: &mut Bucket) -> GaxResult<()> {
    if let Some(key) = path.strip_prefix("labels.") {
        // One label: set from the patch, or removed when the patch does not carry it.
        match from.labels.get(key) {
            Some(value) if is_valid_label_key(key) && is_valid_label_value(value) => {
                to.labels.insert(key.to_owned(), value.clone());
            }
            Some(value) => return Err(invalid(format!("invalid label {key:?}={value:?}"))),
            None if is_valid_label_key(key) => {
                to.labels.remove(key);
            }
            None => return Err(invalid(format!("invalid label key {key:?} in update mask"))),
        }
        return Ok(());
    }
    match path {
        "*" => {
            for field in MUTABLE_FIELDS {
                apply_path(field, from, to)?;
            }
        }
        "labels" => {
            validate_labels(&from.labels)?;
            to.labels = from.labels.clone();
        }
        "lifecycle" => {
            validate_lifecycle(from.lifecycle.as_ref())?;
            to.lifecycle = from.lifecycle.clone().filter(|l| !l.rule.is_empty());
        }
        "iam_config" => {
            let mut iam = from.iam_config.clone().unwrap_or_default();
            iam.public_access_prevention = validate_pap(&iam.public_access_prevention)?;
            to.iam_config = Some(iam);
        }
        "iam_config.uniform_bucket_level_access" => {
            let ubla = from.iam_config.as_ref().and_then(|i| i.uniform_bucket_level_access.clone());
            to.iam_config.get_or_insert_default().uniform_bucket_level_access = ubla;
        }
        "iam_config.uniform_bucket_level_access.enabled" => {
            let enabled = from
                .iam_config
                .as_ref()
                .and_then(|i| i.uniform_bucket_level_access.as_ref())
                .is_some_and(|u| u.enabled);
            let iam = to.iam_config.get_or_insert_default();
            iam.uniform_bucket_level_access.get_or_insert_default().enabled = enabled;
        }
        "iam_config.public_access_prevention" => {
            let pap =
                from.iam_config.as_ref().map(|i| i.public_access_prevention.as_str()).unwrap_or_default();
            to.iam_config.get_or_insert_default().public_access_prevention = validate_pap(pap)?;
        }
        "encryption" => {
            validate_encryption(from.encryption.as_ref())?;
            to.encryption = from.encryption.clone().filter(|e| *e != GcsEncryption::default());
        }
        "encryption.default_kms_key" => {
            validate_encryption(from.encryption.as_ref())?;
            let key = from.encryption.as_ref().map(|e| e.default_kms_key.clone()).unwrap_or_default();
            let mut encryption = to.encryption.take().unwrap_or_default();
            encryption.default_kms_key = key;
            to.encryption = Some(encryption).filter(|e| *e != GcsEncryption::default());
        }
        "versioning" => to.versioning = from.versioning.clone(),
        "storage_class" => to.storage_class = from.storage_class.clone(),
        "default_event_based_hold" => to.default_event_based_hold = from.default_event_based_hold,
        "soft_delete_policy" => to.soft_delete_policy = from.soft_delete_policy.clone(),
        "autoclass" => to.autoclass = from.autoclass.clone(),
        "name" | "bucket_id" | "project" | "location" | "location_type" | "metageneration" | "etag"
        | "create_time" | "update_time" | "owner" => {
            return Err(invalid(format!("field {path:?} cannot be updated")));
        }
        other => return Err(invalid(format!("unsupported update mask path {other:?}"))),
    }
    Ok(())
}

/// Top-level `Bucket` fields a read mask may name (the v2 API's field names).
const BUCKET_FIELDS: [&str; 32] = [
    "name",
    "bucket_id",
    "etag",
    "project",
    "metageneration",
    "location",
    "location_type",
    "storage_class",
    "rpo",
    "acl",
    "default_object_acl",
    "lifecycle",
    "create_time",
    "cors",
    "update_time",
    "default_event_based_hold",
    "labels",
    "website",
    "versioning",
    "logging",
    "owner",
    "encryption",
    "billing",
    "retention_policy",
    "iam_config",
    "satisfies_pzs",
    "custom_placement_config",
    "autoclass",
    "hierarchical_namespace",
    "soft_delete_policy",
    "object_retention",
    "ip_filter",
];

/// Moves top-level field `field` of `from` onto `to`.
fn take_field(field: &str, from: &mut Bucket, to: &mut Bucket) {
    use std::mem::take;
    match field {
        "name" => to.name = take(&mut from.name),
        "bucket_id" => to.bucket_id = take(&mut from.bucket_id),
        "etag" => to.etag = take(&mut from.etag),
        "project" => to.project = take(&mut from.project),
        "metageneration" => to.metageneration = take(&mut from.metageneration),
        "location" => to.location = take(&mut from.location),
        "location_type" => to.location_type = take(&mut from.location_type),
        "storage_class" => to.storage_class = take(&mut from.storage_class),
        "rpo" => to.rpo = take(&mut from.rpo),
        "acl" => to.acl = take(&mut from.acl),
        "default_object_acl" => to.default_object_acl = take(&mut from.default_object_acl),
        "lifecycle" => to.lifecycle = take(&mut from.lifecycle),
        "create_time" => to.create_time = take(&mut from.create_time),
        "cors" => to.cors = take(&mut from.cors),
        "update_time" => to.update_time = take(&mut from.update_time),
        "default_event_based_hold" => to.default_event_based_hold = take(&mut from.default_event_based_hold),
        "labels" => to.labels = take(&mut from.labels),
        "website" => to.website = take(&mut from.website),
        "versioning" => to.versioning = take(&mut from.versioning),
        "logging" => to.logging = take(&mut from.logging),
        "owner" => to.owner = take(&mut from.owner),
        "encryption" => to.encryption = take(&mut from.encryption),
        "billing" => to.billing = take(&mut from.billing),
        "retention_policy" => to.retention_policy = take(&mut from.retention_policy),
        "iam_config" => to.iam_config = take(&mut from.iam_config),
        "satisfies_pzs" => to.satisfies_pzs = take(&mut from.satisfies_pzs),
        "custom_placement_config" => to.custom_placement_config = take(&mut from.custom_placement_config),
        "autoclass" => to.autoclass = take(&mut from.autoclass),
        "hierarchical_namespace" => to.hierarchical_namespace = take(&mut from.hierarchical_namespace),
        "soft_delete_policy" => to.soft_delete_policy = take(&mut from.soft_delete_policy),
        "object_retention" => to.object_retention = take(&mut from.object_retention),
        "ip_filter" => to.ip_filter = take(&mut from.ip_filter),
        _ => {}
    }
}

/// `bucket` as a read with `mask` returns it: only the named fields (no mask, an empty one or
/// `*`: all of them). Unknown paths are `INVALID_ARGUMENT`, as on GCS.
fn read_masked(bucket: &Bucket, mask: Option<&FieldMask>) -> GaxResult<Bucket> {
    let paths = match mask {
        Some(mask) if !mask.paths.is_empty() => &mask.paths,
        _ => return Ok(bucket.clone()),
    };
    if paths.iter().any(|p| p == "*") {
        return Ok(bucket.clone());
    }
    let (mut source, mut out) = (bucket.clone(), Bucket::default());
    for path in paths {
        match path.as_str() {
            field if BUCKET_FIELDS.contains(&field) => take_field(field, &mut source, &mut out),
            "iam_config.uniform_bucket_level_access"
            | "iam_config.uniform_bucket_level_access.enabled"
            | "iam_config.public_access_prevention"
            | "encryption.default_kms_key" => apply_path(path, bucket, &mut out)?,
            other => return Err(invalid(format!("unknown read mask path {other:?}"))),
        }
    }
    Ok(out)
}

/// An in-memory GCS bucket control plane. Cheap to clone; clones share the buckets.
#[derive(Debug, Clone, Default)]
pub struct GcsControlPlane {
    state: Arc<Mutex<State>>,
}

impl GcsControlPlane {
    /// An empty control plane.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps every `ListBuckets` page at `size` buckets, to exercise pagination.
    pub fn with_page_size(self, size: usize) -> Self {
        self.lock().page_size = Some(size.max(1));
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// A stub that calls as `project` (a project ID), for `StorageControl::from_stub`.
    pub fn stub(&self, project: &str) -> GcsStub {
        self.lock().project_number(project);
        GcsStub { plane: self.clone(), project: project.to_owned() }
    }

    /// The number GCS reports for project `project` (`projects/<number>` in `Bucket::project`).
    pub fn project_number(&self, project: &str) -> u64 {
        self.lock().project_number(project)
    }

    /// Fails the next stub call (of any kind) with `code`; faults queue up in order.
    pub fn fail_next(&self, code: Code) {
        self.lock().faults.push_back((None, code, format!("injected fault: {}", code.name())));
    }

    /// Fails the next call of `operation` (`GetBucket`, `CreateBucket`, `ListBuckets`,
    /// `UpdateBucket`, `DeleteBucket`) with `code`; other calls pass.
    pub fn fail_next_on(&self, operation: &'static str, code: Code) {
        let message = format!("injected fault on {operation}: {}", code.name());
        self.lock().faults.push_back((Some(operation), code, message));
    }

    /// Gives `project` the organisation policy `constraints/gcp.restrictNonCmekServices` for
    /// Cloud Storage: creating a bucket without a default KMS key is `FAILED_PRECONDITION`
    /// naming the constraint, as GCS answers.
    pub fn require_cmek(&self, project: &str) {
        self.lock().cmek_required.insert(project.to_owned());
    }

    /// Takes the Cloud Storage service agent's permission to use KMS key `key` away: a create or
    /// update that sets it as default key is `PERMISSION_DENIED` on the Cloud KMS key.
    pub fn deny_kms_key(&self, key: &str) {
        self.lock().denied_kms_keys.insert(key.to_owned());
    }

    /// The read mask paths of every GetBucket received, in order (`None`: sent without a mask).
    pub fn read_masks(&self) -> Vec<Option<Vec<String>>> {
        self.lock().read_masks.clone()
    }

    /// Makes reads of `bucket` fail with `PERMISSION_DENIED` and listings report it unreachable.
    pub fn refuse_inspection(&self, bucket: &str) -> bool {
        match self.lock().buckets.get_mut(bucket) {
            Some(stored) => {
                stored.refuses_inspection = true;
                true
            }
            None => false,
        }
    }

    /// Grants `project` bucket-level admin on `bucket` (a cross-project IAM binding): it may read
    /// and update the bucket, which still belongs to its owner's project. False when the bucket
    /// does not exist.
    pub fn share(&self, bucket: &str, project: &str) -> bool {
        match self.lock().buckets.get_mut(bucket) {
            Some(stored) => {
                stored.shared_with.insert(project.to_owned());
                true
            }
            None => false,
        }
    }

    /// Inserts a bucket out of band, owned by `project`, exactly as given (name, project,
    /// metageneration and location normalised like a create). Existing buckets are replaced.
    pub fn insert(&self, project: &str, mut bucket: Bucket) {
        let mut state = self.lock();
        let number = state.project_number(project);
        let name = bucket.bucket_id.clone();
        bucket.name = bucket_resource(&name);
        bucket.project = format!("projects/{number}");
        bucket.metageneration = 1;
        bucket.etag = "CAE=".into();
        if bucket.location.is_empty() {
            bucket.location = "US".into();
        }
        bucket.location = bucket.location.to_ascii_uppercase();
        let stored = Stored {
            bucket,
            project: project.to_owned(),
            shared_with: BTreeSet::new(),
            refuses_inspection: false,
            objects: BTreeSet::new(),
        };
        state.buckets.insert(name, stored);
    }

    /// Changes a bucket out of band with `change`, bumping its metageneration like an update.
    /// False when the bucket does not exist.
    pub fn modify(&self, bucket: &str, change: impl FnOnce(&mut Bucket)) -> bool {
        let mut state = self.lock();
        let Some(stored) = state.buckets.get_mut(bucket) else { return false };
        change(&mut stored.bucket);
        stored.bucket.metageneration += 1;
        stored.bucket.etag = format!("CA{}", stored.bucket.metageneration);
        true
    }

    /// The bucket as stored, whoever owns it.
    pub fn bucket(&self, bucket: &str) -> Option<Bucket> {
        self.lock().buckets.get(bucket).map(|s| s.bucket.clone())
    }

    /// The project ID owning `bucket`.
    pub fn owner_project(&self, bucket: &str) -> Option<String> {
        self.lock().buckets.get(bucket).map(|s| s.project.clone())
    }

    /// Removes a bucket and its objects out of band. False when it did not exist.
    pub fn remove(&self, bucket: &str) -> bool {
        self.lock().buckets.remove(bucket).is_some()
    }

    /// Stores an object key in a bucket. False when the bucket does not exist.
    pub fn put_object(&self, bucket: &str, key: &str) -> bool {
        match self.lock().buckets.get_mut(bucket) {
            Some(stored) => {
                stored.objects.insert(key.to_owned());
                true
            }
            None => false,
        }
    }

    /// The object keys of a bucket, sorted; `None` when the bucket does not exist.
    pub fn object_keys(&self, bucket: &str) -> Option<Vec<String>> {
        self.lock().buckets.get(bucket).map(|s| s.objects.iter().cloned().collect())
    }

    /// Every request the stubs received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Requests received that may change something.
    pub fn writes(&self) -> u64 {
        self.lock().received.iter().filter(|r| r.is_write()).count() as u64
    }

    /// Forgets the recorded requests and read masks (buckets are kept).
    pub fn clear_received(&self) {
        let mut state = self.lock();
        state.received.clear();
        state.read_masks.clear();
    }

    fn get(&self, project: &str, req: GetBucketRequest) -> GaxResult<Bucket> {
        let mut state = self.lock();
        let name = short_name(&req.name)?.to_owned();
        state.received.push(Received::GetBucket { bucket: name.clone() });
        state.read_masks.push(req.read_mask.as_ref().map(|m| m.paths.clone()));
        state.take_fault("GetBucket")?;
        let stored = state
            .buckets
            .get(&name)
            .ok_or_else(|| status(Code::NotFound, format!("bucket {name} not found")))?;
        if !stored.allows(project) || stored.refuses_inspection {
            return Err(denied("storage.buckets.get", &name));
        }
        check_metageneration(&stored.bucket, req.if_metageneration_match, req.if_metageneration_not_match)?;
        read_masked(&stored.bucket, req.read_mask.as_ref())
    }

    fn create(&self, project: &str, req: CreateBucketRequest) -> GaxResult<Bucket> {
        let mut state = self.lock();
        state
            .received
            .push(Received::CreateBucket { bucket: req.bucket_id.clone(), project: project.to_owned() });
        state.take_fault("CreateBucket")?;
        if !(req.parent.is_empty() || req.parent == "projects/_") {
            return Err(invalid("parent must be empty or projects/_; the project goes in bucket.project"));
        }
        let mut bucket = req.bucket.unwrap_or_default();
        if !bucket.name.is_empty() {
            return Err(invalid("bucket.name must be empty; the name goes in bucket_id"));
        }
        let owner = state
            .resolve_project(&bucket.project)
            .ok_or_else(|| invalid(format!("bucket.project {:?} is not a known project", bucket.project)))?;
        if owner != project {
            return Err(denied("storage.buckets.create", &req.bucket_id));
        }
        if !is_valid_bucket_name(&req.bucket_id) {
            return Err(invalid(format!("invalid bucket name {:?}", req.bucket_id)));
        }
        if is_reserved_bucket_name(&req.bucket_id) {
            return Err(invalid(format!(
                "invalid bucket name {:?}: names starting with \"goog\" or containing \"google\" are reserved",
                req.bucket_id
            )));
        }
        if let Some(existing) = state.buckets.get(&req.bucket_id) {
            // FAILED_PRECONDITION, not ALREADY_EXISTS: what GCS answers over gRPC.
            let message = if existing.project == project {
                "Your previous request to create the named bucket succeeded and you already own it."
            } else {
                "The requested bucket name is not available. The bucket namespace is shared by all \
                 users of the system. Please select a different name and try again."
            };
            return Err(status(Code::FailedPrecondition, message));
        }
        validate_labels(&bucket.labels)?;
        validate_lifecycle(bucket.lifecycle.as_ref())?;
        validate_encryption(bucket.encryption.as_ref())?;
        if state.cmek_required.contains(project) && kms_key_of(&bucket).is_empty() {
            return Err(status(
                Code::FailedPrecondition,
                format!(
                    "Request violates constraint '{CMEK_CONSTRAINT}' on the project resource: \
                     storage.googleapis.com requires a customer-managed encryption key."
                ),
            ));
        }
        state.check_kms_use(kms_key_of(&bucket), &bucket.location)?;
        let iam = bucket.iam_config.get_or_insert_default();
        iam.public_access_prevention = validate_pap(&iam.public_access_prevention)?;
        if bucket.storage_class.is_empty() {
            bucket.storage_class = "STANDARD".into();
        }
        bucket.location_type = "region".into();
        bucket.bucket_id = req.bucket_id.clone();
        drop(state);
        self.insert(project, bucket);
        self.bucket(&req.bucket_id).ok_or_else(|| status(Code::Internal, "bucket vanished during create"))
    }

    fn list(&self, project: &str, req: ListBucketsRequest) -> GaxResult<ListBucketsResponse> {
        let mut state = self.lock();
        state.received.push(Received::ListBuckets { parent: req.parent.clone(), prefix: req.prefix.clone() });
        state.take_fault("ListBuckets")?;
        let listed = state
            .resolve_project(&req.parent)
            .ok_or_else(|| invalid(format!("parent {:?} is not a project", req.parent)))?;
        if listed != project {
            return Err(denied("storage.buckets.list", &req.parent));
        }
        let cap = state.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        let size = match usize::try_from(req.page_size) {
            Ok(requested) if requested > 0 => requested.min(cap),
            _ => cap,
        };
        let mut page: Vec<&Stored> = state
            .buckets
            .iter()
            .filter(|(name, s)| s.project == listed && name.starts_with(&req.prefix))
            .filter(|(name, _)| req.page_token.is_empty() || name.as_str() > req.page_token.as_str())
            .map(|(_, s)| s)
            .take(size + 1)
            .collect();
        let more = page.len() > size;
        page.truncate(size);
        let mut response = ListBucketsResponse::default();
        if more && let Some(last) = page.last() {
            response.next_page_token = last.bucket.bucket_id.clone();
        }
        for stored in page {
            if stored.refuses_inspection {
                if !req.return_partial_success {
                    return Err(status(Code::Unavailable, "a bucket of this project is unreachable"));
                }
                response.unreachable.push(stored.bucket.name.clone());
            } else {
                response.buckets.push(stored.bucket.clone());
            }
        }
        Ok(response)
    }

    fn update(&self, project: &str, req: UpdateBucketRequest) -> GaxResult<Bucket> {
        let mut state = self.lock();
        let patch = req.bucket.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let name = short_name(&patch.name)?.to_owned();
        state.received.push(Received::UpdateBucket {
            bucket: name.clone(),
            paths: paths.clone(),
            if_metageneration_match: req.if_metageneration_match,
        });
        state.take_fault("UpdateBucket")?;
        if paths.is_empty() {
            return Err(invalid("update_mask must name at least one field"));
        }
        let stored = state
            .buckets
            .get_mut(&name)
            .ok_or_else(|| status(Code::NotFound, format!("bucket {name} not found")))?;
        if !stored.allows(project) || stored.refuses_inspection {
            return Err(denied("storage.buckets.update", &name));
        }
        check_metageneration(&stored.bucket, req.if_metageneration_match, req.if_metageneration_not_match)?;
        // All or nothing: apply to a copy and store it only when every path was accepted.
        let mut updated = stored.bucket.clone();
        for path in &paths {
            apply_path(path, &patch, &mut updated)?;
        }
        validate_labels(&updated.labels)?;
        let key = kms_key_of(&updated).to_owned();
        if key != kms_key_of(&stored.bucket) {
            let location = stored.bucket.location.clone();
            state.check_kms_use(&key, &location)?;
        }
        let Some(stored) = state.buckets.get_mut(&name) else {
            return Err(status(Code::NotFound, format!("bucket {name} not found")));
        };
        updated.metageneration += 1;
        updated.etag = format!("CA{}", updated.metageneration);
        stored.bucket = updated.clone();
        Ok(updated)
    }

    fn delete(&self, project: &str, req: DeleteBucketRequest) -> GaxResult<()> {
        let mut state = self.lock();
        let name = short_name(&req.name)?.to_owned();
        state.received.push(Received::DeleteBucket { bucket: name.clone() });
        state.take_fault("DeleteBucket")?;
        let stored = state
            .buckets
            .get(&name)
            .ok_or_else(|| status(Code::NotFound, format!("bucket {name} not found")))?;
        if stored.project != project {
            return Err(denied("storage.buckets.delete", &name));
        }
        check_metageneration(&stored.bucket, req.if_metageneration_match, req.if_metageneration_not_match)?;
        if !stored.objects.is_empty() {
            return Err(status(Code::FailedPrecondition, "The bucket you tried to delete is not empty."));
        }
        state.buckets.remove(&name);
        Ok(())
    }
}

fn denied(permission: &str, resource: &str) -> GaxError {
    status(
        Code::PermissionDenied,
        format!("caller does not have {permission} access to the Google Cloud Storage bucket {resource}"),
    )
}

fn check_metageneration(bucket: &Bucket, matches: Option<i64>, not_matches: Option<i64>) -> GaxResult<()> {
    let failed = matches.is_some_and(|m| m != bucket.metageneration)
        || not_matches.is_some_and(|m| m == bucket.metageneration);
    if failed {
        return Err(status(Code::FailedPrecondition, "metageneration precondition failed"));
    }
    Ok(())
}

/// The control plane as seen by one calling project; implements the crate's
/// `stub::StorageControl` for `StorageControl::from_stub`.
#[derive(Debug, Clone)]
pub struct GcsStub {
    plane: GcsControlPlane,
    project: String,
}

impl google_cloud_storage::stub::StorageControl for GcsStub {
    async fn get_bucket(
        &self,
        req: GetBucketRequest,
        _options: RequestOptions,
    ) -> GaxResult<Response<Bucket>> {
        self.plane.get(&self.project, req).map(Response::from)
    }

    async fn create_bucket(
        &self,
        req: CreateBucketRequest,
        _options: RequestOptions,
    ) -> GaxResult<Response<Bucket>> {
        self.plane.create(&self.project, req).map(Response::from)
    }

    async fn list_buckets(
        &self,
        req: ListBucketsRequest,
        _options: RequestOptions,
    ) -> GaxResult<Response<ListBucketsResponse>> {
        self.plane.list(&self.project, req).map(Response::from)
    }

    async fn update_bucket(
        &self,
        req: UpdateBucketRequest,
        _options: RequestOptions,
    ) -> GaxResult<Response<Bucket>> {
        self.plane.update(&self.project, req).map(Response::from)
    }

    async fn delete_bucket(
        &self,
        req: DeleteBucketRequest,
        _options: RequestOptions,
    ) -> GaxResult<Response<()>> {
        self.plane.delete(&self.project, req).map(Response::from)
    }
}

/// The GCS form of a neutral lifecycle rule, as a person would write it in the console: `Delete`
/// or `AbortIncompleteMultipartUpload` at an age, restricted to the rule's prefix when it has one.
/// GCS rules have no IDs, so the rule's ID is lost.
pub fn gcs_rule(rule: &LifecycleRule) -> Rule {
    let (action, days) = match rule.action {
        LifecycleAction::Expire { days } => ("Delete", days),
        LifecycleAction::AbortIncompleteUpload { days } => ("AbortIncompleteMultipartUpload", days),
    };
    let mut condition = Condition::default();
    condition.age_days = Some(i32::try_from(days).unwrap_or(i32::MAX));
    if !rule.prefix.is_empty() {
        condition.matches_prefix = vec![rule.prefix.clone()];
    }
    let mut act = Action::default();
    act.r#type = action.into();
    let mut out = Rule::default();
    out.action = Some(act);
    out.condition = Some(condition);
    out
}

/// Contract-suite [`Backdoor`] over a [`GcsControlPlane`], for the provider calling as `project`.
#[derive(Debug, Clone)]
pub struct GcsBackdoor {
    /// The control plane.
    pub plane: GcsControlPlane,
    /// The project the provider under test works in.
    pub project: String,
    /// The project that owns "another account's" buckets.
    pub foreign_project: String,
}

impl GcsBackdoor {
    /// A backdoor for a provider calling as `project`; foreign buckets go to `other-<project>`.
    pub fn new(plane: GcsControlPlane, project: &str) -> Self {
        GcsBackdoor { plane, project: project.to_owned(), foreign_project: format!("other-{project}") }
    }

    fn modify(&self, name: &str, change: impl FnOnce(&mut Bucket)) -> Result<()> {
        if self.plane.modify(name, change) { Ok(()) } else { Err(Error::bucket_not_found(name)) }
    }
}

fn labels_of(tags: Tags) -> HashMap<String, String> {
    tags.into_iter().collect()
}

#[async_trait]
impl Backdoor for GcsBackdoor {
    async fn create_plain_bucket(&self, name: &str, region: &str, tags: Tags) -> Result<()> {
        let mut bucket = Bucket::default();
        bucket.bucket_id = name.to_owned();
        bucket.location = region.to_owned();
        bucket.labels = labels_of(tags);
        if validate_labels(&bucket.labels).is_err() {
            return Err(Error::invalid_config(format!("labels for {name} are not valid GCS labels")));
        }
        let mut iam = IamConfig::default();
        iam.public_access_prevention = PAP_INHERITED.into();
        bucket.iam_config = Some(iam);
        self.plane.insert(&self.project, bucket);
        Ok(())
    }

    async fn create_foreign_account_bucket(&self, name: &str) -> Result<()> {
        let mut bucket = Bucket::default();
        bucket.bucket_id = name.to_owned();
        self.plane.insert(&self.foreign_project, bucket);
        Ok(())
    }

    async fn set_encryption(&self, name: &str, encryption: Option<Encryption>) -> Result<()> {
        match encryption {
            // GCS always encrypts; there is no "no encryption" to drift to.
            None => Err(Error::NotSupported {
                operation: "remove default encryption (GCS always encrypts)",
                provider: "GCP",
            }),
            Some(Encryption::ProviderManaged) => self.modify(name, |b| b.encryption = None),
            Some(Encryption::Kms { key }) => self.modify(name, |b| {
                let mut encryption = GcsEncryption::default();
                encryption.default_kms_key = key;
                b.encryption = Some(encryption);
            }),
        }
    }

    async fn set_public_access(&self, name: &str, block: PublicAccessBlock) -> Result<()> {
        self.modify(name, |b| {
            let mut ubla = UniformBucketLevelAccess::default();
            ubla.enabled = block.block_public_acls && block.ignore_public_acls;
            let iam = b.iam_config.get_or_insert_default();
            iam.uniform_bucket_level_access = Some(ubla);
            iam.public_access_prevention = if block.block_public_policy && block.restrict_public_buckets {
                PAP_ENFORCED.into()
            } else {
                PAP_INHERITED.into()
            };
        })
    }

    async fn set_lifecycle(&self, name: &str, rules: Vec<LifecycleRule>) -> Result<()> {
        // GCS rules carry no IDs: a foreign rule's ID is dropped here and comes back synthetic
        // (the contract compares foreign rules of label-style providers without their IDs).
        let gcs: Vec<Rule> = rules.iter().map(gcs_rule).collect();
        self.modify(name, |b| {
            b.lifecycle = if gcs.is_empty() {
                None
            } else {
                let mut lifecycle = Lifecycle::default();
                lifecycle.rule = gcs;
                Some(lifecycle)
            };
        })
    }

    async fn set_tags(&self, name: &str, tags: Tags) -> Result<()> {
        let labels = labels_of(tags);
        if validate_labels(&labels).is_err() {
            return Err(Error::invalid_config(format!("labels for {name} are not valid GCS labels")));
        }
        self.modify(name, |b| b.labels = labels)
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.plane.remove(name);
        Ok(())
    }

    async fn refuse_inspection(&self, _name: &str) -> Result<()> {
        // With storage.buckets.list, GCS lists every bucket of the project with its metadata:
        // recovery never has to inspect a bucket it listed, so it has none to skip.
        // (`GcsControlPlane::refuse_inspection` remains for the provider's own tests of a
        // bucket it may list but not read.)
        Err(Error::NotSupported {
            operation: "make a listed bucket refuse inspection (GCS lists every bucket with its metadata)",
            provider: "GCP",
        })
    }

    async fn put_object(&self, bucket: &str, key: &str) -> Result<()> {
        if self.plane.put_object(bucket, key) { Ok(()) } else { Err(Error::bucket_not_found(bucket)) }
    }

    async fn object_keys(&self, bucket: &str) -> Result<Vec<String>> {
        self.plane.object_keys(bucket).ok_or_else(|| Error::bucket_not_found(bucket))
    }

    async fn bucket_exists(&self, name: &str) -> Result<bool> {
        Ok(self.plane.bucket(name).is_some())
    }

    async fn inject_fault(&self, fault: Fault) -> Result<()> {
        let code = match fault {
            Fault::Throttled => Code::ResourceExhausted,
            Fault::Unavailable => Code::Unavailable,
            Fault::PermissionDenied => Code::PermissionDenied,
            Fault::Unauthenticated => Code::Unauthenticated,
        };
        self.plane.fail_next(code);
        // A caller without a permission is refused on the follow-up too: a denied GetBucket is
        // followed by the ListBuckets that tells "not ours" from "not allowed".
        if fault == Fault::PermissionDenied {
            self.plane.fail_next(code);
        }
        Ok(())
    }

    fn writes(&self) -> Option<u64> {
        Some(self.plane.writes())
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_wkt::FieldMask;

    use super::*;

    fn create(plane: &GcsControlPlane, project: &str, name: &str) -> GaxResult<Bucket> {
        let mut bucket = Bucket::default();
        bucket.project = format!("projects/{project}");
        bucket.location = "europe-west4".into();
        bucket.labels = HashMap::from([("a".to_owned(), "1".to_owned())]);
        let mut req = CreateBucketRequest::default();
        req.bucket_id = name.into();
        req.bucket = Some(bucket);
        plane.create(project, req)
    }

    fn code(err: GaxError) -> Option<Code> {
        err.status().map(|s| s.code)
    }

    fn update(name: &str, paths: &[&str], patch: Bucket, mg: Option<i64>) -> UpdateBucketRequest {
        let mut bucket = patch;
        bucket.name = bucket_resource(name);
        let mut req = UpdateBucketRequest::default();
        req.bucket = Some(bucket);
        req.update_mask = Some(FieldMask::default().set_paths(paths.iter().copied()));
        req.if_metageneration_match = mg;
        req
    }

    #[test]
    fn names_are_global_and_reported_in_project_number_form() {
        let plane = GcsControlPlane::new();
        let created = create(&plane, "p1", "bucket-a").expect("create");
        assert_eq!(created.project, format!("projects/{}", plane.project_number("p1")));
        assert_eq!((created.location.as_str(), created.metageneration), ("EUROPE-WEST4", 1));
        for project in ["p1", "p2"] {
            let err = create(&plane, project, "bucket-a").expect_err("taken");
            assert_eq!(code(err), Some(Code::FailedPrecondition), "GCS over gRPC");
        }
        let mut get = GetBucketRequest::default();
        get.name = bucket_resource("bucket-a");
        assert_eq!(
            code(plane.get("p2", get.clone()).expect_err("other project")),
            Some(Code::PermissionDenied)
        );
        assert!(plane.get("p1", get).is_ok());
    }

    #[test]
    fn update_mask_applies_only_named_fields_and_replaces_labels() {
        let plane = GcsControlPlane::new();
        create(&plane, "p", "b-1").expect("create");
        let mut patch = Bucket::default();
        patch.labels = HashMap::from([("b".to_owned(), "2".to_owned())]);
        patch.storage_class = "NEARLINE".into();
        let updated = plane.update("p", update("b-1", &["labels"], patch, Some(1))).expect("update");
        assert_eq!(updated.labels, HashMap::from([("b".to_owned(), "2".to_owned())]));
        assert_eq!((updated.storage_class.as_str(), updated.metageneration), ("STANDARD", 2));

        let stale = plane.update("p", update("b-1", &["labels"], Bucket::default(), Some(1)));
        assert_eq!(code(stale.expect_err("stale")), Some(Code::FailedPrecondition));
        let unknown = plane.update("p", update("b-1", &["labelz"], Bucket::default(), None));
        assert_eq!(code(unknown.expect_err("unknown path")), Some(Code::InvalidArgument));
        let immutable = plane.update("p", update("b-1", &["location"], Bucket::default(), None));
        assert_eq!(code(immutable.expect_err("immutable")), Some(Code::InvalidArgument));
        let mut bad = Bucket::default();
        bad.labels = HashMap::from([("Upper".to_owned(), "x".to_owned())]);
        let bad = plane.update("p", update("b-1", &["labels"], bad, None));
        assert_eq!(code(bad.expect_err("invalid label")), Some(Code::InvalidArgument));
        assert_eq!(plane.bucket("b-1").map(|b| b.metageneration), Some(2), "failed updates change nothing");
    }

    #[test]
    fn nested_iam_paths_leave_siblings_alone() {
        let plane = GcsControlPlane::new();
        create(&plane, "p", "b-2").expect("create");
        let mut patch = Bucket::default();
        patch.iam_config.get_or_insert_default().public_access_prevention = PAP_ENFORCED.into();
        plane.update("p", update("b-2", &["iam_config.public_access_prevention"], patch, None)).expect("pap");
        let mut patch = Bucket::default();
        let mut ubla = UniformBucketLevelAccess::default();
        ubla.enabled = true;
        patch.iam_config.get_or_insert_default().uniform_bucket_level_access = Some(ubla);
        let b = plane
            .update("p", update("b-2", &["iam_config.uniform_bucket_level_access"], patch, None))
            .expect("ubla");
        let iam = b.iam_config.expect("iam config");
        assert_eq!(iam.public_access_prevention, PAP_ENFORCED);
        assert!(iam.uniform_bucket_level_access.is_some_and(|u| u.enabled));
    }

    #[test]
    fn listing_is_per_project_paginated_and_reports_unreachable_buckets() {
        let plane = GcsControlPlane::new().with_page_size(2);
        for name in ["l-1", "l-2", "l-3"] {
            create(&plane, "p", name).expect("create");
        }
        create(&plane, "q", "l-4").expect("create elsewhere");
        plane.refuse_inspection("l-2");
        let mut req = ListBucketsRequest::default();
        req.parent = format!("projects/{}", plane.project_number("p"));
        req.return_partial_success = true;
        let first = plane.list("p", req.clone()).expect("page 1");
        assert_eq!(first.buckets.len(), 1);
        assert_eq!(first.unreachable, vec![bucket_resource("l-2")]);
        req.page_token = first.next_page_token;
        let second = plane.list("p", req.clone()).expect("page 2");
        assert_eq!(second.buckets.iter().map(|b| b.bucket_id.as_str()).collect::<Vec<_>>(), ["l-3"]);
        assert!(second.next_page_token.is_empty());
        req.parent = "projects/q".into();
        assert_eq!(code(plane.list("p", req).expect_err("other project")), Some(Code::PermissionDenied));
    }

    fn rules(n: usize) -> Lifecycle {
        let rule = gcs_rule(&LifecycleRule {
            id: String::new(),
            prefix: "logs/".into(),
            action: LifecycleAction::Expire { days: 3 },
            enabled: true,
        });
        let mut lifecycle = Lifecycle::default();
        lifecycle.rule = vec![rule; n];
        lifecycle
    }

    fn create_with(
        plane: &GcsControlPlane,
        project: &str,
        name: &str,
        change: impl FnOnce(&mut Bucket),
    ) -> GaxResult<Bucket> {
        let mut bucket = Bucket::default();
        bucket.project = format!("projects/{project}");
        bucket.location = "europe-west4".into();
        change(&mut bucket);
        let mut req = CreateBucketRequest::default();
        req.bucket_id = name.into();
        req.bucket = Some(bucket);
        plane.create(project, req)
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reserved_names_and_more_than_100_lifecycle_rules_are_refused() {
        let plane = GcsControlPlane::new();
        for name in ["goog-backups", "googlebackups", "my-google-bucket", "my-g00gle-bucket"] {
            let err = create(&plane, "p", name).expect_err(name);
            assert_eq!(code(err), Some(Code::InvalidArgument), "{name}");
        }
        for name in ["gogle-backups", "managed-velero-backups-0f9e"] {
            create(&plane, "p", name).expect(name);
        }
        create_with(&plane, "p", "rules-100", |b| b.lifecycle = Some(rules(100))).expect("100 rules");
        let err = create_with(&plane, "p", "rules-101", |b| b.lifecycle = Some(rules(101))).expect_err("101");
        assert_eq!(code(err), Some(Code::InvalidArgument));
        let mut patch = Bucket::default();
        patch.lifecycle = Some(rules(101));
        let err = plane.update("p", update("rules-100", &["lifecycle"], patch, None)).expect_err("101");
        assert_eq!(code(err), Some(Code::InvalidArgument));
    }

    #[test]
    fn labels_follow_googles_rules_including_international_lowercase() {
        let plane = GcsControlPlane::new();
        let good = labels(&[("équipe", "données"), ("部門", "開発"), ("ключ", "значение-1"), ("a_b-9", "")]);
        create_with(&plane, "p", "intl-ok", |b| b.labels = good.clone()).expect("international labels");
        assert_eq!(plane.bucket("intl-ok").map(|b| b.labels), Some(good));
        let long = "é".repeat(63);
        create_with(&plane, "p", "intl-long", |b| b.labels = labels(&[(&long, &long)]))
            .expect("63 characters");
        let too_long = "a".repeat(64);
        for bad in [
            labels(&[("Équipe", "x")]),
            labels(&[("team", "Données")]),
            labels(&[("1team", "x")]),
            labels(&[("_team", "x")]),
            labels(&[("team", "a b")]),
            labels(&[("team.name", "x")]),
            labels(&[(too_long.as_str(), "x")]),
            labels(&[("team", too_long.as_str())]),
        ] {
            let err = create_with(&plane, "p", "intl-bad", |b| b.labels = bad.clone()).expect_err("invalid");
            assert_eq!(code(err), Some(Code::InvalidArgument), "{bad:?}");
        }
        let many: HashMap<String, String> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        let err = create_with(&plane, "p", "intl-bad", |b| b.labels = many).expect_err("65 labels");
        assert_eq!(code(err), Some(Code::InvalidArgument));
    }

    #[test]
    fn per_key_label_paths_and_the_star_path_are_accepted() {
        let plane = GcsControlPlane::new();
        create_with(&plane, "p", "mask-1", |b| b.labels = labels(&[("a", "1"), ("b", "2")])).expect("create");
        let mut patch = Bucket::default();
        patch.labels = labels(&[("c", "3"), ("a", "ignored")]);
        let updated =
            plane.update("p", update("mask-1", &["labels.c", "labels.b"], patch, None)).expect("per key");
        assert_eq!(updated.labels, labels(&[("a", "1"), ("c", "3")]), "c set, b removed, a untouched");
        let mut patch = Bucket::default();
        patch.labels = labels(&[("Bad", "x")]);
        let err = plane.update("p", update("mask-1", &["labels.Bad"], patch, None)).expect_err("bad key");
        assert_eq!(code(err), Some(Code::InvalidArgument));

        let mut patch = Bucket::default();
        patch.labels = labels(&[("z", "26")]);
        patch.storage_class = "NEARLINE".into();
        let updated = plane.update("p", update("mask-1", &["*"], patch, None)).expect("star");
        assert_eq!(updated.labels, labels(&[("z", "26")]));
        assert_eq!(updated.storage_class, "NEARLINE");
        assert_eq!(updated.location, "EUROPE-WEST4", "output-only fields are kept");
    }

    #[test]
    fn get_bucket_returns_only_the_fields_its_read_mask_names() {
        let plane = GcsControlPlane::new();
        create(&plane, "p", "read-1").expect("create");
        let mut req = GetBucketRequest::default();
        req.name = bucket_resource("read-1");
        req.read_mask =
            Some(FieldMask::default().set_paths(["labels", "iam_config.public_access_prevention"]));
        let masked = plane.get("p", req.clone()).expect("masked");
        assert_eq!(masked.labels, labels(&[("a", "1")]));
        assert_eq!(masked.iam_config.map(|i| i.public_access_prevention), Some(PAP_INHERITED.to_owned()));
        assert_eq!((masked.location.as_str(), masked.metageneration, masked.name.as_str()), ("", 0, ""));
        assert_eq!(plane.read_masks().last().cloned().flatten().map(|m| m.len()), Some(2));

        req.read_mask = Some(FieldMask::default().set_paths(["*"]));
        assert_eq!(plane.get("p", req.clone()).expect("star"), plane.bucket("read-1").expect("stored"));
        req.read_mask = None;
        assert_eq!(plane.get("p", req.clone()).expect("no mask"), plane.bucket("read-1").expect("stored"));
        req.read_mask = Some(FieldMask::default().set_paths(["lables"]));
        assert_eq!(code(plane.get("p", req).expect_err("unknown path")), Some(Code::InvalidArgument));
    }

    const KEY: &str = "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k";

    fn with_key(key: &str) -> impl FnOnce(&mut Bucket) + '_ {
        move |b: &mut Bucket| {
            let mut encryption = GcsEncryption::default();
            encryption.default_kms_key = key.to_owned();
            b.encryption = Some(encryption);
        }
    }

    #[test]
    fn organisation_policy_and_cloud_kms_refusals_answer_as_gcs() {
        let plane = GcsControlPlane::new();
        plane.require_cmek("strict");
        let err = create(&plane, "strict", "cmek-1").expect_err("policy");
        let status = err.status().cloned().expect("status");
        assert_eq!(status.code, Code::FailedPrecondition);
        assert!(status.message.contains(CMEK_CONSTRAINT), "{}", status.message);
        assert!(plane.bucket("cmek-1").is_none());
        create_with(&plane, "strict", "cmek-1", with_key(KEY)).expect("with a key");

        let elsewhere = "projects/p/locations/us/keyRings/r/cryptoKeys/k";
        let err = create_with(&plane, "p", "kms-2", with_key(elsewhere)).expect_err("wrong location");
        assert_eq!(code(err), Some(Code::InvalidArgument));

        plane.deny_kms_key(KEY);
        let err = create_with(&plane, "p", "kms-3", with_key(KEY)).expect_err("agent denied");
        let status = err.status().cloned().expect("status");
        assert_eq!(status.code, Code::PermissionDenied);
        assert!(status.message.contains("Cloud KMS key"), "{}", status.message);
        create(&plane, "p", "kms-4").expect("no key");
        let mut patch = Bucket::default();
        with_key(KEY)(&mut patch);
        let err = plane.update("p", update("kms-4", &["encryption.default_kms_key"], patch, None));
        assert_eq!(code(err.expect_err("agent denied on update")), Some(Code::PermissionDenied));
        assert_eq!(plane.bucket("kms-4").map(|b| b.encryption), Some(None), "refused updates change nothing");
    }

    #[tokio::test]
    async fn the_backdoor_does_not_offer_uninspectable_buckets() {
        let plane = GcsControlPlane::new();
        let backdoor = GcsBackdoor::new(plane.clone(), "p");
        backdoor.create_plain_bucket("listed-1", "europe-west4", Tags::new()).await.expect("create");
        let err = backdoor.refuse_inspection("listed-1").await.expect_err("GCS lists metadata");
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    }

    #[test]
    fn faults_fail_the_next_call_only() {
        let plane = GcsControlPlane::new();
        plane.fail_next(Code::ResourceExhausted);
        assert_eq!(code(create(&plane, "p", "f-1").expect_err("fault")), Some(Code::ResourceExhausted));
        assert!(create(&plane, "p", "f-1").is_ok());
        assert_eq!(plane.writes(), 2);
    }
}
