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
//! Every event of a reconcile goes through [`Events::publish`]; in plan mode the publisher records
//! the event in the [`Plan`] instead of posting it, so a plan never tells the cluster about things
//! it did not do.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::writer::Writer;

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
        self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
