//! Startup: from the cluster's `Infrastructure` to a built provider, and the check that the
//! `VeleroInstall` CRD is installed (SPEC section 2, steps 3 to 5).
//!
//! Every way the environment can be unsuitable ends in one [`StartupError`] whose message is the
//! single line an administrator needs, and whose [`StartupError::exit_code`] tells an unsuitable
//! cluster (3) from a failing API server (1).

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, api::ListParams};
use mvo_core::{Platform, ProviderConfig, Registry, RegistryError};

use crate::{
    crd::VeleroInstall,
    infrastructure::{
        Authentication, CLUSTER_CONFIG_NAME, CloudCredential, ClusterFacts, FactsError, INFRASTRUCTURE_NAME,
        INSTALL_CONFIG_CONFIGMAP, INSTALL_CONFIG_KEY, INSTALL_CONFIG_NAMESPACE, Infrastructure, identify,
        needs_install_config, resolve_facts,
    },
};

/// Exit code for a cluster this operator cannot serve (distinct from crashes and API failures).
pub const EXIT_UNSUITABLE_ENVIRONMENT: u8 = 3;

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The operator was pointed at another namespace without `--allow-any-namespace`.
    #[error(
        "the operator must run in namespace {expected:?}, not {actual:?} (pass --allow-any-namespace for development)"
    )]
    WrongNamespace {
        /// The required namespace.
        expected: &'static str,
        /// The configured namespace.
        actual: String,
    },
    /// `Infrastructure/cluster` does not exist.
    #[error(
        "Infrastructure/cluster (config.openshift.io/v1) not found: this operator needs the cluster to report its cloud platform"
    )]
    InfrastructureMissing,
    /// Reading `Infrastructure/cluster` failed.
    #[error("failed to read Infrastructure/cluster")]
    ReadInfrastructure(#[source] kube::Error),
    /// Reading `CloudCredential/cluster` or `Authentication/cluster` failed.
    #[error("failed to read {what}")]
    ReadCredentialsMode {
        /// The object.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the install-config fallback failed (other than it being absent).
    #[error("failed to read ConfigMap {INSTALL_CONFIG_NAMESPACE}/{INSTALL_CONFIG_CONFIGMAP}")]
    ReadInstallConfig(#[source] kube::Error),
    /// The facts are incomplete or contradictory.
    #[error(transparent)]
    Facts(#[from] FactsError),
    /// No linked provider serves the platform.
    #[error("{0}")]
    UnsupportedPlatform(RegistryError),
    /// The provider refused the facts (missing region or project).
    #[error("cannot use platform {platform}: {source}")]
    Provider {
        /// The platform.
        platform: String,
        /// The provider's refusal.
        source: mvo_core::Error,
    },
    /// The `VeleroInstall` CRD is not installed.
    #[error(
        "CustomResourceDefinition veleroinstalls.managed.openshift.io is not installed: apply deploy/ (kubectl apply -k deploy/) or `managed-velero-operator crd | kubectl apply -f -`"
    )]
    CrdMissing,
    /// Probing for the CRD failed.
    #[error("failed to check for the VeleroInstall CRD")]
    ProbeCrd(#[source] kube::Error),
    /// `Infrastructure/cluster` names no platform; the line lists what this build supports.
    #[error("{}; supported platforms: {supported}", FactsError::NoPlatformType)]
    NoPlatformType {
        /// The linked providers' platform names, comma-separated (from the registry).
        supported: String,
    },
}

impl StartupError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::ReadInfrastructure(_)
            | StartupError::ReadInstallConfig(_)
            | StartupError::ReadCredentialsMode { .. }
            | StartupError::ProbeCrd(_) => 1,
            _ => EXIT_UNSUITABLE_ENVIRONMENT,
        }
    }

    /// Whether the API server could not be reached or answered with a server error or 429: the
    /// same step may well succeed a moment later.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            StartupError::ReadInfrastructure(source)
            | StartupError::ReadInstallConfig(source)
            | StartupError::ReadCredentialsMode { source, .. }
            | StartupError::ProbeCrd(source) => source,
            _ => return false,
        };
        match source {
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }
}

/// How long startup retries a step that fails transiently before the process exits: an API
/// server disruption of a minute (what OpenShift's Lease timings are sized for) must not end in
/// a crash loop, whose restart backoff grows to 5 minutes.
pub const STARTUP_RETRY_FOR: Duration = Duration::from_secs(60);

/// Runs `step` until it succeeds, fails for good, or has failed transiently for `retry_for`
/// (waiting 1 s doubling to 8 s between attempts); returns its last result.
pub async fn retry_transient<T, F, Fut>(
    what: &str,
    retry_for: Duration,
    mut step: F,
) -> Result<T, StartupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartupError>>,
{
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_secs(1);
    loop {
        match step().await {
            Err(err) if err.is_transient() && started.elapsed() + wait <= retry_for => {
                tracing::warn!(step = what, error = %crate::app::failure_line(&err), retry_in = ?wait, "startup step failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
            outcome => return outcome,
        }
    }
}

/// Local settings that go into every provider, next to the cluster facts.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// Where the operator's credentials secret is mounted.
    pub credentials_dir: PathBuf,
    /// Cloud endpoint override (S3-compatible servers, tests).
    pub endpoint: Option<String>,
}

/// Builds the provider for `facts` from the registry of linked providers.
pub fn select_platform(
    registry: &Registry,
    facts: &ClusterFacts,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Platform>, StartupError> {
    let registration = registry.get(&facts.platform).map_err(StartupError::UnsupportedPlatform)?;
    let config = ProviderConfig {
        platform: facts.platform.clone(),
        region: facts.provider.region.clone(),
        facts: facts.provider.values.clone(),
        infrastructure_name: facts.infrastructure_name.clone(),
        credentials_dir: settings.credentials_dir.clone(),
        endpoint: settings.endpoint.clone(),
    };
    (registration.build)(&config)
        .map_err(|source| StartupError::Provider { platform: facts.platform.clone(), source })
}

/// Reads `Infrastructure/cluster` (and the install-config fallback when the platform's provider
/// finds its facts incomplete) into facts.
///
/// Errors: [`StartupError::UnsupportedPlatform`] when no linked provider serves the platform.
pub async fn discover_facts(client: &Client, registry: &Registry) -> Result<ClusterFacts, StartupError> {
    let infra = match Api::<Infrastructure>::all(client.clone()).get_opt(INFRASTRUCTURE_NAME).await {
        Ok(Some(infra)) => infra,
        Ok(None) => return Err(StartupError::InfrastructureMissing),
        // A cluster without the config.openshift.io API answers 404 for the whole resource.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Err(StartupError::InfrastructureMissing);
        }
        Err(err) => return Err(StartupError::ReadInfrastructure(err)),
    };
    let (platform, _) = identify(&infra)?;
    let registration = registry.get(&platform).map_err(StartupError::UnsupportedPlatform)?;
    let install_config = if needs_install_config(&infra, registration) {
        Api::<ConfigMap>::namespaced(client.clone(), INSTALL_CONFIG_NAMESPACE)
            .get_opt(INSTALL_CONFIG_CONFIGMAP)
            .await
            .map_err(StartupError::ReadInstallConfig)?
            .and_then(|cm| cm.data)
            .and_then(|mut data| data.remove(INSTALL_CONFIG_KEY))
    } else {
        None
    };
    Ok(resolve_facts(&infra, registration, install_config.as_deref())?)
}

/// Whether the cluster hands out only short-lived cloud credentials (AWS STS, GCP workload
/// identity federation): reads `CloudCredential/cluster` and `Authentication/cluster`. A cluster
/// without these APIs (404) uses long-lived credentials.
pub async fn discover_token_based(client: &Client) -> Result<bool, StartupError> {
    async fn read<K>(client: &Client, what: &'static str) -> Result<Option<K>, StartupError>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match Api::<K>::all(client.clone()).get_opt(CLUSTER_CONFIG_NAME).await {
            Ok(object) => Ok(object),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(source) => Err(StartupError::ReadCredentialsMode { what, source }),
        }
    }
    let cloud_credential: Option<CloudCredential> = read(client, "CloudCredential/cluster").await?;
    let authentication: Option<Authentication> = read(client, "Authentication/cluster").await?;
    Ok(crate::infrastructure::token_based(cloud_credential.as_ref(), authentication.as_ref()))
}

/// Fails with an install hint unless the `VeleroInstall` CRD is served.
pub async fn ensure_crd_installed(client: &Client, namespace: &str) -> Result<(), StartupError> {
    let api = Api::<VeleroInstall>::namespaced(client.clone(), namespace);
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(StartupError::CrdMissing),
        Err(err) => Err(StartupError::ProbeCrd(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(platform: &str, region: Option<&str>, project: Option<&str>) -> ClusterFacts {
        let mut provider = mvo_core::ProviderFacts { region: region.map(Into::into), ..Default::default() };
        // The GCP provider's name for its project fact; a test of the AWS and GCP providers.
        provider.set("project ID", project.map(Into::into));
        ClusterFacts { platform: platform.into(), infrastructure_name: "c1".into(), provider }
    }

    fn registry() -> &'static Registry {
        Registry::global().expect("no duplicate providers")
    }

    #[test]
    fn aws_and_gcp_are_built_from_facts() {
        let settings = ProviderSettings::default();
        let aws =
            select_platform(registry(), &facts("AWS", Some("eu-west-1"), None), &settings).expect("AWS");
        assert_eq!((aws.name(), aws.region()), ("AWS", "eu-west-1"));
        let gcp = select_platform(registry(), &facts("GCP", Some("us-central1"), Some("p")), &settings)
            .expect("GCP");
        assert_eq!(gcp.name(), "GCP");
    }

    #[test]
    fn unknown_platform_lists_the_supported_ones() {
        let err = select_platform(registry(), &facts("BareMetal", None, None), &ProviderSettings::default())
            .expect_err("BareMetal");
        let supported = registry().platforms().join(", ");
        assert_eq!(
            err.to_string(),
            format!(r#"platform "BareMetal" is not supported; supported platforms: {supported}"#)
        );
        assert!(["AWS", "Azure", "GCP"].iter().all(|p| supported.contains(p)), "{supported}");
        assert_eq!(err.exit_code(), EXIT_UNSUITABLE_ENVIRONMENT);
    }

    #[test]
    fn aws_without_region_is_one_clear_line() {
        let err = select_platform(registry(), &facts("AWS", None, None), &ProviderSettings::default())
            .expect_err("no region");
        let line = err.to_string();
        assert_eq!(
            line,
            "cannot use platform AWS: invalid configuration: platform AWS needs a region and the cluster reports none"
        );
        assert!(!line.contains('\n'));
        assert_eq!(err.exit_code(), EXIT_UNSUITABLE_ENVIRONMENT);
    }

    #[test]
    fn gcp_without_project_is_one_clear_line() {
        let err = select_platform(
            registry(),
            &facts("GCP", Some("us-central1"), None),
            &ProviderSettings::default(),
        )
        .expect_err("no project");
        assert!(err.to_string().contains("needs a project ID"), "{err}");
        assert_eq!(err.exit_code(), EXIT_UNSUITABLE_ENVIRONMENT);
    }

    #[test]
    fn environment_errors_and_api_failures_have_distinct_exit_codes() {
        assert_eq!(StartupError::InfrastructureMissing.exit_code(), EXIT_UNSUITABLE_ENVIRONMENT);
        assert_eq!(StartupError::CrdMissing.exit_code(), EXIT_UNSUITABLE_ENVIRONMENT);
        assert_eq!(
            StartupError::Facts(FactsError::NoInstallConfig { platform: "AWS".into() }).exit_code(),
            EXIT_UNSUITABLE_ENVIRONMENT
        );
        let api_down = kube::Error::Api(Box::new(
            kube::core::Status::failure("etcd down", "InternalError").with_code(500),
        ));
        assert_eq!(StartupError::ReadInfrastructure(api_down).exit_code(), 1);
    }
}
