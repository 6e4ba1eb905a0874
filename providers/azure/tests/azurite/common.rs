//! Shared fixtures: the provider built against the shared Azurite, a second SDK client acting as a
//! person with portal access (the contract [`Backdoor`]), and [`FaultPolicy`], an SDK policy the
//! harness arms to make the provider's next call fail the way Azure Storage fails.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use azure_core::http::{
    AsyncRawResponse, ClientOptions, Context, HttpClient, Request, RequestContent, StatusCode, Transport,
    Url, XmlFormat,
    headers::{ERROR_CODE, Headers},
    policies::{Policy, PolicyResult},
};
use azure_storage_blob::{
    BlobServiceClient, BlobServiceClientOptions,
    models::{BlobContainerClientCreateOptions, BlobServiceProperties, PublicAccessType, RetentionPolicy},
};
use futures_util::TryStreamExt;
use mvo_core::{
    Credential, CredentialMaterial, Encryption, Error, LifecycleRule, Platform, ProviderConfig,
    PublicAccessBlock, Result, Secret, StaticCredentialSource, Tags,
};
use mvo_provider_azure::{AzurePlatform, SdkCredential};
use mvo_testkit::{
    Backdoor, Fault, Harness,
    contract::TagStyle,
    env::{AZURITE_ACCOUNT, AzuriteEnv},
};

/// The region the tests report.
pub const REGION: &str = "eastus";

/// The shared Azurite of this test binary.
pub fn azurite() -> &'static AzuriteEnv {
    AzuriteEnv::shared().expect("Azurite (run `make testenv`)")
}

/// Provider config against the shared Azurite; credentials from `dir`.
pub fn config(dir: &std::path::Path) -> ProviderConfig {
    config_on(azurite(), dir)
}

/// Provider config against `env`; credentials from `dir`.
pub fn config_on(env: &AzuriteEnv, dir: &std::path::Path) -> ProviderConfig {
    ProviderConfig {
        platform: "Azure".into(),
        region: Some(REGION.into()),
        infrastructure_name: "test".into(),
        credentials_dir: dir.to_owned(),
        endpoint: Some(env.endpoint().to_owned()),
        ..Default::default()
    }
}

/// The VeleroInstall's Azure section naming Azurite's account.
pub fn section() -> serde_json::Value {
    serde_json::json!({"storageAccount": AZURITE_ACCOUNT})
}

/// The provider's store for Azurite's account.
pub fn store(platform: &AzurePlatform) -> Arc<dyn mvo_core::ObjectStore> {
    platform.object_store(&section()).expect("store")
}

/// A credential source yielding a token Azurite accepts.
pub fn token_source() -> Arc<StaticCredentialSource> {
    Arc::new(StaticCredentialSource::new(Credential {
        material: CredentialMaterial::BearerToken(Secret::new(AzuriteEnv::bearer_token(
            Duration::from_secs(3600),
        ))),
        expires_at: Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
    }))
}

/// The provider on the shared Azurite with a static token and a fault policy.
pub fn platform() -> (AzurePlatform, FaultPolicy) {
    platform_on(azurite())
}

/// The provider on `env` with a static token and a fault policy. Tests that change the account's
/// blob service properties use a dedicated instance: the shared account is every test's.
pub fn platform_on(env: &AzuriteEnv) -> (AzurePlatform, FaultPolicy) {
    let faults = FaultPolicy::default();
    let platform =
        AzurePlatform::builder(&config_on(env, &std::env::temp_dir().join("mvo-azure-no-credentials")))
            .credential_source(token_source())
            .trust_pem(env.ca_pem().to_vec())
            .policy(Arc::new(faults.clone()))
            .build()
            .expect("platform");
    (platform, faults)
}

/// An HTTPS client trusting `env`'s CA.
pub fn http(env: &AzuriteEnv) -> Arc<dyn HttpClient> {
    mvo_provider_azure::install_crypto_provider();
    let mut builder = reqwest::Client::builder();
    for cert in reqwest::Certificate::from_pem_bundle(env.ca_pem()).expect("CA PEM") {
        builder = builder.add_root_certificate(cert);
    }
    Arc::new(builder.build().expect("client"))
}

/// A plain SDK client on `env`'s account, outside the provider.
pub fn raw_client(env: &AzuriteEnv) -> BlobServiceClient {
    let options = BlobServiceClientOptions {
        client_options: ClientOptions { transport: Some(Transport::new(http(env))), ..Default::default() },
        ..Default::default()
    };
    let url = Url::parse(&env.account_url()).expect("URL");
    BlobServiceClient::new(url, Some(Arc::new(SdkCredential(token_source()))), Some(options)).expect("client")
}

/// A unique container name for one test.
pub fn container_name(prefix: &str) -> String {
    format!("mvo-{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn backdoor_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Provider { provider: "azurite-backdoor", source: format!("{what}: {err}").into() }
}

#[derive(Debug, Default)]
struct FaultState {
    next: VecDeque<(u16, &'static str)>,
    /// Every request the provider sent: (method, URL).
    sent: Vec<(String, String)>,
}

/// Replaces the provider's next HTTP responses with canned Azure Storage errors, and records
/// every request it sends.
#[derive(Debug, Clone, Default)]
pub struct FaultPolicy {
    state: Arc<Mutex<FaultState>>,
}

impl FaultPolicy {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock()
    }

    /// Fails the next call with `fault`, answered as Azure Storage answers it.
    pub fn arm(&self, fault: Fault) {
        let canned = match fault {
            Fault::Throttled => (503, "ServerBusy"),
            Fault::Unavailable => (500, "InternalError"),
            Fault::PermissionDenied => (403, "AuthorizationPermissionMismatch"),
            Fault::Unauthenticated => (401, "InvalidAuthenticationInfo"),
        };
        self.lock().next.push_back(canned);
    }

    /// Every request sent so far: (method, URL).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.lock().sent.clone()
    }
}

#[async_trait]
impl Policy for FaultPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let canned = {
            let mut state = self.lock();
            state.sent.push((request.method().to_string(), request.url().to_string()));
            state.next.pop_front()
        };
        match canned {
            Some((status, code)) => {
                let mut headers = Headers::new();
                headers.insert(ERROR_CODE, code.to_owned());
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
                );
                Ok(AsyncRawResponse::from_bytes(StatusCode::from(status), headers, body))
            }
            None => next[0].send(ctx, request, &next[1..]).await,
        }
    }
}

/// Tags as container metadata, as a person writes them in the portal: names must be C#
/// identifiers, so `velero.io/infrastructureName` becomes `velero_io_infrastructurename`.
pub fn as_metadata(tags: Tags) -> HashMap<String, String> {
    tags.into_iter().map(|(k, v)| (mvo_provider_azure::metadata_key(&k), v)).collect()
}

/// The contract backdoor: Azurite through a raw client, faults through the policy.
pub struct AzuriteBackdoor {
    pub client: BlobServiceClient,
    pub faults: FaultPolicy,
    pub platform: AzurePlatform,
}

impl AzuriteBackdoor {
    /// Sets the account's delete retention policy (`None` disables soft delete).
    pub async fn set_soft_delete(&self, days: Option<i32>) -> Result<()> {
        let policy = RetentionPolicy { enabled: Some(days.is_some()), days, ..Default::default() };
        let properties =
            BlobServiceProperties { delete_retention_policy: Some(policy), ..Default::default() };
        let body: RequestContent<BlobServiceProperties, XmlFormat> =
            properties.try_into().map_err(|e| backdoor_error("encode properties", e))?;
        self.client.set_properties(body, None).await.map_err(|e| backdoor_error("set properties", e))?;
        Ok(())
    }

    /// The account's delete retention policy as (enabled, days).
    pub async fn soft_delete(&self) -> Result<(Option<bool>, Option<i32>)> {
        let properties = self
            .client
            .get_properties(None)
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| backdoor_error("get properties", e))?;
        let policy = properties.delete_retention_policy.unwrap_or_default();
        Ok((policy.enabled, policy.days))
    }

    fn unsupported<T>(operation: &'static str) -> Result<T> {
        Err(Error::NotSupported { operation, provider: "azurite-backdoor" })
    }
}

#[async_trait]
impl Backdoor for AzuriteBackdoor {
    async fn create_plain_bucket(&self, name: &str, _region: &str, tags: Tags) -> Result<()> {
        // Unhardened: anonymous read access to blobs.
        let options = BlobContainerClientCreateOptions {
            access: Some(PublicAccessType::Blob),
            metadata: Some(as_metadata(tags)),
            ..Default::default()
        };
        self.client
            .blob_container_client(name)
            .create(Some(options))
            .await
            .map_err(|e| backdoor_error("create container", e))?;
        Ok(())
    }

    async fn create_foreign_account_bucket(&self, _name: &str) -> Result<()> {
        // Container names are scoped to one storage account: no other account can take ours.
        Self::unsupported("have a container name taken by another account (names are per account)")
    }

    async fn set_encryption(&self, _name: &str, _encryption: Option<Encryption>) -> Result<()> {
        Self::unsupported("change encryption (an account setting, management plane)")
    }

    async fn set_public_access(&self, _name: &str, _block: PublicAccessBlock) -> Result<()> {
        // Azurite serves Set Container ACL with the account key only; the provider and this
        // backdoor hold an Entra ID token (a public container is made at creation instead, see
        // the store tests).
        Self::unsupported("change a container's public access with an Entra ID token (account key only)")
    }

    async fn set_lifecycle(&self, _name: &str, _rules: Vec<LifecycleRule>) -> Result<()> {
        Self::unsupported("change lifecycle rules (an account policy, management plane)")
    }

    async fn set_tags(&self, name: &str, tags: Tags) -> Result<()> {
        let metadata = as_metadata(tags);
        self.client
            .blob_container_client(name)
            .set_metadata(&metadata, None)
            .await
            .map_err(|e| backdoor_error("set metadata", e))?;
        Ok(())
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        // The backdoor may delete containers; the provider never does.
        self.client
            .blob_container_client(name)
            .delete(None)
            .await
            .map_err(|e| backdoor_error("delete container", e))?;
        Ok(())
    }

    async fn refuse_inspection(&self, _name: &str) -> Result<()> {
        // Recovery reads every container's metadata from the one listing: there is no
        // per-container read that could be refused.
        Self::unsupported("refuse one container's inspection (recovery reads metadata from the listing)")
    }

    async fn put_object(&self, bucket: &str, key: &str) -> Result<()> {
        let body = RequestContent::from(b"{}".to_vec());
        self.client
            .blob_client(bucket, key)
            .upload(body, None)
            .await
            .map_err(|e| backdoor_error("upload blob", e))?;
        Ok(())
    }

    async fn object_keys(&self, bucket: &str) -> Result<Vec<String>> {
        let mut pager = self
            .client
            .blob_container_client(bucket)
            .list_blobs(None)
            .map_err(|e| backdoor_error("list", e))?;
        let mut keys = Vec::new();
        while let Some(item) = pager.try_next().await.map_err(|e| backdoor_error("list blobs", e))? {
            if let Some(name) = item.name {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn bucket_exists(&self, name: &str) -> Result<bool> {
        self.client.blob_container_client(name).exists().await.map_err(|e| backdoor_error("exists", e))
    }

    async fn inject_fault(&self, fault: Fault) -> Result<()> {
        self.faults.arm(fault);
        Ok(())
    }

    fn writes(&self) -> Option<u64> {
        Some(self.platform.call_counter().writes())
    }
}

/// The backdoor on the shared Azurite (for tests that drive the provider themselves).
pub fn backdoor(platform: &AzurePlatform, faults: &FaultPolicy) -> AzuriteBackdoor {
    backdoor_on(azurite(), platform, faults)
}

/// The backdoor on `env`.
pub fn backdoor_on(env: &AzuriteEnv, platform: &AzurePlatform, faults: &FaultPolicy) -> AzuriteBackdoor {
    AzuriteBackdoor { client: raw_client(env), faults: faults.clone(), platform: platform.clone() }
}

/// A contract harness on Azurite.
// Used by the contract test binary (tests/contract.rs), which includes this file.
#[allow(dead_code)]
pub async fn harness() -> Harness {
    let (platform, faults) = platform();
    let backdoor = backdoor(&platform, &faults);
    Harness {
        store: store(&platform),
        capabilities: platform.capabilities(),
        region: REGION.to_owned(),
        tag_style: TagStyle::Tags,
        kms_key: String::new(),
        backdoor: Arc::new(backdoor),
    }
}
