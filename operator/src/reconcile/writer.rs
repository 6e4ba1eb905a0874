//! The one seam between a reconcile and the Kubernetes writes it makes: [`Writer`]. Every write
//! (apply, CRD apply, Job create/delete, status patch, annotations and field hand-over, events)
//! is a closure handed to [`Writer::write`]; live, it runs; in plan mode it never runs and the
//! description is recorded in the [`Plan`] instead. So plan mode is read-only by construction,
//! and no step carries a plan parameter of its own.

use std::{future::Future, sync::Arc};

use super::plan::Plan;

/// Where a reconcile's writes go.
#[derive(Debug, Clone, Default)]
pub enum Writer {
    /// To the API server.
    #[default]
    Live,
    /// Nowhere: each write is described in the plan.
    Plan(Arc<Plan>),
}

impl Writer {
    /// True in plan mode (steps that always look at the cloud in a plan ask this; none writes
    /// differently because of it).
    pub fn is_plan(&self) -> bool {
        matches!(self, Writer::Plan(_))
    }

    /// The plan being recorded, if any.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        match self {
            Writer::Live => None,
            Writer::Plan(plan) => Some(plan),
        }
    }

    /// Makes the write `write` (live), or records `describe` without running it (plan; `None`
    /// records nothing, for bookkeeping a person need not see). `Ok(None)` means "not written".
    pub async fn write<T, E, F>(
        &self,
        describe: impl FnOnce() -> Option<String>,
        write: impl FnOnce() -> F,
    ) -> Result<Option<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        match self {
            Writer::Live => write().await.map(Some),
            Writer::Plan(plan) => {
                if let Some(change) = describe() {
                    plan.record(format!("kubernetes: {change}"));
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plan_mode_records_and_never_writes() {
        let plan = Arc::new(Plan::default());
        let writer = Writer::Plan(plan.clone());
        let written: Result<Option<u8>, ()> =
            writer.write(|| Some("create Thing/a".into()), || async { panic!("wrote in plan mode") }).await;
        assert_eq!(written, Ok(None));
        let silent: Result<Option<u8>, ()> = writer.write(|| None, || async { Ok(1) }).await;
        assert_eq!(silent, Ok(None));
        assert_eq!(plan.changes(), ["kubernetes: create Thing/a"]);
        let live: Result<Option<u8>, ()> = Writer::Live.write(|| None, || async { Ok(7) }).await;
        assert_eq!(live, Ok(Some(7)));
    }
}
