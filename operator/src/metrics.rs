//! Prometheus metrics (SPEC 8): reconciles and their failures by category, reconcile duration,
//! cloud calls by provider/operation/outcome, bucket settings corrected, the last successful
//! bucket sync and build info. One `prometheus_client` registry with the prefix
//! `managed_velero_operator`.

use std::time::Instant;

use parking_lot::Mutex;

use k8s_openapi::jiff::Timestamp;
use mvo_core::{Platform, Setting, metering::CallCounter};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::cli::{GIT_HASH, VERSION};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabels {
    setting: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    git: String,
    provider: String,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    corrections: Family<SettingLabels, Counter>,
    last_bucket_sync: Gauge,
    cloud_calls: Family<CallLabels, Counter>,
    provider: String,
    cloud: Option<CallCounter>,
    // Scrapes sync the provider's counts into `cloud_calls` one at a time.
    sync: Mutex<()>,
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Metrics for an operator running on `platform`.
    pub fn new(platform: &dyn Platform) -> Self {
        let mut registry = Registry::with_prefix("managed_velero_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes started", reconciles.clone());
        let failures = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconcile passes by error category",
            failures.clone(),
        );
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register("reconcile_duration_seconds", "Duration of reconcile passes", duration.clone());
        let corrections = Family::<SettingLabels, Counter>::default();
        registry.register(
            "bucket_settings_corrected",
            "Bucket settings found drifted and corrected",
            corrections.clone(),
        );
        let last_bucket_sync = Gauge::default();
        registry.register(
            "last_bucket_sync_timestamp_seconds",
            "Unix time of the last successful bucket check",
            last_bucket_sync.clone(),
        );
        let cloud_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "cloud_api_calls",
            "Cloud API calls by provider, operation and outcome",
            cloud_calls.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: VERSION.into(),
                git: GIT_HASH.into(),
                provider: platform.name().into(),
            })
            .set(1);
        registry.register("build_info", "Build of the running operator", build);
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            corrections,
            last_bucket_sync,
            cloud_calls,
            provider: platform.name().into(),
            cloud: platform.call_counter(),
            sync: Mutex::new(()),
        }
    }

    /// Counts a reconcile pass; its duration is recorded when the timer is dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { metrics: self, started: Instant::now() }
    }

    /// Counts a failed pass.
    pub fn reconcile_failed(&self, category: &str) {
        self.failures.get_or_create(&CategoryLabels { category: category.into() }).inc();
    }

    /// Records a successful bucket check and the settings it corrected.
    pub fn bucket_checked(&self, corrected: &[Setting], at: Timestamp) {
        for setting in corrected {
            self.corrections.get_or_create(&SettingLabels { setting: setting.as_str().into() }).inc();
        }
        self.last_bucket_sync.set(at.as_second());
    }

    /// The metrics in Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.sync_cloud_calls();
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Brings `cloud_calls` up to the provider's counts (both only grow).
    fn sync_cloud_calls(&self) {
        let Some(cloud) = &self.cloud else { return };
        let _one_at_a_time = self.sync.lock();
        for (operation, count) in cloud.snapshot() {
            for (outcome, total) in [("success", count.calls - count.failures), ("failure", count.failures)] {
                let labels = CallLabels {
                    provider: self.provider.clone(),
                    operation: operation.clone(),
                    outcome: outcome.into(),
                };
                let counter = self.cloud_calls.get_or_create(&labels);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mvo_testkit::InMemoryPlatform;

    use super::*;

    #[test]
    fn exposes_every_spec_metric() {
        let metrics = Metrics::new(&InMemoryPlatform::new("eu-west-1"));
        drop(metrics.reconcile_started());
        metrics.reconcile_failed("Throttled");
        metrics.bucket_checked(&[Setting::Tags], Timestamp::from_second(1_700_000_000).expect("ts"));
        let text = metrics.encode().expect("encode");
        for line in [
            "managed_velero_operator_reconciles_total 1",
            r#"managed_velero_operator_reconcile_failures_total{category="Throttled"} 1"#,
            "managed_velero_operator_reconcile_duration_seconds_count 1",
            r#"managed_velero_operator_bucket_settings_corrected_total{setting="tags"} 1"#,
            "managed_velero_operator_last_bucket_sync_timestamp_seconds 1700000000",
            r#"managed_velero_operator_build_info{version=""#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn cloud_calls_follow_the_provider_counter() {
        let counter = CallCounter::new();
        let mut metrics = Metrics::new(&InMemoryPlatform::new("eu-west-1"));
        metrics.cloud = Some(counter.clone());
        counter.record("HeadBucket", false);
        counter.record("PutBucketTagging", true);
        let text = metrics.encode().expect("encode");
        assert!(text.contains(r#"operation="HeadBucket",outcome="success"} 1"#), "{text}");
        assert!(text.contains(r#"operation="PutBucketTagging",outcome="failure"} 1"#), "{text}");
        counter.record("HeadBucket", false);
        assert!(metrics.encode().expect("encode").contains(r#"operation="HeadBucket",outcome="success"} 2"#));
    }
}
