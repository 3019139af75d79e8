//! Priority levels, spill-over and panic mode: which hosts a pick may choose from.
//!
//! This follows Envoy's `LoadBalancerBase` (`recalculatePriorityLoad`,
//! `recalculatePerPriorityPanic`, `recalculateLoadInTotalPanic`), with the overprovisioning
//! factor fixed at Envoy's default of 1.4:
//!
//! 1. Each priority level's *health* is `min(100, 140 × healthy_weight / total_weight)`, in
//!    whole percent (integer arithmetic, as Envoy).
//! 2. The *normalized total availability* is `min(100, Σ health)`. Levels take load in
//!    priority order, `min(remaining, health × 100 / normalized_total)` each, so a level short
//!    of health spills its unhealthy share to the next; when the total is below 100 the loads
//!    are scaled up to sum to 100 anyway. A rounding remainder goes to the first level with
//!    health.
//! 3. A level is *in panic* when its healthy share is below the cluster's `panic_threshold`
//!    — but only while the normalized total is below 100 (if the other levels can absorb the
//!    load, nobody panics). In panic, a level balances over **all** its hosts, healthy or not,
//!    ejected or not: better to spread load over possibly-bad hosts than to crush the few good
//!    ones.
//! 4. When every level is in panic (*total panic*) the loads follow the levels' total weights
//!    instead of health. With `panic_threshold` 0 % and no health anywhere, all load goes to
//!    the first level and its (empty) healthy set: the pick fails, as Envoy's does.
//!
//! "Healthy" is a per-host flag from the caller: the control plane's health
//! ([`Endpoint::is_healthy`]) and not ejected by outlier detection; [`healthy_flags`] combines
//! the two.
//!
//! Deviations from Envoy: health and panic use endpoint **weights** where Envoy counts hosts
//! (the same thing with Istio's default weight 1; with weights, a heavy unhealthy host is a
//! bigger capacity loss than a light one, and the weights are what the control plane told us
//! capacity is). Degraded hosts are treated as unhealthy (Envoy gives them a separate, second
//! tier of load), and locality-weighted balancing within a level is not modelled yet.

use std::collections::BTreeMap;

use crate::{Endpoint, EndpointAddress, Percentage};

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// The priority levels of one cluster with their load shares and panic state, computed once
/// per host-set or health change and then read for every pick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrioritySet {
    /// Levels in ascending priority, only those with at least one host.
    levels: Vec<Level>,
}

/// One priority level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Level {
    priority: u32,
    /// All hosts of the level (indices into the caller's host list).
    hosts: Vec<usize>,
    /// Its healthy hosts.
    healthy: Vec<usize>,
    total_weight: u64,
    healthy_weight: u64,
    /// Overprovisioned health, 0..=100.
    health: u64,
    /// Share of requests, in percent; all levels sum to 100.
    load: u64,
    panic: bool,
}

/// The hosts one pick may choose from, with where they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidates<'a> {
    /// The level's position among the set's levels (0 for the lowest priority present).
    pub level: usize,
    /// The priority level chosen.
    pub priority: u32,
    /// Whether that level is in panic, so `hosts` includes unhealthy and ejected hosts.
    pub panic: bool,
    /// Indices into the caller's host list; empty when the level has no healthy host and
    /// panic is disabled (the request then fails with "no healthy upstream").
    pub hosts: &'a [usize],
}

/// Per-host health flags for [`PrioritySet::new`]: the control plane considers the endpoint
/// healthy ([`Endpoint::is_healthy`]) and outlier detection has not ejected it.
pub fn healthy_flags(
    endpoints: &[Endpoint],
    ejected: impl Fn(&EndpointAddress) -> bool,
) -> Vec<bool> {
    endpoints
        .iter()
        .map(|e| e.is_healthy() && !ejected(&e.address))
        .collect()
}

// === impl PrioritySet ===

impl PrioritySet {
    /// Groups `endpoints` by priority and computes each level's load and panic state.
    /// `healthy[i]` says whether endpoint `i` may take traffic outside panic; a missing flag
    /// counts as unhealthy.
    pub fn new(endpoints: &[Endpoint], healthy: &[bool], panic_threshold: Percentage) -> Self {
        Self::with_priorities(endpoints, |_, e| e.priority, healthy, panic_threshold)
    }

    /// Like [`new`](Self::new), with each endpoint's effective priority given by `priority`
    /// (for instance [`locality_priority`](super::locality_priority) when the cluster prefers
    /// the caller's locality).
    pub fn with_priorities(
        endpoints: &[Endpoint],
        priority: impl Fn(usize, &Endpoint) -> u32,
        healthy: &[bool],
        panic_threshold: Percentage,
    ) -> Self {
        let mut by_priority: BTreeMap<u32, Level> = BTreeMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            let p = priority(i, e);
            let level = by_priority.entry(p).or_insert_with(|| Level {
                priority: p,
                ..Level::default()
            });
            let w = u64::from(e.weight.get());
            level.hosts.push(i);
            level.total_weight += w;
            if healthy.get(i).copied().unwrap_or(false) {
                level.healthy.push(i);
                level.healthy_weight += w;
            }
        }
        let mut levels: Vec<Level> = by_priority.into_values().collect();
        for l in &mut levels {
            // total_weight > 0: every level has a host of weight ≥ 1.
            l.health = (OVERPROVISIONING * l.healthy_weight / l.total_weight.max(1)).min(100);
        }
        let normalized_total = levels.iter().map(|l| l.health).sum::<u64>().min(100);

        if normalized_total == 0 && panic_threshold == Percentage::ZERO {
            if let Some(first) = levels.first_mut() {
                first.load = 100;
            }
            return Self { levels };
        }
        for l in &mut levels {
            let share_ppm = l.healthy_weight * 1_000_000 / l.total_weight.max(1);
            l.panic = normalized_total < 100 && share_ppm < u64::from(panic_threshold.ppm());
        }
        if levels.iter().all(|l| l.panic) {
            distribute(&mut levels, |l| l.total_weight);
        } else {
            distribute(&mut levels, |l| l.health);
        }
        Self { levels }
    }

    /// `(priority, load in percent)` per level with hosts, in priority order.
    pub fn loads(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.levels
            .iter()
            .map(|l| (l.priority, u32::try_from(l.load).unwrap_or(100)))
    }

    /// Whether the level `priority` is in panic.
    pub fn is_panic(&self, priority: u32) -> bool {
        self.levels
            .iter()
            .any(|l| l.priority == priority && l.panic)
    }

    /// Chooses a level by its load share from one uniform draw (`random % 100`, as Envoy) and
    /// returns its candidates: the healthy hosts, or all hosts when the level is in panic.
    /// `None` when the cluster has no endpoints.
    pub fn choose(&self, random: u64) -> Option<Candidates<'_>> {
        let mut point = random % 100;
        let index = self
            .levels
            .iter()
            .position(|l| {
                if point < l.load {
                    return true;
                }
                point -= l.load;
                false
            })
            // Loads sum to 100, so the search always succeeds; the first level is a safe
            // answer all the same.
            .unwrap_or(0);
        self.levels().nth(index)
    }

    /// Every level's candidates, in priority order (e.g. to build one hash ring per level).
    pub fn levels(&self) -> impl Iterator<Item = Candidates<'_>> {
        self.levels.iter().enumerate().map(|(index, l)| Candidates {
            level: index,
            priority: l.priority,
            panic: l.panic,
            hosts: if l.panic { &l.hosts } else { &l.healthy },
        })
    }
}

/// Envoy's `distributeLoad`: levels take `min(remaining, avail × 100 / Σ avail)` in order
/// (Σ capped at 100 for health, so healthy-enough early levels take everything), and the
/// rounding remainder goes to the first level with availability.
fn distribute(levels: &mut [Level], availability: impl Fn(&Level) -> u64) {
    let sum: u64 = levels.iter().map(&availability).sum();
    let normalizer = if levels.iter().all(|l| l.panic) {
        sum
    } else {
        sum.min(100)
    };
    let mut remaining: u64 = 100;
    let mut first_available = None;
    for (i, l) in levels.iter_mut().enumerate() {
        let a = availability(l);
        if first_available.is_none() && a > 0 {
            first_available = Some(i);
        }
        l.load = remaining.min(a * 100 / normalizer.max(1));
        remaining -= l.load;
    }
    if let Some(l) = first_available.or(Some(0)).and_then(|i| levels.get_mut(i)) {
        l.load += remaining;
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use proptest::prelude::*;

    use super::*;
    use crate::HealthStatus;

    /// Endpoints at `priorities`, with `healthy` flags.
    fn cluster(levels: &[(u32, usize, usize)]) -> (Vec<Endpoint>, Vec<bool>) {
        let mut eps = Vec::new();
        let mut flags = Vec::new();
        for &(priority, hosts, healthy) in levels {
            for h in 0..hosts {
                let n = eps.len();
                let mut e = Endpoint::new(EndpointAddress::Socket(
                    format!("10.0.{}.{}:80", n / 200, n % 200 + 1)
                        .parse()
                        .unwrap(),
                ));
                e.priority = priority;
                eps.push(e);
                flags.push(h < healthy);
            }
        }
        (eps, flags)
    }

    fn pct(p: u32) -> Percentage {
        Percentage::from_percent(p).unwrap()
    }

    fn loads(set: &PrioritySet) -> Vec<(u32, u32)> {
        set.loads().collect()
    }

    #[test]
    fn a_healthy_first_level_takes_everything() {
        let (eps, flags) = cluster(&[(0, 3, 3), (1, 3, 3)]);
        let set = PrioritySet::new(&eps, &flags, pct(50));
        assert_eq!(loads(&set), [(0, 100), (1, 0)]);
        let c = set.choose(99).unwrap();
        assert_eq!((c.priority, c.panic, c.hosts), (0, false, &[0, 1, 2][..]));
    }

    #[test]
    fn overprovisioning_hides_small_losses_then_load_spills_to_the_next_level() {
        // 4 of 5 healthy: 140 × 0.8 = 112 → still 100 % health, nothing spills.
        let (eps, flags) = cluster(&[(0, 5, 4), (1, 5, 5)]);
        assert_eq!(
            loads(&PrioritySet::new(&eps, &flags, pct(50))),
            [(0, 100), (1, 0)]
        );
        // 3 of 5 healthy: health 84; the other 16 % go to priority 1.
        let (eps, flags) = cluster(&[(0, 5, 3), (1, 5, 5)]);
        let set = PrioritySet::new(&eps, &flags, pct(50));
        assert_eq!(loads(&set), [(0, 84), (1, 16)]);
        // Draws 0..84 land on priority 0's healthy hosts, 84..100 on priority 1.
        assert_eq!(set.choose(83).unwrap().hosts, &[0, 1, 2]);
        assert_eq!(set.choose(84).unwrap().priority, 1);
        // Levels are priorities, not positions: gaps are fine.
        let (eps, flags) = cluster(&[(2, 5, 3), (7, 5, 5)]);
        assert_eq!(
            loads(&PrioritySet::new(&eps, &flags, pct(50))),
            [(2, 84), (7, 16)]
        );
    }

    #[test]
    fn loads_are_normalized_when_total_health_is_short() {
        // Health 56 + 28 = 84 < 100: scaled to 66 + 33, remainder to the first → 67 / 33.
        // Threshold 30 %: priority 0 (40 % healthy) is fine, priority 1 (20 %) panics.
        let (eps, flags) = cluster(&[(0, 5, 2), (1, 5, 1)]);
        let set = PrioritySet::new(&eps, &flags, pct(30));
        assert_eq!(loads(&set), [(0, 67), (1, 33)]);
        assert!(!set.is_panic(0) && set.is_panic(1));
        let p1 = set.choose(99).unwrap();
        assert!(p1.panic);
        assert_eq!(p1.hosts, &[5, 6, 7, 8, 9], "panic balances over all hosts");
    }

    #[test]
    fn nobody_panics_while_the_levels_together_are_healthy_enough() {
        // Priority 0 is 10 % healthy (health 14) but priority 1 covers the rest.
        let (eps, flags) = cluster(&[(0, 10, 1), (1, 10, 10)]);
        let set = PrioritySet::new(&eps, &flags, pct(50));
        assert_eq!(loads(&set), [(0, 14), (1, 86)]);
        assert_eq!(set.choose(0).unwrap().hosts, &[0]);
        assert!(!set.is_panic(0));
    }

    #[test]
    fn total_panic_spreads_by_weight_over_all_hosts() {
        let (mut eps, flags) = cluster(&[(0, 4, 1), (1, 4, 0)]);
        eps[4].weight = NonZeroU32::new(4).unwrap(); // priority 1 weighs 7, priority 0 weighs 4
        let set = PrioritySet::new(&eps, &flags, pct(50));
        assert!(set.is_panic(0) && set.is_panic(1));
        // 400 / 11 = 36, 700 / 11 = 63, remainder 1 → 37 / 63.
        assert_eq!(loads(&set), [(0, 37), (1, 63)]);
        assert_eq!(set.choose(0).unwrap().hosts, &[0, 1, 2, 3]);
        assert_eq!(set.choose(50).unwrap().hosts, &[4, 5, 6, 7]);
    }

    #[test]
    fn without_panic_mode_an_unhealthy_cluster_has_no_candidates() {
        let (eps, flags) = cluster(&[(0, 3, 0), (1, 3, 0)]);
        let set = PrioritySet::new(&eps, &flags, Percentage::ZERO);
        assert_eq!(loads(&set), [(0, 100), (1, 0)]);
        let c = set.choose(5).unwrap();
        assert!(c.hosts.is_empty() && !c.panic);
        assert_eq!(PrioritySet::new(&[], &[], pct(50)).choose(1), None);
    }

    #[test]
    fn healthy_flags_combine_control_plane_health_and_ejection() {
        let (mut eps, _) = cluster(&[(0, 3, 3)]);
        eps[1].health = HealthStatus::Draining;
        let ejected = eps[2].address.clone();
        let flags = healthy_flags(&eps, |a| *a == ejected);
        assert_eq!(flags, [true, false, false]);
    }

    proptest! {
        /// Loads sum to 100; a level takes load only when the levels before it fall short (or
        /// in total panic); outside panic only healthy hosts are offered.
        #[test]
        fn priority_laws(
            shape in proptest::collection::vec((1usize..6, 0usize..6), 1..5),
            threshold in 0u32..=100,
            random: u64,
        ) {
            let levels: Vec<(u32, usize, usize)> = shape
                .iter()
                .enumerate()
                .map(|(p, &(hosts, healthy))| (p as u32, hosts, healthy.min(hosts)))
                .collect();
            let (eps, flags) = cluster(&levels);
            let set = PrioritySet::new(&eps, &flags, pct(threshold));
            let l = loads(&set);
            prop_assert_eq!(l.iter().map(|&(_, x)| x).sum::<u32>(), 100);
            let total_panic = set.levels.iter().all(|l| l.panic);
            if !total_panic {
                let mut health_before = 0;
                for level in &set.levels {
                    if health_before >= 100 {
                        prop_assert_eq!(level.load, 0);
                    }
                    health_before += level.health;
                }
            }
            let c = set.choose(random).unwrap();
            if !c.panic {
                prop_assert!(c.hosts.iter().all(|&i| flags[i]));
            } else {
                prop_assert!(c.hosts.iter().all(|&i| eps[i].priority == c.priority));
                prop_assert_eq!(
                    c.hosts.len(),
                    eps.iter().filter(|e| e.priority == c.priority).count()
                );
            }
        }
    }
}
