//! The operator's credentials from a mounted secret directory: static key files with rotation,
//! a shared-credentials file, and STS web identity against moto.

use std::sync::Arc;

use mvo_core::{CredentialMaterial, Error, Platform};
use mvo_provider_aws::AwsPlatform;
use mvo_testkit::ScratchDir;

use super::common::{REGION, bucket_name, config};

/// A fresh secret directory, removed on drop.
struct SecretDir(ScratchDir);

impl SecretDir {
    fn new() -> Self {
        SecretDir(ScratchDir::new("mvo-aws-secret").expect("dir"))
    }

    fn write(&self, file: &str, content: &str) {
        // Write-then-rename, like kubelet's atomic secret updates.
        let tmp = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(tmp, self.0.join(file)).expect("rename");
    }

    fn platform(&self) -> AwsPlatform {
        let mut config = config(REGION);
        config.credentials_dir = self.0.to_path_buf();
        AwsPlatform::new(&config).expect("platform")
    }
}

fn key_id(material: &CredentialMaterial) -> &str {
    match material {
        CredentialMaterial::AccessKey { access_key_id, .. } => access_key_id,
        other => panic!("not an access key: {other:?}"),
    }
}

#[tokio::test]
async fn static_key_files_are_reread_after_rotation() {
    let dir = SecretDir::new();
    dir.write("aws_access_key_id", "AKIAFIRST\n");
    dir.write("aws_secret_access_key", "first-secret\n");
    let platform = dir.platform();
    let source = platform.credential_source();
    let first = source.credential().await.expect("first");
    assert_eq!(key_id(&first.material), "AKIAFIRST");
    assert!(Arc::ptr_eq(&first, &source.credential().await.expect("again")), "unchanged files re-built");
    dir.write("aws_access_key_id", "AKIASECOND");
    dir.write("aws_secret_access_key", "second-secret");
    let second = source.credential().await.expect("rotated");
    assert_eq!(key_id(&second.material), "AKIASECOND");
    // The S3 client signs with the rotated key at once (no SDK-side cache to wait out).
    let name = bucket_name("rotated");
    let err = platform
        .object_store(&mvo_core::NO_SECTION)
        .expect("object store")
        .observe_bucket(&name)
        .await
        .expect_err("no such bucket");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn shared_credentials_file_with_static_keys() {
    let dir = SecretDir::new();
    dir.write("credentials", "[default]\naws_access_key_id = AKIAINI\naws_secret_access_key = ini-secret\n");
    let cred = dir.platform().credential_source().credential().await.expect("credential");
    assert_eq!(key_id(&cred.material), "AKIAINI");
    assert_eq!(cred.expires_at, None);
}

#[tokio::test]
async fn incomplete_secrets_name_what_is_missing_and_never_a_value() {
    let dir = SecretDir::new();
    dir.write("aws_access_key_id", "AKIAONLYID");
    let err = dir.platform().credential_source().credential().await.expect_err("no secret key");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    assert!(err.to_string().contains("aws_secret_access_key"), "{err}");
    assert!(!err.to_string().contains("AKIAONLYID"), "{err}");

    let dir = SecretDir::new();
    dir.write("credentials", "[default]\nrole_arn = arn:aws:iam::123456789012:role/mvo\n");
    let err = dir.platform().credential_source().credential().await.expect_err("no token file key");
    assert!(err.to_string().contains("web_identity_token_file"), "{err}");

    let dir = SecretDir::new();
    dir.write("credentials", "[default]\naws_access_key_id = AKIASECRETLESS\n");
    let err = dir.platform().credential_source().credential().await.expect_err("no secret key");
    assert!(err.to_string().contains("aws_secret_access_key"), "{err}");
    assert!(!err.to_string().contains("AKIASECRETLESS"), "{err}");
}

#[tokio::test]
async fn web_identity_is_exchanged_with_sts_cached_and_used_for_s3() {
    let dir = SecretDir::new();
    dir.write("token", "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig");
    let token_file = dir.0.join("token");
    dir.write(
        "credentials",
        &format!(
            "[default]\nrole_arn = arn:aws:iam::123456789012:role/managed-velero-operator\n\
             web_identity_token_file = {}\n",
            token_file.display()
        ),
    );
    let platform = dir.platform();
    let source = platform.credential_source();
    let cred = source.credential().await.expect("web identity exchange");
    match &cred.material {
        CredentialMaterial::AccessKey { session_token, .. } => assert!(session_token.is_some()),
        other => panic!("{other:?}"),
    }
    assert!(cred.expires_at.is_some(), "STS credentials expire");
    let again = source.credential().await.expect("cached");
    assert!(Arc::ptr_eq(&cred, &again), "a fresh credential must be reused, not re-exchanged");
    assert_eq!(platform.call_counter().calls("AssumeRoleWithWebIdentity"), 1);
    // The S3 client signs with the exchanged credential.
    let spec = mvo_core::BucketSpec {
        name: bucket_name("sts"),
        region: REGION.into(),
        owner: mvo_core::Owner::new("sts-cluster"),
        encryption: mvo_core::Encryption::ProviderManaged,
        retention_days: Some(7),
        applied_retention_days: None,
    };
    assert!(
        platform
            .object_store(&mvo_core::NO_SECTION)
            .expect("object store")
            .ensure_bucket(&spec)
            .await
            .expect("ensure with STS credentials")
            .created
    );
    assert_eq!(platform.call_counter().calls("AssumeRoleWithWebIdentity"), 1);
    assert!(source.describe().contains("credentials"), "{}", source.describe());
}

#[tokio::test]
async fn missing_token_file_is_unauthenticated() {
    let dir = SecretDir::new();
    dir.write(
        "credentials",
        "[default]\nrole_arn = arn:aws:iam::123456789012:role/mvo\nweb_identity_token_file = absent-token\n",
    );
    let err = dir.platform().credential_source().credential().await.expect_err("no token");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    assert!(err.to_string().contains("absent-token"), "{err}");
}
