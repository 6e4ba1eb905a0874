//! What Velero needs from a cloud, in a Kubernetes-free shape the operator turns into objects.

use std::collections::BTreeMap;

/// Name of the CredentialsRequest and of the secret holding Velero's cloud credentials.
pub const VELERO_CREDENTIALS_SECRET: &str = "velero-iam-credentials";

/// Where Velero's projected service-account token is mounted on token-based clusters; the
/// cloud credential operator writes this path into the credentials file it mints
/// (`CredentialsRequest.spec.cloudTokenPath`).
pub const CLOUD_TOKEN_PATH: &str = "/var/run/secrets/openshift/serviceaccount/token";

/// Audience of that projected token, the one OpenShift's token-based clusters trust.
pub const CLOUD_TOKEN_AUDIENCE: &str = "openshift";

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
    /// The key of the secret Velero reads (the credential operator's file name); the
    /// credentials are ready only once the secret carries it.
    pub secret_key: String,
    /// Environment variables to set, each pointing at a file under `mount_path` or carrying a
    /// plain value (never a secret value).
    pub env: Vec<(String, String)>,
}

/// What the administrator gave for Velero on a token-based cluster (from the VeleroInstall spec
/// or the operator's environment); each provider uses the fields of its cloud.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShortLivedInput {
    /// AWS: the IAM role Velero assumes with its token.
    pub role_arn: Option<String>,
    /// GCP: the Google service account Velero impersonates.
    pub service_account_email: Option<String>,
    /// GCP: the workload identity pool provider (`//iam.googleapis.com/projects/…/providers/…`).
    pub audience: Option<String>,
}

/// One field of [`ShortLivedInput`], named when a provider needs it and it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortLivedField {
    /// [`ShortLivedInput::role_arn`].
    RoleArn,
    /// [`ShortLivedInput::service_account_email`].
    ServiceAccountEmail,
    /// [`ShortLivedInput::audience`].
    Audience,
}

/// What the operator asks a provider about Velero for one reconcile.
#[derive(Debug, Clone, Copy)]
pub struct VeleroInput<'a> {
    /// The backup bucket.
    pub bucket: &'a str,
    /// The provider's own spec section ([`crate::SpecSection`]); `Value::Null` when absent.
    pub section: &'a serde_json::Value,
    /// Set on a cluster whose credential operator only writes token-based credentials (AWS STS,
    /// GCP workload identity federation): the identity Velero exchanges its projected token for.
    /// The operator mounts that token at [`CLOUD_TOKEN_PATH`] and sets `spec.cloudTokenPath`.
    pub short_lived: Option<&'a ShortLivedInput>,
}

/// Everything Velero needs from a cloud, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct VeleroFacts {
    /// The pinned Velero plugin image for this cloud (the spec and `RELATED_IMAGE_*` override it).
    pub plugin_image: String,
    /// BackupStorageLocation / VolumeSnapshotLocation provider and config.
    pub location: LocationConfig,
    /// `spec.providerSpec` of Velero's CredentialsRequest, least privilege for the bucket (naming
    /// the role / service account on a token-based cluster).
    pub credentials_request: serde_json::Value,
    /// How Velero's container receives its credentials.
    pub credentials: CredentialsWiring,
}

/// Why a provider cannot give Velero short-lived credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortLivedError {
    /// The administrator must provide these inputs first.
    #[error("missing {0:?}")]
    Missing(Vec<ShortLivedField>),
    /// The provider does not wire short-lived credentials for Velero.
    #[error("short-lived credentials for Velero are not supported by this provider")]
    NotSupported,
}
