//! The provider honours the cluster-wide proxy (`HTTPS_PROXY`, `NO_PROXY`) and trusts the
//! cluster's CA bundle (`MVO_TRUSTED_CA_BUNDLE`), as OpenShift injects them into the operator.
//!
//! Environment variables are process-wide (and setting them in-process is `unsafe`), so the test
//! runs its provider half in a child process: this test binary again, with the variables set,
//! running only the ignored inner test.

use std::{sync::Arc, time::Duration};

use mvo_core::{
    Credential, CredentialMaterial, Encryption, Owner, Platform, ProviderConfig, Secret,
    StaticCredentialSource,
};
use mvo_provider_azure::AzurePlatform;
use mvo_testkit::{
    FaultProxy,
    env::{AZURITE_ACCOUNT, AzuriteEnv},
};

const ENDPOINT_VAR: &str = "MVO_TEST_AZURITE_ENDPOINT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_calls_go_through_the_cluster_proxy_and_trust_the_cluster_ca_bundle() {
    let azurite = AzuriteEnv::start().expect("Azurite (run `make testenv`)");
    let proxy = FaultProxy::start_connect().await.expect("proxy");
    let dir = std::env::temp_dir().join(format!("mvo-azure-proxy-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bundle = dir.join("tls-ca-bundle.pem");
    std::fs::write(&bundle, azurite.ca_pem()).expect("CA bundle");
    let output = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "inner_provider_call_with_the_process_environment", "--ignored", "--nocapture"])
        .env(ENDPOINT_VAR, azurite.endpoint())
        .env("MVO_TRUSTED_CA_BUNDLE", &bundle)
        .env("HTTPS_PROXY", format!("http://{}", proxy.address()))
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("child test runs");
    let log =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "provider through the proxy failed:\n{log}");
    assert!(log.contains("1 passed"), "the inner test did not run:\n{log}");
    assert!(proxy.connections() > 0, "the Blob calls did not go through the proxy");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The provider half, run by the test above in a child process with the proxy and CA bundle set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by blob_calls_go_through_the_cluster_proxy_and_trust_the_cluster_ca_bundle"]
async fn inner_provider_call_with_the_process_environment() {
    let endpoint = std::env::var(ENDPOINT_VAR).expect("run by the outer test");
    let config = ProviderConfig {
        platform: "Azure".into(),
        region: Some("eastus".into()),
        infrastructure_name: "proxied".into(),
        endpoint: Some(endpoint),
        ..Default::default()
    };
    let token = AzuriteEnv::bearer_token(Duration::from_secs(600));
    let source = StaticCredentialSource::new(Credential {
        material: CredentialMaterial::BearerToken(Secret::new(token)),
        expires_at: None,
    });
    // No trust_pem: only the bundle named by MVO_TRUSTED_CA_BUNDLE makes Azurite's certificate valid.
    let platform =
        AzurePlatform::builder(&config).credential_source(Arc::new(source)).build().expect("platform");
    let spec = mvo_core::BucketSpec {
        name: format!("mvo-proxy-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        region: "eastus".into(),
        owner: Owner::new("proxied"),
        encryption: Encryption::ProviderManaged,
        retention_days: Some(90),
        applied_retention_days: None,
    };
    let section = serde_json::json!({"storageAccount": AZURITE_ACCOUNT});
    let store = platform.object_store(&section).expect("store");
    let report = store.ensure_bucket(&spec).await.expect("ensure through the proxy");
    assert!(report.created);
}
