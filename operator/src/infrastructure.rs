//! The cluster facts the operator starts from: `config.openshift.io/v1 Infrastructure/cluster`,
//! with MVO's fallbacks to the deprecated `status.platform` and to the `install-config` kept in
//! ConfigMap `kube-system/cluster-config-v1`.
//!
//! Only the fields read are modelled. [`resolve_facts`] is pure so every startup row of the
//! bad-input table is a unit test.

use kube::CustomResource;
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

/// `status.platformStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PlatformStatus {
    /// `AWS`, `GCP`, `Azure`, `None`, …
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub platform_type: Option<String>,
    /// AWS facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsPlatformStatus>,
    /// GCP facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpPlatformStatus>,
}

/// `status.platformStatus.aws`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AwsPlatformStatus {
    /// The cluster's AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `status.platformStatus.gcp`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GcpPlatformStatus {
    /// The GCP project ID.
    #[serde(rename = "projectID", default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The cluster's GCP region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
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
    /// Region, when known.
    pub region: Option<String>,
    /// GCP project, when known.
    pub project_id: Option<String>,
    /// The cluster's infrastructure name.
    pub infrastructure_name: String,
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
        "the cluster's region is not in Infrastructure/cluster and ConfigMap {INSTALL_CONFIG_NAMESPACE}/{INSTALL_CONFIG_CONFIGMAP} has no key {INSTALL_CONFIG_KEY:?}"
    )]
    NoInstallConfig,
    /// The fallback install-config is not valid YAML of the expected shape.
    #[error(
        "malformed {INSTALL_CONFIG_KEY:?} in ConfigMap {INSTALL_CONFIG_NAMESPACE}/{INSTALL_CONFIG_CONFIGMAP}: {reason}"
    )]
    MalformedInstallConfig {
        /// The parser's explanation.
        reason: String,
    },
}

/// The parts of the installer's `install-config` used as fallback.
#[derive(Deserialize, Debug, Default)]
struct InstallConfig {
    #[serde(default)]
    platform: InstallPlatform,
}

#[derive(Deserialize, Debug, Default)]
struct InstallPlatform {
    aws: Option<InstallAws>,
    gcp: Option<InstallGcp>,
}

#[derive(Deserialize, Debug)]
struct InstallAws {
    region: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct InstallGcp {
    #[serde(rename = "projectID")]
    project_id: Option<String>,
    region: Option<String>,
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// Whether [`resolve_facts`] will need the install-config fallback for this object, so the caller
/// reads the ConfigMap only then.
pub fn needs_install_config(infra: &Infrastructure) -> bool {
    let Some(platform_status) = infra.status.as_ref().and_then(|s| s.platform_status.as_ref()) else {
        return true;
    };
    match platform_status.platform_type.as_deref() {
        Some("AWS") => non_empty(platform_status.aws.as_ref().and_then(|a| a.region.as_ref())).is_none(),
        Some("GCP") => {
            let gcp = platform_status.gcp.as_ref();
            non_empty(gcp.and_then(|g| g.region.as_ref())).is_none()
                || non_empty(gcp.and_then(|g| g.project_id.as_ref())).is_none()
        }
        _ => false,
    }
}

/// Determines the cluster facts from the Infrastructure object and, where it is silent, from the
/// install-config YAML (`None` when the ConfigMap or key is absent).
///
/// Whether the facts suffice for the platform (region, project) is the provider's check, made
/// when it is built.
pub fn resolve_facts(
    infra: &Infrastructure,
    install_config: Option<&str>,
) -> Result<ClusterFacts, FactsError> {
    let status = infra.status.clone().unwrap_or_default();
    let infrastructure_name =
        non_empty(status.infrastructure_name.as_ref()).ok_or(FactsError::NoInfrastructureName)?;
    let platform_status = status.platform_status.clone().unwrap_or_default();
    let platform = non_empty(platform_status.platform_type.as_ref())
        .or_else(|| non_empty(status.platform.as_ref()))
        .ok_or(FactsError::NoPlatformType)?;

    let mut facts = ClusterFacts { platform, region: None, project_id: None, infrastructure_name };
    match facts.platform.as_str() {
        "AWS" => facts.region = non_empty(platform_status.aws.as_ref().and_then(|a| a.region.as_ref())),
        "GCP" => {
            let gcp = platform_status.gcp.as_ref();
            facts.region = non_empty(gcp.and_then(|g| g.region.as_ref()));
            facts.project_id = non_empty(gcp.and_then(|g| g.project_id.as_ref()));
        }
        _ => return Ok(facts),
    }
    if !needs_install_config(infra) {
        return Ok(facts);
    }
    let raw = install_config.ok_or(FactsError::NoInstallConfig)?;
    let parsed: InstallConfig = serde_saphyr::from_str(raw)
        .map_err(|err| FactsError::MalformedInstallConfig { reason: err.to_string() })?;
    match facts.platform.as_str() {
        "AWS" => {
            let aws = parsed.platform.aws.as_ref();
            facts.region = facts.region.or_else(|| non_empty(aws.and_then(|a| a.region.as_ref())));
        }
        _ => {
            let gcp = parsed.platform.gcp.as_ref();
            facts.region = facts.region.or_else(|| non_empty(gcp.and_then(|g| g.region.as_ref())));
            facts.project_id =
                facts.project_id.or_else(|| non_empty(gcp.and_then(|g| g.project_id.as_ref())));
        }
    }
    Ok(facts)
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

    #[test]
    fn aws_from_platform_status() {
        let i = infra(json!({
            "infrastructureName": "c1-x8k2p", "platform": "AWS",
            "platformStatus": {"type": "AWS", "aws": {"region": "eu-west-1"}}
        }));
        assert!(!needs_install_config(&i));
        let facts = resolve_facts(&i, None).expect("facts");
        assert_eq!(
            facts,
            ClusterFacts {
                platform: "AWS".into(),
                region: Some("eu-west-1".into()),
                project_id: None,
                infrastructure_name: "c1-x8k2p".into()
            }
        );
    }

    #[test]
    fn gcp_from_platform_status() {
        let i = infra(json!({
            "infrastructureName": "c2",
            "platformStatus": {"type": "GCP", "gcp": {"projectID": "proj-1", "region": "us-central1"}}
        }));
        let facts = resolve_facts(&i, None).expect("facts");
        assert_eq!(
            (facts.project_id.as_deref(), facts.region.as_deref()),
            (Some("proj-1"), Some("us-central1"))
        );
    }

    #[test]
    fn old_clusters_fall_back_to_deprecated_platform_and_install_config() {
        let i = infra(json!({"infrastructureName": "old", "platform": "AWS"}));
        assert!(needs_install_config(&i));
        let cfg = "apiVersion: v1\nplatform:\n  aws:\n    region: us-east-2\n";
        let facts = resolve_facts(&i, Some(cfg)).expect("facts");
        assert_eq!((facts.platform.as_str(), facts.region.as_deref()), ("AWS", Some("us-east-2")));
    }

    #[test]
    fn aws_without_region_uses_install_config() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "AWS"}}));
        let facts = resolve_facts(&i, Some("platform:\n  aws:\n    region: ap-south-1\n")).expect("facts");
        assert_eq!(facts.region.as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn aws_without_region_anywhere_leaves_it_to_the_provider() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "AWS"}}));
        let facts = resolve_facts(&i, Some("platform:\n  none: {}\n")).expect("facts");
        assert_eq!(facts.region, None);
    }

    #[test]
    fn missing_install_config_is_named() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "AWS"}}));
        let err = resolve_facts(&i, None).expect_err("no fallback");
        assert_eq!(err, FactsError::NoInstallConfig);
        assert!(err.to_string().contains("kube-system/cluster-config-v1"));
    }

    #[test]
    fn malformed_install_config_names_configmap_and_key() {
        let i = infra(json!({"infrastructureName": "c", "platform": "AWS"}));
        let err = resolve_facts(&i, Some("platform: [unclosed")).expect_err("malformed");
        assert!(matches!(err, FactsError::MalformedInstallConfig { .. }));
        let line = err.to_string();
        assert!(
            line.contains(r#""install-config""#) && line.contains("kube-system/cluster-config-v1"),
            "{line}"
        );
    }

    #[test]
    fn install_config_of_the_wrong_shape_is_malformed() {
        let i = infra(json!({"infrastructureName": "c", "platform": "AWS"}));
        let err = resolve_facts(&i, Some("platform:\n  aws: [1, 2]\n")).expect_err("wrong shape");
        assert!(matches!(err, FactsError::MalformedInstallConfig { .. }), "{err}");
    }

    #[test]
    fn unknown_platform_passes_through_for_the_registry_to_refuse() {
        let i = infra(json!({"infrastructureName": "c", "platformStatus": {"type": "BareMetal"}}));
        assert_eq!(resolve_facts(&i, None).expect("facts").platform, "BareMetal");
    }

    #[test]
    fn missing_identity_or_platform_is_refused() {
        let i = infra(json!({"platformStatus": {"type": "AWS", "aws": {"region": "r"}}}));
        assert_eq!(resolve_facts(&i, None), Err(FactsError::NoInfrastructureName));
        let i = infra(json!({"infrastructureName": "c"}));
        assert_eq!(resolve_facts(&i, None), Err(FactsError::NoPlatformType));
        let no_status: Infrastructure = serde_json::from_value(json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
            "metadata": {"name": "cluster"}, "spec": {}
        }))
        .expect("valid");
        assert_eq!(resolve_facts(&no_status, None), Err(FactsError::NoInfrastructureName));
    }
}
