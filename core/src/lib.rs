//! Domain types, provider traits, errors and the provider registry of the managed Velero operator.
//!
//! This crate is the contract between the operator and the clouds. It knows nothing about
//! Kubernetes and links no cloud SDK: a provider crate implements [`Platform`], [`ObjectStore`] and
//! [`CredentialSource`] for one cloud and registers itself with [`register_provider!`]; the operator
//! asks the [`registry`] for the platform named by the cluster's `Infrastructure` object.

pub mod bucket;
pub mod credentials;
pub mod error;
pub mod metering;
pub mod owner;
pub mod platform;
pub mod provider;
pub mod registry;
pub mod velero;

pub use bucket::{
    BucketReport, BucketSpec, BucketState, Encryption, LifecycleAction, LifecycleRule, PublicAccessBlock,
    Recovery, Setting, Tags,
};
pub use credentials::{Credential, CredentialMaterial, CredentialSource, Secret, StaticCredentialSource};
pub use error::{Error, Result};
pub use owner::{Owner, TagStyle};
pub use platform::{Capabilities, ObjectStore, Platform, ProviderConfig};
pub use provider::{
    FactsInput, FactsReader, NO_SECTION, ProviderFacts, SectionError, SpecFields, SpecSection,
};
pub use registry::{ProviderRegistration, Registry, RegistryError};
pub use velero::{
    CredentialsWiring, DerivedCredentials, DerivedValue, LocationConfig, ShortLivedError, ShortLivedField,
    ShortLivedInput, VeleroFacts, VeleroInput,
};

/// Re-exported so that providers write [`SpecSection::schema`] with the operator's version.
pub use schemars;

/// Re-exported so that [`register_provider!`] works in crates that do not depend on `inventory`.
#[doc(hidden)]
pub use inventory;
