//! A cluster's outlier detection, kept off the request path: responses queue their classified
//! outcomes, a per-cluster task owns the detector's timer, and the endpoints' health is
//! published as a snapshot the balancer reads without a lock.
//!
//! This is how Envoy runs it (one detector per cluster on the main thread, fed by the workers,
//! woken by an interval timer, ejections pushed to the workers) and what grpc-go's
//! `outlierdetection` balancer and linkerd's `gate` do: the request path does cheap, lock-free
//! work and a machine elsewhere decides.
//!
//! - **Outcomes.** Each outcome goes into the cluster's bounded queue with `try_send`, in the
//!   order responses end, so the consecutive-failure rules see the true sequence. A full queue
//!   drops the outcome and counts it ([`Outliers::dropped`]): detection is a heuristic, and a
//!   request never waits for it. A success only queues; the task is woken when the queue fills
//!   past a quarter of its capacity, so a busy cluster hands its successes over in batches.
//! - **Failures apply at once.** A failure (a 5xx or a local-origin outcome: the only outcomes
//!   that can eject) takes the detector's lock and applies the queue, then itself. A
//!   consecutive-failure ejection is therefore in the health snapshot before the next pick,
//!   as the synchronous detector's was, on any runtime; the lock is held for the few
//!   microseconds of that work and is never taken by a pick or a success. (Queuing a failure
//!   for the task instead would let a multi-threaded caller send more requests to a host
//!   already past its threshold.)
//! - **Timer.** The task sleeps until the detector's [`poll_timeout`]
//!   (`OutlierDetector::poll_timeout`): the next interval tick or the end of an ejection. An
//!   ejected endpoint returns on time with no traffic at all, and the statistical rules run at
//!   each interval, not at the first request after it.
//! - **Health.** Each change (an ejection, a return, a publish) stores a new [`Health`]: the
//!   ejected addresses and a generation the balancer compares with the one it was built for.
//!
//! The task is spawned on the first outcome, not when the cluster is built: a `Mesh` may be
//! built outside a tokio runtime, and an outcome comes from a request, which runs inside one.
//! A cluster without outlier detection queues nothing and has no task. The task ends when the
//! cluster's state is dropped (the cluster is gone from every snapshot and its last request
//! has ended). If it dies with its runtime instead, the next outcome, or the next read of the
//! health while an endpoint is ejected, spawns another on the runtime at hand.
//!
//! [`poll_timeout`]: mesh_core::OutlierDetector::poll_timeout

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use arc_swap::{ArcSwap, Guard};
use mesh_core::{Cluster, EndpointAddress, Origin, Outcome, OutlierDetector, OutlierEvent};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use crate::rng;

/// Outcomes a cluster queues before it drops them.
pub(super) const QUEUE: usize = 1024;

/// Queued outcomes past which a success wakes the task.
const WAKE_AT: usize = QUEUE / 4;

/// The endpoints outlier detection has ejected, at one instant.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Bumped on every change, so a balancer knows when to refresh.
    generation: u64,
    ejected: HashSet<EndpointAddress>,
}

/// A cluster's outlier detection as the request path sees it: a queue for outcomes and the
/// health snapshot. Dropping it ends the cluster's task.
#[derive(Debug, Default)]
pub(crate) struct Outliers {
    shared: Arc<Shared>,
    /// The outcome queue, made on the first outcome (a cluster without traffic keeps none).
    queue: OnceLock<mpsc::Sender<(EndpointAddress, Outcome)>>,
}

/// What the request path, the publisher and the task share.
#[derive(Debug, Default)]
struct Shared {
    /// Whether the cluster has outlier detection: outcomes are queued only then.
    detecting: AtomicBool,
    /// Taken by the task, by publishes and by a failed response; never by a pick or a
    /// success.
    machine: Mutex<Machine>,
    health: ArcSwap<Health>,
    /// Wakes the task: a filling queue, a publish, the end.
    wake: Notify,
    /// Whether the task runs; cleared when it ends, e.g. with its runtime.
    spawned: AtomicBool,
    closed: AtomicBool,
    /// Endpoints ejected, ever.
    ejections: AtomicU64,
    /// Outcomes dropped because the queue was full.
    dropped: AtomicU64,
}

/// The detector with what it needs to publish health.
#[derive(Debug, Default)]
struct Machine {
    detector: Option<OutlierDetector>,
    /// The queue's receiving end, drained with `try_recv` only: no waker is ever registered,
    /// so queuing an outcome never schedules the task.
    outcomes: Option<mpsc::Receiver<(EndpointAddress, Outcome)>>,
}

// === impl Health ===

impl Health {
    /// Whether outlier detection has ejected `host`.
    pub(crate) fn is_ejected(&self, host: &EndpointAddress) -> bool {
        !self.ejected.is_empty() && self.ejected.contains(host)
    }

    /// The generation this snapshot was published as.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// `healthy[i]`: the control plane says endpoint `i` is healthy and outlier detection has
    /// not ejected it.
    pub(crate) fn healthy_flags(&self, policy: &Cluster) -> Vec<bool> {
        policy
            .endpoints
            .iter()
            .map(|e| e.is_healthy() && !self.is_ejected(&e.address))
            .collect()
    }
}

// === impl Outliers ===

impl Outliers {
    /// The endpoints' health now; lock-free. While an endpoint is ejected this also makes
    /// sure a task will return it (its first one died with a runtime that was shut down).
    pub(crate) fn health(&self) -> Guard<Arc<Health>> {
        let health = self.shared.health.load();
        if !health.ejected.is_empty() && !self.shared.spawned.load(Ordering::Relaxed) {
            self.spawn();
        }
        health
    }

    /// Endpoints ejected, ever.
    pub(crate) fn ejections(&self) -> u64 {
        self.shared.ejections.load(Ordering::Relaxed)
    }

    /// Outcomes dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues one classified outcome of `host` (see the module docs). Takes no lock for a
    /// success; a failure applies the queue and itself under the detector's lock.
    pub(crate) fn record(&self, host: EndpointAddress, outcome: Outcome) {
        let shared = &self.shared;
        if !shared.detecting.load(Ordering::Relaxed) {
            return;
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            shared.lock().outcomes = Some(rx);
            tx
        });
        if outcome.is_5xx() || outcome.origin() == Origin::Local {
            // After what is queued, so the detector sees the outcomes in order.
            shared.apply(&mut shared.lock(), Some((host, outcome)));
        } else {
            if queue.try_send((host, outcome)).is_err() {
                // Full: the receiver lives as long as `shared`, so it is never closed.
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if queue.capacity() < QUEUE - WAKE_AT {
                shared.wake.notify_one();
            }
        }
        if !shared.spawned.load(Ordering::Relaxed) {
            self.spawn();
        }
    }

    /// Spawns the task if there is a runtime to run it (else the next outcome tries again).
    fn spawn(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.shared.spawned.swap(true, Ordering::AcqRel) {
            runtime.spawn(run(Running(self.shared.clone())));
        }
    }

    /// Applies `policy`'s outlier detection settings and endpoints: the detector (and its
    /// ejections) is kept across a change of endpoints under the same settings; new settings
    /// start a fresh detector. Publishes the health that results.
    pub(crate) fn configure(&self, policy: &Cluster) {
        let shared = &self.shared;
        let now = Instant::now().into_std();
        let mut machine = shared.lock();
        // Outcomes queued so far were judged under the previous settings and endpoints.
        shared.apply(&mut machine, None);
        let hosts = || policy.endpoints.iter().map(|e| e.address.clone());
        match (&policy.outlier, machine.detector.as_mut()) {
            (None, _) => machine.detector = None,
            (Some(config), Some(detector)) if detector.config() == config => {
                let events = detector.set_hosts(hosts(), now);
                events.iter().for_each(|e| shared.on_event(e));
            }
            (Some(config), _) => {
                let mut detector = OutlierDetector::new(config.clone(), now);
                detector.set_hosts(hosts(), now);
                machine.detector = Some(detector);
            }
        }
        shared
            .detecting
            .store(policy.outlier.is_some(), Ordering::Relaxed);
        shared.publish(&machine);
        drop(machine);
        // The deadline may have moved.
        shared.wake.notify_one();
    }
}

impl Drop for Outliers {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies every queued outcome, in order, then `last`; publishes health if it changed.
    fn apply(&self, machine: &mut Machine, last: Option<(EndpointAddress, Outcome)>) {
        let Machine {
            detector, outcomes, ..
        } = machine;
        let queued = std::iter::from_fn(|| outcomes.as_mut()?.try_recv().ok());
        let now = Instant::now().into_std();
        let mut changed = false;
        for (host, outcome) in queued.chain(last) {
            let event = detector
                .as_mut()
                .and_then(|d| d.record(&host, outcome, now, rng::draw()));
            if let Some(event) = event {
                self.on_event(&event);
                changed = true;
            }
        }
        if changed {
            self.publish(machine);
        }
    }

    /// Applies the queue, then the detector's timer if it is due. Returns the next deadline.
    fn tick(&self) -> Option<Instant> {
        let mut machine = self.lock();
        self.apply(&mut machine, None);
        let now = Instant::now().into_std();
        let detector = machine.detector.as_mut()?;
        if detector.poll_timeout().is_some_and(|due| due <= now) {
            let events = detector.on_timeout(now, rng::draw());
            if !events.is_empty() {
                events.iter().for_each(|e| self.on_event(e));
                self.publish(&machine);
            }
        }
        let due = machine.detector.as_ref()?.poll_timeout()?;
        Some(Instant::from_std(due))
    }

    /// Stores the health the detector gives the cluster's endpoints now.
    fn publish(&self, machine: &Machine) {
        let ejected = match &machine.detector {
            Some(d) if d.ejected_count() > 0 => d.ejected_hosts().cloned().collect(),
            _ => HashSet::new(),
        };
        let generation = self.health.load().generation.wrapping_add(1);
        self.health.store(Arc::new(Health {
            generation,
            ejected,
        }));
    }

    /// Logs an outlier event and counts ejections.
    fn on_event(&self, event: &OutlierEvent) {
        match event {
            OutlierEvent::Ejected {
                host,
                reason,
                until,
            } => {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%host, ?reason, ?until, "endpoint ejected by outlier detection");
            }
            OutlierEvent::Returned { host } => {
                tracing::info!(%host, "endpoint returned from outlier ejection");
            }
        }
    }
}

/// The task's hold on the shared state. Clears `spawned` however the task ends — even
/// dropped unpolled by a runtime shutting down — so the next outcome or pick spawns another.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.spawned.store(false, Ordering::Release);
    }
}

/// The cluster's task: applies queued outcomes when woken and the detector's timer when due,
/// until the cluster's state is dropped.
async fn run(running: Running) {
    let shared = &running.0;
    while !shared.closed.load(Ordering::Acquire) {
        match shared.tick() {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
