//! The provider traits: a cloud ([`Platform`]) and its bucket operations ([`ObjectStore`]).

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use async_trait::async_trait;

use crate::{
    bucket::{BucketReport, BucketSpec, BucketState, Recovery},
    credentials::CredentialSource,
    error::{Error, Result},
    metering::CallCounter,
    owner::{Owner, TagStyle},
    provider::SpecFields,
    velero::{ShortLivedError, VeleroFacts, VeleroInput},
};

/// What a provider can do. The operator logs what is missing at startup; the contract suite runs
/// only the cases a provider claims and checks that the rest answer [`Error::NotSupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `ensure_bucket` and `observe_bucket` work (create, read back, correct drift).
    pub buckets: bool,
    /// `find_bucket` recovers a bucket by owner tags.
    pub recovery: bool,
    /// Lifecycle rules are enforced.
    pub lifecycle_rules: bool,
    /// Public access block / prevention is enforced.
    pub public_access_block: bool,
    /// Default encryption is enforced.
    pub default_encryption: bool,
    /// Customer-managed encryption keys are supported.
    pub kms: bool,
    /// Short-lived credentials from a projected service-account token are supported, for the
    /// operator and for Velero ([`VeleroInput::short_lived`]).
    pub workload_identity: bool,
}

impl Capabilities {
    /// Every capability claimed.
    pub const ALL: Capabilities = Capabilities {
        buckets: true,
        recovery: true,
        lifecycle_rules: true,
        public_access_block: true,
        default_encryption: true,
        kms: true,
        workload_identity: true,
    };

    /// Names of the capabilities not claimed, for the startup log.
    pub fn missing(&self) -> Vec<&'static str> {
        let all = [
            ("buckets", self.buckets),
            ("recovery", self.recovery),
            ("lifecycle_rules", self.lifecycle_rules),
            ("public_access_block", self.public_access_block),
            ("default_encryption", self.default_encryption),
            ("kms", self.kms),
            ("workload_identity", self.workload_identity),
        ];
        all.into_iter().filter(|(_, has)| !has).map(|(name, _)| name).collect()
    }
}

/// The cluster facts and local settings a provider is built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderConfig {
    /// `Infrastructure.status.platformStatus.type`, e.g. `AWS`.
    pub platform: String,
    /// The cluster's region, as the provider's [`crate::FactsReader`] found it.
    pub region: Option<String>,
    /// The provider's further facts ([`crate::ProviderFacts::values`]), by name.
    pub facts: BTreeMap<String, String>,
    /// `Infrastructure.status.infrastructureName`, the cluster's owner identity.
    pub infrastructure_name: String,
    /// Directory the operator's credentials secret is mounted at.
    pub credentials_dir: PathBuf,
    /// Endpoint override for S3-compatible servers and tests.
    pub endpoint: Option<String>,
}

impl ProviderConfig {
    /// The region, or [`Error::InvalidConfig`] naming the missing fact.
    pub fn require_region(&self) -> Result<&str> {
        non_empty(self.region.as_deref()).ok_or_else(|| self.missing("region"))
    }

    /// The fact `name` (e.g. `project ID`), or [`Error::InvalidConfig`] naming it.
    pub fn require(&self, name: &str) -> Result<&str> {
        non_empty(self.facts.get(name).map(String::as_str)).ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> Error {
        Error::invalid_config(format!(
            "platform {} needs a {name} and the cluster reports none",
            self.platform
        ))
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// One cloud: its identity, what it can do and declares, its bucket operations and credentials,
/// and what Velero needs to use it.
///
/// Assumptions: built once at startup from a validated [`ProviderConfig`]; cheap to share behind
/// an `Arc`. Values that may change between reconciles (the provider's spec section) are passed
/// to each call instead.
pub trait Platform: Send + Sync + fmt::Debug + 'static {
    /// The platform name, equal to `Infrastructure.status.platformStatus.type` (`AWS`, `GCP`).
    fn name(&self) -> &'static str;

    /// The region buckets are created in.
    fn region(&self) -> &str;

    /// What this provider implements.
    fn capabilities(&self) -> Capabilities;

    /// How owner marks are written on buckets (tags as given, or sanitised labels).
    fn tag_style(&self) -> TagStyle {
        TagStyle::Tags
    }

    /// Which shared spec fields apply to this provider, and its own spec section.
    fn spec_fields(&self) -> SpecFields {
        SpecFields::default()
    }

    /// The provider's bucket operations for one reconcile, given its spec section (`Value::Null`
    /// when absent; already checked by [`crate::SpecSection::validate`]).
    ///
    /// Errors: [`Error::InvalidConfig`] when the section cannot be used.
    fn object_store(&self, section: &serde_json::Value) -> Result<Arc<dyn ObjectStore>>;

    /// Where the provider's own cloud credentials come from.
    fn credential_source(&self) -> Arc<dyn CredentialSource>;

    /// What Velero needs on this cloud for `input.bucket`: plugin image, location config,
    /// CredentialsRequest provider spec and credentials wiring, for long-lived keys or, when
    /// `input.short_lived` is set, for a projected token.
    ///
    /// Errors: [`ShortLivedError::Missing`] naming the short-lived inputs this cloud needs and
    /// lacks; [`ShortLivedError::NotSupported`] when the provider does not wire short-lived
    /// credentials, in which case it must not claim [`Capabilities::workload_identity`].
    fn velero(&self, input: &VeleroInput<'_>) -> std::result::Result<VeleroFacts, ShortLivedError>;

    /// The counts of cloud calls this provider made, for metrics; `None` when it does not count.
    fn call_counter(&self) -> Option<CallCounter> {
        None
    }
}

/// Idempotent observe-then-ensure bucket operations. Implementations never delete a bucket or
/// an object, and never write a setting that already has the desired value.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + 'static {
    /// Finds the bucket carrying both owner tags of `owner` with exact values, among the buckets
    /// of this account/project in the provider's region.
    ///
    /// Guarantees: buckets that refuse inspection (access denied, vanished meanwhile) are skipped
    /// and counted, not fatal; several matches yield [`Recovery::Ambiguous`], never a guess.
    ///
    /// Errors: [`Error::PermissionDenied`] when buckets cannot be listed at all.
    async fn find_bucket(&self, owner: &Owner) -> Result<Recovery>;

    /// Makes the bucket `spec.name` exist with every setting of `spec`, creating it when absent and
    /// correcting only the settings that drifted. Foreign tags, labels and lifecycle rules are kept.
    ///
    /// Guarantees: idempotent; a second call on a compliant bucket writes nothing and reports
    /// [`BucketReport::is_unchanged`].
    ///
    /// Errors: [`Error::AlreadyOwnedByOther`] when the name is taken by another account/project,
    /// or the bucket carries another cluster's infrastructure tag; the bucket is then untouched.
    async fn ensure_bucket(&self, spec: &BucketSpec) -> Result<BucketReport>;

    /// Reads the bucket's current settings without changing anything.
    ///
    /// Errors: [`Error::NotFound`] when the bucket does not exist.
    async fn observe_bucket(&self, name: &str) -> Result<BucketState>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        assert!(Capabilities::ALL.missing().is_empty());
        let partial = Capabilities { kms: false, workload_identity: false, ..Capabilities::ALL };
        assert_eq!(partial.missing(), vec!["kms", "workload_identity"]);
    }

    #[test]
    fn required_facts_are_named_when_missing() {
        let cfg = ProviderConfig { platform: "Toy".into(), region: Some("  ".into()), ..Default::default() };
        let err = cfg.require_region().expect_err("blank region");
        assert_eq!(
            err.to_string(),
            "invalid configuration: platform Toy needs a region and the cluster reports none"
        );
        let facts = BTreeMap::from([("project ID".to_owned(), "p".to_owned())]);
        let cfg = ProviderConfig { platform: "Toy".into(), facts, ..Default::default() };
        assert_eq!(cfg.require("project ID").expect("project"), "p");
        let err = cfg.require("resource group").expect_err("absent");
        assert!(err.to_string().contains("needs a resource group"), "{err}");
    }
}
