//! Schedule TTLs: finds Velero Schedules whose backups would outlive the bucket's lifecycle
//! expiry. The lifecycle rule deletes `backups/` objects after `backupRetentionDays` whatever
//! Velero's TTL says, so such backups would vanish early (SPEC 13). Read-only.

use std::time::Duration;

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

use super::{Error, validate::parse_duration};

/// A Schedule whose backups outlive the lifecycle expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongLivedSchedule {
    /// The Schedule's name.
    pub name: String,
    /// Its backup TTL.
    pub ttl: Duration,
}

/// Velero's backup TTL for a Schedule whose template sets none (`--default-backup-ttl`, 30 days).
pub const VELERO_DEFAULT_TTL: Duration = Duration::from_secs(720 * 3600);

/// Velero's Go duration output (`720h0m0s`) parsed; fractional seconds are not used by TTLs.
/// A Schedule without a TTL keeps its backups for Velero's default.
fn ttl_of(schedule: &DynamicObject) -> Option<Duration> {
    match schedule.data["spec"]["template"]["ttl"].as_str() {
        None => Some(VELERO_DEFAULT_TTL),
        Some(raw) => parse_duration(raw),
    }
}

async fn list(client: &Client, namespace: &str) -> Result<Vec<DynamicObject>, Error> {
    let kind = ApiResource::from_gvk(&GroupVersionKind::gvk("velero.io", "v1", "Schedule"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind);
    match api.list(&Default::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(source) => Err(Error::Read { what: "velero.io Schedules".into(), source }),
    }
}

/// The Schedule whose backups Velero keeps longest, with that TTL: the retention in force that
/// the bucket's lifecycle expiry must not undercut. `None` without Schedules (or their CRD).
pub async fn longest(client: &Client, namespace: &str) -> Result<Option<LongLivedSchedule>, Error> {
    Ok(list(client, namespace)
        .await?
        .iter()
        .filter_map(|s| ttl_of(s).map(|ttl| LongLivedSchedule { name: s.name_any(), ttl }))
        .max_by_key(|s| s.ttl))
}

/// The Schedules in `namespace` whose TTL exceeds `retention_days`. A cluster without the
/// Schedule CRD has none.
pub async fn outliving(
    client: &Client,
    namespace: &str,
    retention_days: u32,
) -> Result<Vec<LongLivedSchedule>, Error> {
    let schedules = list(client, namespace).await?;
    let retention = Duration::from_secs(u64::from(retention_days) * 24 * 3600);
    Ok(schedules
        .iter()
        .filter_map(|s| {
            ttl_of(s).filter(|ttl| *ttl > retention).map(|ttl| LongLivedSchedule { name: s.name_any(), ttl })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn velero_ttls_parse() {
        let schedule: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "daily"},
            "spec": {"schedule": "0 1 * * *", "template": {"ttl": "2400h0m0s"}}
        }))
        .expect("schedule");
        assert_eq!(ttl_of(&schedule), Some(Duration::from_secs(2400 * 3600)));
        let mut without: DynamicObject = schedule.clone();
        without.data["spec"]["template"] = json!({});
        assert_eq!(ttl_of(&without), Some(VELERO_DEFAULT_TTL));
    }
}
