//! SPEC 10.6 for `Debug`: every type that holds credential material, on every cloud, formats
//! with `{:?}` without the material. Each source is formatted after it has loaded (and cached)
//! its credential, which is when a derived `Debug` would print it.

use std::sync::Arc;

use mvo_core::{CredentialSource, Platform, ProviderConfig};
use mvo_testkit::ScratchDir;
use serde_json::json;

const AWS_SECRET: &str = "mvo-debug-aws-secret-access-key-7d1f";
const AWS_SESSION: &str = "mvo-debug-aws-session-token-0b9e";
const GCP_KEY_BODY: &str = "MVODEBUGPRIVATEKEYMATERIAL4c2a";
const GCP_KEY_ID: &str = "mvo-debug-private-key-id-88e1";

fn assert_clean(what: &str, printed: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!printed.contains(secret), "{what} prints credential material {secret:?}: {printed}");
    }
}

#[tokio::test]
async fn aws_credential_types_never_debug_print_key_material() {
    let dir = ScratchDir::new("mvo-debug-aws").expect("scratch dir");
    std::fs::write(
        dir.join("credentials"),
        format!(
            "[default]\naws_access_key_id = AKIAMVODEBUG\naws_secret_access_key = {AWS_SECRET}\n\
             aws_session_token = {AWS_SESSION}\n"
        ),
    )
    .expect("credentials file");
    let config = ProviderConfig {
        platform: "AWS".into(),
        region: Some("eu-west-1".into()),
        credentials_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let platform = mvo_provider_aws::AwsPlatform::new(&config).expect("platform");
    let source = platform.credential_source();
    let credential = source.credential().await.expect("credential from the file");
    let sdk = mvo_provider_aws::SdkCredentials(source.clone());
    for (what, printed) in [
        ("Credential", format!("{credential:?}")),
        ("CredentialMaterial", format!("{:?}", credential.material)),
        ("FileCredentialSource", format!("{source:?}")),
        ("SdkCredentials", format!("{sdk:?}")),
        ("AwsPlatform", format!("{platform:?}")),
    ] {
        assert_clean(what, &printed, &[AWS_SECRET, AWS_SESSION]);
    }
}

#[tokio::test]
async fn gcp_credential_types_never_debug_print_key_material() {
    let dir = ScratchDir::new("mvo-debug-gcp").expect("scratch dir");
    let key = json!({
        "type": "service_account",
        "project_id": "mvo-debug-project",
        "private_key_id": GCP_KEY_ID,
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{GCP_KEY_BODY}\n-----END PRIVATE KEY-----\n"),
        "client_email": "mvo@mvo-debug-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"
    });
    std::fs::write(dir.join(mvo_provider_gcp::SERVICE_ACCOUNT_FILE), key.to_string()).expect("key file");
    let config = ProviderConfig {
        platform: "GCP".into(),
        region: Some("europe-west4".into()),
        facts: [(mvo_provider_gcp::PROJECT_ID_FACT.to_owned(), "mvo-debug-project".to_owned())].into(),
        credentials_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let platform = mvo_provider_gcp::GcpPlatform::new(&config).expect("platform");
    let source = Arc::new(mvo_provider_gcp::FileCredentialSource::new(&dir));
    let credential = source.credential().await.expect("service-account key loads");
    let platform_source = platform.credential_source();
    platform_source.credential().await.expect("the platform's source loads too");
    let sdk = mvo_provider_gcp::SdkCredentials(source.clone());
    for (what, printed) in [
        ("Credential", format!("{credential:?}")),
        ("FileCredentialSource", format!("{source:?}")),
        ("SdkCredentials", format!("{sdk:?}")),
        ("sdk_credentials()", format!("{:?}", source.sdk_credentials())),
        ("platform credential source", format!("{platform_source:?}")),
        ("GcpPlatform", format!("{platform:?}")),
    ] {
        assert_clean(what, &printed, &[GCP_KEY_BODY, "BEGIN PRIVATE KEY"]);
    }
}
