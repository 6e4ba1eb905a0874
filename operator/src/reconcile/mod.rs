//! The reconcile pipeline of SPEC section 4, one step per module:
//! validate (pure) -> build (pure); the steps that talk to the cloud and to Kubernetes join as
//! the controller lands.

pub mod build;
pub mod validate;
