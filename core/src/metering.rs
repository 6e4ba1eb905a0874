//! [`CallCounter`]: counts a provider's cloud calls per operation, split into reads and writes.
//!
//! Providers feed it from one decorator each (an SDK interceptor, a client wrapper) so no call
//! site carries metering code; metrics, the benchmark and tests read it ("5 reads, 0 writes").

use std::{collections::BTreeMap, sync::Arc};

use parking_lot::{Mutex, MutexGuard};

/// Counts of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCount {
    /// Requests sent.
    pub calls: u64,
    /// Requests sent whose operation ended in an error (service error, timeout, cut connection).
    pub failures: u64,
}

/// Whether an operation only reads: its name starts with `Get`, `Head` or `List`.
pub fn is_read(operation: &str) -> bool {
    ["Get", "Head", "List"].iter().any(|p| operation.starts_with(p))
}

/// Cloud calls by operation name (`HeadBucket`, `PutBucketTagging`, `UpdateBucket`, ...).
///
/// Cheap to clone; clones share the counts. Reads are told apart by [`is_read`]; every other
/// operation is a write.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<String, OperationCount>>>,
}

impl CallCounter {
    /// A counter with no calls.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, OperationCount>> {
        self.counts.lock()
    }

    fn entry(&self, operation: &str, change: impl FnOnce(&mut OperationCount)) {
        let mut counts = self.lock();
        match counts.get_mut(operation) {
            Some(count) => change(count),
            None => change(counts.entry(operation.to_owned()).or_default()),
        }
    }

    /// Records that a request for `operation` was sent.
    pub fn record_sent(&self, operation: &str) {
        self.entry(operation, |c| c.calls += 1);
    }

    /// Records that a sent request for `operation` failed.
    pub fn record_failure(&self, operation: &str) {
        self.entry(operation, |c| c.failures += 1);
    }

    /// Records a completed request for `operation` and whether it failed.
    pub fn record(&self, operation: &str, failed: bool) {
        self.entry(operation, |c| {
            c.calls += 1;
            c.failures += u64::from(failed);
        });
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        let counter = CallCounter::new();
        for op in ["HeadBucket", "GetBucketTagging", "ListBuckets", "PutBucketTagging"] {
            counter.record(op, false);
        }
        counter.record_sent("CreateBucket");
        counter.record_failure("CreateBucket");
        assert_eq!((counter.reads(), counter.writes(), counter.successful_writes()), (3, 2, 1));
        assert_eq!(counter.calls("PutBucketTagging"), 1);
        assert_eq!(counter.calls("PutBucketEncryption"), 0);
        assert_eq!(counter.clone().failures(), 1);
        assert_eq!(counter.snapshot().len(), 5);
    }
}
