//! Test support for the managed Velero operator.
//!
//! - [`contract`]: the provider contract suite, one `pub async fn` per rule, and the
//!   [`contract_suite!`] macro that turns it into one `#[tokio::test]` per case for a provider.
//! - [`memory`]: [`InMemoryPlatform`], a faithful in-memory provider that passes the whole suite;
//!   operator tests use it where cloud behaviour is not the point.

pub mod contract;
pub mod env;
pub mod memory;

pub use contract::{Backdoor, Fault, Harness};
pub use memory::{InMemoryCloud, InMemoryPlatform};
