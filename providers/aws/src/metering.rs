//! [`CallCounter`]: the one decorator that counts the provider's cloud calls, per operation, split
//! into reads and writes.
//!
//! It is an aws-smithy interceptor registered on the provider's S3 and STS clients, so every
//! request is counted where it leaves the process and no call site carries metering code. Metrics
//! and the steady-state benchmark read it; tests assert "5 reads, 0 writes" and "exactly one Put".

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef},
};
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// Counts of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCount {
    /// Requests sent.
    pub calls: u64,
    /// Requests sent whose operation ended in an error (service error, timeout, cut connection).
    pub failures: u64,
}

/// Counts cloud calls by operation name (`HeadBucket`, `PutBucketTagging`, `AssumeRoleWithWebIdentity`).
///
/// Cheap to clone; clones share the counts. A read is an operation named `Get*`, `Head*` or
/// `List*`; every other operation is a write.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, OperationCount>>>,
}

/// Whether an operation only reads.
pub fn is_read(operation: &str) -> bool {
    ["Get", "Head", "List"].iter().any(|p| operation.starts_with(p))
}

impl CallCounter {
    /// A counter with no calls.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, OperationCount>> {
        // Counting must never take the provider down: a poisoned map is still a usable map.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests sent for `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().get(operation).map_or(0, |c| c.calls)
    }

    /// Read requests sent.
    pub fn reads(&self) -> u64 {
        self.sum(|op, c| is_read(op).then_some(c.calls))
    }

    /// Write requests sent, whether or not the cloud accepted them.
    pub fn writes(&self) -> u64 {
        self.sum(|op, c| (!is_read(op)).then_some(c.calls))
    }

    /// Write requests the cloud accepted: writes that may have changed something.
    pub fn successful_writes(&self) -> u64 {
        self.sum(|op, c| (!is_read(op)).then_some(c.calls - c.failures))
    }

    /// Requests that ended in an error.
    pub fn failures(&self) -> u64 {
        self.sum(|_, c| Some(c.failures))
    }

    /// Every operation called so far with its counts.
    pub fn snapshot(&self) -> BTreeMap<String, OperationCount> {
        self.lock().clone()
    }

    fn sum(&self, pick: impl Fn(&str, &OperationCount) -> Option<u64>) -> u64 {
        self.lock().iter().filter_map(|(op, c)| pick(op, c)).sum()
    }

    fn record(&self, operation: &str, change: impl FnOnce(&mut OperationCount)) {
        let mut counts = self.lock();
        match counts.get_mut(operation) {
            Some(count) => change(count),
            None => change(counts.entry(operation.to_owned()).or_default()),
        }
    }
}

/// Marks an execution whose request was sent, so a failure before sending is not counted.
#[derive(Debug, Clone)]
struct Sent;

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

fn operation(cfg: &ConfigBag) -> &str {
    cfg.load::<Metadata>().map_or("Unknown", Metadata::name)
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.record(operation(cfg), |c| c.calls += 1);
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
            self.record(operation(cfg), |c| c.failures += 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        let counter = CallCounter::new();
        for op in ["HeadBucket", "GetBucketTagging", "ListBuckets", "PutBucketTagging", "CreateBucket"] {
            counter.record(op, |c| c.calls += 1);
        }
        counter.record("CreateBucket", |c| c.failures += 1);
        assert_eq!((counter.reads(), counter.writes(), counter.successful_writes()), (3, 2, 1));
        assert_eq!(counter.calls("PutBucketTagging"), 1);
        assert_eq!(counter.calls("PutBucketEncryption"), 0);
        assert_eq!(counter.clone().failures(), 1);
    }
}
