//! Construction of the provider's S3 and STS clients: ring-based TLS, region, endpoint override,
//! the credential adapter, the call counter and any extra interceptors (tests inject faults
//! through one).

use std::{sync::Arc, time::Duration};

use aws_sdk_s3::config::{
    BehaviorVersion, IdentityCache, Region, SharedHttpClient, SharedInterceptor, retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_smithy_http_client::tls;
use mvo_core::CredentialSource;

use crate::{
    credentials::SdkCredentials,
    metering::{CallCounter, Metering},
};

/// One attempt may take this long before it counts as `Unavailable`.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the clients are built from.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub region: String,
    /// S3/STS endpoint override (S3-compatible servers, moto); implies path-style addressing.
    pub endpoint: Option<String>,
    pub counter: CallCounter,
    pub interceptors: Vec<SharedInterceptor>,
}

/// HTTPS with rustls on ring: kube already links ring, and a second rustls crypto provider
/// (aws-lc-rs, the SDK default) in the same binary makes rustls panic.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
}

/// The S3 client, signing with whatever `credentials` yields at each request.
pub(crate) fn s3(settings: &ClientSettings, credentials: Arc<dyn CredentialSource>) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client())
        .region(Region::new(settings.region.clone()))
        .credentials_provider(SdkCredentials(credentials))
        // The credential source caches and refreshes itself and re-reads rotated files; the SDK's
        // lazy cache would hold long-lived keys for 15 minutes after a rotation.
        .identity_cache(IdentityCache::no_cache())
        // The operator retries with per-object backoff and reports the last error in a condition;
        // SDK retries on top would hide faults and make call counts unpredictable.
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .interceptor(Metering(settings.counter.clone()));
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    for interceptor in &settings.interceptors {
        builder.push_interceptor(interceptor.clone());
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// The STS client for web identity exchanges, which are unsigned (the token is the proof).
pub(crate) fn sts(settings: &ClientSettings) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(sts_config(settings).build())
}

/// The STS client signing with the operator's credentials, for GetCallerIdentity (the account
/// every bucket call pins as its expected owner). A separate client from [`sts`]: the credential
/// source itself uses that one for web identity exchanges.
pub(crate) fn sts_signed(
    settings: &ClientSettings,
    credentials: Arc<dyn CredentialSource>,
) -> aws_sdk_sts::Client {
    let config = sts_config(settings)
        .credentials_provider(SdkCredentials(credentials))
        .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache());
    aws_sdk_sts::Client::from_conf(config.build())
}

fn sts_config(settings: &ClientSettings) -> aws_sdk_sts::config::Builder {
    let mut builder = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .http_client(https_client())
        .region(aws_sdk_sts::config::Region::new(settings.region.clone()))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::standard())
        .timeout_config(timeouts())
        .interceptor(Metering(settings.counter.clone()));
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder
}
