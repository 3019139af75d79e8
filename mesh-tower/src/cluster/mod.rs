//! A cluster's runtime state: its endpoints' connections, its balancer, its breaker slots and
//! its outlier detection, which live across configuration versions while the cluster does.

mod in_flight;
mod outlier;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use mesh_core::{
    CircuitBreakers, Cluster, EndpointAddress, LbPolicy, Locality, Outcome, TlsMode, lb::Balancer,
};

pub(crate) use self::in_flight::InFlight;
use self::outlier::Outliers;
use crate::{
    endpoint::{ConnectionBudget, Connector, Endpoint, Pool, PoolSettings},
    rng,
    tls::{MeshTls, UpstreamConnector},
};

/// A cluster as one snapshot sees it.
#[derive(Clone, Debug)]
pub(crate) struct ClusterEntry {
    pub(crate) policy: Arc<Cluster>,
    /// The connection of each of the policy's endpoints, by the same index.
    pub(crate) connections: Arc<[Arc<Endpoint>]>,
    /// The balancer of this configuration of the cluster.
    pub(crate) balancer: Arc<Mutex<BalancerState>>,
    /// State that outlives configuration versions.
    pub(crate) state: Arc<ClusterState>,
}

/// A cluster's counters at one instant, for metrics and the admin endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClusterStats {
    pub(crate) active_requests: u64,
    pub(crate) overflows: u64,
    pub(crate) open_connections: u64,
    pub(crate) connection_overflows: u64,
    pub(crate) retries: u64,
    pub(crate) ejections: u64,
    pub(crate) endpoints: u64,
    pub(crate) ejected: u64,
    /// Outcomes outlier detection dropped because its queue was full.
    pub(crate) outcomes_dropped: u64,
}

/// A balancer and the health generation its health flags reflect.
#[derive(Debug)]
pub(crate) struct BalancerState {
    balancer: Balancer,
    generation: u64,
    /// The local workload's locality the balancer ranks endpoints by.
    locality: Option<Locality>,
}

/// Per-cluster state shared by all snapshots in which the cluster exists.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Requests in flight (the `max_requests` breaker, the retry budget).
    pub(crate) active_requests: AtomicU32,
    /// Retries in flight (the `max_retries` breaker, the retry budget).
    pub(crate) active_retries: AtomicU32,
    /// Requests waiting for a connection to be made (the `max_pending_requests` breaker).
    pub(crate) pending_requests: AtomicU32,
    /// Requests rejected by a breaker.
    pub(crate) overflows: AtomicU64,
    /// Open connections to the cluster (the `max_connections` breaker).
    pub(crate) connections: Arc<ConnectionBudget>,
    /// Retries admitted.
    pub(crate) retries: AtomicU64,
    /// Passive health: outcomes in, a health snapshot out, the detector in a task of its own.
    outliers: Outliers,
}

// === impl ClusterEntry ===

impl ClusterEntry {
    /// The cluster's counters now.
    pub(crate) fn stats(&self) -> ClusterStats {
        let s = &self.state;
        let health = s.outliers.health();
        let ejected = self
            .policy
            .endpoints
            .iter()
            .filter(|e| health.is_ejected(&e.address))
            .count();
        ClusterStats {
            active_requests: u64::from(s.active_requests.load(Ordering::Relaxed)),
            overflows: s.overflows.load(Ordering::Relaxed),
            open_connections: u64::from(s.connections.open()),
            connection_overflows: s.connections.overflows(),
            retries: s.retries.load(Ordering::Relaxed),
            ejections: s.outliers.ejections(),
            endpoints: u64::try_from(self.policy.endpoints.len()).unwrap_or(u64::MAX),
            ejected: u64::try_from(ejected).unwrap_or(u64::MAX),
            outcomes_dropped: s.outliers.dropped(),
        }
    }

    /// The entry of `policy` in a new snapshot, given the cluster's entry in the previous one.
    ///
    /// An unchanged cluster (the same policy, or an equal one, seen from the same locality)
    /// keeps its entry as it is: connections, balancer (round-robin position, hash rings)
    /// and health. A changed one keeps its state, the connections of the endpoints still
    /// there under the same TLS and pool settings, and its balancer's progress, updated for
    /// the new endpoints ([`Balancer::update`]: round robin follows its hosts, a hash ring is
    /// rebuilt only when its hosts changed).
    pub(crate) fn build(
        policy: &Arc<Cluster>,
        old: Option<&ClusterEntry>,
        tls: &MeshTls,
        connector: &Connector,
        locality: Option<Locality>,
    ) -> Self {
        match old {
            Some(old) if old.serves(policy, locality.as_ref()) => Self {
                // Equal content: the new policy's endpoints are the old ones, index for index.
                policy: policy.clone(),
                ..old.clone()
            },
            _ => Self::update(policy, old, tls, connector, locality),
        }
    }

    /// Whether this entry serves `policy` as is: the same (or an equal) policy, balanced for
    /// the same local locality.
    fn serves(&self, policy: &Arc<Cluster>, locality: Option<&Locality>) -> bool {
        // `Arc`'s equality compares pointers first, and so do the policy's shared lists.
        let b = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        b.locality.as_ref() == locality && self.policy == *policy
    }

    fn update(
        policy: &Arc<Cluster>,
        old: Option<&ClusterEntry>,
        tls: &MeshTls,
        connector: &Connector,
        locality: Option<Locality>,
    ) -> Self {
        let state: Arc<ClusterState> = old.map(|o| o.state.clone()).unwrap_or_default();
        // A connection is kept only under the same TLS and pool settings: a changed mode, trust
        // bundle or SAN matcher must not be served by a connection negotiated under the old
        // ones, and a changed limit applies to fresh connections (the old ones drain).
        let pool = PoolSettings::of(policy);
        let reusable: HashMap<&EndpointAddress, &Arc<Endpoint>> = old
            .filter(|o| o.policy.tls == policy.tls)
            .map(|o| {
                o.connections
                    .iter()
                    .filter(|c| *c.settings() == pool)
                    .map(|c| (c.address(), c))
                    .collect()
            })
            .unwrap_or_default();
        let tls_connector = (policy.tls.mode != TlsMode::Disable)
            .then(|| UpstreamConnector::new(policy.tls.clone(), tls.clone()));
        let shared = Pool::new(
            pool,
            tls_connector,
            connector.clone(),
            state.connections.clone(),
        );
        let connections: Arc<[Arc<Endpoint>]> = policy
            .endpoints
            .iter()
            .map(|e| match reusable.get(&e.address) {
                Some(kept) => Arc::clone(kept),
                None => Arc::new(Endpoint::in_pool(e.address.clone(), shared.clone())),
            })
            .collect();
        state.outliers.configure(policy);
        let health = state.outliers.health();
        let healthy = health.healthy_flags(policy);
        // The old snapshot's requests keep picking from the old balancer (its indices are
        // the old policy's); this one continues from a copy of it.
        let previous = old.map(|o| {
            let b = o.balancer.lock().unwrap_or_else(|p| p.into_inner());
            b.balancer.clone()
        });
        let balancer = match previous {
            Some(mut balancer) => {
                balancer.update(policy, &healthy, locality.as_ref());
                balancer
            }
            None => Balancer::new(policy, &healthy, locality.as_ref()),
        };
        Self {
            balancer: Arc::new(Mutex::new(BalancerState {
                balancer,
                generation: health.generation(),
                locality,
            })),
            policy: policy.clone(),
            connections,
            state,
        }
    }

    /// Picks an endpoint index with the cluster's policy, first refreshing health if an
    /// ejection or return was published since the balancer last looked. Reads the health
    /// snapshot without a lock and takes only the balancer's own lock (round-robin progress);
    /// outlier detection's timer runs in its own task.
    pub(crate) fn pick(
        &self,
        request_hash: Option<u64>,
        avoid: &[EndpointAddress],
    ) -> Option<usize> {
        let health = self.state.outliers.health();
        let mut b = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        if b.generation != health.generation() {
            let healthy = health.healthy_flags(&self.policy);
            let BalancerState {
                balancer, locality, ..
            } = &mut *b;
            balancer.update(&self.policy, &healthy, locality.as_ref());
            b.generation = health.generation();
        }
        let load = |i: usize| match (&self.policy.lb, self.connections.get(i)) {
            (LbPolicy::PeakEwma { .. }, Some(c)) => c.peak_ewma_cost(),
            (_, Some(c)) => u64::from(c.active_requests()),
            _ => u64::MAX,
        };
        let tried = |i: usize| {
            self.connections
                .get(i)
                .is_some_and(|c| avoid.contains(c.address()))
        };
        // A retry prefers an endpoint not tried yet (Envoy's previous-hosts predicate, which
        // Istio sets with up to 5 selection attempts)...
        let mut picked = b.balancer.pick(request_hash, load, rng::draw())?;
        for _ in 1..5 {
            if !tried(picked) {
                return Some(picked);
            }
            picked = b.balancer.pick(request_hash, load, rng::draw())?;
        }
        if !tried(picked) {
            return Some(picked);
        }
        drop(b);
        // ...and, unlike Envoy, does not give up after those: any healthy untried endpoint,
        // from a random start, beats a second try of one that just failed. With none left,
        // the balancer's choice stands.
        let healthy = health.healthy_flags(&self.policy);
        let n = healthy.len();
        let start = usize::try_from(rng::draw() % n.max(1) as u64).unwrap_or(0);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| healthy.get(i).copied().unwrap_or(false) && !tried(i))
            .or(Some(picked))
    }
}

// === impl ClusterState ===

impl ClusterState {
    /// Takes a request slot if the cluster is under `max_requests`.
    pub(crate) fn try_admit_request(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.try_admit(SlotKind::Request, |n| n < max)
    }

    /// Takes a pending slot (a request waiting for its endpoint's connection to be made) if the
    /// cluster is under `max_pending_requests`.
    pub(crate) fn try_admit_pending(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.try_admit(SlotKind::Pending, |n| n < max)
    }

    /// Takes a retry slot if the cluster's retry budget (or, without one, its `max_retries`
    /// threshold) allows one more retry in flight.
    pub(crate) fn try_admit_retry(self: &Arc<Self>, breakers: &CircuitBreakers) -> Option<Slot> {
        self.try_admit(SlotKind::Retry, |retries| {
            breakers.admits_retry(self.active_requests.load(Ordering::Acquire), retries)
        })
    }

    /// Increments `kind`'s counter if `admits` it; counts an overflow otherwise.
    fn try_admit(self: &Arc<Self>, kind: SlotKind, admits: impl Fn(u32) -> bool) -> Option<Slot> {
        let admitted = self
            .counter(kind)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                admits(n).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            if matches!(kind, SlotKind::Retry) {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            Some(Slot {
                state: self.clone(),
                kind,
            })
        } else {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn counter(&self, kind: SlotKind) -> &AtomicU32 {
        match kind {
            SlotKind::Request => &self.active_requests,
            SlotKind::Pending => &self.pending_requests,
            SlotKind::Retry => &self.active_retries,
        }
    }

    /// Feeds one classified outcome of `host` to outlier detection.
    pub(crate) fn record_outcome(&self, host: &EndpointAddress, outcome: Outcome) {
        self.outliers.record(host.clone(), outcome);
    }

    /// Whether outlier detection has ejected `host` now.
    pub(crate) fn is_ejected(&self, host: &EndpointAddress) -> bool {
        self.outliers.health().is_ejected(host)
    }
}

/// One of the cluster's breaker slots (a request, a pending request or a retry), held until
/// dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Arc<ClusterState>,
    kind: SlotKind,
}

#[derive(Clone, Copy, Debug)]
enum SlotKind {
    Request,
    Pending,
    Retry,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.counter(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod outlier_tests;
#[cfg(test)]
mod tests;
