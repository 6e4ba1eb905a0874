//! The controller: which watch events start a reconcile, and the loop that runs them.
//!
//! Triggers are filtered so that only changes that matter start a reconcile: for the
//! VeleroInstall, a new generation or a new `reconcile-requested-at` annotation (our own status
//! writes do not count); for owned objects, anything but their status (Velero writes its BSL
//! status every minute) and deletion. Everything else is the resync the reconcile schedules.

use std::{
    collections::HashMap,
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Service};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self},
        watcher::{self, Event},
    },
};
use serde_json::Value;
use tracing::{debug, warn};

use crate::{
    crd::VeleroInstall,
    reconcile::{self, Context, bucket::RECONCILE_REQUESTED_AT, build},
};

/// The kinds the operator owns in its namespace.
pub fn owned_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<Service>(&()),
        build::backup_storage_location(),
        build::volume_snapshot_location(),
        build::credentials_request(),
        build::service_monitor(),
    ]
}

/// What of a VeleroInstall starts a reconcile: its generation and the on-demand annotation.
fn install_trigger(vi: &VeleroInstall) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    (vi.metadata.generation, vi.annotations().get(RECONCILE_REQUESTED_AT)).hash(&mut hasher);
    Some(hasher.finish())
}

/// Status fields that change what the operator reports: a Deployment becoming available, the
/// CRD Job finishing. Everything else in status (Velero's BSL sync times) is ignored.
const READINESS_FIELDS: [&str; 3] = ["availableReplicas", "succeeded", "failed"];

/// A fingerprint of everything in an object except bookkeeping metadata and status churn.
pub fn spec_fingerprint(object: &DynamicObject) -> u64 {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        if let Some(Value::Object(status)) = map.get_mut("status") {
            status.retain(|k, _| READINESS_FIELDS.contains(&k.as_str()));
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(k.as_str(), "labels" | "annotations" | "ownerReferences" | "deletionTimestamp")
            });
        }
    }
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Watch events of owned objects, reduced to the objects whose non-status content changed or
/// that were deleted.
fn owned_trigger(
    client: Client,
    namespace: &str,
    kind: &ApiResource,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, kind);
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher(api).filter_map(move |event| {
        let keep = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                let key = object.uid().unwrap_or_default();
                let fingerprint = spec_fingerprint(&object);
                (seen.insert(key, fingerprint) != Some(fingerprint)).then_some(Ok(object))
            }
            Ok(Event::Delete(object)) => {
                seen.remove(&object.uid().unwrap_or_default());
                Some(Ok(object))
            }
            Ok(Event::Init | Event::InitDone) => None,
            Err(err) => Some(Err(err)),
        };
        std::future::ready(keep)
    })
}

fn watcher<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// How long a graceful shutdown waits for the first list of VeleroInstalls and for in-flight
/// reconciles before giving up on them (Kubernetes' default termination grace is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the controller for the VeleroInstalls of `namespace` until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: &str,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), namespace);
    let (reader, writer) = reflector::store();
    let main = watcher(installs)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(install_trigger, Default::default());
    let shutdown = shutdown.shared();
    // kube-runtime holds reconciles until the store has seen its first list; cutting the watch
    // before that would leave the controller waiting forever, so let the list finish first.
    let graceful = {
        let (reader, shutdown) = (reader.clone(), shutdown.clone());
        async move {
            shutdown.await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, reader.wait_until_ready()).await;
        }
    };
    let mut controller = Controller::for_stream(main, reader);
    for kind in owned_kinds() {
        controller = controller.owns_stream_with(owned_trigger(client.clone(), namespace, &kind), kind);
    }
    let running = controller
        .graceful_shutdown_on(graceful)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => debug!(object = %object.name, ?action, "reconciled"),
                Err(err) => warn!(error = %reconcile::error_chain(&err), "reconcile failed"),
            }
        });
    let deadline = async move {
        shutdown.await;
        tokio::time::sleep(2 * SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = running => {}
        _ = deadline => warn!("reconciles still running {:?} after shutdown was requested; stopping anyway", 2 * SHUTDOWN_GRACE),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("object")
    }

    #[test]
    fn status_and_bookkeeping_do_not_change_the_fingerprint() {
        let base = json!({
            "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "resourceVersion": "1", "labels": {"component": "velero"}},
            "spec": {"provider": "aws"},
            "status": {"phase": "Available", "lastSyncedTime": "2026-11-26T10:00:00Z"}
        });
        let mut churned = base.clone();
        churned["metadata"]["resourceVersion"] = json!("2");
        // Velero's BSL CRD has no status subresource: its status writes bump the generation too.
        churned["metadata"]["generation"] = json!(2);
        churned["status"]["lastSyncedTime"] = json!("2026-11-26T10:01:00Z");
        assert_eq!(spec_fingerprint(&object(base.clone())), spec_fingerprint(&object(churned)));
        let mut finished = base.clone();
        finished["status"]["succeeded"] = json!(1);
        assert_ne!(spec_fingerprint(&object(base.clone())), spec_fingerprint(&object(finished)));
        let mut edited = base.clone();
        edited["spec"]["provider"] = json!("gcp");
        assert_ne!(spec_fingerprint(&object(base)), spec_fingerprint(&object(edited)));
    }
}
