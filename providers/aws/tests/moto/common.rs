//! Shared fixtures: the provider built against the shared moto server, a raw S3 client acting as
//! a person with console access (the contract [`Backdoor`]), and [`FaultInjector`], an SDK
//! interceptor the harness arms to make the provider's next call fail.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use aws_sdk_s3::{
    config::{
        ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
        interceptors::{BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef},
    },
    primitives::{ByteStream, SdkBody},
    types::{BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier},
};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::orchestrator::Metadata,
    http::{Response, StatusCode},
};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use mvo_core::{
    Encryption, Error, LifecycleRule, Platform, ProviderConfig, PublicAccessBlock, Result,
    StaticCredentialSource, Tags, owner::INFRASTRUCTURE_NAME_TAG,
};
use mvo_provider_aws::AwsPlatform;
use mvo_testkit::{Backdoor, Fault, Harness, contract::TagStyle, env::S3Env};

/// The region most tests work in.
pub const REGION: &str = "eu-west-1";
/// A KMS key ARN moto accepts for default encryption.
pub const KMS_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/contract";
/// The account moto treats another account's requests as coming from.
const FOREIGN_ACCOUNT: &str = "111111111111";

/// The shared moto endpoint of this test binary.
pub fn endpoint() -> &'static str {
    S3Env::shared().expect("moto (run `make testenv`)").endpoint()
}

/// Provider config for `region` against moto; no credentials directory.
pub fn config(region: &str) -> ProviderConfig {
    ProviderConfig {
        platform: "AWS".into(),
        region: Some(region.into()),
        infrastructure_name: "test".into(),
        credentials_dir: std::env::temp_dir().join("mvo-aws-no-credentials"),
        endpoint: Some(endpoint().to_owned()),
        ..Default::default()
    }
}

/// The provider in `region` with moto's test keys and a fault injector.
pub fn platform(region: &str) -> (AwsPlatform, FaultInjector) {
    let faults = FaultInjector::default();
    let platform = AwsPlatform::builder(&config(region))
        .credential_source(Arc::new(StaticCredentialSource::access_key("testing", "testing")))
        .interceptor(faults.clone())
        .build()
        .expect("platform");
    (platform, faults)
}

/// A plain SDK client on moto, outside the provider.
pub fn raw_client(region: &str) -> aws_sdk_s3::Client {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(https)
        .endpoint_url(endpoint())
        .force_path_style(true)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "backdoor"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A unique bucket name for one test.
pub fn bucket_name(prefix: &str) -> String {
    format!("mvo-{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn backdoor_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Provider { provider: "moto-backdoor", source: format!("{what}: {err}").into() }
}

#[derive(Debug, Default)]
struct FaultState {
    next: VecDeque<Fault>,
    denied_buckets: BTreeSet<String>,
    /// Bucket -> the account S3 would say owns it (moto does not check ExpectedBucketOwner).
    owners: BTreeMap<String, String>,
    /// Every request: (operation, bucket in the URI, `x-amz-expected-bucket-owner` header).
    sent: Vec<(String, Option<String>, Option<String>)>,
}

/// The header S3 compares with a bucket's owner account (403 AccessDenied when they differ).
const EXPECTED_OWNER_HEADER: &str = "x-amz-expected-bucket-owner";

/// Replaces the provider's next HTTP response with a canned S3 error, or every response about a
/// denied bucket with 403 AccessDenied (a bucket policy refusing us, which moto does not enforce).
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    state: Arc<Mutex<FaultState>>,
}

impl FaultInjector {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock()
    }

    /// Fails the next call with `fault`.
    ///
    /// A missing permission is simulated on the two calls a denied HeadBucket leads to: the
    /// HeadBucket itself and the ListBuckets the provider uses to tell "not ours" from "not
    /// allowed" (a role without the permission set is refused both).
    pub fn arm(&self, fault: Fault) {
        let mut state = self.lock();
        state.next.push_back(fault);
        if fault == Fault::PermissionDenied {
            state.next.push_back(fault);
        }
    }

    /// Refuses every call about `bucket` except listing.
    pub fn deny_bucket(&self, bucket: &str) {
        self.lock().denied_buckets.insert(bucket.to_owned());
    }

    /// Makes `bucket` belong to `account` as real S3 checks it: a request naming another account
    /// in `x-amz-expected-bucket-owner` gets 403 AccessDenied. moto ignores the header; a request
    /// without it is let through, as S3 does.
    pub fn owned_by(&self, bucket: &str, account: &str) {
        self.lock().owners.insert(bucket.to_owned(), account.to_owned());
    }

    /// Every request sent so far: (operation, bucket, expected-owner header).
    pub fn sent(&self) -> Vec<(String, Option<String>, Option<String>)> {
        self.lock().sent.clone()
    }
}

/// The bucket of a path-style request URI (`http://host:port/bucket?tagging`).
fn bucket_of(uri: &str) -> Option<&str> {
    let path = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = &path[path.find('/')? + 1..];
    let end = path.find(['/', '?']).unwrap_or(path.len());
    Some(&path[..end]).filter(|b| !b.is_empty())
}

fn canned(fault: Fault) -> (u16, &'static str) {
    match fault {
        Fault::Throttled => (503, "SlowDown"),
        Fault::Unavailable => (500, "InternalError"),
        Fault::PermissionDenied => (403, "AccessDenied"),
        Fault::Unauthenticated => (400, "ExpiredToken"),
    }
}

/// The request URI and expected-owner header, kept for the response hook (the request itself
/// has been sent by then).
#[derive(Debug, Clone)]
struct SentUri(String, Option<String>);

impl Storable for SentUri {
    type Storer = StoreReplace<Self>;
}

impl Intercept for FaultInjector {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let request = context.request();
        let expected = request.headers().get(EXPECTED_OWNER_HEADER).map(str::to_owned);
        cfg.interceptor_state().store_put(SentUri(request.uri().to_owned(), expected));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map(|m| m.name().to_owned()).unwrap_or_default();
        let _ = &context;
        let (uri, expected) = cfg.load::<SentUri>().map(|u| (u.0.clone(), u.1.clone())).unwrap_or_default();
        let response = {
            let mut state = self.lock();
            let bucket = bucket_of(&uri).map(str::to_owned);
            state.sent.push((operation.clone(), bucket.clone(), expected.clone()));
            let wrong_owner = bucket
                .as_ref()
                .and_then(|b| state.owners.get(b))
                .is_some_and(|owner| expected.as_ref().is_some_and(|e| e != owner));
            if wrong_owner {
                Some((403, "AccessDenied"))
            } else if let Some(fault) = state.next.pop_front() {
                Some(canned(fault))
            } else if operation != "ListBuckets"
                && bucket_of(&uri).is_some_and(|b| state.denied_buckets.contains(b))
            {
                Some((403, "AccessDenied"))
            } else {
                None
            }
        };
        if let Some((status, code)) = response {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>injected {code}</Message><RequestId>fault</RequestId></Error>"
            );
            *context.response_mut() = Response::new(StatusCode::try_from(status)?, SdkBody::from(body));
        }
        Ok(())
    }
}

/// The contract backdoor: moto through a raw client, faults through the injector.
pub struct MotoBackdoor {
    pub client: aws_sdk_s3::Client,
    pub faults: FaultInjector,
    pub platform: AwsPlatform,
}

impl MotoBackdoor {
    async fn create(
        &self,
        client: &aws_sdk_s3::Client,
        name: &str,
        region: &str,
        account: Option<&str>,
    ) -> Result<()> {
        let mut request = client.create_bucket().bucket(name);
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        let account = account.map(str::to_owned);
        let request = request.customize().mutate_request(move |req| {
            if let Some(account) = &account {
                req.headers_mut().insert("x-moto-account-id", account.clone());
            }
        });
        request.send().await.map_err(|e| backdoor_error("create bucket", e))?;
        Ok(())
    }

    async fn tag(&self, name: &str, tags: &Tags, account: Option<&str>) -> Result<()> {
        let tag_set = tags
            .iter()
            .map(|(k, v)| aws_sdk_s3::types::Tag::builder().key(k).value(v).build().expect("tag"))
            .collect();
        let tagging =
            aws_sdk_s3::types::Tagging::builder().set_tag_set(Some(tag_set)).build().expect("tagging");
        let account = account.map(str::to_owned);
        self.client
            .put_bucket_tagging()
            .bucket(name)
            .tagging(tagging)
            .customize()
            .mutate_request(move |req| {
                if let Some(account) = &account {
                    req.headers_mut().insert("x-moto-account-id", account.clone());
                }
            })
            .send()
            .await
            .map_err(|e| backdoor_error("tag bucket", e))?;
        Ok(())
    }
}

#[async_trait]
impl Backdoor for MotoBackdoor {
    async fn create_plain_bucket(&self, name: &str, region: &str, tags: Tags) -> Result<()> {
        self.create(&raw_client(region), name, region, None).await?;
        if !tags.is_empty() {
            self.tag(name, &tags, None).await?;
        }
        Ok(())
    }

    async fn create_foreign_account_bucket(&self, name: &str) -> Result<()> {
        // moto keeps the bucket in another account (so it is not in our ListBuckets and the name
        // is taken), but lets every account read it; real S3 answers strangers with 403, which
        // the injector reproduces.
        let region = self.platform.region().to_owned();
        self.create(&self.client, name, &region, Some(FOREIGN_ACCOUNT)).await?;
        let tags = Tags::from([(INFRASTRUCTURE_NAME_TAG.to_owned(), "someone-else".to_owned())]);
        self.tag(name, &tags, Some(FOREIGN_ACCOUNT)).await?;
        self.faults.deny_bucket(name);
        Ok(())
    }

    async fn set_encryption(&self, name: &str, encryption: Option<Encryption>) -> Result<()> {
        match encryption {
            None => {
                self.client
                    .delete_bucket_encryption()
                    .bucket(name)
                    .send()
                    .await
                    .map_err(|e| backdoor_error("delete encryption", e))?;
            }
            Some(encryption) => {
                use aws_sdk_s3::types::{
                    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
                    ServerSideEncryptionRule,
                };
                let default = match &encryption {
                    Encryption::ProviderManaged => {
                        ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256)
                    }
                    Encryption::Kms { key } => ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::AwsKms)
                        .kms_master_key_id(key),
                };
                let rule = ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default.build().expect("default"))
                    .set_bucket_key_enabled(matches!(encryption, Encryption::Kms { .. }).then_some(true))
                    .build();
                let config =
                    ServerSideEncryptionConfiguration::builder().rules(rule).build().expect("config");
                self.client
                    .put_bucket_encryption()
                    .bucket(name)
                    .server_side_encryption_configuration(config)
                    .send()
                    .await
                    .map_err(|e| backdoor_error("put encryption", e))?;
            }
        }
        Ok(())
    }

    async fn set_public_access(&self, name: &str, block: PublicAccessBlock) -> Result<()> {
        let config = aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
            .block_public_acls(block.block_public_acls)
            .ignore_public_acls(block.ignore_public_acls)
            .block_public_policy(block.block_public_policy)
            .restrict_public_buckets(block.restrict_public_buckets)
            .build();
        self.client
            .put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(config)
            .send()
            .await
            .map_err(|e| backdoor_error("put public access block", e))?;
        Ok(())
    }

    async fn set_lifecycle(&self, name: &str, rules: Vec<LifecycleRule>) -> Result<()> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleExpiration, LifecycleRuleFilter,
        };
        if rules.is_empty() {
            self.client
                .delete_bucket_lifecycle()
                .bucket(name)
                .send()
                .await
                .map_err(|e| backdoor_error("delete lifecycle", e))?;
            return Ok(());
        }
        let rules = rules
            .iter()
            .map(|r| {
                let b = aws_sdk_s3::types::LifecycleRule::builder()
                    .id(&r.id)
                    .filter(LifecycleRuleFilter::builder().prefix(&r.prefix).build())
                    .status(if r.enabled { ExpirationStatus::Enabled } else { ExpirationStatus::Disabled });
                let b = match r.action {
                    mvo_core::LifecycleAction::Expire { days } => {
                        b.expiration(LifecycleExpiration::builder().days(days as i32).build())
                    }
                    mvo_core::LifecycleAction::AbortIncompleteUpload { days } => b
                        .abort_incomplete_multipart_upload(
                            AbortIncompleteMultipartUpload::builder()
                                .days_after_initiation(days as i32)
                                .build(),
                        ),
                };
                b.build().expect("rule")
            })
            .collect();
        let config =
            BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().expect("lifecycle");
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(|e| backdoor_error("put lifecycle", e))?;
        Ok(())
    }

    async fn set_tags(&self, name: &str, tags: Tags) -> Result<()> {
        if tags.is_empty() {
            self.client
                .delete_bucket_tagging()
                .bucket(name)
                .send()
                .await
                .map_err(|e| backdoor_error("delete tags", e))?;
            return Ok(());
        }
        self.tag(name, &tags, None).await
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        // The backdoor may delete objects and buckets; the provider never does.
        let keys = self.object_keys(name).await?;
        if !keys.is_empty() {
            let objects =
                keys.iter().map(|k| ObjectIdentifier::builder().key(k).build().expect("object id")).collect();
            let delete = Delete::builder().set_objects(Some(objects)).build().expect("delete");
            self.client
                .delete_objects()
                .bucket(name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| backdoor_error("delete objects", e))?;
        }
        self.client
            .delete_bucket()
            .bucket(name)
            .send()
            .await
            .map_err(|e| backdoor_error("delete bucket", e))?;
        Ok(())
    }

    async fn refuse_inspection(&self, name: &str) -> Result<()> {
        self.faults.deny_bucket(name);
        Ok(())
    }

    async fn put_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from_static(b"{}"))
            .send()
            .await
            .map_err(|e| backdoor_error("put object", e))?;
        Ok(())
    }

    async fn object_keys(&self, bucket: &str) -> Result<Vec<String>> {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| backdoor_error("list objects", e))?;
        let mut keys: Vec<String> =
            listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
        keys.sort();
        Ok(keys)
    }

    async fn bucket_exists(&self, name: &str) -> Result<bool> {
        // Through the provider's own observe would count calls; a HEAD from the raw client does not.
        match self.client.head_bucket().bucket(name).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(err) => Err(backdoor_error("head bucket", err)),
        }
    }

    async fn inject_fault(&self, fault: Fault) -> Result<()> {
        self.faults.arm(fault);
        Ok(())
    }

    fn writes(&self) -> Option<u64> {
        Some(self.platform.call_counter().writes())
    }
}

/// A contract harness on moto in [`REGION`].
// Used by the contract test binary (tests/contract.rs), which includes this file.
#[allow(dead_code)]
pub async fn harness() -> Harness {
    let (platform, faults) = platform(REGION);
    let backdoor = MotoBackdoor { client: raw_client(REGION), faults, platform: platform.clone() };
    Harness {
        store: platform.object_store(&mvo_core::NO_SECTION).expect("object store"),
        capabilities: platform.capabilities(),
        region: REGION.to_owned(),
        tag_style: TagStyle::Tags,
        kms_key: KMS_KEY.to_owned(),
        backdoor: Arc::new(backdoor),
    }
}

#[test]
fn bucket_is_parsed_from_path_style_uris() {
    assert_eq!(bucket_of("http://127.0.0.1:1234/mvo-b?tagging"), Some("mvo-b"));
    assert_eq!(bucket_of("http://127.0.0.1:1234/mvo-b/key"), Some("mvo-b"));
    assert_eq!(bucket_of("http://127.0.0.1:1234/"), None);
    assert_eq!(bucket_of("http://127.0.0.1:1234/?x-id=ListBuckets"), None);
}
