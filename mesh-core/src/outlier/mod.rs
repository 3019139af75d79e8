//! Outlier detection (Envoy's passive health checking) as a pure state machine.
//!
//! One [`OutlierDetector`] per cluster, fed the way quinn-proto's connection is: the data plane
//! reports each attempt's classified [`Outcome`] with [`OutlierDetector::record`], calls
//! [`OutlierDetector::on_timeout`] when [`OutlierDetector::poll_timeout`] says so, and applies
//! the [`OutlierEvent`]s it gets back (take a host out of, or put it back into, the balancer's
//! healthy set — see [`lb::healthy_flags`](crate::lb::healthy_flags)). The detector reads no
//! clock and draws no random numbers: `now` and a uniform `random` are arguments.
//!
//! # Semantics (Envoy's)
//!
//! - **Consecutive rules** eject at once, in [`record`](OutlierDetector::record). Per host
//!   there are three counters, all reset by a success:
//!   - *5xx*: every [`Outcome::is_5xx`];
//!   - *gateway failure*: every [`Outcome::is_gateway_error`]; another 5xx resets it;
//!   - *local origin*: connect failures, resets, refused streams and timeouts
//!     ([`Origin::Local`]), only with `split_external_local_origin_errors`. Then local-origin
//!     failures count **only** here, and any response (the connection worked) resets it.
//!     Without the split they count as 5xx *and* gateway failures, and the local-origin rule
//!     is not used (Envoy's behaviour).
//!
//!   When a counter reaches its rule's threshold the rule triggers and the counter restarts
//!   (so a host that keeps failing triggers again every `threshold` failures); the ejection is
//!   enforced with the rule's `enforcing` chance.
//! - **Every `interval`** ([`on_timeout`](OutlierDetector::on_timeout)): hosts that were in
//!   service for the whole interval just ended have their ejection multiplier decreased by one
//!   (Envoy's `checkHostForUneject`); then the statistical rules run over the interval's
//!   counts, and the counts restart.
//!   - *Success rate*: hosts with ≥ `request_volume` requests are valid; with at least
//!     `minimum_hosts` of them, a host is ejected when its success rate is below
//!     `mean − stdev × stdev_factor / 1000` (population standard deviation, rates in percent).
//!   - *Failure percentage*: with at least `minimum_hosts` valid hosts, a host is ejected when
//!     its failure share is **at or above** `threshold` (Envoy uses `>=`).
//!
//!   With the split, both only see responses (external origin); Envoy's separate local-origin
//!   success-rate rules are not in the model.
//! - **Ejection length**: the host's multiplier goes up by one per ejection (while the length
//!   is below the cap) and the ejection lasts
//!   [`OutlierDetection::ejection_duration`]`(multiplier)`: `base × multiplier`, capped at
//!   `max(max_ejection_time, base)`. A host flapping in and out is ejected for longer and
//!   longer; one that stays healthy earns its way back down, one interval at a time.
//!
//! # Laws
//!
//! These hold after every call, and are property-tested with random event sequences:
//!
//! 1. **Cap.** At most [`OutlierDetection::max_ejected_hosts`] hosts are ejected at once:
//!    by default Envoy's rule, `max(1, floor(max_ejection_percent × hosts))`; with
//!    [`EjectionCap::Strict`](crate::EjectionCap::Strict), `floor(max_ejection_percent ×
//!    hosts)` and never all of them. An ejection over the cap is skipped (the counter still
//!    restarts). [`set_hosts`](OutlierDetector::set_hosts) restores the cap when the host count
//!    shrinks, returning the hosts whose ejection ends soonest.
//! 2. **Growth.** Every ejection lasts `ejection_duration(k)` for some `k ≥ 1`: at least
//!    `base_ejection_time`, at most the cap. If a host is ejected again less than one
//!    `interval` after it returned (so no whole interval in service has taken a step off), the
//!    new ejection is longer than the previous one, or both are at the cap.
//! 3. **Return.** A host ejected `until` a deadline is back in service after any
//!    `on_timeout(now)` with `now ≥ until`, and never returns earlier through `on_timeout`.
//! 4. **Deadline.** `poll_timeout()` is the earliest of the next interval tick and every
//!    ejected host's `until` (`None` only without hosts). After `new(now)` or
//!    `on_timeout(now)` it is strictly later than `now` (given a non-zero
//!    `base_ejection_time`); a `record(now)` only ever moves it to a deadline after `now`. It
//!    can only lie in the past when the caller let it pass without calling `on_timeout`: then
//!    call it at once.
//!
//! # Deviations from Envoy, and why
//!
//! - **The percent cap** follows Envoy by default: one host is ejected whatever the
//!   percentage, and at 100 % every host can be. The strict rule of earlier versions (never
//!   above the percentage, one host always in service) is kept as an explicit option,
//!   [`EjectionCap::Strict`](crate::EjectionCap::Strict): in a proxyless mesh every client runs
//!   its own detector over a small view of the fleet, where "at least one" can be a large share.
//! - **Returns happen at `until`**, not at the first interval tick after it (Envoy checks only
//!   at ticks, so its ejections last up to one interval longer). Because a host can now
//!   return between ticks, the multiplier steps down only after a *whole* interval in service,
//!   which is what Envoy's "not ejected at this tick" amounts to when returns happen at ticks.
//! - **No ejection-time jitter** (`max_ejection_time_jitter` is not in the model).
//! - **Outcomes for an ejected host are ignored**, and ejection clears the host's counters: a
//!   returning host starts clean instead of being judged on requests that were already in
//!   flight when it was ejected.
//! - **Statistical ejections go worst first** (lowest success rate), so when the cap cuts the
//!   list short it is the worst hosts that are out. Envoy goes in host order.
//! - **A late tick does not catch up**: the next tick is `now + interval` from the tick
//!   actually run. A zero `interval` is treated as 1 ms.

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
    time::{Duration, Instant},
};

use hashbrown::HashTable;

use crate::{EndpointAddress, Origin, Outcome, OutlierDetection, lb::Draws};

/// The outlier detector of one cluster, over hosts identified by `K` (by default their
/// address).
#[derive(Clone, Debug)]
pub struct OutlierDetector<K = EndpointAddress> {
    config: OutlierDetection,
    /// Hosts in the order last given to `set_hosts`.
    hosts: Vec<Host<K>>,
    /// Key → position in `hosts`: positions only, hashed by the host's key, so a key is held
    /// once (in `hosts`) and an entry costs 4 bytes, not a cloned key.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Number of hosts with an ejection.
    ejected: usize,
    /// When the next interval evaluation is due.
    next_tick: Instant,
    /// When the current interval started (the last evaluation, or creation).
    interval_start: Instant,
}

/// Why a host was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectionReason {
    /// `consecutive_5xx`.
    Consecutive5xx,
    /// `consecutive_gateway_failure`.
    ConsecutiveGatewayFailure,
    /// `consecutive_local_origin_failure`.
    ConsecutiveLocalOriginFailure,
    /// The success-rate rule.
    SuccessRate,
    /// The failure-percentage rule.
    FailurePercentage,
}

/// A change the data plane applies to its balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutlierEvent<K = EndpointAddress> {
    /// Take `host` out of service until `until` (the detector will say when it returns).
    Ejected {
        /// The host.
        host: K,
        /// The rule that ejected it.
        reason: EjectionReason,
        /// When the ejection ends.
        until: Instant,
    },
    /// Put `host` back into service.
    Returned {
        /// The host.
        host: K,
    },
}

/// Per-host state.
#[derive(Clone, Debug)]
struct Host<K> {
    key: K,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// Requests counted in the current interval.
    requests: u64,
    /// Of which succeeded.
    successes: u64,
    /// When the current ejection ends; `None` when in service.
    ejected_until: Option<Instant>,
    /// Envoy's ejection-time backoff: ejection `k` lasts `ejection_duration(k)`.
    multiplier: u32,
    /// When the host last returned to service.
    returned_at: Option<Instant>,
}

// === impl OutlierDetector ===

impl<K: Clone + Eq + Hash> OutlierDetector<K> {
    /// A detector without hosts; the first interval ends at `now + interval`.
    pub fn new(config: OutlierDetection, now: Instant) -> Self {
        let next_tick = after(now, interval(&config));
        Self {
            config,
            hosts: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            ejected: 0,
            next_tick,
            interval_start: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierDetection {
        &self.config
    }

    /// Replaces the host set. Hosts that stay keep their counters, ejection and multiplier;
    /// new hosts start in service; a repeated key counts once. If fewer hosts now make the
    /// current ejections exceed the cap (law 1), the hosts whose ejections end soonest return
    /// at `now`, and those returns are the events.
    pub fn set_hosts(
        &mut self,
        hosts: impl IntoIterator<Item = K>,
        now: Instant,
    ) -> Vec<OutlierEvent<K>> {
        let mut old: HashMap<K, Host<K>> =
            self.hosts.drain(..).map(|h| (h.key.clone(), h)).collect();
        self.index.clear();
        for key in hosts {
            if self.position(&key).is_some() {
                continue;
            }
            let Ok(position) = u32::try_from(self.hosts.len()) else {
                break;
            };
            let host = old.remove(&key).unwrap_or_else(|| Host::new(key));
            let hash = self.hasher.hash_one(&host.key);
            let (hosts, hasher) = (&self.hosts, &self.hasher);
            self.index.insert_unique(hash, position, |&i| {
                hosts.get(i as usize).map_or(0, |h| hasher.hash_one(&h.key))
            });
            self.hosts.push(host);
        }
        // Pushing grew `hosts` to the next power of two; a cluster of 10 would hold 16 hosts'
        // room for as long as it lives.
        self.hosts.shrink_to_fit();
        self.ejected = self
            .hosts
            .iter()
            .filter(|h| h.ejected_until.is_some())
            .count();

        let mut events = Vec::new();
        while self.ejected > self.max_ejected() {
            let soonest = self
                .hosts
                .iter_mut()
                .filter(|h| h.ejected_until.is_some())
                .min_by_key(|h| h.ejected_until);
            let Some(host) = soonest else { break };
            host.ejected_until = None;
            host.returned_at = Some(now);
            self.ejected -= 1;
            events.push(OutlierEvent::Returned {
                host: host.key.clone(),
            });
        }
        events
    }

    /// Records the outcome of one attempt to `host` at `now`. Consecutive-failure rules eject
    /// at once; `random` decides their `enforcing` chance. Unknown and ejected hosts are
    /// ignored.
    pub fn record(
        &mut self,
        host: &K,
        outcome: Outcome,
        now: Instant,
        random: u64,
    ) -> Option<OutlierEvent<K>> {
        let i = self.position(host)?;
        let split = self.config.split_external_local_origin_errors;
        let h = self.hosts.get_mut(i)?;
        if h.ejected_until.is_some() {
            return None;
        }
        if split && outcome.origin() == Origin::Local {
            h.consecutive_local += 1;
        } else {
            if split {
                // A response means the connection worked.
                h.consecutive_local = 0;
            }
            h.requests += 1;
            if outcome.is_5xx() {
                h.consecutive_5xx += 1;
                if outcome.is_gateway_error() {
                    h.consecutive_gateway += 1;
                } else {
                    h.consecutive_gateway = 0;
                }
            } else {
                h.successes += 1;
                h.consecutive_5xx = 0;
                h.consecutive_gateway = 0;
            }
        }

        // Envoy checks the gateway rule before the 5xx rule; the local-origin rule only
        // counts with the split.
        let mut draws = Draws::new(random);
        let rules = [
            (
                EjectionReason::ConsecutiveGatewayFailure,
                self.config.consecutive_gateway_failure,
            ),
            (EjectionReason::Consecutive5xx, self.config.consecutive_5xx),
            (
                EjectionReason::ConsecutiveLocalOriginFailure,
                self.config
                    .consecutive_local_origin_failure
                    .filter(|_| split),
            ),
        ];
        for (reason, rule) in rules {
            let Some(rule) = rule else { continue };
            let h = self.hosts.get_mut(i)?;
            let counter = match reason {
                EjectionReason::ConsecutiveGatewayFailure => &mut h.consecutive_gateway,
                EjectionReason::ConsecutiveLocalOriginFailure => &mut h.consecutive_local,
                _ => &mut h.consecutive_5xx,
            };
            if *counter < rule.threshold.max(1) {
                continue;
            }
            *counter = 0;
            let enforced = rule.enforcing.sample(draws.next().unwrap_or(random));
            if enforced && let Some(event) = self.eject(i, reason, now) {
                return Some(event);
            }
        }
        None
    }

    /// Handles the deadline: returns hosts whose ejection has ended and, when the interval is
    /// due, decreases the multipliers of hosts in service, runs the success-rate and
    /// failure-percentage rules (`random` decides their `enforcing` chances) and restarts the
    /// interval's counts. Calling it early is harmless.
    pub fn on_timeout(&mut self, now: Instant, random: u64) -> Vec<OutlierEvent<K>> {
        let mut events = Vec::new();
        for h in &mut self.hosts {
            if h.ejected_until.is_some_and(|until| until <= now) {
                h.ejected_until = None;
                h.returned_at = Some(now);
                self.ejected -= 1;
                events.push(OutlierEvent::Returned {
                    host: h.key.clone(),
                });
            }
        }
        if now < self.next_tick {
            return events;
        }
        self.next_tick = after(now, interval(&self.config));
        let interval_start = std::mem::replace(&mut self.interval_start, now);

        // A step off the multiplier for every host in service for the whole interval.
        for h in &mut self.hosts {
            let whole_interval = h.returned_at.is_none_or(|t| t <= interval_start);
            if h.ejected_until.is_none() && whole_interval {
                h.multiplier = h.multiplier.saturating_sub(1);
            }
        }

        let mut draws = Draws::new(random);
        for (i, reason) in self.statistical_outliers() {
            let enforcing = match reason {
                EjectionReason::SuccessRate => self.config.success_rate.map(|r| r.enforcing),
                _ => self.config.failure_percentage.map(|r| r.enforcing),
            };
            let enforced = enforcing.is_some_and(|e| e.sample(draws.next().unwrap_or(random)));
            let in_service = self.hosts.get(i).is_some_and(|h| h.ejected_until.is_none());
            if enforced
                && in_service
                && let Some(event) = self.eject(i, reason, now)
            {
                events.push(event);
            }
        }

        for h in &mut self.hosts {
            h.requests = 0;
            h.successes = 0;
        }
        events
    }

    /// When [`on_timeout`](Self::on_timeout) should next be called: the earliest of the next
    /// interval tick and every ejection's end. `None` when there are no hosts.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.hosts.is_empty() {
            return None;
        }
        let returns = self.hosts.iter().filter_map(|h| h.ejected_until);
        Some(returns.fold(self.next_tick, Instant::min))
    }

    /// Whether `host` is ejected.
    pub fn is_ejected(&self, host: &K) -> bool {
        self.position(host)
            .and_then(|i| self.hosts.get(i))
            .is_some_and(|h| h.ejected_until.is_some())
    }

    /// The hosts ejected now, in host order.
    pub fn ejected_hosts(&self) -> impl Iterator<Item = &K> {
        self.hosts
            .iter()
            .filter(|h| h.ejected_until.is_some())
            .map(|h| &h.key)
    }

    /// The number of hosts ejected now.
    pub fn ejected_count(&self) -> usize {
        self.ejected
    }

    /// The number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The position of `host` in `hosts`.
    fn position(&self, host: &K) -> Option<usize> {
        let hash = self.hasher.hash_one(host);
        let hosts = &self.hosts;
        let found = self.index.find(hash, |&i| {
            hosts.get(i as usize).is_some_and(|h| h.key == *host)
        });
        found.map(|&i| i as usize)
    }

    /// The most hosts that may be ejected at once (law 1).
    fn max_ejected(&self) -> usize {
        self.config.max_ejected_hosts(self.hosts.len())
    }

    /// Ejects host `i` at `now` if the cap allows it.
    fn eject(&mut self, i: usize, reason: EjectionReason, now: Instant) -> Option<OutlierEvent<K>> {
        if self.ejected + 1 > self.max_ejected() {
            return None;
        }
        let cap = self
            .config
            .max_ejection_time
            .max(self.config.base_ejection_time);
        let config = &self.config;
        let h = self.hosts.get_mut(i)?;
        if h.multiplier == 0 || config.ejection_duration(h.multiplier) < cap {
            h.multiplier = h.multiplier.saturating_add(1);
        }
        let until = after(now, config.ejection_duration(h.multiplier));
        h.ejected_until = Some(until);
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        h.consecutive_local = 0;
        h.requests = 0;
        h.successes = 0;
        self.ejected += 1;
        Some(OutlierEvent::Ejected {
            host: h.key.clone(),
            reason,
            until,
        })
    }

    /// The hosts the statistical rules would eject this interval, success-rate outliers first,
    /// each list worst first.
    fn statistical_outliers(&self) -> Vec<(usize, EjectionReason)> {
        let mut out = Vec::new();
        // (host, success rate in percent), hosts in service only.
        let rates = |volume: u32| -> Vec<(usize, f64)> {
            self.hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.ejected_until.is_none() && h.requests >= u64::from(volume))
                .filter(|(_, h)| h.requests > 0)
                .map(|(i, h)| (i, 100.0 * h.successes as f64 / h.requests as f64))
                .collect()
        };

        if let Some(rule) = self.config.success_rate {
            let valid = rates(rule.request_volume);
            if !valid.is_empty() && valid.len() >= rule.minimum_hosts as usize {
                let n = valid.len() as f64;
                let mean = valid.iter().map(|(_, r)| r).sum::<f64>() / n;
                let variance = valid.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
                let threshold =
                    mean - variance.sqrt() * f64::from(rule.stdev_factor_milli) / 1000.0;
                let mut below: Vec<(usize, f64)> =
                    valid.into_iter().filter(|(_, r)| *r < threshold).collect();
                below.sort_by(|a, b| a.1.total_cmp(&b.1));
                out.extend(
                    below
                        .into_iter()
                        .map(|(i, _)| (i, EjectionReason::SuccessRate)),
                );
            }
        }

        if let Some(rule) = self.config.failure_percentage {
            let valid = rates(rule.request_volume);
            if !valid.is_empty() && valid.len() >= rule.minimum_hosts as usize {
                let mut above: Vec<(usize, f64)> = valid
                    .into_iter()
                    .filter(|&(i, _)| {
                        self.hosts.get(i).is_some_and(|h| {
                            // failures / requests ≥ threshold, in exact integer arithmetic.
                            let failures = u128::from(h.requests - h.successes);
                            failures * 1_000_000
                                >= u128::from(rule.threshold.ppm()) * u128::from(h.requests)
                        })
                    })
                    .collect();
                above.sort_by(|a, b| a.1.total_cmp(&b.1));
                out.extend(
                    above
                        .into_iter()
                        .map(|(i, _)| (i, EjectionReason::FailurePercentage)),
                );
            }
        }
        out
    }
}

// === impl Host ===

impl<K> Host<K> {
    fn new(key: K) -> Self {
        Self {
            key,
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            consecutive_local: 0,
            requests: 0,
            successes: 0,
            ejected_until: None,
            multiplier: 0,
            returned_at: None,
        }
    }
}

/// The evaluation interval; zero would make the detector spin, so it is at least 1 ms.
fn interval(config: &OutlierDetection) -> Duration {
    config.interval.max(Duration::from_millis(1))
}

/// `now + d`, saturating at `now` plus the largest representable offset (unreachable with any
/// real configuration: `Instant` spans centuries).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into())))
        .unwrap_or(now)
}
