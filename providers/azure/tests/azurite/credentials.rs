//! Credentials: the mounted secret's two layouts against Azurite, rotation without restart, and
//! what the provider reports when the secret is incomplete or Entra ID refuses.
//!
//! No Entra ID emulator exists; [`FakeEntra`] answers the token endpoint at the SDK's HTTP seam
//! (the `HttpClient` the credentials are built with) and records what each exchange presented.
//! The Blob calls go to the real Azurite, which checks the issued tokens.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;

use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode, headers::Headers, request::Body};
use mvo_core::{CredentialSource, Encryption, Error, Owner};
use mvo_provider_azure::{
    AzureCloud, AzurePlatform, CredentialKind, FileCredentialSource,
    credentials::{CLIENT_ID_FILE, CLIENT_SECRET_FILE, FEDERATED_TOKEN_FILE, TENANT_ID_FILE},
};
use mvo_testkit::env::AzuriteEnv;

use super::common::{REGION, azurite, config, container_name, store};

/// A token endpoint: every exchange is recorded as (grant, the secret or assertion presented).
#[derive(Default, Clone)]
struct FakeEntra {
    exchanges: Arc<Mutex<Vec<(String, String)>>>,
    refuse: Arc<Mutex<bool>>,
}

/// Without the recorded secrets: the source's `Debug` includes its HTTP client.
impl std::fmt::Debug for FakeEntra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeEntra")
    }
}

impl FakeEntra {
    fn exchanges(&self) -> Vec<(String, String)> {
        self.exchanges.lock().clone()
    }
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| pair.strip_prefix(&format!("{key}="))).map(str::to_owned)
}

#[async_trait]
impl HttpClient for FakeEntra {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        assert!(request.url().path().ends_with("/oauth2/v2.0/token"), "unexpected call {}", request.url());
        assert_eq!(request.url().host_str(), Some("login.microsoftonline.com"), "public cloud authority");
        let body = match request.body() {
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        let presented = form_value(&body, "client_secret")
            .map(|s| ("client_secret".to_owned(), s))
            .or_else(|| form_value(&body, "client_assertion").map(|a| ("client_assertion".to_owned(), a)))
            .unwrap_or_default();
        self.exchanges.lock().push(presented);
        if *self.refuse.lock() {
            let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;
            return Ok(AsyncRawResponse::from_bytes(StatusCode::Unauthorized, Headers::new(), body));
        }
        let token = AzuriteEnv::bearer_token(Duration::from_secs(3600));
        let body = format!(
            r#"{{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"{token}"}}"#
        );
        Ok(AsyncRawResponse::from_bytes(StatusCode::Ok, Headers::new(), body))
    }
}

fn secret_dir(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mvo-azure-creds-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    write(&dir, files);
    dir
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        // As kubelet does: a new file swapped in, never a partial write.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("swap");
    }
}

fn platform_with(dir: &Path, entra: &FakeEntra) -> (AzurePlatform, Arc<FileCredentialSource>) {
    let source = Arc::new(FileCredentialSource::new(dir, AzureCloud::Public, Arc::new(entra.clone())));
    let platform = AzurePlatform::builder(&config(dir))
        .credential_source(source.clone())
        .trust_pem(azurite().ca_pem().to_vec())
        .build()
        .expect("platform");
    (platform, source)
}

fn spec() -> mvo_core::BucketSpec {
    mvo_core::BucketSpec {
        name: container_name("creds"),
        region: REGION.into(),
        owner: Owner::new("creds-test"),
        encryption: Encryption::ProviderManaged,
        retention_days: Some(90),
        applied_retention_days: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_secret_is_used_at_the_next_call_without_restart() {
    let entra = FakeEntra::default();
    let dir = secret_dir(&[
        (CLIENT_ID_FILE, "app-1"),
        (TENANT_ID_FILE, "tenant-1"),
        (CLIENT_SECRET_FILE, "secret-one"),
    ]);
    let (platform, source) = platform_with(&dir, &entra);
    let store = store(&platform);
    let spec = spec();
    store.ensure_bucket(&spec).await.expect("ensure with the first secret");
    store.observe_bucket(&spec.name).await.expect("observe");
    assert_eq!(entra.exchanges(), [("client_secret".to_owned(), "secret-one".to_owned())], "token cached");

    write(&dir, &[(CLIENT_SECRET_FILE, "secret-two")]);
    store.observe_bucket(&spec.name).await.expect("observe after rotation");
    assert_eq!(entra.exchanges().last(), Some(&("client_secret".to_owned(), "secret-two".to_owned())));
    assert!(source.describe().contains("app-1"));
    assert!(!format!("{source:?} {}", source.describe()).contains("secret-two"), "secret in Debug/describe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_presents_the_projected_token() {
    let entra = FakeEntra::default();
    let dir = secret_dir(&[(CLIENT_ID_FILE, "app-wi"), (TENANT_ID_FILE, "tenant-1")]);
    std::fs::write(dir.join("token"), "projected-sa-token-1").expect("token");
    write(&dir, &[(FEDERATED_TOKEN_FILE, "token")]);
    let (platform, source) = platform_with(&dir, &entra);
    assert!(matches!(source.kind().expect("kind"), CredentialKind::WorkloadIdentity { .. }));
    store(&platform).find_bucket(&Owner::new("nobody")).await.expect("list with the exchanged token");
    assert_eq!(entra.exchanges(), [("client_assertion".to_owned(), "projected-sa-token-1".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_secret_and_a_refused_secret_are_unauthenticated_and_retryable() {
    let entra = FakeEntra::default();
    let dir = secret_dir(&[(CLIENT_ID_FILE, "app-1"), (TENANT_ID_FILE, "tenant-1")]);
    let (platform, _source) = platform_with(&dir, &entra);
    let err = store(&platform).observe_bucket("any").await.expect_err("no secret");
    assert!(matches!(err, Error::Unauthenticated { .. }) && err.is_retryable(), "{err}");
    assert!(err.to_string().contains(CLIENT_SECRET_FILE), "{err}");
    assert!(entra.exchanges().is_empty());

    *entra.refuse.lock() = true;
    write(&dir, &[(CLIENT_SECRET_FILE, "wrong")]);
    let err = store(&platform).observe_bucket("any").await.expect_err("refused");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "the secret leaked into {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_issued_token_file_is_used_as_it_is_for_emulators() {
    let entra = FakeEntra::default();
    let token = AzuriteEnv::bearer_token(Duration::from_secs(600));
    let dir = secret_dir(&[(mvo_provider_azure::credentials::BEARER_TOKEN_FILE, &token)]);
    let (platform, source) = platform_with(&dir, &entra);
    assert_eq!(source.kind().expect("kind"), CredentialKind::BearerToken);
    store(&platform).find_bucket(&Owner::new("nobody")).await.expect("list with the token");
    assert!(entra.exchanges().is_empty(), "nothing exchanged");
    assert!(!source.describe().contains(&token));
}
