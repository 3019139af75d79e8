//! Weighted round robin: a deterministic, smooth interleaving of hosts by weight.
//!
//! Envoy's default policy is weighted round robin, implemented with an earliest-deadline-first
//! scheduler. We use nginx's *smooth weighted round robin* instead: it gives the same long-run
//! shares (exactly `weight / total` over every window of `total` picks while the candidate set
//! is stable), spreads a heavy host's picks evenly instead of in bursts, needs only one `i64`
//! per host, and with equal weights it is plain rotation in candidate order.
//!
//! Each pick adds every candidate's weight to its *current* value, picks the largest (ties go
//! to the first in candidate order) and subtracts the candidates' total weight from the winner.
//! The state is indexed by host index, so a candidate set that changes between picks (a host
//! ejected, a priority level failing over) keeps the progress of the hosts that stay.
//!
//! Envoy starts each worker's rotation at a random offset so that many proxies do not hit the
//! same first host in step; here that is the data plane's choice (call
//! [`WeightedRoundRobin::skip`] with a random count at start-up).

/// The state of one weighted round-robin rotation (one per cluster and priority level).
#[derive(Clone, Debug, Default)]
pub struct WeightedRoundRobin {
    /// Smooth-WRR current weight per host index; missing entries are 0.
    current: Vec<i64>,
}

// === impl WeightedRoundRobin ===

impl WeightedRoundRobin {
    /// A fresh rotation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the next of `candidates` (indices into the caller's host list) in weighted
    /// round-robin order. Zero-weight candidates are never picked; `None` when no candidate has
    /// weight. Cost is linear in the number of candidates.
    pub fn pick(&mut self, candidates: &[usize], weight: impl Fn(usize) -> u32) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for &i in candidates {
            let w = i64::from(weight(i));
            if w == 0 {
                continue;
            }
            if self.current.len() <= i {
                self.current.resize(i + 1, 0);
            }
            let Some(cur) = self.current.get_mut(i) else {
                continue;
            };
            *cur += w;
            total += w;
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((i, *cur));
            }
        }
        let (winner, _) = best?;
        if let Some(cur) = self.current.get_mut(winner) {
            *cur -= total;
        }
        Some(winner)
    }

    /// Advances the rotation by `n` picks over `candidates`, e.g. a random start offset.
    pub fn skip(&mut self, n: usize, candidates: &[usize], weight: impl Fn(usize) -> u32) {
        for _ in 0..n {
            if self.pick(candidates, &weight).is_none() {
                return;
            }
        }
    }

    /// Forgets all progress, for when the host list is replaced and indices change meaning.
    pub fn reset(&mut self) {
        self.current.clear();
    }

    /// Carries the progress over to a new host list of `hosts` entries: host `i` of the new
    /// list takes the progress of host `previous(i)` of the old one, a new host (`None`)
    /// starts at zero. Hosts that stay keep their place in the rotation when others come or
    /// go; the skew this leaves is at most one total weight's worth of picks, as after an
    /// ejection.
    pub fn remap(&mut self, hosts: usize, previous: impl Fn(usize) -> Option<usize>) {
        if self.current.is_empty() {
            return;
        }
        let current = (0..hosts)
            .map(|i| {
                previous(i)
                    .and_then(|p| self.current.get(p).copied())
                    .unwrap_or(0)
            })
            .collect();
        self.current = current;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn equal_weights_rotate_in_candidate_order() {
        let mut rr = WeightedRoundRobin::new();
        let picks: Vec<_> = (0..7)
            .map(|_| rr.pick(&[4, 1, 7], |_| 1).unwrap())
            .collect();
        assert_eq!(picks, [4, 1, 7, 4, 1, 7, 4]);
    }

    #[test]
    fn a_heavy_host_is_interleaved_not_bursted() {
        // Weights 5:1:1 — nginx's classic example: a a b a c a a, never five a's in a row.
        let w = [5u32, 1, 1];
        let mut rr = WeightedRoundRobin::new();
        let picks: Vec<_> = (0..7)
            .map(|_| rr.pick(&[0, 1, 2], |i| w[i]).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn an_ejected_host_leaves_the_rotation_and_the_others_share_evenly_again() {
        let mut rr = WeightedRoundRobin::new();
        assert_eq!(rr.pick(&[0, 1, 2], |_| 1), Some(0));
        assert_eq!(rr.pick(&[0, 1, 2], |_| 1), Some(1));
        // Host 1 is ejected. The progress hosts 0 and 2 carried over skews the next couple of
        // picks (at most one total weight's worth), then they alternate exactly.
        let mut counts = [0u32; 3];
        for _ in 0..100 {
            counts[rr.pick(&[0, 2], |_| 1).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0].abs_diff(counts[2]) <= 2, "{counts:?}");
        assert_eq!(rr.pick(&[], |_| 1), None);
        assert_eq!(rr.pick(&[3], |_| 0), None);
    }

    proptest! {
        /// Over every full cycle of `total` picks each host is picked exactly `weight` times,
        /// so over any number of picks a host's count is within one cycle's error of its share.
        #[test]
        fn each_cycle_gives_every_host_exactly_its_weight(
            weights in proptest::collection::vec(0u32..8, 1..8),
            cycles in 1usize..20,
        ) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total > 0);
            let candidates: Vec<usize> = (0..weights.len()).collect();
            let mut rr = WeightedRoundRobin::new();
            for _ in 0..cycles {
                let mut counts = vec![0u32; weights.len()];
                for _ in 0..total {
                    counts[rr.pick(&candidates, |i| weights[i]).unwrap()] += 1;
                }
                prop_assert_eq!(&counts, &weights);
            }
        }
    }
}
