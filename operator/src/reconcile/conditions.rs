//! Conditions: the five condition types, their reasons, and the pure merge that keeps
//! `lastTransitionTime` unless a condition's status really changes.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Condition types, in the order they are reported.
pub const PLATFORM_SUPPORTED: &str = "PlatformSupported";
/// The bucket exists and its settings are enforced.
pub const BUCKET_READY: &str = "BucketReady";
/// The operator's own credentials work and Velero's credentials secret exists.
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// The Velero objects are applied and the Deployment is available.
pub const VELERO_READY: &str = "VeleroReady";
/// Everything above is true.
pub const READY: &str = "Ready";

/// Every condition type the operator sets.
pub const ALL: [&str; 5] = [PLATFORM_SUPPORTED, BUCKET_READY, CREDENTIALS_READY, VELERO_READY, READY];

/// `BucketReady`'s message for a checked bucket: what was done, and the bucket settings the
/// provider does not enforce (its unclaimed capabilities), which stay with the account owner.
pub fn bucket_ready_message(platform: &dyn mvo_core::Platform, name: &str, summary: &str) -> String {
    let capabilities = platform.capabilities();
    let left: Vec<&str> = [
        (capabilities.default_encryption, "default encryption"),
        (capabilities.kms, "customer-managed keys"),
        (capabilities.public_access_block, "public access"),
        (capabilities.lifecycle_rules, "lifecycle rules (backup expiry)"),
    ]
    .into_iter()
    .filter(|(claimed, _)| !claimed)
    .map(|(_, setting)| setting)
    .collect();
    if left.is_empty() {
        return format!("bucket {name}: {summary}");
    }
    format!(
        "bucket {name}: {summary}; not enforced by the {} provider, left to the account: {}",
        platform.name(),
        left.join(", ")
    )
}

/// A condition to report, before timestamps are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Condition type.
    pub type_: &'static str,
    /// True or false.
    pub ok: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl Report {
    /// A true condition.
    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Report { type_, ok: true, reason, message: message.into() }
    }

    /// A false condition.
    pub fn fail(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Report { type_, ok: false, reason, message: message.into() }
    }
}

/// Merges `reports` into `existing`: a condition whose status is unchanged keeps its
/// `lastTransitionTime`; conditions of other types are kept as they are.
pub fn merge(
    existing: &[Condition],
    reports: &[Report],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> =
        existing.iter().filter(|c| !reports.iter().any(|r| r.type_ == c.type_)).cloned().collect();
    for report in reports {
        let status = if report.ok { "True" } else { "False" };
        let previous = existing.iter().find(|c| c.type_ == report.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        merged.push(Condition {
            type_: report.type_.into(),
            status: status.into(),
            reason: report.reason.into(),
            message: report.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by_key(|c| ALL.iter().position(|t| *t == c.type_).unwrap_or(ALL.len()));
    merged
}

/// The `Ready` condition summarising the others: true only when every one of them is.
pub fn ready(reports: &[Report]) -> Report {
    match reports.iter().find(|r| !r.ok) {
        None => Report::ok(READY, "Ready", "Velero is installed and its bucket is enforced"),
        Some(first) => Report::fail(READY, first.reason, format!("{}: {}", first.type_, first.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ready_names_the_settings_a_provider_leaves_to_the_account() {
        let memory = mvo_testkit::InMemoryPlatform::new("r");
        assert_eq!(bucket_ready_message(&memory, "b", "settings enforced"), "bucket b: settings enforced");
        #[cfg(feature = "azure")]
        {
            let config = mvo_core::ProviderConfig { region: Some("eastus".into()), ..Default::default() };
            let azure = mvo_provider_azure::AzurePlatform::new(&config).expect("Azure");
            assert_eq!(
                bucket_ready_message(&azure, "c", "created and hardened"),
                "bucket c: created and hardened; not enforced by the Azure provider, left to the account: \
                 default encryption, customer-managed keys, public access, lifecycle rules (backup expiry)"
            );
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(&[], &[Report::fail(BUCKET_READY, "Creating", "creating")], Some(1), at(100));
        let same = merge(&first, &[Report::fail(BUCKET_READY, "StillCreating", "still")], Some(1), at(200));
        assert_eq!(same[0].last_transition_time, Time(at(100)));
        assert_eq!(same[0].reason, "StillCreating");
        let flipped = merge(&same, &[Report::ok(BUCKET_READY, "BucketReady", "ok")], Some(2), at(300));
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn ready_summarises_the_first_failure() {
        let reports = [
            Report::ok(BUCKET_READY, "BucketReady", "ok"),
            Report::fail(VELERO_READY, "DeploymentUnavailable", "0/1"),
        ];
        let summary = ready(&reports);
        assert!(!summary.ok);
        assert_eq!(summary.reason, "DeploymentUnavailable");
        assert!(ready(&reports[..1]).ok);
    }

    #[test]
    fn conditions_are_ordered_by_type() {
        let merged = merge(
            &[],
            &[Report::ok(READY, "Ready", ""), Report::ok(PLATFORM_SUPPORTED, "Supported", "")],
            None,
            at(1),
        );
        let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [PLATFORM_SUPPORTED, READY]);
    }
}
