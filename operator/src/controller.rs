//! The controller: which watch events start a reconcile, and the loop that runs them.
//!
//! Triggers are filtered so that only changes that matter start a reconcile: for the
//! VeleroInstall, a new generation or a new `reconcile-requested-at` annotation (our own status
//! writes do not count); for owned objects, anything but their status (Velero writes its BSL
//! status every minute) and deletion; for the credential operator's secret for Velero (watched
//! by name), any change, so its creation and rotations reach Velero's credentials at once.
//! Everything else is the resync the reconcile schedules.

use std::{
    collections::HashMap,
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef},
        utils::Backoff,
        watcher::{self, Event},
    },
};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::{
    crd::{RECONCILED_NAME, VeleroInstall},
    health::WATCH_TIMEOUT_SECS,
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
///
/// A deletion while the watch was down (API server restart, network cut) arrives as no event at
/// all: the watcher re-lists and the object is simply not in the list. So the objects seen before
/// a re-list and missing from it are emitted as deleted, which starts a reconcile of their owner.
/// `synced` is called once, after the first list.
fn owned_trigger(
    client: Client,
    namespace: &str,
    kind: &ApiResource,
    synced: impl FnOnce() + Send + 'static,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, kind);
    let mut seen = Seen::default();
    let mut synced = Some(synced);
    watcher(api)
        .map(move |event| {
            if matches!(event, Ok(Event::InitDone))
                && let Some(synced) = synced.take()
            {
                synced();
            }
            futures_util::stream::iter(seen.on_event(event))
        })
        .flatten()
}

/// What an owned-kind watch has seen: fingerprints, and the objects' metadata to emit them again
/// if they vanish during a re-list.
#[derive(Default)]
struct Seen {
    objects: HashMap<String, (u64, DynamicObject)>,
    /// UIDs in the list being received since the last `Init`.
    listed: std::collections::HashSet<String>,
}

impl Seen {
    /// What a watch event of an owned kind triggers: the changed, deleted or vanished objects.
    fn on_event(
        &mut self,
        event: Result<Event<DynamicObject>, watcher::Error>,
    ) -> Vec<Result<DynamicObject, watcher::Error>> {
        match event {
            Ok(Event::Apply(object)) => self.changed(object).map(Ok).into_iter().collect(),
            Ok(Event::InitApply(object)) => {
                self.listed.insert(object.uid().unwrap_or_default());
                self.changed(object).map(Ok).into_iter().collect()
            }
            Ok(Event::Delete(object)) => {
                self.objects.remove(&object.uid().unwrap_or_default());
                vec![Ok(object)]
            }
            Ok(Event::Init) => {
                self.listed.clear();
                Vec::new()
            }
            Ok(Event::InitDone) => self.vanished().into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        }
    }

    /// Records `object`; returns it if its content changed since last seen.
    fn changed(&mut self, object: DynamicObject) -> Option<DynamicObject> {
        let key = object.uid().unwrap_or_default();
        let fingerprint = spec_fingerprint(&object);
        // Only the metadata is kept: it carries the owner reference the controller maps by.
        let skeleton = DynamicObject {
            types: object.types.clone(),
            metadata: object.metadata.clone(),
            data: Value::Null,
        };
        let previous = self.objects.insert(key, (fingerprint, skeleton));
        (previous.map(|(f, _)| f) != Some(fingerprint)).then_some(object)
    }

    /// Objects seen before the last re-list and absent from it, forgotten and returned.
    fn vanished(&mut self) -> Vec<DynamicObject> {
        let gone: Vec<String> = self.objects.keys().filter(|k| !self.listed.contains(*k)).cloned().collect();
        gone.iter().filter_map(|k| self.objects.remove(k)).map(|(_, object)| object).collect()
    }
}

/// The credential operator's secret for Velero, watched by name (the role grants list and watch
/// on that name only): each change starts a reconcile of the VeleroInstall, which reports
/// CredentialsReady and re-renders a provider's derived credentials file from it.
fn credentials_secret_trigger(
    client: Client,
    namespace: &str,
) -> impl Stream<Item = Result<Secret, watcher::Error>> + Send + 'static {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let by_name = format!("metadata.name={}", mvo_core::velero::VELERO_CREDENTIALS_SECRET);
    watcher::watcher(api, watcher::Config::default().fields(&by_name).timeout(WATCH_TIMEOUT_SECS))
        .backoff(WatchBackoff::default())
        .touched_objects()
}

fn watcher<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // The server ends each watch before the client's read timeout could break a quiet one.
    watcher::watcher(api, watcher::Config::default().timeout(WATCH_TIMEOUT_SECS))
        .backoff(WatchBackoff::default())
}

/// First wait before a failed watch is retried.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between watch retries. kube-runtime's default grows to 30 s, so after a
/// minute-long API server outage the watches came back up to half a minute late (and drifted
/// objects stayed unrepaired that long); one operator per cluster retrying every 5 s is no load.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Watch retry delays: 0.5 s doubling to 5 s, each spread by up to +50% so the watches of one
/// process do not retry in step; back to the start after any successful event.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: WATCH_RETRY_MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = current.saturating_mul(2).min(WATCH_RETRY_MAX);
        let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
        Some(current.mul_f64(1.0 + 0.5 * fraction))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

/// How long a graceful shutdown waits for the first list of VeleroInstalls and for in-flight
/// reconciles before giving up on them (Kubernetes' default termination grace is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Watches the VeleroInstalls of `namespace` and what they own, and reconciles them until
/// `shutdown` completes.
pub async fn watch_and_reconcile(
    ctx: Arc<Context>,
    namespace: &str,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), namespace);
    let (reader, writer) = reflector::store();
    let kinds = owned_kinds();
    // Ready once the VeleroInstall store and every owned kind have seen a first list.
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(kinds.len() + 1));
    let synced = {
        let (pending, health) = (pending.clone(), ctx.health.clone());
        move || {
            if pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                health.synced();
                info!("caches synced");
            }
        }
    };
    let mut main_synced = Some(synced.clone());
    let main = watcher(installs)
        .inspect(move |event| {
            if matches!(event, Ok(Event::InitDone))
                && let Some(synced) = main_synced.take()
            {
                synced();
            }
        })
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
    for kind in kinds {
        let trigger = owned_trigger(client.clone(), namespace, &kind, synced.clone());
        controller = controller.owns_stream_with(trigger, kind);
    }
    let install = ObjectRef::<VeleroInstall>::new(RECONCILED_NAME).within(namespace);
    controller = controller
        .watches_stream(credentials_secret_trigger(client.clone(), namespace), move |_| {
            Some(install.clone())
        });
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

    #[test]
    fn watch_retries_stay_within_seconds_and_restart_after_success() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(12).collect();
        assert!(delays[0] >= WATCH_RETRY_MIN && delays[0] <= WATCH_RETRY_MIN.mul_f64(1.5), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= WATCH_RETRY_MAX.mul_f64(1.5)), "capped: {delays:?}");
        assert!(delays[11] >= WATCH_RETRY_MAX, "grows to the cap: {delays:?}");
        backoff.reset();
        assert!(backoff.next().is_some_and(|d| d <= WATCH_RETRY_MIN.mul_f64(1.5)), "reset to the start");
    }

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("object")
    }

    fn owned(name: &str) -> DynamicObject {
        object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "ownerReferences": [{
                "apiVersion": "managed.openshift.io/v1alpha2", "kind": "VeleroInstall",
                "name": "cluster", "uid": "vi", "controller": true}]},
            "spec": {"replicas": 1}
        }))
    }

    fn names(emitted: Vec<Result<DynamicObject, watcher::Error>>) -> Vec<String> {
        emitted.into_iter().map(|o| o.expect("object").name_any()).collect()
    }

    #[test]
    fn an_object_missing_from_a_relist_triggers_its_owner() {
        let mut seen = Seen::default();
        let list = |seen: &mut Seen, objects: &[&str]| {
            let mut emitted = names(seen.on_event(Ok(Event::Init)));
            for name in objects {
                emitted.extend(names(seen.on_event(Ok(Event::InitApply(owned(name))))));
            }
            emitted.extend(names(seen.on_event(Ok(Event::InitDone))));
            emitted
        };
        assert_eq!(list(&mut seen, &["velero", "other"]), ["velero", "other"], "first list: all new");
        assert!(list(&mut seen, &["velero", "other"]).is_empty(), "unchanged re-list: nothing");
        // Deleted while the watch was down: no Delete event, just absent from the re-list.
        let vanished = seen.on_event(Ok(Event::Init));
        assert!(vanished.is_empty());
        assert!(seen.on_event(Ok(Event::InitApply(owned("other")))).is_empty());
        let emitted: Vec<DynamicObject> =
            seen.on_event(Ok(Event::InitDone)).into_iter().map(|o| o.expect("object")).collect();
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].name_any(), "velero");
        let owner = &emitted[0].metadata.owner_references.as_ref().expect("owner kept")[0];
        assert_eq!(owner.kind, "VeleroInstall", "the owner reference maps the trigger to the install");
        assert!(list(&mut seen, &["other"]).is_empty(), "reported once");
        assert_eq!(list(&mut seen, &["other", "velero"]), ["velero"], "re-created: new again");
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
