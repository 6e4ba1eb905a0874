//! [`Blob`]: the one decorator that counts the provider's Azure Storage calls, per operation,
//! split into reads and writes.
//!
//! `Blob` wraps the SDK's `BlobServiceClient` and exposes only the six operations the provider
//! uses; every call goes through it, so no call site carries metering code and a container or
//! blob delete cannot be issued by accident. Metrics and tests read the counts ("2 reads, 0
//! writes" in steady state).

use std::{collections::HashMap, future::Future};

use azure_core::http::{RequestContent, XmlFormat};
use azure_storage_blob::{
    BlobServiceClient,
    models::{
        BlobContainerClientCreateOptions, BlobContainerClientGetPropertiesResult,
        BlobServiceClientListContainersOptions, BlobServiceProperties, ListContainersIncludeType,
    },
};
use futures_util::TryStreamExt;
use mvo_core::Tags;

pub use mvo_core::metering::{CallCounter, OperationCount, is_read};

/// Operation names as counted (the Blob service REST operation names).
pub const GET_CONTAINER_PROPERTIES: &str = "GetContainerProperties";
/// See [`GET_CONTAINER_PROPERTIES`].
pub const CREATE_CONTAINER: &str = "CreateContainer";
/// See [`GET_CONTAINER_PROPERTIES`].
pub const SET_CONTAINER_METADATA: &str = "SetContainerMetadata";
/// See [`GET_CONTAINER_PROPERTIES`].
pub const LIST_CONTAINERS: &str = "ListContainers";
/// See [`GET_CONTAINER_PROPERTIES`].
pub const GET_BLOB_SERVICE_PROPERTIES: &str = "GetBlobServiceProperties";
/// See [`GET_CONTAINER_PROPERTIES`].
pub const SET_BLOB_SERVICE_PROPERTIES: &str = "SetBlobServiceProperties";

type SdkResult<T> = azure_core::Result<T>;

/// The provider's metered view of one storage account's Blob service.
#[derive(Clone)]
pub(crate) struct Blob {
    client: std::sync::Arc<BlobServiceClient>,
    counter: CallCounter,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob").field("endpoint", &self.client.url().as_str()).finish_non_exhaustive()
    }
}

impl Blob {
    pub(crate) fn new(client: BlobServiceClient, counter: CallCounter) -> Self {
        Blob { client: std::sync::Arc::new(client), counter }
    }

    async fn counted<T>(&self, operation: &str, call: impl Future<Output = SdkResult<T>>) -> SdkResult<T> {
        let result = call.await;
        self.counter.record(operation, result.is_err());
        result
    }

    pub(crate) async fn get_container_properties(
        &self,
        name: &str,
    ) -> SdkResult<
        azure_core::http::Response<BlobContainerClientGetPropertiesResult, azure_core::http::NoFormat>,
    > {
        let container = self.client.blob_container_client(name);
        self.counted(GET_CONTAINER_PROPERTIES, container.get_properties(None)).await
    }

    pub(crate) async fn create_container(
        &self,
        name: &str,
        options: BlobContainerClientCreateOptions<'_>,
    ) -> SdkResult<()> {
        let container = self.client.blob_container_client(name);
        self.counted(CREATE_CONTAINER, async { container.create(Some(options)).await.map(drop) }).await
    }

    pub(crate) async fn set_container_metadata(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> SdkResult<()> {
        let container = self.client.blob_container_client(name);
        self.counted(SET_CONTAINER_METADATA, async { container.set_metadata(metadata, None).await.map(drop) })
            .await
    }

    /// Every container of the account with its metadata (all pages; each page counts as a call).
    pub(crate) async fn list_containers_with_metadata(&self) -> SdkResult<Vec<(String, Tags)>> {
        let options = BlobServiceClientListContainersOptions {
            include: Some(vec![ListContainersIncludeType::Metadata]),
            ..Default::default()
        };
        let mut pages = self.client.list_containers(Some(options))?.into_pages();
        let mut out = Vec::new();
        loop {
            let page = self.counted(LIST_CONTAINERS, async { pages.try_next().await }).await?;
            let Some(page) = page else { return Ok(out) };
            for item in page.into_model()?.container_items {
                if let Some(name) = item.name {
                    out.push((name, crate::store::metadata_of(item.metadata)));
                }
            }
        }
    }

    pub(crate) async fn get_service_properties(&self) -> SdkResult<BlobServiceProperties> {
        self.counted(GET_BLOB_SERVICE_PROPERTIES, async {
            self.client.get_properties(None).await?.into_model()
        })
        .await
    }

    pub(crate) async fn set_service_properties(&self, properties: BlobServiceProperties) -> SdkResult<()> {
        let body: RequestContent<BlobServiceProperties, XmlFormat> = properties.try_into()?;
        self.counted(SET_BLOB_SERVICE_PROPERTIES, async {
            self.client.set_properties(body, None).await.map(drop)
        })
        .await
    }
}
