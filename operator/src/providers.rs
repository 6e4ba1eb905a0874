//! The cloud providers linked into this binary.
//!
//! A provider crate registers itself through `inventory`, but only if the linker keeps it: a crate
//! that is merely a Cargo dependency is dropped. Naming each one here keeps it. Adding a cloud
//! means adding its crate, a cargo feature and one line below.

#[cfg(feature = "aws")]
use mvo_provider_aws as _;
#[cfg(feature = "azure")]
use mvo_provider_azure as _;
#[cfg(feature = "gcp")]
use mvo_provider_gcp as _;

/// The platform names of every linked provider, sorted; an empty list if the registry is broken.
pub fn registered_platforms() -> Vec<&'static str> {
    mvo_core::Registry::global().map(|r| r.platforms()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(feature = "aws", feature = "gcp", feature = "azure"))]
    fn registry_holds_exactly_aws_gcp_and_azure() {
        let expected = ["AWS", "Azure", "GCP"];
        assert_eq!(mvo_core::Registry::global().expect("no duplicate providers").platforms(), expected);
        assert_eq!(super::registered_platforms(), expected);
    }
}
