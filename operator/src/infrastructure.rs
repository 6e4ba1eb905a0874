//! The cluster facts the operator starts from: `config.openshift.io/v1 Infrastructure/cluster`,
//! with MVO's fallbacks to the deprecated `status.platform` and to the `install-config` kept in
//! ConfigMap `kube-system/cluster-config-v1`.
//!
//! Only the fields read are modelled. [`resolve_facts`] is pure so every startup row of the
//! bad-input table is a unit test.

use std::collections::BTreeMap;

use kube::CustomResource;
use mvo_core::{FactsInput, ProviderFacts, ProviderRegistration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the cluster's Infrastructure object.
pub const INFRASTRUCTURE_NAME: &str = "cluster";
/// Namespace and name of the ConfigMap with the install-config fallback.
pub const INSTALL_CONFIG_NAMESPACE: &str = "kube-system";
/// ConfigMap holding the installer's configuration.
pub const INSTALL_CONFIG_CONFIGMAP: &str = "cluster-config-v1";
/// Key of the install-config YAML in that ConfigMap.
pub const INSTALL_CONFIG_KEY: &str = "install-config";

/// OpenShift's cluster-scoped `Infrastructure` (read-only here; never installed by the operator).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "Infrastructure",
    status = "InfrastructureStatus"
)]
pub struct InfrastructureSpec {}

/// The parts of `Infrastructure.status` the operator reads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureStatus {
    /// Unique cluster identity, used as the bucket owner tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_name: Option<String>,
    /// Deprecated platform type, used when `platformStatus` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Platform type and per-cloud facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_status: Option<PlatformStatus>,
}

/// `status.platformStatus`: the platform type and one section per cloud, kept as plain JSON. The
/// operator knows no cloud's section: the provider registered for the type declares its key and
/// reads its section itself ([`mvo_core::FactsReader`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PlatformStatus {
    /// The platform type; the values this operator serves are the registry's platform names.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub platform_type: Option<String>,
    /// The per-cloud sections (`aws`, `gcp`, `azure`, …), by key.
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

/// OpenShift's cluster-scoped `CloudCredential` (`operator.openshift.io/v1`, named `cluster`):
/// how the cloud credential operator works. Only the field read is modelled.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "operator.openshift.io", version = "v1", kind = "CloudCredential")]
#[serde(rename_all = "camelCase")]
pub struct CloudCredentialSpec {
    /// `""`/`Default`, `Mint`, `Passthrough` or `Manual`; in `Manual` mode the credential
    /// operator mints nothing and only writes what a CredentialsRequest names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_mode: Option<String>,
}

/// OpenShift's cluster-scoped `Authentication` (`config.openshift.io/v1`, named `cluster`).
/// Only the field read is modelled.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "config.openshift.io", version = "v1", kind = "Authentication")]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationSpec {
    /// The issuer of projected service-account tokens; set on clusters whose cloud trusts those
    /// tokens (AWS STS, GCP workload identity federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_issuer: Option<String>,
}

/// Name of the cluster's `CloudCredential` and `Authentication` objects.
pub const CLUSTER_CONFIG_NAME: &str = "cluster";

/// True on clusters where cloud credentials are short-lived tokens, as OpenShift documents it
/// for operators: CloudCredential `spec.credentialsMode: Manual` together with a non-empty
/// Authentication `spec.serviceAccountIssuer`. A missing object means long-lived credentials.
pub fn token_based(
    cloud_credential: Option<&CloudCredential>,
    authentication: Option<&Authentication>,
) -> bool {
    let manual = cloud_credential.and_then(|c| c.spec.credentials_mode.as_deref()) == Some("Manual");
    let issuer = non_empty(authentication.and_then(|a| a.spec.service_account_issuer.as_ref())).is_some();
    manual && issuer
}

/// What the operator needs to know about the cluster to pick and build a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Platform type (`AWS`, `GCP`, …), as the registry knows providers.
    pub platform: String,
    /// The cluster's infrastructure name.
    pub infrastructure_name: String,
    /// What the platform's provider read from the cluster.
    pub provider: ProviderFacts,
}

/// Why the cluster facts could not be determined.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// `Infrastructure/cluster` has no `status.infrastructureName`.
    #[error(
        "Infrastructure/cluster has no status.infrastructureName; cannot tell which cluster owns the bucket"
    )]
    NoInfrastructureName,
    /// Neither `status.platformStatus.type` nor `status.platform` is set.
    #[error(
        "Infrastructure/cluster reports no platform type (status.platformStatus.type and status.platform are empty)"
    )]
    NoPlatformType,
    /// The fallback ConfigMap is missing or lacks the key.
    #[error(
        "the cluster's {platform} facts are incomplete in Infrastructure/cluster and ConfigMap {INSTALL_CONFIG_NAMESPACE}/{INSTALL_CONFIG_CONFIGMAP} has no key {INSTALL_CONFIG_KEY:?}"
    )]
    NoInstallConfig {
        /// The platform whose provider asked for the fallback.
        platform: String,
    },
    /// The fallback install-config is not valid YAML of the expected shape.
    #[error(
        "malformed {INSTALL_CONFIG_KEY:?} in ConfigMap {INSTALL_CONFIG_NAMESPACE}/{INSTALL_CONFIG_CONFIGMAP}: {reason}"
    )]
    MalformedInstallConfig {
        /// The parser's (or provider's) explanation.
        reason: String,
    },
    /// The provider's section of `status.platformStatus` is not of the shape it reads.
    #[error("malformed status.platformStatus of Infrastructure/cluster: {reason}")]
    MalformedPlatformStatus {
        /// The provider's explanation.
        reason: String,
    },
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The cluster's platform type and infrastructure name: what picks the provider.
pub fn identify(infra: &Infrastructure) -> Result<(String, String), FactsError> {
    let status = infra.status.as_ref();
    let infrastructure_name = non_empty(status.and_then(|s| s.infrastructure_name.as_ref()))
        .ok_or(FactsError::NoInfrastructureName)?;
    let platform_type =
        status.and_then(|s| s.platform_status.as_ref()).and_then(|p| p.platform_type.as_ref());
    let platform = non_empty(platform_type)
        .or_else(|| non_empty(status.and_then(|s| s.platform.as_ref())))
        .ok_or(FactsError::NoPlatformType)?;
    Ok((platform, infrastructure_name))
}

fn status_section<'a>(
    infra: &'a Infrastructure,
    registration: &ProviderRegistration,
) -> Option<&'a serde_json::Value> {
    let key = registration.facts.as_ref()?.key;
    infra.status.as_ref()?.platform_status.as_ref()?.sections.get(key).filter(|v| !v.is_null())
}

/// Whether the provider finds its facts incomplete in `Infrastructure`, so the caller reads the
/// install-config ConfigMap (only then).
pub fn needs_install_config(infra: &Infrastructure, registration: &ProviderRegistration) -> bool {
    let input = FactsInput { platform_status: status_section(infra, registration), install_config: None };
    registration.read_facts(&input).is_ok_and(|facts| !facts.complete)
}

/// Determines the cluster facts for `registration`'s provider from the Infrastructure object and,
/// where the provider finds them incomplete, from the install-config YAML (`None` when the
/// ConfigMap or key is absent).
///
/// Whether the facts suffice (region, project) is the provider's check, made when it is built.
pub fn resolve_facts(
    infra: &Infrastructure,
    registration: &ProviderRegistration,
    install_config: Option<&str>,
) -> Result<ClusterFacts, FactsError> {
    let (platform, infrastructure_name) = identify(infra)?;
    let platform_status = status_section(infra, registration);
    let mut input = FactsInput { platform_status, install_config: None };
    let mut provider =
        registration.read_facts(&input).map_err(|reason| FactsError::MalformedPlatformStatus { reason })?;
    if !provider.complete {
        let raw = install_config.ok_or_else(|| FactsError::NoInstallConfig { platform: platform.clone() })?;
        let parsed: serde_json::Value = serde_saphyr::from_str(raw)
            .map_err(|err| FactsError::MalformedInstallConfig { reason: err.to_string() })?;
        let key = registration.facts.as_ref().map(|f| f.key).unwrap_or_default();
        let section = parsed.get("platform").and_then(|p| p.get(key)).filter(|v| !v.is_null());
        input.install_config = section;
        provider = registration.read_facts(&input).map_err(|reason| FactsError::MalformedInstallConfig {
            reason: format!("platform.{key}: {reason}"),
        })?;
    }
    Ok(ClusterFacts { platform, infrastructure_name, provider })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn infra(status: serde_json::Value) -> Infrastructure {
        serde_json::from_value(json!({
            "apiVersion": "config.openshift.io/v1",
            "kind": "Infrastructure",
            "metadata": {"name": "cluster"},
            "spec": {"cloudConfig": {"name": ""}, "platformSpec": {"type": "AWS"}},
            "status": status,
        }))
        .expect("valid Infrastructure")
    }

    #[test]
    fn token_based_needs_manual_mode_and_an_issuer() {
        let cc = |mode: &str| {
            CloudCredential::new("cluster", CloudCredentialSpec { credentials_mode: Some(mode.into()) })
        };
        let auth = |issuer: &str| {
            Authentication::new("cluster", AuthenticationSpec { service_account_issuer: Some(issuer.into()) })
        };
        let issuer = "https://oidc.example.com/c1";
        assert!(token_based(Some(&cc("Manual")), Some(&auth(issuer))));
        assert!(!token_based(Some(&cc("Manual")), Some(&auth(" "))), "blank issuer: manual keys");
        assert!(!token_based(Some(&cc("Manual")), None));
        assert!(!token_based(Some(&cc("Mint")), Some(&auth(issuer))));
        assert!(!token_based(None, Some(&auth(issuer))));
    }

    fn read_toy(input: &FactsInput<'_>) -> Result<ProviderFacts, String> {
        let region = input.field("region")?;
        Ok(ProviderFacts { complete: region.is_some(), region, ..Default::default() })
    }

    fn refuse(_: &mvo_core::ProviderConfig) -> mvo_core::Result<std::sync::Arc<dyn mvo_core::Platform>> {
        Err(mvo_core::Error::invalid_config("not built in these tests"))
    }

    /// A provider of platform `Toy` reading `region` from its `toy` sections.
    static TOY: ProviderRegistration = ProviderRegistration::new("Toy", refuse).with_facts("toy", read_toy);
    /// A provider that reads no facts.
    static BARE: ProviderRegistration = ProviderRegistration::new("Bare", refuse);

    #[test]
    fn the_provider_reads_its_own_status_section() {
        let i = infra(json!({
            "infrastructureName": "c1-x8k2p", "platform": "Toy",
            "platformStatus": {"type": "Toy", "toy": {"region": "eu-west-1"}, "other": {"region": "x"}}
        }));
        assert!(!needs_install_config(&i, &TOY));
        let facts = resolve_facts(&i, &TOY, None).expect("facts");
        assert_eq!((facts.platform.as_str(), facts.infrastructure_name.as_str()), ("Toy", "c1-x8k2p"));
        assert_eq!((facts.provider.region.as_deref(), facts.provider.complete), (Some("eu-west-1"), true));
    }

    #[test]
    fn a_provider_without_facts_needs_nothing() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "Bare"}}));
        assert!(!needs_install_config(&i, &BARE));
        assert_eq!(resolve_facts(&i, &BARE, None).expect("facts").provider.region, None);
    }

    #[test]
    fn old_clusters_fall_back_to_deprecated_platform_and_install_config() {
        let i = infra(json!({"infrastructureName": "old", "platform": "Toy"}));
        assert!(needs_install_config(&i, &TOY));
        let cfg = "apiVersion: v1\nplatform:\n  toy:\n    region: us-east-2\n";
        let facts = resolve_facts(&i, &TOY, Some(cfg)).expect("facts");
        assert_eq!((facts.platform.as_str(), facts.provider.region.as_deref()), ("Toy", Some("us-east-2")));
    }

    #[test]
    fn without_the_fact_anywhere_it_is_left_to_the_provider() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "Toy"}}));
        let facts = resolve_facts(&i, &TOY, Some("platform:\n  none: {}\n")).expect("facts");
        assert_eq!(facts.provider.region, None);
    }

    #[test]
    fn missing_install_config_is_named() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "Toy"}}));
        let err = resolve_facts(&i, &TOY, None).expect_err("no fallback");
        assert_eq!(err, FactsError::NoInstallConfig { platform: "Toy".into() });
        assert!(err.to_string().contains("kube-system/cluster-config-v1"));
    }

    #[test]
    fn malformed_install_config_names_configmap_and_key() {
        let i = infra(json!({"infrastructureName": "c", "platform": "Toy"}));
        let err = resolve_facts(&i, &TOY, Some("platform: [unclosed")).expect_err("malformed");
        assert!(matches!(err, FactsError::MalformedInstallConfig { .. }));
        let line = err.to_string();
        assert!(
            line.contains(r#""install-config""#) && line.contains("kube-system/cluster-config-v1"),
            "{line}"
        );
    }

    #[test]
    fn install_config_of_the_wrong_shape_is_malformed() {
        let i = infra(json!({"infrastructureName": "c", "platform": "Toy"}));
        let err = resolve_facts(&i, &TOY, Some("platform:\n  toy:\n    region: [1, 2]\n"))
            .expect_err("wrong shape");
        assert!(matches!(err, FactsError::MalformedInstallConfig { .. }), "{err}");
        assert!(err.to_string().contains("platform.toy: region must be a string"), "{err}");
    }

    #[test]
    fn unknown_platform_passes_through_for_the_registry_to_refuse() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "BareMetal"}}));
        assert_eq!(identify(&i).expect("identity").0, "BareMetal");
    }

    #[test]
    fn missing_identity_or_platform_is_refused() {
        let i = infra(json!({"platformStatus": {"type": "Toy", "toy": {"region": "r"}}}));
        assert_eq!(identify(&i), Err(FactsError::NoInfrastructureName));
        let i = infra(json!({"infrastructureName": "c"}));
        assert_eq!(identify(&i), Err(FactsError::NoPlatformType));
        let no_status: Infrastructure = serde_json::from_value(json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
            "metadata": {"name": "cluster"}, "spec": {}
        }))
        .expect("valid");
        assert_eq!(identify(&no_status), Err(FactsError::NoInfrastructureName));
    }
}
