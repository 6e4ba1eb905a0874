//! [`Metering`]: the one decorator that counts the provider's cloud calls, per operation, split
//! into reads and writes.
//!
//! It is an aws-smithy interceptor registered on the provider's S3 and STS clients, so every
//! request is counted where it leaves the process and no call site carries metering code. Metrics
//! and the steady-state benchmark read it; tests assert "5 reads, 0 writes" and "exactly one Put".

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef},
};
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

pub use mvo_core::metering::{CallCounter, OperationCount, is_read};

/// The aws-smithy interceptor feeding a [`CallCounter`] (a newtype: the trait and the counter
/// both live in other crates).
#[derive(Debug, Clone)]
pub(crate) struct Metering(pub(crate) CallCounter);

/// Marks an execution whose request was sent, so a failure before sending is not counted.
#[derive(Debug, Clone)]
struct Sent;

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

fn operation(cfg: &ConfigBag) -> &str {
    cfg.load::<Metadata>().map_or("Unknown", Metadata::name)
}

impl Intercept for Metering {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.record_sent(operation(cfg));
        cfg.interceptor_state().store_put(Sent);
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let failed = matches!(context.output_or_error(), Some(Err(_)));
        if failed && cfg.load::<Sent>().is_some() {
            self.0.record_failure(operation(cfg));
        }
        Ok(())
    }
}
