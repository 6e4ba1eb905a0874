//! Where the provider's `StorageControl` client comes from: a given one (tests build it on the
//! testkit control plane with `StorageControl::from_stub`), or the real gRPC client, built on first
//! use because building is async and the registry's constructor is not.
//!
//! TLS: the google-cloud crates are compiled without their default rustls provider (aws-lc-rs);
//! [`install_crypto_provider`] installs ring, which kube already links, as the process default.

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
        builder.build().await.map_err(|err| {
            // Carried as a core error so the mapping keeps it retryable (a failed build is retried
            // at the next call).
            GaxError::io(Error::Unavailable { message: format!("cannot build the GCS client: {err}") })
        })
    }
}
