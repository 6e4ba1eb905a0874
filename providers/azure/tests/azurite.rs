//! The Azure provider against a real Azurite blob service (HTTPS, bearer tokens; started once per
//! test binary): the testkit contract suite, drift per setting, recovery, call budgets,
//! credentials and their rotation.

mod azurite {
    pub mod common;
    mod credentials;
    mod store;
}
