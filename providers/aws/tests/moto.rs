//! The AWS provider against a real moto S3/STS server (started once per test binary): the
//! testkit contract suite, call-count budgets, recovery across clusters and regions, credentials.

mod moto {
    pub mod common;
    mod credentials;
    mod store;
}
