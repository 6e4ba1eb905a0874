//! A stand-in for providers that do not (yet) implement bucket operations or credentials: every
//! call answers [`Error::NotSupported`], so nothing claims a capability it lacks.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    bucket::{BucketReport, BucketSpec, BucketState, Recovery},
    credentials::{Credential, CredentialSource},
    error::{Error, Result},
    owner::Owner,
    platform::ObjectStore,
};

/// An [`ObjectStore`] and [`CredentialSource`] whose every operation is [`Error::NotSupported`].
#[derive(Debug, Clone, Copy)]
pub struct Unsupported {
    /// The platform name reported in the errors.
    pub provider: &'static str,
}

impl Unsupported {
    fn refuse<T>(&self, operation: &'static str) -> Result<T> {
        Err(Error::NotSupported { operation, provider: self.provider })
    }
}

#[async_trait]
impl ObjectStore for Unsupported {
    async fn find_bucket(&self, _owner: &Owner) -> Result<Recovery> {
        self.refuse("find_bucket")
    }

    async fn ensure_bucket(&self, _spec: &BucketSpec) -> Result<BucketReport> {
        self.refuse("ensure_bucket")
    }

    async fn observe_bucket(&self, _name: &str) -> Result<BucketState> {
        self.refuse("observe_bucket")
    }
}

#[async_trait]
impl CredentialSource for Unsupported {
    async fn credential(&self) -> Result<Arc<Credential>> {
        self.refuse("credential")
    }

    fn describe(&self) -> String {
        format!("none: the {} provider does not load credentials yet", self.provider)
    }
}
