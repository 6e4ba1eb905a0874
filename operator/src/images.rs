//! Which image each Velero container runs: the `VeleroInstall` spec, else the operator's
//! `RELATED_IMAGE_*` environment (the OLM convention that lets mirrored and disconnected clusters
//! point the operator at their registry), else the default this build pins.
//!
//! The environment is read once, at first use, so every reconcile of a process agrees.

use std::sync::OnceLock;

/// Env var naming the Velero server image.
pub const RELATED_IMAGE_VELERO: &str = "RELATED_IMAGE_VELERO";

/// Env var naming the Velero plugin image of `platform` (`RELATED_IMAGE_VELERO_PLUGIN_AWS`, ...).
pub fn plugin_env_var(platform: &str) -> String {
    format!("RELATED_IMAGE_VELERO_PLUGIN_{}", platform.to_ascii_uppercase())
}

/// The image to run: the spec's when set, else the environment's when set, else `default`.
/// Blank values count as unset.
pub fn choose(spec: Option<&str>, env: Option<&str>, default: &str) -> String {
    [spec, env]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|image| !image.is_empty())
        .unwrap_or(default)
        .to_owned()
}

/// The value of `var` in the operator's environment, as it was at first use of that variable.
pub fn related_image(var: &str) -> Option<&'static str> {
    static SNAPSHOT: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SNAPSHOT
        .get_or_init(|| std::env::vars().filter(|(name, _)| name.starts_with("RELATED_IMAGE_")).collect())
        .iter()
        .find(|(name, _)| name == var)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_beats_env_beats_default() {
        assert_eq!(choose(Some("spec/velero:1"), Some("mirror/velero:1"), "default"), "spec/velero:1");
        assert_eq!(choose(None, Some("mirror/velero:1"), "default"), "mirror/velero:1");
        assert_eq!(choose(None, None, "default"), "default");
    }

    #[test]
    fn blank_values_are_unset() {
        assert_eq!(choose(Some("  "), Some("mirror/velero:1"), "default"), "mirror/velero:1");
        assert_eq!(choose(Some(""), Some(""), "default"), "default");
        assert_eq!(choose(Some(" spec/velero:1 "), None, "default"), "spec/velero:1");
    }

    #[test]
    fn plugin_variables_follow_the_platform_name() {
        assert_eq!(plugin_env_var("AWS"), "RELATED_IMAGE_VELERO_PLUGIN_AWS");
        assert_eq!(plugin_env_var("GCP"), "RELATED_IMAGE_VELERO_PLUGIN_GCP");
    }
}
