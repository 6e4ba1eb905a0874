//! What Velero needs from a cloud, in a Kubernetes-free shape the operator turns into objects.

use std::collections::BTreeMap;

/// Name of the CredentialsRequest and of the secret holding Velero's cloud credentials.
pub const VELERO_CREDENTIALS_SECRET: &str = "velero-iam-credentials";

/// Name of the operator-owned secret holding Velero's credentials file when the provider has it
/// rendered from [`VELERO_CREDENTIALS_SECRET`] ([`CredentialsWiring::derived`]).
pub const VELERO_DERIVED_CREDENTIALS_SECRET: &str = "velero-cloud-credentials";

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
    /// Set when the credential operator's secret is not in the layout Velero's plugin reads: the
    /// operator renders this file from it on every pass into its own secret
    /// [`VELERO_DERIVED_CREDENTIALS_SECRET`] under `secret_key`, and mounts that one instead.
    pub derived: Option<DerivedCredentials>,
}

impl CredentialsWiring {
    /// The secret mounted into Velero's container: the operator's rendered one when
    /// [`derived`](Self::derived) is set, else the credential operator's.
    pub fn secret_name(&self) -> &'static str {
        if self.derived.is_some() { VELERO_DERIVED_CREDENTIALS_SECRET } else { VELERO_CREDENTIALS_SECRET }
    }
}

/// Where one line of a [`DerivedCredentials`] file takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivedValue {
    /// This key of [`VELERO_CREDENTIALS_SECRET`]: the file is not rendered without it.
    Key(String),
    /// This key when the secret has it (a value only one credential mode writes); otherwise the
    /// line is left out.
    OptionalKey(String),
    /// A value the provider knows (a cluster fact such as the cloud name); never a secret.
    Fixed(String),
}

/// Velero's credentials file as `NAME=value` lines (the dotenv layout the Go plugins load),
/// rendered by the operator from the credential operator's secret plus provider facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerivedCredentials {
    /// The lines, in order: variable name and where its value comes from.
    pub lines: Vec<(String, DerivedValue)>,
}

impl DerivedCredentials {
    /// The file rendered from `source` (the credential operator's secret, decoded), values
    /// trimmed.
    ///
    /// Errors: the [`DerivedValue::Key`] keys that are missing, empty or span several lines (a
    /// line break would let a value write other variables), by name.
    pub fn render(&self, source: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
        let mut file = String::new();
        let mut missing = Vec::new();
        for (name, source_value) in &self.lines {
            let (value, required) = match source_value {
                DerivedValue::Fixed(value) => (Some(value.as_str()), name),
                DerivedValue::Key(key) | DerivedValue::OptionalKey(key) => {
                    (source.get(key).map(String::as_str), key)
                }
            };
            let value = value.map(str::trim).filter(|v| !v.is_empty() && !v.contains(['\n', '\r']));
            match value {
                Some(value) => file.push_str(&format!("{name}={value}\n")),
                None if matches!(source_value, DerivedValue::OptionalKey(_)) => {}
                None => missing.push(required.clone()),
            }
        }
        if missing.is_empty() { Ok(file) } else { Err(missing) }
    }
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
    /// The administrator must set these fields of the provider's own spec section first (JSON
    /// paths such as `spec.<section>.<field>`), for inputs only that cloud has.
    #[error("missing {0:?}")]
    MissingInSection(Vec<String>),
    /// The provider does not wire short-lived credentials for Velero.
    #[error("short-lived credentials for Velero are not supported by this provider")]
    NotSupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> DerivedCredentials {
        DerivedCredentials {
            lines: vec![
                ("ID".into(), DerivedValue::Key("id".into())),
                ("SECRET".into(), DerivedValue::OptionalKey("secret".into())),
                ("CLOUD".into(), DerivedValue::Fixed("public".into())),
            ],
        }
    }

    #[test]
    fn the_file_is_rendered_in_order_and_optional_keys_are_left_out() {
        let source =
            BTreeMap::from([("id".to_owned(), " app\n".to_owned()), ("secret".to_owned(), "s".to_owned())]);
        assert_eq!(file().render(&source), Ok("ID=app\nSECRET=s\nCLOUD=public\n".to_owned()));
        let source = BTreeMap::from([("id".to_owned(), "app".to_owned())]);
        assert_eq!(file().render(&source), Ok("ID=app\nCLOUD=public\n".to_owned()));
    }

    #[test]
    fn missing_empty_and_multi_line_keys_are_named() {
        assert_eq!(file().render(&BTreeMap::new()), Err(vec!["id".to_owned()]));
        let empty = BTreeMap::from([("id".to_owned(), "  ".to_owned())]);
        assert_eq!(file().render(&empty), Err(vec!["id".to_owned()]));
        // A line break would let the value set other variables (`a\nAZURE_CLIENT_ID=x`).
        let injected = BTreeMap::from([("id".to_owned(), "a\nCLOUD=evil".to_owned())]);
        assert_eq!(file().render(&injected), Err(vec!["id".to_owned()]));
    }

    #[test]
    fn the_mounted_secret_follows_the_wiring() {
        let mut wiring = CredentialsWiring {
            mount_path: "/c".into(),
            secret_key: "cloud".into(),
            env: vec![],
            derived: None,
        };
        assert_eq!(wiring.secret_name(), VELERO_CREDENTIALS_SECRET);
        wiring.derived = Some(file());
        assert_eq!(wiring.secret_name(), VELERO_DERIVED_CREDENTIALS_SECRET);
    }
}
