//! The Azure clouds a cluster may run in (`Infrastructure.status.platformStatus.azure.cloudName`)
//! and the Blob endpoint and Entra ID authority of each.

use azure_core::cloud::CloudConfiguration;

/// An Azure cloud, as OpenShift names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AzureCloud {
    /// `AzurePublicCloud` (also the default when the cluster names none).
    #[default]
    Public,
    /// `AzureUSGovernmentCloud`.
    UsGovernment,
    /// `AzureChinaCloud`.
    China,
}

impl AzureCloud {
    /// The cloud of OpenShift's `cloudName`; `None` for one this provider cannot serve
    /// (`AzureStackCloud`, whose endpoints are per installation, or a name it does not know).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "" | "AzurePublicCloud" => Some(AzureCloud::Public),
            "AzureUSGovernmentCloud" => Some(AzureCloud::UsGovernment),
            "AzureChinaCloud" => Some(AzureCloud::China),
            _ => None,
        }
    }

    /// OpenShift's name of the cloud; also Velero's `AZURE_CLOUD_NAME`.
    pub fn name(&self) -> &'static str {
        match self {
            AzureCloud::Public => "AzurePublicCloud",
            AzureCloud::UsGovernment => "AzureUSGovernmentCloud",
            AzureCloud::China => "AzureChinaCloud",
        }
    }

    /// The DNS suffix of storage account endpoints.
    pub fn storage_suffix(&self) -> &'static str {
        match self {
            AzureCloud::Public => "core.windows.net",
            AzureCloud::UsGovernment => "core.usgovcloudapi.net",
            AzureCloud::China => "core.chinacloudapi.cn",
        }
    }

    /// The Blob service URL of `account`.
    pub fn blob_endpoint(&self, account: &str) -> String {
        format!("https://{account}.blob.{}/", self.storage_suffix())
    }

    /// The SDK's configuration of the cloud (Entra ID authority host).
    pub(crate) fn configuration(&self) -> CloudConfiguration {
        match self {
            AzureCloud::Public => CloudConfiguration::AzurePublic,
            AzureCloud::UsGovernment => CloudConfiguration::AzureGovernment,
            AzureCloud::China => CloudConfiguration::AzureChina,
        }
    }
}

/// Whether `name` is a valid storage account name: 3 to 24 lower-case letters and digits.
pub fn is_valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `name` is a valid resource group name: 1 to 90 letters, digits, `_`, `-`, `.`, `(`,
/// `)`, not ending in `.`.
pub fn is_valid_resource_group(name: &str) -> bool {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')');
    (1..=90).contains(&name.chars().count()) && name.chars().all(allowed) && !name.ends_with('.')
}

/// Whether `name` is a valid container name: 3 to 63 lower-case letters, digits and single
/// hyphens, beginning and ending with a letter or digit.
pub fn is_valid_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.contains("--")
        && edge(bytes.first())
        && edge(bytes.last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_by_name_and_endpoints() {
        assert_eq!(AzureCloud::from_name(""), Some(AzureCloud::Public));
        assert_eq!(AzureCloud::from_name("AzureUSGovernmentCloud"), Some(AzureCloud::UsGovernment));
        assert_eq!(AzureCloud::from_name("AzureStackCloud"), None);
        assert_eq!(AzureCloud::China.blob_endpoint("acct"), "https://acct.blob.core.chinacloudapi.cn/");
        assert_eq!(AzureCloud::Public.name(), "AzurePublicCloud");
    }

    #[test]
    fn account_and_container_name_rules() {
        assert!(is_valid_account_name("veleroacct01"));
        for bad in ["ab", "Velero", "velero-backups", &"a".repeat(25)] {
            assert!(!is_valid_account_name(bad), "{bad:?}");
        }
        assert!(is_valid_container_name(&mvo_core::bucket::new_bucket_name()));
        for bad in ["ab", "a--b", "-ab", "ab-", "a.b", "A-b"] {
            assert!(!is_valid_container_name(bad), "{bad:?}");
        }
    }
}
