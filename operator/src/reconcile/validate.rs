//! Validate: turns a `VeleroInstall` spec into the settings a reconcile uses, with every
//! default applied. Pure but for the operator's fixed `RELATED_IMAGE_*` environment (see
//! [`crate::images`]): reads nothing else, writes nothing.
//!
//! The CRD schema already rejects most bad values; this catches what the schema cannot know
//! (which cloud the cluster is on, what the provider supports, duration bounds) and names the
//! offending field in the `InvalidSpec` condition message.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::OwnerReference},
};
use kube::{Resource, ResourceExt};
use mvo_core::{Encryption, Platform, bucket::DEFAULT_RETENTION_DAYS, bucket::is_valid_bucket_name};

use crate::{
    crd::{StorageBucketSpec, VeleroInstall},
    images,
};

/// Pinned Velero server image.
pub const DEFAULT_VELERO_IMAGE: &str = "docker.io/velero/velero:v1.17.0";
/// Default bucket re-check interval (MVO's hourly enforcement).
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Shortest accepted re-check interval: each check costs five cloud reads.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Longest accepted re-check interval: drift left longer than a day is not "enforced", and a
/// bound keeps every deadline computed from it far from overflow.
pub const MAX_RESYNC_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// A spec value the operator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// JSON path of the field, e.g. `spec.resyncInterval`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec { field: field.into(), message: message.into() }
}

/// Which VeleroInstall a pass works for: where its objects go and who owns them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, where Velero and its objects live.
    pub namespace: String,
    /// `metadata.uid`, the key of per-install state (backoff).
    pub uid: String,
    /// The controller owner reference every object the operator creates carries.
    pub owner: OwnerReference,
}

impl InstallIdentity {
    /// The identity of `vi`; an object without a namespace or UID was not read from the API
    /// server, and owner references without a UID are refused by it.
    pub fn of(vi: &VeleroInstall) -> Result<Self, InvalidSpec> {
        let namespace =
            vi.namespace().ok_or_else(|| invalid("metadata.namespace", "VeleroInstall is namespaced"))?;
        let owner = vi
            .controller_owner_ref(&())
            .ok_or_else(|| invalid("metadata.uid", "missing: the object was not read from the API server"))?;
        Ok(InstallIdentity { name: vi.name_any(), namespace, uid: owner.uid.clone(), owner })
    }
}

/// The spec with defaults applied and checked against the platform, and the identity of the
/// install it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInstall {
    /// The install whose spec this is.
    pub install: InstallIdentity,
    /// A bucket to adopt instead of generating a name.
    pub adopt_bucket: Option<String>,
    /// The spec confirms adopting `adopt_bucket` although it carries no owner marks.
    pub adopt_unmarked_bucket: bool,
    /// Default encryption of the bucket.
    pub encryption: Encryption,
    /// Expiry of `backups/`, in days.
    pub retention_days: u32,
    /// `spec.backupRetentionDays` is set: an adopted unmarked bucket gets the expiry rule too.
    pub retention_explicit: bool,
    /// How often bucket settings are re-checked.
    pub resync_interval: Duration,
    /// Velero server image.
    pub velero_image: String,
    /// Velero cloud plugin image chosen over the provider's pinned one (spec, then
    /// `RELATED_IMAGE_VELERO_PLUGIN_<PLATFORM>`); `None` for the provider's.
    pub plugin_image: Option<String>,
    /// Resources of the Velero container.
    pub resources: ResourceRequirements,
}

/// Validates `vi` for `platform` and applies every default.
pub fn validate(vi: &VeleroInstall, platform: &dyn Platform) -> Result<DesiredInstall, InvalidSpec> {
    let install = InstallIdentity::of(vi)?;
    let spec = &vi.spec;
    let bucket = spec.storage_bucket.clone().unwrap_or_default();
    if let Some(name) = &bucket.name
        && !is_valid_bucket_name(name)
    {
        return Err(invalid("spec.storageBucket.name", format!("{name:?} is not a valid bucket name")));
    }
    let fields = platform.spec_fields();
    if let Some(section) = fields.section {
        (section.validate)(spec.section(Some(section.key))).map_err(|err| invalid(err.field, err.message))?;
    }
    let encryption = encryption(&bucket, fields.kms_key, platform)?;
    let retention_days = spec.backup_retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if retention_days == 0 {
        return Err(invalid("spec.backupRetentionDays", "must be at least 1"));
    }
    let resync_interval = match &spec.resync_interval {
        None => DEFAULT_RESYNC_INTERVAL,
        Some(raw) => parse_duration(raw).ok_or_else(|| {
            invalid("spec.resyncInterval", format!("{raw:?} is not a duration like 60m or 1h30m"))
        })?,
    };
    if resync_interval < MIN_RESYNC_INTERVAL {
        return Err(invalid("spec.resyncInterval", "must be at least 1m"));
    }
    if resync_interval > MAX_RESYNC_INTERVAL {
        return Err(invalid("spec.resyncInterval", "must be at most 24h"));
    }
    Ok(DesiredInstall {
        install,
        adopt_unmarked_bucket: bucket.adopt_unmarked_bucket.unwrap_or(false),
        adopt_bucket: bucket.name,
        encryption,
        retention_days,
        retention_explicit: spec.backup_retention_days.is_some(),
        resync_interval,
        velero_image: images::choose(
            spec.velero_image.as_deref(),
            images::related_image(images::RELATED_IMAGE_VELERO),
            DEFAULT_VELERO_IMAGE,
        ),
        plugin_image: spec
            .plugin_image
            .clone()
            .filter(|i| !i.trim().is_empty())
            .or_else(|| images::related_image(&images::plugin_env_var(platform.name())).map(str::to_owned)),
        resources: spec.resources.clone().unwrap_or_else(default_resources),
    })
}

/// The customer-managed key fields under `spec.storageBucket`, by JSON name; each provider
/// declares the one it reads ([`mvo_core::SpecFields::kms_key`]).
fn kms_fields(bucket: &StorageBucketSpec) -> [(&'static str, Option<&String>); 2] {
    [("kmsKeyID", bucket.kms_key_id.as_ref()), ("kmsKeyName", bucket.kms_key_name.as_ref())]
}

fn encryption(
    bucket: &StorageBucketSpec,
    reads: Option<&'static str>,
    platform: &dyn Platform,
) -> Result<Encryption, InvalidSpec> {
    // The schema cannot know the cluster's cloud, so which field applies is checked here.
    let set: Vec<(&str, &String)> =
        kms_fields(bucket).into_iter().filter_map(|(field, key)| Some((field, key?))).collect();
    let (field, key) = match set.as_slice() {
        [] => return Ok(Encryption::ProviderManaged),
        [one] => *one,
        _ => {
            let names: Vec<&str> = set.iter().map(|(f, _)| *f).collect();
            return Err(invalid(
                "spec.storageBucket",
                format!("set one of {}, not several", names.join(", ")),
            ));
        }
    };
    if reads != Some(field) {
        let instead = match reads {
            Some(other) => format!("use {other} on {}", platform.name()),
            None => format!("the {} provider reads no key from spec.storageBucket", platform.name()),
        };
        return Err(invalid(
            format!("spec.storageBucket.{field}"),
            format!("does not apply here; {instead}"),
        ));
    }
    if !platform.capabilities().kms {
        return Err(invalid(
            format!("spec.storageBucket.{field}"),
            format!("the {} provider does not support customer-managed keys", platform.name()),
        ));
    }
    Ok(Encryption::Kms { key: key.clone() })
}

/// Velero container resources when the spec sets none.
pub fn default_resources() -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        [("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))].into()
    };
    ResourceRequirements {
        requests: Some(quantities("500m", "128Mi")),
        limits: Some(quantities("1", "512Mi")),
        ..Default::default()
    }
}

/// Parses a Go-style duration made of `<digits><unit>` parts with units `s`, `m`, `h`; `None`
/// when malformed or beyond `u64` seconds (never panics, whatever the input).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        let value: u64 = digits.parse().ok()?;
        total = total.checked_add(value.checked_mul(unit)?)?;
        digits.clear();
    }
    (digits.is_empty() && !raw.trim().is_empty()).then_some(Duration::from_secs(total))
}

/// A VeleroInstall with `spec` as the API server would return it (namespace and UID set).
#[cfg(test)]
pub(crate) fn stored(spec: crate::crd::VeleroInstallSpec) -> VeleroInstall {
    let mut vi = VeleroInstall::new(crate::crd::RECONCILED_NAME, spec);
    vi.metadata.namespace = Some("openshift-velero".into());
    vi.metadata.uid = Some("3f0c0a52-1b7e-4c55-9d0e-7e3b1a2c4d5e".into());
    vi
}

#[cfg(test)]
mod tests {
    use mvo_testkit::InMemoryPlatform;

    use super::*;
    use crate::crd::VeleroInstallSpec;

    fn platform() -> InMemoryPlatform {
        InMemoryPlatform::new("eu-west-1")
    }

    #[test]
    fn empty_spec_means_mvo_behaviour() {
        let desired = validate(&stored(VeleroInstallSpec::default()), &platform()).expect("valid");
        assert_eq!(desired.adopt_bucket, None);
        assert_eq!(desired.encryption, Encryption::ProviderManaged);
        assert_eq!(desired.retention_days, 90);
        assert_eq!(desired.resync_interval, Duration::from_secs(3600));
        assert_eq!(desired.velero_image, DEFAULT_VELERO_IMAGE);
        assert_eq!(desired.resources, default_resources());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60m"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "10", "m", "1d", "1.5h", "-1m"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_resync_is_rejected_without_panic() {
        for raw in ["999999999999h", "18446744073709551615s", "25h", "99999999999999999999999999h", "24h1s"] {
            let spec = VeleroInstallSpec { resync_interval: Some(raw.into()), ..Default::default() };
            let err = validate(&stored(spec.clone()), &platform()).expect_err(raw);
            assert!(err.to_string().starts_with("spec.resyncInterval: "), "{raw}: {err}");
        }
        let spec = VeleroInstallSpec { resync_interval: Some("24h".into()), ..Default::default() };
        assert_eq!(
            validate(&stored(spec.clone()), &platform()).expect("24h").resync_interval,
            MAX_RESYNC_INTERVAL
        );
    }

    #[test]
    fn too_short_resync_names_the_field() {
        let spec = VeleroInstallSpec { resync_interval: Some("30s".into()), ..Default::default() };
        let err = validate(&stored(spec), &platform()).expect_err("too short");
        assert_eq!(err.to_string(), "spec.resyncInterval: must be at least 1m");
    }

    #[test]
    fn kms_field_must_match_the_cloud() {
        let bucket = |id: Option<&str>, name: Option<&str>| VeleroInstallSpec {
            storage_bucket: Some(StorageBucketSpec {
                name: None,
                adopt_unmarked_bucket: None,
                kms_key_id: id.map(Into::into),
                kms_key_name: name.map(Into::into),
            }),
            ..Default::default()
        };
        // The in-memory platform declares kmsKeyID as the field it reads.
        let key = "arn:aws:kms:eu-west-1:123456789012:key/k";
        let desired =
            validate(&stored(bucket(Some(key), None)), &platform()).expect("the declared field is read");
        assert_eq!(desired.encryption, Encryption::Kms { key: key.into() });
        let err = validate(
            &stored(bucket(None, Some("projects/p/locations/l/keyRings/r/cryptoKeys/k"))),
            &platform(),
        )
        .expect_err("a field the provider does not read");
        assert_eq!(err.field, "spec.storageBucket.kmsKeyName");
        assert_eq!(err.message, "does not apply here; use kmsKeyID on InMemory");
        let err = validate(&stored(bucket(Some(key), Some("x"))), &platform()).expect_err("both");
        assert_eq!(err.field, "spec.storageBucket");
    }

    #[test]
    fn identity_comes_from_the_stored_object() {
        let desired = validate(&stored(VeleroInstallSpec::default()), &platform()).expect("valid");
        let install = &desired.install;
        assert_eq!((install.name.as_str(), install.namespace.as_str()), ("cluster", "openshift-velero"));
        assert_eq!(install.owner.uid, install.uid);
        assert_eq!((install.owner.kind.as_str(), install.owner.controller), ("VeleroInstall", Some(true)));
        let mut unstored = stored(VeleroInstallSpec::default());
        unstored.metadata.uid = None;
        assert_eq!(validate(&unstored, &platform()).expect_err("no uid").field, "metadata.uid");
    }

    #[test]
    fn bad_bucket_name_names_the_field() {
        let spec = VeleroInstallSpec {
            storage_bucket: Some(StorageBucketSpec { name: Some("Bad_Name".into()), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(validate(&stored(spec), &platform()).expect_err("bad").field, "spec.storageBucket.name");
    }
}
