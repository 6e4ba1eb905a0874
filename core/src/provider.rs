//! What a provider declares about itself, so the operator asks instead of comparing platform
//! names: the cluster facts it reads ([`FactsReader`]), its own section of the `VeleroInstall`
//! spec ([`SpecSection`]) and which shared spec fields apply to it ([`SpecFields`]).
//!
//! Everything here is plain data or a plain function over JSON: the operator hands a provider the
//! raw parts of Kubernetes objects, and the provider parses them into its own types.

use std::collections::BTreeMap;

use serde_json::Value;

/// The section passed for a provider that owns none, or when the spec leaves it out.
pub static NO_SECTION: Value = Value::Null;

/// The raw cluster data a provider extracts its facts from.
#[derive(Debug, Clone, Copy, Default)]
pub struct FactsInput<'a> {
    /// `Infrastructure.status.platformStatus.<key>` (the key of [`FactsReader::key`]), when set.
    pub platform_status: Option<&'a Value>,
    /// `platform.<key>` of the installer's `install-config` (ConfigMap
    /// `kube-system/cluster-config-v1`), when the operator read it: only after a first call said
    /// the facts were incomplete, and only if the ConfigMap has that section.
    pub install_config: Option<&'a Value>,
}

impl FactsInput<'_> {
    /// The non-blank string at `field` of `platformStatus.<key>`, else of the install-config's
    /// `platform.<key>` (see [`text_field`]); `Err` when either holds it as a non-string.
    pub fn field(&self, field: &str) -> Result<Option<String>, String> {
        match text_field(self.platform_status, field)? {
            Some(value) => Ok(Some(value)),
            None => text_field(self.install_config, field),
        }
    }
}

/// The facts a provider read from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderFacts {
    /// The region buckets are created in, when known.
    pub region: Option<String>,
    /// Further named facts (e.g. `project ID`, `resource group`), by the name an error shows.
    pub values: BTreeMap<String, String>,
    /// False when a fact is missing from `platformStatus`: the operator then reads the
    /// install-config fallback and asks again. Still incomplete after that, the provider's build
    /// names what is missing.
    pub complete: bool,
}

impl ProviderFacts {
    /// Sets `name` to `value` when `value` is a non-blank string.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
            self.values.insert(name.to_owned(), value);
        }
    }
}

/// Where a provider's cluster facts live and how it reads them.
#[derive(Debug, Clone, Copy)]
pub struct FactsReader {
    /// The key of the provider's section under `Infrastructure.status.platformStatus` and under
    /// the install-config's `platform` (`aws`, `gcp`, `azure`).
    pub key: &'static str,
    /// Extracts the facts. `Err` is why the data is malformed (a section of the wrong shape),
    /// reported by the operator with the object it came from.
    pub read: fn(&FactsInput<'_>) -> Result<ProviderFacts, String>,
}

/// The non-blank string at `field` of a JSON object, trimmed; `Err` when it is not a string.
///
/// A helper for [`FactsReader::read`] implementations.
pub fn text_field(section: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match section.and_then(|s| s.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(other) => Err(format!("{field} must be a string, not {other}")),
    }
}

/// A section of the `VeleroInstall` spec owned by one provider (`spec.<key>`), unknown to the
/// operator: its schema is merged into the generated CRD and its values reach the provider on
/// every reconcile as plain JSON.
#[derive(Debug, Clone, Copy)]
pub struct SpecSection {
    /// The field name under `spec`, e.g. `azure`.
    pub key: &'static str,
    /// The section's JSON schema, e.g. `|g| g.subschema_for::<AzureSpec>()`; the operator's CRD
    /// generator applies Kubernetes' structural-schema rules to it.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Checks what the schema cannot, at reconcile time; the error becomes the `InvalidSpec`
    /// condition. Called with `Value::Null` when the section is absent.
    pub validate: fn(&Value) -> Result<(), SectionError>,
}

/// A value in a provider's spec section that the provider cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SectionError {
    /// JSON path of the field from the object root, e.g. `spec.azure.storageAccount`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Which of the operator's shared spec fields a provider reads; the operator refuses a shared
/// field set on a cluster whose provider does not read it, naming the one that applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecFields {
    /// The JSON name of the customer-managed key field under `spec.storageBucket` this provider
    /// reads (`kmsKeyID`, `kmsKeyName`); `None` when it reads none (a key, if any, is then in
    /// its own section).
    pub kms_key: Option<&'static str>,
    /// The provider's own spec section.
    pub section: Option<&'static SpecSection>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_fields_are_trimmed_and_typed() {
        let section = json!({"region": " eu-west-1 ", "blank": " ", "number": 1});
        assert_eq!(text_field(Some(&section), "region"), Ok(Some("eu-west-1".into())));
        assert_eq!(text_field(Some(&section), "blank"), Ok(None));
        assert_eq!(text_field(Some(&section), "absent"), Ok(None));
        assert_eq!(text_field(None, "region"), Ok(None));
        assert_eq!(text_field(Some(&section), "number"), Err("number must be a string, not 1".into()));
    }

    #[test]
    fn blank_facts_are_not_recorded() {
        let mut facts = ProviderFacts::default();
        facts.set("project ID", Some("  ".into()));
        facts.set("resource group", Some(" rg ".into()));
        assert_eq!(facts.values, BTreeMap::from([("resource group".to_owned(), "rg".to_owned())]));
    }
}
