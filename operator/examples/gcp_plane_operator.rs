//! The operator binary's `main` with the GCP provider on the testkit's in-memory GCS control plane
//! instead of the real gRPC client: `make bench` runs it to measure the operator on GCP, because
//! no emulator reachable here speaks the gRPC API of GCS. Everything but the GCS transport is the
//! shipped code (runtime, CLI, startup, controller, reconcile, the GCP provider and its facts);
//! the binary also links the plane, so its size is not the shipped one's.
//!
//! Cluster facts come from `Infrastructure/cluster` as usual (platform `GCP`); the plane starts
//! empty, so the first reconcile creates the bucket.

#[cfg(feature = "gcp")]
mod on_plane {
    use std::sync::{Arc, LazyLock};

    use google_cloud_storage::client::StorageControl;
    use mvo_core::{
        Credential, CredentialMaterial, Platform, ProviderConfig, ProviderRegistration, Registry,
        RegistryError, Secret, StaticCredentialSource,
    };
    use mvo_testkit::gcs::GcsControlPlane;

    static PLANE: LazyLock<GcsControlPlane> = LazyLock::new(GcsControlPlane::new);

    /// The linked GCP provider's registration (its facts reader and spec section) with a
    /// constructor that hands the provider a client of the plane.
    static ON_PLANE: LazyLock<Result<ProviderRegistration, RegistryError>> = LazyLock::new(|| {
        let gcp = Registry::global()?.get(mvo_provider_gcp::PLATFORM)?;
        Ok(ProviderRegistration { platform: gcp.platform, build, facts: gcp.facts, section: gcp.section })
    });

    static REGISTRY: LazyLock<Result<Registry, RegistryError>> = LazyLock::new(|| {
        let registration = ON_PLANE.as_ref().map_err(Clone::clone)?;
        Registry::from_registrations([registration])
    });

    fn build(config: &ProviderConfig) -> mvo_core::Result<Arc<dyn Platform>> {
        let project = config.require(mvo_provider_gcp::PROJECT_ID_FACT)?;
        // The plane checks no credentials; a static document stands in for service_account.json.
        let credentials = StaticCredentialSource::new(Credential {
            material: CredentialMaterial::JsonDocument(Secret::new("{}")),
            expires_at: None,
        });
        let platform = mvo_provider_gcp::GcpPlatform::builder(config)
            .client(StorageControl::from_stub(PLANE.stub(project)))
            .credential_source(Arc::new(credentials))
            .build()?;
        Ok(Arc::new(platform))
    }

    /// The registry holding only the GCP provider on the plane.
    pub fn registry() -> Result<&'static Registry, RegistryError> {
        REGISTRY.as_ref().map_err(Clone::clone)
    }
}

#[cfg(feature = "gcp")]
fn main() -> std::process::ExitCode {
    let cli = mvo_operator::cli::Cli::parse_global();
    mvo_operator::app::block_on(mvo_operator::app::main_with(cli, on_plane::registry))
}

#[cfg(not(feature = "gcp"))]
fn main() -> std::process::ExitCode {
    eprintln!("gcp_plane_operator: built without the `gcp` feature");
    std::process::ExitCode::from(2)
}
