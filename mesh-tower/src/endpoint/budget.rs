//! The cluster's count of open connections, behind Envoy's `max_connections` breaker.
//!
//! Every connection counts from the moment its connect starts until its socket closes, whether
//! it takes requests or drains the last ones after being retired. Over the threshold, a request
//! that needs a new connection waits for one to close (Envoy queues it as pending; the pending
//! breaker and the route's timeout bound the wait), except on an endpoint that has no connection
//! at all: Envoy always gives a host the load balancer picked one connection, so an endpoint is
//! never unreachable because others hold the budget. Either way the overflow is counted
//! (`upstream_cx_overflow`).

use std::sync::{
    Arc,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

use tokio::sync::Notify;

/// Open connections to one cluster's endpoints, shared by every configuration version of the
/// cluster (a connection made under an old version still counts until it closes).
#[derive(Debug, Default)]
pub(crate) struct ConnectionBudget {
    open: AtomicU32,
    overflows: AtomicU64,
    /// Woken whenever a connection closes, for requests waiting for a slot.
    closed: Notify,
}

/// One open connection in the cluster's and its endpoint's counts, until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    budget: Arc<ConnectionBudget>,
    endpoint_open: Arc<AtomicU32>,
}

// === impl ConnectionBudget ===

impl ConnectionBudget {
    /// Takes a slot for a new connection to an endpoint with `endpoint_open` connections, if
    /// the cluster has fewer than `max` open, or regardless when the endpoint has none. Counts
    /// an overflow when at or over `max`.
    pub(crate) fn try_open(
        self: &Arc<Self>,
        max: u32,
        endpoint_open: &Arc<AtomicU32>,
    ) -> Option<ConnectionSlot> {
        let under = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !under {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            if endpoint_open.load(Ordering::Acquire) > 0 {
                return None;
            }
            self.open.fetch_add(1, Ordering::AcqRel);
        }
        endpoint_open.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot {
            budget: self.clone(),
            endpoint_open: endpoint_open.clone(),
        })
    }

    /// Connections open now, draining ones included.
    pub(crate) fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// New connections that found the cluster at its threshold, ever.
    pub(crate) fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Resolves when a connection of the cluster closes. Enable it (`Notified::enable`) before
    /// looking at the count, so a close between the look and the wait is not missed.
    pub(crate) fn closed(&self) -> tokio::sync::futures::Notified<'_> {
        self.closed.notified()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.endpoint_open.fetch_sub(1, Ordering::AcqRel);
        self.budget.open.fetch_sub(1, Ordering::AcqRel);
        self.budget.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_connection_gets_one_over_the_threshold() {
        let budget = Arc::new(ConnectionBudget::default());
        let a = Arc::new(AtomicU32::new(0));
        let b = Arc::new(AtomicU32::new(0));
        let first = budget.try_open(1, &a).expect("under the threshold");
        assert!(budget.try_open(1, &a).is_none(), "a has one: it waits");
        let forced = budget
            .try_open(1, &b)
            .expect("b has none: Envoy gives it one");
        assert_eq!((budget.open(), budget.overflows()), (2, 2));
        drop(first);
        drop(forced);
        assert_eq!(budget.open(), 0);
        assert_eq!(a.load(Ordering::Relaxed) + b.load(Ordering::Relaxed), 0);
        assert!(budget.try_open(1, &a).is_some(), "a slot freed by a close");
    }
}
