//! Where the provider's `StorageControl` client comes from: a given one (tests build it on the
//! testkit control plane with `StorageControl::from_stub`), or the real gRPC client, built on first
//! use because building is async and the registry's constructor is not.
//!
//! TLS: the google-cloud crates are compiled without their default rustls provider (aws-lc-rs);
//! [`install_crypto_provider`] installs ring, which kube already links, as the process default.
//! The gRPC channel trusts the system roots plus the cluster's trusted CA bundle when one is
//! mounted (as the AWS provider does).
//!
//! Proxy: the token exchange (reqwest) honours `HTTPS_PROXY`/`NO_PROXY`; the gRPC channel cannot.
//! google-cloud-gax-internal builds its tonic `Channel` from an `Endpoint` with tonic's own HTTP
//! connector and offers no hook for another, and tonic 0.14 has no proxy support, so a cluster
//! whose egress to storage.googleapis.com must go through the proxy needs NO_PROXY to let it
//! out directly (or a tonic release with proxy support).

use std::sync::{Arc, Once};

use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::{
    error::Error as GaxError,
    retry_policy::{NeverRetry, RetryPolicyExt},
};
use google_cloud_storage::client::StorageControl;
use mvo_core::Error;
use tokio::sync::OnceCell;

/// Makes ring rustls' process-wide crypto provider, unless one is installed already.
///
/// The google-cloud clients (gRPC TLS, token exchange, service-account JWT signing) use the
/// process default; without one they panic on first use.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first (by the binary): keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where OpenShift mounts the cluster's trusted CA bundle; overridden by `MVO_TRUSTED_CA_BUNDLE`
/// (the same path and variable as the AWS provider).
const TRUSTED_CA_BUNDLE: &str = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem";

/// The gRPC TLS settings: native roots plus the PEM bundle at `path` when it is readable and not
/// empty; `None` (the library's default, native roots) otherwise.
pub(crate) fn tls_config(path: &std::path::Path) -> Option<tonic::transport::ClientTlsConfig> {
    let pem = std::fs::read(path).ok().filter(|pem| !pem.is_empty())?;
    Some(
        tonic::transport::ClientTlsConfig::new()
            .with_native_roots()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
    )
}

fn trusted_ca_bundle() -> std::path::PathBuf {
    std::env::var_os("MVO_TRUSTED_CA_BUNDLE").map_or_else(|| TRUSTED_CA_BUNDLE.into(), Into::into)
}

/// Longest a single GCS call may take (as the AWS provider's attempt timeout).
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The real client's settings, kept until the first call builds it.
#[derive(Debug)]
pub(crate) struct LazyClient {
    cell: OnceCell<StorageControl>,
    credentials: Credentials,
    endpoint: Option<String>,
}

/// A ready client or one built on first use.
#[derive(Debug, Clone)]
pub(crate) enum ClientSource {
    Ready(StorageControl),
    Lazy(Arc<LazyClient>),
}

impl ClientSource {
    pub(crate) fn lazy(credentials: Credentials, endpoint: Option<String>) -> Self {
        ClientSource::Lazy(Arc::new(LazyClient { cell: OnceCell::new(), credentials, endpoint }))
    }

    pub(crate) async fn client(&self) -> Result<&StorageControl, GaxError> {
        match self {
            ClientSource::Ready(client) => Ok(client),
            ClientSource::Lazy(lazy) => lazy.cell.get_or_try_init(|| lazy.build()).await,
        }
    }
}

impl LazyClient {
    async fn build(&self) -> Result<StorageControl, GaxError> {
        install_crypto_provider();
        let mut builder = StorageControl::builder()
            .with_credentials(self.credentials.clone())
            // The operator retries with per-object backoff and reports the last error in a
            // condition; SDK retries on top would hide faults and make call counts unpredictable.
            // The time limit is also each attempt's deadline: a call that never answers fails
            // as Unavailable instead of stalling the reconcile.
            .with_retry_policy(NeverRetry.with_time_limit(ATTEMPT_TIMEOUT));
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // Only an https endpoint takes TLS settings (a plaintext test endpoint refuses them).
        let https = self.endpoint.as_deref().is_none_or(|e| e.starts_with("https://"));
        if https && let Some(tls) = tls_config(&trusted_ca_bundle()) {
            builder = builder.with_extension(tls);
        }
        builder.build().await.map_err(|err| {
            // Carried as a core error so the mapping keeps it retryable (a failed build is retried
            // at the next call).
            GaxError::io(Error::Unavailable { message: format!("cannot build the GCS client: {err}") })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trusted_ca_bundle_is_used_only_when_mounted() {
        let dir = std::env::temp_dir().join(format!("mvo-gcp-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(tls_config(&dir.join("absent.pem")).is_none(), "no bundle: the library's default roots");
        std::fs::write(dir.join("empty.pem"), "").expect("write");
        assert!(tls_config(&dir.join("empty.pem")).is_none(), "an empty bundle is no bundle");
        std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
            .expect("write");
        let tls = tls_config(&dir.join("ca.pem")).expect("a mounted bundle is trusted");
        let shown = format!("{tls:?}");
        assert!(
            shown.contains("with_native_roots: true") && shown.contains("certs: [Certificate"),
            "{shown}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
