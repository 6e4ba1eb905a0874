//! [`Control`]: the one decorator that counts the provider's GCS calls, per
//! operation, split into reads and writes.
//!
//! `Control` wraps the `StorageControl` client (real, or built on a test stub) and exposes the
//! only four bucket operations the provider uses; every call goes through it, so no call site
//! carries metering code and a `DeleteBucket` cannot be issued by accident. Metrics and tests
//! read the counts ("1 read, 0 writes" in steady state).

use std::future::Future;

use google_cloud_gax::error::Error as GaxError;
use google_cloud_storage::model::{Bucket, ListBucketsResponse};
use google_cloud_wkt::FieldMask;

use crate::{client::ClientSource, settings};

/// Operation names as counted.
pub const GET_BUCKET: &str = "GetBucket";
/// See [`GET_BUCKET`].
pub const LIST_BUCKETS: &str = "ListBuckets";
/// See [`GET_BUCKET`].
pub const CREATE_BUCKET: &str = "CreateBucket";
/// See [`GET_BUCKET`].
pub const UPDATE_BUCKET: &str = "UpdateBucket";

pub use mvo_core::metering::{CallCounter, OperationCount, is_read};

/// The provider's metered view of `StorageControl`: get, list, create and update buckets only.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    source: ClientSource,
    counter: CallCounter,
}

impl Control {
    pub(crate) fn new(source: ClientSource, counter: CallCounter) -> Self {
        Control { source, counter }
    }

    async fn counted<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, GaxError>>,
    ) -> Result<T, GaxError> {
        let result = call.await;
        self.counter.record(operation, result.is_err());
        result
    }

    pub(crate) async fn get_bucket(&self, resource: String) -> Result<Bucket, GaxError> {
        let client = self.source.client().await?;
        let request = client
            .get_bucket()
            .set_name(resource)
            .set_read_mask(FieldMask::default().set_paths(settings::READ_MASK));
        self.counted(GET_BUCKET, request.send()).await
    }

    pub(crate) async fn list_buckets(
        &self,
        parent: String,
        prefix: &str,
        page_token: String,
    ) -> Result<ListBucketsResponse, GaxError> {
        let client = self.source.client().await?;
        let request = client
            .list_buckets()
            .set_parent(parent)
            .set_prefix(prefix)
            .set_page_token(page_token)
            // Buckets in unavailable locations are reported by name instead of failing the list;
            // recovery counts them as skipped.
            .set_return_partial_success(true);
        self.counted(LIST_BUCKETS, request.send()).await
    }

    pub(crate) async fn create_bucket(&self, bucket_id: &str, bucket: Bucket) -> Result<Bucket, GaxError> {
        let client = self.source.client().await?;
        let request =
            client.create_bucket().set_parent("projects/_").set_bucket_id(bucket_id).set_bucket(bucket);
        self.counted(CREATE_BUCKET, request.send()).await
    }

    pub(crate) async fn update_bucket(
        &self,
        patch: Bucket,
        paths: Vec<String>,
        metageneration: i64,
    ) -> Result<Bucket, GaxError> {
        let client = self.source.client().await?;
        let request = client
            .update_bucket()
            .set_bucket(patch)
            .set_update_mask(FieldMask::default().set_paths(paths))
            .set_if_metageneration_match(metageneration);
        self.counted(UPDATE_BUCKET, request.send()).await
    }
}
