//! What Velero needs from a cloud, in a Kubernetes-free shape the operator turns into objects.

use std::collections::BTreeMap;

/// Name of the CredentialsRequest and of the secret holding Velero's cloud credentials.
pub const VELERO_CREDENTIALS_SECRET: &str = "velero-iam-credentials";

/// The provider and config of Velero's BackupStorageLocation and VolumeSnapshotLocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationConfig {
    /// Velero's provider name (`aws`, `gcp`); the plugin registers under it.
    pub provider: String,
    /// The bucket backups are stored in.
    pub bucket: String,
    /// `spec.config` of the BackupStorageLocation.
    pub backup_config: BTreeMap<String, String>,
    /// `spec.config` of the VolumeSnapshotLocation.
    pub snapshot_config: BTreeMap<String, String>,
}

/// How Velero's container receives the cloud credentials from the secret
/// [`VELERO_CREDENTIALS_SECRET`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsWiring {
    /// Directory the secret is mounted at in the Velero container.
    pub mount_path: String,
    /// Environment variables to set, each pointing at a file under `mount_path` or carrying a
    /// plain value (never a secret value).
    pub env: Vec<(String, String)>,
}
