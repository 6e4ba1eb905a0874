//! Test support for the managed Velero operator.
//!
//! - [`contract`]: the provider contract suite, one `pub async fn` per rule declared in
//!   [`contract::CASES`] with the capabilities it needs, and [`contract::main`], the test-binary
//!   runner that reports unclaimed cases as ignored with the reason.
//! - [`memory`]: [`InMemoryPlatform`], a faithful in-memory provider that passes the whole suite;
//!   operator tests use it where cloud behaviour is not the point.
//! - [`gcs`]: an in-memory GCS bucket control plane behind the `google-cloud-storage` stub seam,
//!   for the GCP provider's tests and operator tests on GCP.
//! - [`proxy`]: [`FaultProxy`], a loopback TCP proxy that stalls or resets connections on demand
//!   (hung API server calls, cloud timeouts) and can act as an HTTPS `CONNECT` proxy.
//! - [`mvo`]: the objects the Go managed-velero-operator leaves in a cluster, for takeover tests.
//! - [`jobs`]: the Job controller and kubelet for the Velero CRD Job, which the test API server
//!   lacks.
//! - [`ScratchDir`]: a temporary directory removed when dropped.

pub mod contract;
pub mod env;
pub mod gcs;
pub mod jobs;
pub mod memory;
pub mod mvo;
pub mod proxy;
pub mod scratch;

pub use contract::{Backdoor, Fault, Harness};
pub use memory::{InMemoryCloud, InMemoryPlatform};
pub use proxy::{FaultProxy, Mode as ProxyMode};
pub use scratch::ScratchDir;
