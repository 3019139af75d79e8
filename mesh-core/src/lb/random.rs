//! Weighted random: one uniform draw, each candidate chosen with probability weight / total.

use super::below;

/// Picks one of `candidates` (indices into the caller's host list) with probability
/// `weight(i) / Σ weight`, from one uniform random draw.
///
/// A zero-weight candidate is never picked; `None` when there is no candidate with weight.
/// Envoy's `RANDOM` policy ignores weights; we honour them because Istio users set weights on
/// `WorkloadEntry`s and expect them to hold for every policy, and with equal weights (the
/// default) both are the same uniform choice.
pub fn pick_weighted_random(
    candidates: &[usize],
    weight: impl Fn(usize) -> u32,
    random: u64,
) -> Option<usize> {
    let total: u64 = candidates.iter().map(|&i| u64::from(weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut point = below(random, total);
    for &i in candidates {
        let w = u64::from(weight(i));
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    // Unreachable: point < total = Σ weights. Answering the last weighted candidate keeps
    // this function free of a panic path all the same.
    candidates.iter().rev().copied().find(|&i| weight(i) > 0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_rng::SplitMix64;

    #[test]
    fn every_host_gets_its_share_within_one_percent() {
        let weights = [1u32, 2, 3, 4, 10];
        let candidates: Vec<usize> = (0..weights.len()).collect();
        let total: u32 = weights.iter().sum();
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 5];
        const DRAWS: u32 = 100_000;
        for _ in 0..DRAWS {
            let i = pick_weighted_random(&candidates, |i| weights[i], rng.next()).unwrap();
            counts[i] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let share = f64::from(c) / f64::from(DRAWS);
            let expected = f64::from(weights[i]) / f64::from(total);
            assert!(
                (share - expected).abs() < 0.01,
                "host {i}: {share} vs {expected}"
            );
        }
    }

    #[test]
    fn zero_weights_are_skipped_and_nothing_weighted_is_none() {
        let w = [0u32, 5, 0];
        for r in [0, u64::MAX / 2, u64::MAX] {
            assert_eq!(pick_weighted_random(&[0, 1, 2], |i| w[i], r), Some(1));
        }
        assert_eq!(pick_weighted_random(&[0, 2], |i| w[i], 3), None);
        assert_eq!(pick_weighted_random(&[], |_| 1, 3), None);
    }

    #[test]
    fn the_draw_range_maps_onto_the_weights_in_order() {
        // The smallest draw lands on the first candidate, the largest on the last.
        let w = [1u32, 1, 1];
        assert_eq!(pick_weighted_random(&[2, 0, 1], |i| w[i], 0), Some(2));
        assert_eq!(
            pick_weighted_random(&[2, 0, 1], |i| w[i], u64::MAX),
            Some(1)
        );
    }

    proptest! {
        #[test]
        fn always_picks_a_weighted_candidate(
            weights in proptest::collection::vec(0u32..5, 1..10),
            random: u64,
        ) {
            let candidates: Vec<usize> = (0..weights.len()).collect();
            match pick_weighted_random(&candidates, |i| weights[i], random) {
                Some(i) => prop_assert!(weights[i] > 0),
                None => prop_assert!(weights.iter().all(|&w| w == 0)),
            }
        }
    }
}
