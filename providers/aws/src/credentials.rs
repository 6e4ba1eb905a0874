//! The operator's own AWS credentials, read from the mounted credentials secret
//! (`ProviderConfig::credentials_dir`), and the adapter that hands them to the SDK clients.
//!
//! Three layouts are accepted, as the cloud credential operator writes them:
//! - files `aws_access_key_id` and `aws_secret_access_key` (static keys);
//! - a shared-credentials (INI) file `credentials` with `aws_access_key_id`/`aws_secret_access_key`;
//! - a `credentials` file with `role_arn` + `web_identity_token_file` (STS mode): the token is
//!   exchanged with AssumeRoleWithWebIdentity and the result cached until [`REFRESH_MARGIN`]
//!   before it expires.
//!
//! Files are re-read on every call (they are a few bytes; kubelet swaps them atomically on
//! rotation), so a rotated secret is used at the next request without restart. Errors name the
//! missing file or key, never a value.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use async_trait::async_trait;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use mvo_core::{
    Credential, CredentialMaterial, CredentialSource, Error, Result, Secret, credentials::REFRESH_MARGIN,
};
use tokio::sync::Mutex;

use crate::errors::{self, Call};

/// File holding the access key ID (static-key layout).
pub const ACCESS_KEY_ID_FILE: &str = "aws_access_key_id";
/// File holding the secret access key (static-key layout).
pub const SECRET_ACCESS_KEY_FILE: &str = "aws_secret_access_key";
/// Shared-credentials file (static keys or STS role).
pub const CREDENTIALS_FILE: &str = "credentials";
/// Session name the operator's assumed-role sessions carry in CloudTrail.
const SESSION_NAME: &str = "managed-velero-operator";

/// What the mounted secret asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    Keys { access_key_id: String, secret_access_key: Secret, session_token: Option<Secret> },
    WebIdentity { role_arn: String, token_file: PathBuf },
}

/// The last web identity exchange, reused until close to expiry.
#[derive(Debug)]
struct Exchanged {
    role_arn: String,
    token_file: PathBuf,
    credential: Arc<Credential>,
}

/// A [`CredentialSource`] over the operator's mounted credentials secret.
#[derive(Debug)]
pub struct FileCredentialSource {
    dir: PathBuf,
    sts: aws_sdk_sts::Client,
    /// Last static credential, so unchanged files yield the same `Arc`.
    last_keys: parking_lot::Mutex<Option<Arc<Credential>>>,
    /// Serialises STS exchanges: concurrent callers wait for one exchange instead of each
    /// making their own.
    exchanged: Mutex<Option<Exchanged>>,
}

impl FileCredentialSource {
    /// A source reading `dir`, exchanging web identity tokens with `sts`.
    pub fn new(dir: impl Into<PathBuf>, sts: aws_sdk_sts::Client) -> Self {
        FileCredentialSource {
            dir: dir.into(),
            sts,
            last_keys: parking_lot::Mutex::new(None),
            exchanged: Mutex::new(None),
        }
    }

    /// The long-lived `credential`, as the same `Arc` as last time when the files did not change.
    fn keys(&self, credential: Credential) -> Arc<Credential> {
        let mut last = self.last_keys.lock();
        match last.as_ref() {
            Some(previous) if **previous == credential => previous.clone(),
            _ => {
                let fresh = Arc::new(credential);
                *last = Some(fresh.clone());
                fresh
            }
        }
    }

    async fn web_identity(&self, role_arn: String, token_file: PathBuf) -> Result<Arc<Credential>> {
        let mut cache = self.exchanged.lock().await;
        if let Some(cached) = cache.as_ref()
            && cached.role_arn == role_arn
            && cached.token_file == token_file
            && !cached.credential.expires_within(REFRESH_MARGIN, SystemTime::now())
        {
            return Ok(cached.credential.clone());
        }
        // The projected token is rotated by kubelet; read the current one for every exchange.
        let token = read_trimmed(&token_file)?.ok_or_else(|| Error::Unauthenticated {
            message: format!("web identity token file {} is missing", token_file.display()),
        })?;
        let output = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&role_arn)
            .role_session_name(SESSION_NAME)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| errors::map(e, Call::global("sts:AssumeRoleWithWebIdentity")))?;
        let creds = output.credentials().ok_or_else(|| Error::Unauthenticated {
            message: format!("AssumeRoleWithWebIdentity for {role_arn} returned no credentials"),
        })?;
        let credential = Arc::new(Credential {
            material: CredentialMaterial::AccessKey {
                access_key_id: creds.access_key_id().to_owned(),
                secret_access_key: Secret::new(creds.secret_access_key()),
                session_token: Some(Secret::new(creds.session_token())),
            },
            expires_at: SystemTime::try_from(*creds.expiration()).ok(),
        });
        *cache = Some(Exchanged { role_arn, token_file, credential: credential.clone() });
        Ok(credential)
    }
}

#[async_trait]
impl CredentialSource for FileCredentialSource {
    async fn credential(&self) -> Result<Arc<Credential>> {
        match read_material(&self.dir)? {
            Material::Keys { access_key_id, secret_access_key, session_token } => Ok(self.keys(Credential {
                material: CredentialMaterial::AccessKey { access_key_id, secret_access_key, session_token },
                expires_at: None,
            })),
            Material::WebIdentity { role_arn, token_file } => self.web_identity(role_arn, token_file).await,
        }
    }

    fn describe(&self) -> String {
        let dir = self.dir.display();
        if self.dir.join(ACCESS_KEY_ID_FILE).exists() {
            format!("static access key from {dir}/{ACCESS_KEY_ID_FILE}")
        } else if self.dir.join(CREDENTIALS_FILE).exists() {
            format!("shared credentials file {dir}/{CREDENTIALS_FILE} (static keys or web identity role)")
        } else {
            format!("no credentials found yet in {dir}")
        }
    }
}

/// Reads a file's trimmed content; `Ok(None)` when it does not exist.
fn read_trimmed(path: &Path) -> Result<Option<String>> {
    // std::fs on purpose: these are a few bytes on a tmpfs mount, not worth a blocking-pool hop.
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(Some(content.trim().to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => {
            Err(Error::Unauthenticated { message: format!("cannot read {}: {}", path.display(), err.kind()) })
        }
    }
}

fn missing(dir: &Path, what: &str) -> Error {
    Error::Unauthenticated { message: format!("credentials in {} incomplete: missing {what}", dir.display()) }
}

fn read_material(dir: &Path) -> Result<Material> {
    let id = read_trimmed(&dir.join(ACCESS_KEY_ID_FILE))?;
    let secret = read_trimmed(&dir.join(SECRET_ACCESS_KEY_FILE))?;
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            return Ok(Material::Keys {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: None,
            });
        }
        (Some(id), _) if id.is_empty() => {
            return Err(missing(dir, &format!("a value in {ACCESS_KEY_ID_FILE}")));
        }
        (Some(_), _) => return Err(missing(dir, &format!("file {SECRET_ACCESS_KEY_FILE}"))),
        (None, Some(_)) => return Err(missing(dir, &format!("file {ACCESS_KEY_ID_FILE}"))),
        (None, None) => {}
    }
    let Some(content) = read_trimmed(&dir.join(CREDENTIALS_FILE))? else {
        return Err(missing(
            dir,
            &format!("files {ACCESS_KEY_ID_FILE} and {SECRET_ACCESS_KEY_FILE}, or file {CREDENTIALS_FILE}"),
        ));
    };
    let profile = default_profile(&content);
    let file = format!("{CREDENTIALS_FILE} file");
    let get = |key: &str| profile.get(key).filter(|v| !v.is_empty()).cloned();
    if let Some(role_arn) = get("role_arn") {
        let token_file = get("web_identity_token_file")
            .ok_or_else(|| missing(dir, &format!("key web_identity_token_file in {file}")))?;
        // A relative token path is relative to the mounted secret, like the file naming it.
        return Ok(Material::WebIdentity { role_arn, token_file: dir.join(token_file) });
    }
    let access_key_id =
        get("aws_access_key_id").ok_or_else(|| missing(dir, &format!("key aws_access_key_id in {file}")))?;
    let secret_access_key = get("aws_secret_access_key")
        .ok_or_else(|| missing(dir, &format!("key aws_secret_access_key in {file}")))?;
    Ok(Material::Keys {
        access_key_id,
        secret_access_key: Secret::new(secret_access_key),
        session_token: get("aws_session_token").map(Secret::new),
    })
}

/// The keys of the `[default]` profile of a shared-credentials file; the first profile when there
/// is no `default`; keys before any section header count as `default`.
fn default_profile(content: &str) -> BTreeMap<String, String> {
    let mut profiles: Vec<(String, BTreeMap<String, String>)> = vec![("default".into(), BTreeMap::new())];
    for line in content.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().trim_start_matches("profile ").trim().to_owned();
            profiles.push((name, BTreeMap::new()));
        } else if let Some((key, value)) = line.split_once('=')
            && let Some((_, keys)) = profiles.last_mut()
        {
            keys.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let position = profiles
        .iter()
        .position(|(name, keys)| name == "default" && !keys.is_empty())
        .or_else(|| profiles.iter().position(|(_, keys)| !keys.is_empty()));
    position.map(|i| profiles.swap_remove(i).1).unwrap_or_default()
}

/// Hands a [`CredentialSource`] to an AWS SDK client, so the client signs with whatever the
/// source yields now (rotation without restart).
#[derive(Debug, Clone)]
pub struct SdkCredentials(pub Arc<dyn CredentialSource>);

impl ProvideCredentials for SdkCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let credential = self.0.credential().await.map_err(CredentialsError::provider_error)?;
            match &credential.material {
                CredentialMaterial::AccessKey { access_key_id, secret_access_key, session_token } => {
                    Ok(aws_credential_types::Credentials::new(
                        access_key_id,
                        secret_access_key.expose(),
                        session_token.as_ref().map(|t| t.expose().to_owned()),
                        credential.expires_at,
                        "mvo-credential-source",
                    ))
                }
                _ => Err(CredentialsError::invalid_configuration(
                    "the AWS provider needs an access key credential",
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_preferred() {
        let ini = "[other]\naws_access_key_id = O\n\n[default]\nrole_arn = arn:aws:iam::1:role/r\n\
                   web_identity_token_file = /var/run/token\n";
        let profile = default_profile(ini);
        assert_eq!(profile.get("role_arn").map(String::as_str), Some("arn:aws:iam::1:role/r"));
        assert!(!profile.contains_key("aws_access_key_id"));
        let only_other = default_profile("# comment\n[ci]\naws_access_key_id=A\n");
        assert_eq!(only_other.get("aws_access_key_id").map(String::as_str), Some("A"));
    }
}
