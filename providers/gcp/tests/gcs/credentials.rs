//! `service_account.json`: both kinds classified, missing parts named without values, rotation
//! picked up at the next call, and a service-account key turned into a signed bearer token by the
//! SDK (with a throwaway RSA key generated at test time; never a real key).

use std::{path::PathBuf, process::Command, sync::Arc};

use google_cloud_auth::credentials::{CacheableResource, CredentialsProvider};
use mvo_core::{CredentialMaterial, CredentialSource, Error};
use mvo_provider_gcp::{
    CredentialKind, FileCredentialSource, SERVICE_ACCOUNT_FILE, SdkCredentials, credentials::classify,
};
use serde_json::{Value, json};

/// A made-up service-account key document around `private_key`.
fn service_account(private_key: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": "mvo-test-project",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_key,
        "client_email": "mvo-operator@mvo-test-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
}

/// A made-up workload identity federation configuration.
fn external_account() -> Value {
    json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/oidc",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/mvo-operator@mvo-test-project.iam.gserviceaccount.com:generateAccessToken",
        "credential_source": {
            "file": "/var/run/secrets/openshift/serviceaccount/token",
            "format": { "type": "text" }
        }
    })
}

const FAKE_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nNOT-A-REAL-KEY-SECRET-MATERIAL\n-----END PRIVATE KEY-----\n";

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mvo-gcp-creds-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    fn write(&self, content: &str) {
        // Write-then-rename, as kubelet swaps secret files.
        let tmp = self.0.join(".tmp");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, self.0.join(SERVICE_ACCOUNT_FILE)).expect("rename");
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn both_kinds_are_classified() {
    let (kind, _) = classify(&service_account(FAKE_PEM).to_string()).expect("service account");
    assert_eq!(
        kind,
        CredentialKind::ServiceAccount {
            client_email: "mvo-operator@mvo-test-project.iam.gserviceaccount.com".into()
        }
    );
    let (kind, _) = classify(&external_account().to_string()).expect("external account");
    assert!(
        matches!(&kind, CredentialKind::ExternalAccount { audience, impersonation_url: Some(_) } if audience.contains("workloadIdentityPools")),
        "{kind:?}"
    );
}

#[test]
fn missing_and_malformed_parts_are_named_without_values() {
    let message = |doc: &str| match classify(doc) {
        Err(Error::Unauthenticated { message }) => message,
        other => panic!("expected Unauthenticated, got {other:?}"),
    };
    let mut doc = service_account(FAKE_PEM);
    doc.as_object_mut().expect("object").remove("private_key");
    assert_eq!(
        message(&doc.to_string()),
        "service_account.json (service_account) is missing field private_key"
    );

    let mut doc = external_account();
    doc.as_object_mut().expect("object").remove("credential_source");
    assert_eq!(
        message(&doc.to_string()),
        "service_account.json (external_account) is missing field credential_source"
    );

    let mut doc = service_account(FAKE_PEM);
    doc.as_object_mut().expect("object").remove("type");
    assert_eq!(message(&doc.to_string()), "service_account.json is missing field type");

    let mut doc = service_account(FAKE_PEM);
    doc["type"] = json!("authorized_user");
    assert!(message(&doc.to_string()).contains("\"authorized_user\""));

    let truncated = service_account(FAKE_PEM).to_string();
    let broken = message(&truncated[..truncated.len() / 2]);
    assert!(broken.starts_with("service_account.json is not valid JSON"), "{broken}");
    assert!(!broken.contains("NOT-A-REAL-KEY"), "{broken}");
}

#[tokio::test]
async fn a_missing_file_is_named_and_the_credential_never_prints() {
    let dir = Dir::new();
    let source = FileCredentialSource::new(&dir.0);
    let err = source.credential().await.expect_err("no file");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    assert!(err.to_string().contains("missing file service_account.json"), "{err}");

    dir.write(&service_account(FAKE_PEM).to_string());
    let credential = source.credential().await.expect("credential");
    assert!(
        matches!(&credential.material, CredentialMaterial::JsonDocument(doc) if doc.expose().contains("NOT-A-REAL-KEY"))
    );
    assert!(!format!("{credential:?}").contains("NOT-A-REAL-KEY"));
    assert!(source.describe().contains("mvo-operator@mvo-test-project"), "{}", source.describe());
}

#[tokio::test]
async fn rotation_is_picked_up_at_the_next_call() {
    let dir = Dir::new();
    dir.write(&service_account(FAKE_PEM).to_string());
    let source = FileCredentialSource::new(&dir.0);
    let first = source.credential().await.expect("first");
    let again = source.credential().await.expect("unchanged");
    assert!(Arc::ptr_eq(&first, &again), "unchanged file must reuse the credential");

    dir.write(&external_account().to_string());
    let rotated = source.credential().await.expect("rotated");
    assert!(!Arc::ptr_eq(&first, &rotated));
    assert!(matches!(source.kind(), Ok(CredentialKind::ExternalAccount { .. })));

    dir.write("{\"type\": \"service_account\"}");
    let err = source.credential().await.expect_err("incomplete rotation");
    assert!(err.to_string().contains("missing field"), "{err}");
}

/// A throwaway PKCS#8 RSA key from openssl, or `None` (with the reason printed) without openssl.
fn generated_key() -> Option<String> {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).ok(),
        _ => {
            eprintln!("skipping: openssl genpkey is not available to make a throwaway key");
            None
        }
    }
}

#[tokio::test]
async fn a_service_account_key_signs_a_bearer_token_and_follows_rotation() {
    let Some(key) = generated_key() else { return };
    let dir = Dir::new();
    dir.write(&service_account(&key).to_string());
    let source = Arc::new(FileCredentialSource::new(&dir.0));
    let sdk = SdkCredentials(source.clone());
    let headers = match sdk.headers(http::Extensions::new()).await.expect("headers") {
        CacheableResource::New { data, .. } => data,
        CacheableResource::NotModified => panic!("first call must yield headers"),
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).expect("authorization header");
    assert!(auth.starts_with("Bearer ey"), "self-signed JWT expected");

    // A rotation to an unusable key is reported at the next request, as a credentials error.
    dir.write(&service_account(FAKE_PEM).to_string());
    assert!(sdk.headers(http::Extensions::new()).await.is_err(), "the rotated (broken) key must be used");
    dir.write("not json");
    let err = sdk.headers(http::Extensions::new()).await.expect_err("broken file");
    assert!(
        err.to_string().contains("service_account.json")
            || format!("{err:?}").contains("service_account.json")
    );
}
