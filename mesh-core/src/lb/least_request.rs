//! Least request: power of N choices, the sampled host with the fewest active requests wins.
//!
//! Envoy's `LEAST_REQUEST` with equal weights samples `choice_count` hosts uniformly *with
//! replacement* and keeps the one with the fewest active requests, the first sampled winning a
//! tie. That is what this does. With unequal weights Envoy switches to a weighted EDF schedule
//! with weights divided by `(active + 1)^bias`; we keep power-of-N choices for every weight
//! set (weights are ignored here) — a known deviation, listed in the crate's notes, because
//! P2C's load feedback already avoids the overloaded host and the EDF variant needs per-host
//! scheduler state across picks.

use super::{Draws, below};

/// Samples `choice_count` of `candidates` (indices into the caller's host list) uniformly with
/// replacement, using draws derived from `random`, and returns the sampled host with the lowest
/// `load` (active requests); on a tie the first sampled wins. `None` when there is no candidate.
///
/// `choice_count` below 1 is treated as 1 (the model validates ≥ 2 already).
pub fn pick_least_request(
    candidates: &[usize],
    choice_count: u32,
    load: impl Fn(usize) -> u64,
    random: u64,
) -> Option<usize> {
    let n = candidates.len() as u64;
    if n == 0 {
        return None;
    }
    let mut best: Option<(usize, u64)> = None;
    for draw in Draws::new(random).take(choice_count.max(1) as usize) {
        let Some(&host) = candidates.get(below(draw, n) as usize) else {
            continue;
        };
        let l = load(host);
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((host, l));
        }
    }
    best.map(|(host, _)| host)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_rng::SplitMix64;

    /// Replays the samples `pick_least_request` makes, for the laws below.
    fn samples(candidates: &[usize], choice_count: u32, random: u64) -> Vec<usize> {
        Draws::new(random)
            .take(choice_count as usize)
            .map(|d| candidates[below(d, candidates.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn an_idle_host_takes_most_of_the_traffic_from_a_busy_one() {
        // Host 0 has 10 requests in flight, hosts 1-3 none. With two choices host 0 only wins
        // when both samples are host 0: 1/16 of the time.
        let loads = [10u64, 0, 0, 0];
        let mut rng = SplitMix64::new(1);
        let busy = (0..16_000)
            .filter(|_| pick_least_request(&[0, 1, 2, 3], 2, |i| loads[i], rng.next()) == Some(0))
            .count();
        assert!((800..1_200).contains(&busy), "{busy}");
    }

    #[test]
    fn more_choices_avoid_the_busy_host_more() {
        let loads = [10u64, 0, 0, 0];
        let mut rng = SplitMix64::new(2);
        let busy = (0..16_000)
            .filter(|_| pick_least_request(&[0, 1, 2, 3], 4, |i| loads[i], rng.next()) == Some(0))
            .count();
        // (1/4)^4 = 1/256 of 16,000 is about 62.
        assert!(busy < 150, "{busy}");
        assert_eq!(pick_least_request(&[], 2, |_| 0, 1), None);
        assert_eq!(pick_least_request(&[9], 2, |_| 0, 1), Some(9));
    }

    proptest! {
        /// The winner is a sampled host, none of the samples is less loaded, and on a tie it is
        /// the first sampled with that load.
        #[test]
        fn never_picks_a_more_loaded_sample(
            loads in proptest::collection::vec(0u64..4, 1..12),
            choice_count in 1u32..5,
            random: u64,
        ) {
            let candidates: Vec<usize> = (0..loads.len()).collect();
            let picked = pick_least_request(&candidates, choice_count, |i| loads[i], random).unwrap();
            let sampled = samples(&candidates, choice_count, random);
            let min = sampled.iter().map(|&i| loads[i]).min().unwrap();
            prop_assert_eq!(loads[picked], min);
            let first = sampled.iter().copied().find(|&i| loads[i] == min).unwrap();
            prop_assert_eq!(picked, first);
        }
    }
}
