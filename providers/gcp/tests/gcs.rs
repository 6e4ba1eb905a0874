//! The GCP provider against the testkit's in-memory GCS control plane, through the real
//! `StorageControl` client built on its stub: the contract suite, update masks and call counts,
//! the 409 decision, recovery across clusters and locations, and credentials.

mod gcs {
    pub mod common;
    mod credentials;
    mod store;
    mod strictness;
}
