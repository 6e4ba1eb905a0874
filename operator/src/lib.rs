//! The managed Velero operator: Kubernetes wiring around the cloud providers of `mvo-core`.
//!
//! Module map: [`cli`] (flags), [`crd`] (the VeleroInstall API), [`infrastructure`] (cluster facts),
//! [`providers`] (which clouds are linked), [`startup`] (facts -> provider, CRD probe),
//! [`controller`] and [`reconcile`] (the work), [`metrics`], [`http`] (metrics and probes),
//! [`health`] (deadlines, readiness and liveness),
//! [`leader`] (Lease election), [`mvo_lock`] (waiting for the Go MVO's lock), [`telemetry`] (logs),
//! [`app`] (the subcommands).

pub mod app;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod health;
pub mod http;
pub mod images;
pub mod infrastructure;
pub mod leader;
pub mod metrics;
pub mod mvo_lock;
pub mod providers;
pub mod reconcile;
pub mod startup;
pub mod telemetry;
