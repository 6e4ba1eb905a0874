//! Construction of the provider's Blob service client: one reqwest client on rustls with ring
//! (the process-wide provider kube already uses; the SDK's default would link aws-lc-rs as a
//! second one), the cluster proxy from the environment, the cluster's trusted CA bundle, no SDK
//! retries, per-attempt timeouts, and the credential adapter that signs every request.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use azure_core::{
    error::ErrorKind,
    http::{
        ClientOptions, Context, HttpClient, Request, RetryOptions, Transport, Url,
        policies::{Policy, PolicyResult},
    },
};
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use mvo_core::{CredentialMaterial, CredentialSource, Error, Result};

/// One attempt may take this long before it counts as `Unavailable` (as the other providers).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where OpenShift mounts the cluster's trusted CA bundle (the `trusted-ca-bundle` ConfigMap);
/// overridden by `MVO_TRUSTED_CA_BUNDLE`, as for the AWS provider.
const TRUSTED_CA_BUNDLE: &str = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem";

/// Makes ring rustls' process-wide crypto provider, unless one is installed already: reqwest is
/// built without a bundled provider and uses the process default.
pub fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first (by the binary or another provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client every Azure call goes through: system roots plus the cluster's CA bundle (and
/// `extra_pem`, for tests), `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment (reqwest
/// reads them itself), bounded connect and request times.
pub(crate) fn http_client(extra_pem: Option<&[u8]>) -> Result<Arc<dyn HttpClient>> {
    install_crypto_provider();
    let path = std::env::var("MVO_TRUSTED_CA_BUNDLE").unwrap_or_else(|_| TRUSTED_CA_BUNDLE.to_owned());
    let mut pems: Vec<Vec<u8>> = Vec::new();
    if let Ok(pem) = std::fs::read(&path)
        && !pem.is_empty()
    {
        pems.push(pem);
    }
    pems.extend(extra_pem.map(<[u8]>::to_vec));
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(ATTEMPT_TIMEOUT);
    for pem in pems {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| Error::invalid_config(format!("the CA bundle {path} is not valid PEM: {err}")))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|err| Error::Unavailable { message: format!("cannot build the HTTPS client: {err}") })?;
    Ok(Arc::new(client))
}

/// Client options shared by the Blob client and the Entra ID credentials: our transport, no SDK
/// retries (the operator retries with per-object backoff and reports the last error in a
/// condition; SDK retries on top would hide faults and make call counts unpredictable).
pub(crate) fn client_options(http: Arc<dyn HttpClient>, policies: &[Arc<dyn Policy>]) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(http)),
        retry: RetryOptions::none(),
        per_try_policies: policies.to_vec(),
        ..Default::default()
    }
}

/// Signs every attempt with the bearer token the credential source yields now.
///
/// Instead of the SDK's bearer-token policy, which keeps a token until it nears expiry: asking
/// the source on every request lets a rotated secret take effect at the next call, as on the
/// other clouds. The source (and the Entra ID credential it builds) caches tokens itself.
#[derive(Debug)]
struct BearerAuth(Arc<dyn CredentialSource>);

#[async_trait]
impl Policy for BearerAuth {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        // A core error rides along as the source, so the provider's error mapping finds it again.
        let credential =
            self.0.credential().await.map_err(|err| azure_core::Error::new(ErrorKind::Credential, err))?;
        let CredentialMaterial::BearerToken(token) = &credential.material else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "the Azure provider needs a bearer token credential",
            ));
        };
        request.insert_header("authorization", format!("Bearer {}", token.expose()));
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(ErrorKind::Other, "no transport policy")),
        }
    }
}

/// The Blob service client of `service_url` (`https://<account>.blob.core.windows.net/`),
/// signing with `credentials`.
pub(crate) fn blob_service(
    service_url: &str,
    credentials: Arc<dyn CredentialSource>,
    http: Arc<dyn HttpClient>,
    policies: &[Arc<dyn Policy>],
) -> Result<BlobServiceClient> {
    let url = Url::parse(service_url).map_err(|err| {
        Error::invalid_config(format!("storage endpoint {service_url:?} is not a URL: {err}"))
    })?;
    // Bearer tokens only ever over TLS.
    if url.scheme() != "https" {
        return Err(Error::invalid_config(format!("storage endpoint {service_url:?} must use https")));
    }
    let mut all: Vec<Arc<dyn Policy>> = vec![Arc::new(BearerAuth(credentials))];
    all.extend(policies.iter().cloned());
    let options =
        BlobServiceClientOptions { client_options: client_options(http, &all), ..Default::default() };
    BlobServiceClient::new(url, None, Some(options)).map_err(|err| {
        Error::invalid_config(format!("cannot build the Blob client for {service_url}: {err}"))
    })
}
