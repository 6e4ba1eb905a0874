//! Events that tell the current facts: a thin layer over kube's [`Recorder`].
//!
//! kube-runtime's `Recorder` aggregates by (type, reason, action, reporter, regarding, related):
//! the note is not part of its key, so a second `BucketCreated` for a new bucket would only bump
//! the series count of the first event and leave the old bucket name as the only record. Here
//! each (type, reason, action, regarding) remembers the note it last published and the recorder
//! that published it: the same note again is aggregated by that recorder as a series, a new note
//! gets a fresh recorder and so a new Event carrying it. Only the latest note per key is kept, so
//! memory stays bounded by the number of distinct reasons.
//!
//! The announcements of a pass (bucket, CRDs, objects) are here too, each one event per new fact.
//!
//! Every event of a reconcile goes through [`Events::publish`]; in plan mode the publisher records
//! the event in the [`Plan`] instead of posting it, so a plan never tells the cluster about things
//! it did not do.

use std::{collections::HashMap, sync::Arc};

use parking_lot::{Mutex, MutexGuard};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::writer::Writer;
use super::{Context, apply, apply::Applied, crds::CrdsOutcome};
use crate::crd::VeleroInstall;
use kube::Resource;
use tracing::{info, warn};

/// (type, reason, action, regarding namespace, name, uid).
type Key = (String, String, String, Option<String>, Option<String>, Option<String>);
/// Per key: the note last published and the recorder aggregating its repeats.
type Latest = HashMap<Key, (Option<String>, Recorder)>;

/// Publishes events; shared by every reconcile of one controller.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    latest: Arc<Mutex<Latest>>,
    /// Where events go: posted, or described in the plan.
    writer: Writer,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("reporter", &self.reporter).finish_non_exhaustive()
    }
}

impl Events {
    /// Events reported as `reporter`, written through `writer`.
    pub fn new(client: Client, reporter: Reporter, writer: Writer) -> Self {
        Events { client, reporter, latest: Arc::default(), writer }
    }

    fn latest(&self) -> MutexGuard<'_, Latest> {
        self.latest.lock()
    }

    /// Publishes `event` about `regarding`: aggregated with the previous one only when its note is
    /// the same.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let type_ = match event.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key: Key = (
            type_.to_owned(),
            event.reason.clone(),
            event.action.clone(),
            regarding.namespace.clone(),
            regarding.name.clone(),
            regarding.uid.clone(),
        );
        let recorder = {
            let mut latest = self.latest();
            match latest.get(&key) {
                Some((note, recorder)) if *note == event.note => recorder.clone(),
                _ => {
                    let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                    latest.insert(key, (event.note.clone(), recorder.clone()));
                    recorder
                }
            }
        };
        let describe = || {
            let note = event.note.as_deref().unwrap_or_default();
            Some(format!("event {type_} {}: {note}", event.reason))
        };
        self.writer.write(describe, || recorder.publish(event, regarding)).await.map(drop)
    }
}

pub(super) async fn publish(
    ctx: &Context,
    vi: &VeleroInstall,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event =
        Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(err) = ctx.events.publish(&event, &vi.object_ref(&())).await {
        warn!(error = %err, reason, "could not publish event");
    }
}

/// One event per new fact about the CRDs: output refused, another installer's CRDs found.
pub(super) async fn announce_crds(ctx: &Context, vi: &VeleroInstall, crds: &CrdsOutcome) {
    match crds {
        CrdsOutcome::Refused { message, first: true } => {
            publish(ctx, vi, EventType::Warning, "VeleroCRDsRefused", "ApplyCRDs", message.clone()).await;
        }
        CrdsOutcome::Applied { foreign, foreign_changed: true } if !foreign.is_empty() => {
            let note =
                format!("Velero CRDs managed by another installer were left alone: {}", foreign.join(", "));
            publish(ctx, vi, EventType::Warning, "VeleroCRDsManagedElsewhere", "ApplyCRDs", note).await;
        }
        _ => {}
    }
}

pub(super) async fn announce_objects(
    ctx: &Context,
    vi: &VeleroInstall,
    applied: &[(String, apply::Outcome)],
) {
    let with = |outcome: Applied| -> Vec<&str> {
        applied.iter().filter(|(_, a)| a.applied == outcome).map(|(o, _)| o.as_str()).collect()
    };
    let taken_over = with(Applied::TakenOver);
    if !taken_over.is_empty() {
        let note = format!(
            "took over {} from the previous operator: field ownership handed over, foreign controller references replaced",
            taken_over.join(", ")
        );
        publish(ctx, vi, EventType::Normal, "VeleroObjectsTakenOver", "Apply", note).await;
    }
    for (object, outcome) in applied {
        if let Some((before, after)) = &outcome.images {
            let note =
                format!("{object}: images {} -> {} (one rollout)", before.join(", "), after.join(", "));
            info!(%object, ?before, ?after, "Velero images changed");
            publish(ctx, vi, EventType::Normal, "VeleroImageChanged", "Apply", note).await;
        }
    }
    let (installed, restored) = (with(Applied::Created), with(Applied::Corrected));
    if !installed.is_empty() {
        let note = format!("created {}", installed.join(", "));
        publish(ctx, vi, EventType::Normal, "VeleroInstalled", "Apply", note).await;
    }
    if !restored.is_empty() {
        let note = format!("restored {}", restored.join(", "));
        publish(ctx, vi, EventType::Normal, "VeleroObjectRestored", "Apply", note).await;
    }
}

pub(super) async fn announce_bucket(
    ctx: &Context,
    vi: &VeleroInstall,
    name: &str,
    report: &mvo_core::BucketReport,
    recreated_missing: bool,
    recovered: bool,
) {
    if recreated_missing {
        let note = format!("bucket {name} was missing (deleted out of band) and has been created again");
        publish(ctx, vi, EventType::Warning, "BucketMissing", "EnsureBucket", note).await;
    } else if report.created {
        publish(
            ctx,
            vi,
            EventType::Normal,
            "BucketCreated",
            "EnsureBucket",
            format!("created bucket {name}"),
        )
        .await;
    }
    if recovered {
        let note = format!("adopted bucket {name}, found by this cluster's owner tags");
        publish(ctx, vi, EventType::Normal, "BucketRecovered", "EnsureBucket", note).await;
    }
    if !report.corrected.is_empty() {
        let settings: Vec<&str> = report.corrected.iter().map(|s| s.as_str()).collect();
        let note = format!("corrected drifted settings of bucket {name}: {}", settings.join(", "));
        info!(bucket = name, settings = ?settings, "bucket settings corrected");
        publish(ctx, vi, EventType::Normal, "BucketSettingCorrected", "EnsureBucket", note).await;
    }
}
