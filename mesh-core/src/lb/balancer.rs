//! One cluster's balancer: priority levels, panic mode and the cluster's policy, in one pick.
//!
//! The data plane keeps one [`Balancer`] per cluster (per worker, if it shards), rebuilds it
//! with [`Balancer::update`] when the cluster's endpoints change or a host's health does (an
//! outlier event, a control-plane health change), and calls [`Balancer::pick`] per request.
//! Updating keeps the round-robin progress when the endpoint list is unchanged, so an ejection
//! does not restart the rotation.
//!
//! Random input: one `u64` per pick. It chooses the priority level and feeds the policy's
//! draw (via [`Draws`]). With ring hash, the request hash — not the random draw — also
//! chooses the level, as Envoy does, so a session stays on its level as long as the loads do
//! not change.
//!
//! `PeakEwma` is balanced here as power of two choices over the caller's `load`: pass the
//! peak-EWMA cost (latency estimate × (active + 1), scaled to an integer) as the load.

use std::{collections::HashMap, sync::Arc};

use super::{
    Draws, PrioritySet, Ring, WeightedRoundRobin, locality_priority, pick_least_request,
    pick_weighted_random,
};
use crate::{Cluster, Endpoint, EndpointAddress, LbPolicy, Locality};

/// The balancing state of one cluster.
#[derive(Clone, Debug)]
pub struct Balancer {
    policy: LbPolicy,
    endpoints: Arc<[Endpoint]>,
    priorities: PrioritySet,
    round_robin: WeightedRoundRobin,
    /// One ring per priority level, for `RingHash` only.
    rings: Vec<Ring>,
}

// === impl Balancer ===

impl Balancer {
    /// The balancer of `cluster`, given each endpoint's health (`healthy[i]`: control-plane
    /// healthy and not ejected, see [`healthy_flags`](super::healthy_flags)) and, when the
    /// cluster prefers the caller's locality, the caller's `locality`.
    pub fn new(cluster: &Cluster, healthy: &[bool], locality: Option<&Locality>) -> Self {
        let mut b = Self {
            policy: cluster.lb.clone(),
            endpoints: cluster.endpoints.clone(),
            priorities: PrioritySet::default(),
            round_robin: WeightedRoundRobin::new(),
            rings: Vec::new(),
        };
        b.rebuild(cluster, healthy, locality);
        b
    }

    /// Recomputes levels, loads, panic and rings for a changed cluster or changed health.
    ///
    /// Round-robin progress follows each host by address, so the hosts that stay keep their
    /// place in the rotation when others are added or removed (an EDS update does not restart
    /// it). A level's hash ring is rebuilt only when the level's hosts (address and weight)
    /// or the ring sizes changed, so keys keep their hosts across an unrelated change.
    pub fn update(&mut self, cluster: &Cluster, healthy: &[bool], locality: Option<&Locality>) {
        let same_endpoints = Arc::ptr_eq(&self.endpoints, &cluster.endpoints)
            || *self.endpoints == *cluster.endpoints;
        if !same_endpoints {
            let previous: HashMap<&EndpointAddress, usize, foldhash::fast::RandomState> = self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (&e.address, i))
                .collect();
            self.round_robin.remap(cluster.endpoints.len(), |new| {
                cluster
                    .endpoints
                    .get(new)
                    .and_then(|e| previous.get(&e.address).copied())
            });
        }
        let old_levels = std::mem::take(&mut self.priorities);
        let old_rings = std::mem::take(&mut self.rings);
        let old_endpoints = std::mem::replace(&mut self.endpoints, cluster.endpoints.clone());
        let same_rings = self.policy == cluster.lb;
        self.policy = cluster.lb.clone();
        self.priorities = Self::levels_of(cluster, healthy, locality);
        let LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } = cluster.lb
        else {
            return;
        };
        // Same indices (checked first), so the same hosts when each keeps address and weight.
        let same_hosts = |hosts: &[usize]| {
            hosts.iter().all(|&i| {
                let key = |e: &Endpoint| (e.address.clone(), e.weight);
                old_endpoints.get(i).map(key) == cluster.endpoints.get(i).map(key)
            })
        };
        let mut old = old_levels.levels().zip(old_rings);
        self.rings = self
            .priorities
            .levels()
            .map(|level| {
                // Indices are compared too: a kept ring names hosts by index.
                match old.next() {
                    Some((was, ring))
                        if same_rings
                            && was.hosts == level.hosts
                            && (same_endpoints || same_hosts(level.hosts)) =>
                    {
                        ring
                    }
                    _ => Ring::new(
                        &cluster.endpoints,
                        level.hosts,
                        min_ring_size,
                        max_ring_size,
                    ),
                }
            })
            .collect();
    }

    /// The priority levels, for metrics and the config dump.
    pub fn priorities(&self) -> &PrioritySet {
        &self.priorities
    }

    /// Picks an endpoint (an index into the cluster's endpoints). `request_hash` is the
    /// [`request_hash`](super::request_hash) for ring hash (`None`: a random point on the
    /// ring); `load` gives a host's active requests for least request. `None` when there is
    /// no candidate: no endpoints, or none healthy with panic mode disabled.
    pub fn pick(
        &mut self,
        request_hash: Option<u64>,
        load: impl Fn(usize) -> u64,
        random: u64,
    ) -> Option<usize> {
        let mut draws = Draws::new(random);
        let level_draw = draws.next().unwrap_or(random);
        let policy_draw = draws.next().unwrap_or(random);
        let endpoints = &self.endpoints;
        let weight = |i: usize| endpoints.get(i).map_or(0, |e| e.weight.get());
        match self.policy {
            LbPolicy::RingHash { .. } => {
                let hash = request_hash.unwrap_or(policy_draw);
                let level = self.priorities.choose(hash)?;
                self.rings.get(level.level)?.pick(hash)
            }
            LbPolicy::RoundRobin => {
                let level = self.priorities.choose(level_draw)?;
                self.round_robin.pick(level.hosts, weight)
            }
            LbPolicy::Random => {
                let level = self.priorities.choose(level_draw)?;
                pick_weighted_random(level.hosts, weight, policy_draw)
            }
            LbPolicy::LeastRequest { choice_count } => {
                let level = self.priorities.choose(level_draw)?;
                pick_least_request(level.hosts, choice_count, load, policy_draw)
            }
            LbPolicy::PeakEwma { .. } => {
                let level = self.priorities.choose(level_draw)?;
                pick_least_request(level.hosts, 2, load, policy_draw)
            }
        }
    }

    fn rebuild(&mut self, cluster: &Cluster, healthy: &[bool], locality: Option<&Locality>) {
        self.priorities = Self::levels_of(cluster, healthy, locality);
        self.rings = match cluster.lb {
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
            } => self
                .priorities
                .levels()
                .map(|l| Ring::new(&cluster.endpoints, l.hosts, min_ring_size, max_ring_size))
                .collect(),
            _ => Vec::new(),
        };
    }

    fn levels_of(cluster: &Cluster, healthy: &[bool], locality: Option<&Locality>) -> PrioritySet {
        match locality.filter(|_| cluster.locality_weighted) {
            Some(caller) => PrioritySet::with_priorities(
                &cluster.endpoints,
                |_, e| locality_priority(caller, e, &cluster.locality_failover),
                healthy,
                cluster.panic_threshold,
            ),
            None => PrioritySet::new(&cluster.endpoints, healthy, cluster.panic_threshold),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::{EndpointAddress, HealthStatus, LbPolicy, test_rng::SplitMix64};

    fn cluster(n: usize, lb: LbPolicy) -> Cluster {
        let eps = (0..n)
            .map(|i| {
                Endpoint::new(EndpointAddress::Socket(
                    format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                ))
            })
            .collect();
        let mut c = Cluster::new("reviews", eps);
        c.lb = lb;
        c
    }

    fn counts(b: &mut Balancer, n: usize, picks: u32, seed: u64) -> Vec<u32> {
        let mut rng = SplitMix64::new(seed);
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[b.pick(None, |_| 0, rng.next()).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_skips_an_ejected_host_and_keeps_rotating() {
        let c = cluster(4, LbPolicy::RoundRobin);
        let mut b = Balancer::new(&c, &[true; 4], None);
        assert_eq!(counts(&mut b, 4, 400, 1), [100; 4]);
        b.update(&c, &[true, false, true, true], None);
        let after = counts(&mut b, 4, 300, 2);
        assert_eq!(after[1], 0);
        assert!(
            after.iter().all(|&c| c == 0 || c.abs_diff(100) <= 1),
            "{after:?}"
        );
    }

    #[test]
    fn random_and_least_request_respect_health() {
        for lb in [LbPolicy::Random, LbPolicy::least_request(2).unwrap()] {
            let c = cluster(4, lb);
            let mut b = Balancer::new(&c, &[true, true, false, true], None);
            assert_eq!(counts(&mut b, 4, 1000, 3)[2], 0);
        }
    }

    #[test]
    fn a_mostly_ejected_cluster_panics_and_uses_every_host() {
        let mut c = cluster(4, LbPolicy::Random);
        c.endpoints = {
            let mut eps = c.endpoints.to_vec();
            eps[3].health = HealthStatus::Unhealthy;
            eps.into()
        };
        // One of four healthy: 25 % < 50 %: panic, all four hosts take traffic.
        let mut b = Balancer::new(&c, &[true, false, false, false], None);
        assert!(counts(&mut b, 4, 1000, 4).iter().all(|&n| n > 150));
    }

    #[test]
    fn ring_hash_is_sticky_and_survives_an_unrelated_ejection_mostly() {
        let c = cluster(10, LbPolicy::default_ring_hash());
        let mut b = Balancer::new(&c, &[true; 10], None);
        let mut rng = SplitMix64::new(5);
        let keys: Vec<u64> = (0..1000).map(|_| rng.next()).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|&k| b.pick(Some(k), |_| 0, 7).unwrap())
            .collect();
        // Same hash, any random draw: same host.
        for (&k, &h) in keys.iter().zip(&before) {
            assert_eq!(b.pick(Some(k), |_| 0, k ^ 99), Some(h));
        }
        let mut healthy = [true; 10];
        healthy[3] = false;
        b.update(&c, &healthy, None);
        let after: Vec<_> = keys
            .iter()
            .map(|&k| b.pick(Some(k), |_| 0, 7).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let was_on_3 = before.iter().filter(|&&h| h == 3).count();
        assert!(after.iter().all(|&h| h != 3));
        // The ejected host's keys move, and the rescaled ring moves some others: under 2/N.
        assert!(
            moved >= was_on_3 && moved < 200,
            "{moved}, {was_on_3} were on host 3"
        );
    }

    fn with_endpoints(c: &Cluster, endpoints: &[Endpoint]) -> Cluster {
        let mut c = c.clone();
        c.endpoints = endpoints.into();
        c
    }

    #[test]
    fn round_robin_follows_its_hosts_across_an_endpoint_change() {
        let c = cluster(3, LbPolicy::RoundRobin);
        let mut b = Balancer::new(&c, &[true; 3], None);
        assert_eq!(b.pick(None, |_| 0, 0), Some(0));
        assert_eq!(b.pick(None, |_| 0, 0), Some(1));
        // The first host goes: the rotation goes on with the third, now at index 1 (a reset
        // would start over at the second, which just had its turn).
        let fewer = with_endpoints(&c, &c.endpoints[1..]);
        b.update(&fewer, &[true; 2], None);
        assert_eq!(b.pick(None, |_| 0, 0), Some(1));
        // A host is added at the end: it joins the rotation, which stays even.
        let more = cluster(4, LbPolicy::RoundRobin);
        let more = with_endpoints(&more, &more.endpoints[1..]);
        b.update(&more, &[true; 3], None);
        let picks: Vec<_> = (0..6).map(|_| b.pick(None, |_| 0, 0).unwrap()).collect();
        let mut counts = [0; 3];
        picks.iter().for_each(|&p| counts[p] += 1);
        assert_eq!(counts, [2; 3], "{picks:?}");
    }

    #[test]
    fn a_ring_is_kept_when_its_hosts_did_not_change() {
        let c = cluster(10, LbPolicy::default_ring_hash());
        let mut b = Balancer::new(&c, &[true; 10], None);
        let ring = b.rings[0].entries.as_ptr();
        // The same endpoints in a fresh list (a new configuration version), another breaker:
        // the ring stays.
        let mut same = with_endpoints(&c, &c.endpoints);
        same.breaker.max_requests = 7;
        b.update(&same, &[true; 10], None);
        assert_eq!(b.rings[0].entries.as_ptr(), ring, "ring rebuilt");
        // A weight changed: rebuilt.
        let mut heavier = c.endpoints.to_vec();
        heavier[2].weight = NonZeroU32::new(3).unwrap();
        let heavier = with_endpoints(&c, &heavier);
        b.update(&heavier, &[true; 10], None);
        assert_ne!(
            b.rings[0],
            Ring::new(&c.endpoints, &(0..10).collect::<Vec<_>>(), 1024, 1 << 23)
        );
        // An ejection: rebuilt without the host.
        let mut healthy = [true; 10];
        healthy[4] = false;
        b.update(&heavier, &healthy, None);
        assert!((0..1000).all(|k| b.pick(Some(k << 50), |_| 0, 0) != Some(4)));
    }

    #[test]
    fn locality_preference_keeps_traffic_local_until_the_zone_fails() {
        let mut c = cluster(4, LbPolicy::RoundRobin);
        c.locality_weighted = true;
        let zone = |z: &str| Locality {
            region: "eu".into(),
            zone: z.into(),
            sub_zone: "".into(),
        };
        c.endpoints = {
            let mut eps = c.endpoints.to_vec();
            for (i, e) in eps.iter_mut().enumerate() {
                e.locality = zone(if i < 2 { "a" } else { "b" });
                e.weight = NonZeroU32::MIN;
            }
            eps.into()
        };
        let me = zone("a");
        let mut b = Balancer::new(&c, &[true; 4], Some(&me));
        assert_eq!(counts(&mut b, 4, 100, 6), [50, 50, 0, 0]);
        // Zone a loses both hosts: everything fails over to zone b.
        b.update(&c, &[false, false, true, true], Some(&me));
        assert_eq!(counts(&mut b, 4, 100, 7), [0, 0, 50, 50]);
        // Without the preference, all four share.
        let mut b = Balancer::new(&c, &[true; 4], None);
        c.locality_weighted = false;
        b.update(&c, &[true; 4], Some(&me));
        assert_eq!(counts(&mut b, 4, 100, 8), [25; 4]);
    }
}
