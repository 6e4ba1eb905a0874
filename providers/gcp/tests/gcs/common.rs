//! Shared fixtures: a fresh control plane per test and the provider wired to it.

use std::sync::Arc;

use google_cloud_storage::client::StorageControl;
use mvo_core::{
    BucketSpec, Credential, CredentialMaterial, Encryption, Owner, Platform, ProviderConfig, Secret,
    StaticCredentialSource,
};
use mvo_provider_gcp::{GcpPlatform, PLATFORM};
use mvo_testkit::{
    Harness,
    contract::TagStyle,
    gcs::{GcsBackdoor, GcsControlPlane, Received},
};

/// The project the provider works in.
pub const PROJECT: &str = "mvo-test-project";
/// The cluster's region.
pub const REGION: &str = "europe-west4";
/// A key name the control plane accepts.
pub const KMS_KEY: &str =
    "projects/mvo-test-project/locations/europe-west4/keyRings/velero/cryptoKeys/backups";

/// A control plane and the provider calling it as [`PROJECT`].
pub struct Fixture {
    pub plane: GcsControlPlane,
    pub platform: GcpPlatform,
}

impl Fixture {
    /// A provider on a fresh control plane.
    pub fn new() -> Self {
        Self::on(GcsControlPlane::new())
    }

    /// A provider on `plane`.
    pub fn on(plane: GcsControlPlane) -> Self {
        let client = StorageControl::from_stub(plane.stub(PROJECT));
        let config = ProviderConfig {
            platform: PLATFORM.into(),
            region: Some(REGION.into()),
            facts: [(mvo_provider_gcp::PROJECT_ID_FACT.to_owned(), PROJECT.to_owned())].into(),
            infrastructure_name: "c1".into(),
            ..Default::default()
        };
        let credentials = StaticCredentialSource::new(Credential {
            material: CredentialMaterial::JsonDocument(Secret::new("{}")),
            expires_at: None,
        });
        let platform = GcpPlatform::builder(&config)
            .client(client)
            .credential_source(Arc::new(credentials))
            .build()
            .expect("valid config");
        Fixture { plane, platform }
    }

    /// A bucket spec for a fresh cluster identity.
    pub fn spec(&self) -> BucketSpec {
        let id = uuid::Uuid::new_v4().simple().to_string();
        BucketSpec {
            name: format!("mvo-gcs-{}", &id[..12]),
            region: REGION.into(),
            owner: Owner::new(format!("cluster-{}", &id[12..20])),
            encryption: Encryption::ProviderManaged,
            retention_days: Some(90),
            applied_retention_days: None,
        }
    }

    /// The update requests the plane received since the last [`GcsControlPlane::clear_received`].
    pub fn updates(&self) -> Vec<Received> {
        self.plane.received().into_iter().filter(|r| matches!(r, Received::UpdateBucket { .. })).collect()
    }

    /// (reads, writes) the provider made so far.
    pub fn calls(&self) -> (u64, u64) {
        let counter = self.platform.call_counter();
        (counter.reads(), counter.writes())
    }
}

/// The contract harness: one fresh control plane per case.
pub async fn harness() -> Harness {
    let fixture = Fixture::new();
    Harness {
        store: fixture.platform.object_store(&mvo_core::NO_SECTION).expect("object store"),
        capabilities: fixture.platform.capabilities(),
        backdoor: Arc::new(GcsBackdoor::new(fixture.plane, PROJECT)),
        region: REGION.into(),
        tag_style: TagStyle::Labels,
        kms_key: KMS_KEY.into(),
    }
}
