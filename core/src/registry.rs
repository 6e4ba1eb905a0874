//! The provider registry: provider crates register with [`register_provider!`] at link time
//! (through `inventory`); the operator looks the cluster's platform up here at run time.
//!
//! A provider crate that is only a Cargo dependency is not linked and its registration is lost:
//! the binary must name each provider crate in code (`use mvo_provider_aws as _;`).

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use crate::{
    error::Result,
    platform::{Platform, ProviderConfig},
    provider::{FactsInput, FactsReader, ProviderFacts, SpecSection},
};

/// One provider's entry in the registry, submitted with [`register_provider!`]: its platform
/// name, its constructor, and what it declares before it is built (the cluster facts it reads,
/// its spec section for the CRD).
#[derive(Debug)]
pub struct ProviderRegistration {
    /// The platform name it serves, equal to `Infrastructure.status.platformStatus.type`.
    pub platform: &'static str,
    /// Builds the provider; validates the cluster facts it needs (region, project) and returns
    /// [`crate::Error::InvalidConfig`] naming a missing one.
    pub build: fn(&ProviderConfig) -> Result<Arc<dyn Platform>>,
    /// Where its cluster facts are and how to read them; `None` when it needs none.
    pub facts: Option<FactsReader>,
    /// Its section of the `VeleroInstall` spec, merged into the generated CRD; the built
    /// platform reports the same one in [`Platform::spec_fields`].
    pub section: Option<&'static SpecSection>,
}

impl ProviderRegistration {
    /// A registration that reads no cluster facts and owns no spec section; `const` so it can be
    /// submitted at link time.
    pub const fn new(
        platform: &'static str,
        build: fn(&ProviderConfig) -> Result<Arc<dyn Platform>>,
    ) -> Self {
        ProviderRegistration { platform, build, facts: None, section: None }
    }

    /// This registration reading its cluster facts with `read` from
    /// `Infrastructure.status.platformStatus.<key>` and the install-config's `platform.<key>`.
    pub const fn with_facts(
        mut self,
        key: &'static str,
        read: fn(&FactsInput<'_>) -> std::result::Result<ProviderFacts, String>,
    ) -> Self {
        self.facts = Some(FactsReader { key, read });
        self
    }

    /// This registration owning `section` of the `VeleroInstall` spec.
    pub const fn with_section(mut self, section: &'static SpecSection) -> Self {
        self.section = Some(section);
        self
    }

    /// The provider's facts from the raw cluster data; empty and complete when it declares none.
    ///
    /// Errors: the provider's reason when the data is malformed.
    pub fn read_facts(&self, input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
        match &self.facts {
            Some(reader) => (reader.read)(input),
            None => Ok(ProviderFacts { complete: true, ..Default::default() }),
        }
    }
}

inventory::collect!(ProviderRegistration);

/// Registers a provider. Use once, at the bottom of the provider's `lib.rs`, either with a
/// platform name and constructor, or with a full [`ProviderRegistration`]:
///
/// ```ignore
/// mvo_core::register_provider!("AWS", AwsPlatform::build);
/// mvo_core::register_provider!(
///     ProviderRegistration::new("Azure", AzurePlatform::build)
///         .with_facts("azure", facts::read)
///         .with_section(&SECTION)
/// );
/// ```
#[macro_export]
macro_rules! register_provider {
    ($platform:expr, $build:expr) => {
        $crate::inventory::submit! {
            $crate::registry::ProviderRegistration::new($platform, $build)
        }
    };
    ($registration:expr) => {
        $crate::inventory::submit! {
            $registration
        }
    };
}

/// Why the registry could not give a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two linked crates registered the same platform name.
    #[error("provider {platform:?} is registered more than once; link only one crate per platform")]
    Duplicate {
        /// The platform name registered twice.
        platform: &'static str,
    },
    /// No linked crate serves the platform.
    #[error("platform {platform:?} is not supported; supported platforms: {}", supported.join(", "))]
    Unsupported {
        /// The platform asked for.
        platform: String,
        /// The registered platform names, sorted.
        supported: Vec<&'static str>,
    },
}

/// The registered providers, by platform name.
#[derive(Debug)]
pub struct Registry {
    providers: BTreeMap<&'static str, &'static ProviderRegistration>,
}

static GLOBAL: LazyLock<Result<Registry, RegistryError>> =
    LazyLock::new(|| Registry::from_registrations(inventory::iter::<ProviderRegistration>));

impl Registry {
    /// The registry of every provider linked into this binary, built once.
    ///
    /// Errors: [`RegistryError::Duplicate`] when two providers claim one platform name.
    pub fn global() -> Result<&'static Registry, RegistryError> {
        GLOBAL.as_ref().map_err(Clone::clone)
    }

    /// Builds a registry from explicit registrations, refusing duplicate names.
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static ProviderRegistration>,
    ) -> Result<Registry, RegistryError> {
        let mut providers = BTreeMap::new();
        for registration in registrations {
            if providers.insert(registration.platform, registration).is_some() {
                return Err(RegistryError::Duplicate { platform: registration.platform });
            }
        }
        Ok(Registry { providers })
    }

    /// The registered platform names, sorted.
    pub fn platforms(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }

    /// Every registration, sorted by platform name.
    pub fn registrations(&self) -> impl Iterator<Item = &'static ProviderRegistration> + '_ {
        self.providers.values().copied()
    }

    /// The registration serving `platform`.
    ///
    /// Errors: [`RegistryError::Unsupported`] listing the registered names.
    pub fn get(&self, platform: &str) -> Result<&'static ProviderRegistration, RegistryError> {
        self.providers.get(platform).copied().ok_or_else(|| RegistryError::Unsupported {
            platform: platform.to_owned(),
            supported: self.platforms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn refuse(_: &ProviderConfig) -> Result<Arc<dyn Platform>> {
        Err(Error::invalid_config("test provider builds nothing"))
    }

    static ALPHA: ProviderRegistration = ProviderRegistration::new("ALPHA", refuse);
    static BETA: ProviderRegistration = ProviderRegistration::new("BETA", refuse);
    static ALPHA_AGAIN: ProviderRegistration = ProviderRegistration::new("ALPHA", refuse);

    #[test]
    fn lookup_by_platform_name() {
        let registry = Registry::from_registrations([&BETA, &ALPHA]).expect("no duplicates");
        assert_eq!(registry.platforms(), vec!["ALPHA", "BETA"]);
        assert_eq!(registry.get("BETA").expect("registered").platform, "BETA");
    }

    #[test]
    fn miss_lists_registered_names() {
        let registry = Registry::from_registrations([&BETA, &ALPHA]).expect("no duplicates");
        let err = registry.get("Azure").expect_err("not registered");
        assert_eq!(err.to_string(), r#"platform "Azure" is not supported; supported platforms: ALPHA, BETA"#);
    }

    fn facts(input: &FactsInput<'_>) -> std::result::Result<ProviderFacts, String> {
        let region = crate::provider::text_field(input.platform_status, "region")?;
        Ok(ProviderFacts { complete: region.is_some(), region, ..Default::default() })
    }

    static GAMMA: ProviderRegistration =
        ProviderRegistration::new("GAMMA", refuse).with_facts("gamma", facts);

    #[test]
    fn facts_are_read_by_the_provider_or_empty() {
        let status = serde_json::json!({"region": "r1"});
        let input = FactsInput { platform_status: Some(&status), install_config: None };
        let read = GAMMA.read_facts(&input).expect("facts");
        assert_eq!((read.region.as_deref(), read.complete), (Some("r1"), true));
        assert_eq!(GAMMA.facts.map(|f| f.key), Some("gamma"));
        let none = ALPHA.read_facts(&input).expect("no facts declared");
        assert_eq!(none, ProviderFacts { complete: true, ..Default::default() });
    }

    #[test]
    fn duplicates_are_refused() {
        let err = Registry::from_registrations([&ALPHA, &BETA, &ALPHA_AGAIN]).expect_err("duplicate");
        assert_eq!(err, RegistryError::Duplicate { platform: "ALPHA" });
    }

    #[test]
    fn global_registry_is_empty_without_linked_providers() {
        // core links no provider; the operator's test asserts its own linked set.
        assert_eq!(Registry::global().expect("no duplicates").platforms(), Vec::<&str>::new());
    }
}
