//! Locality failover: turning "prefer the caller's locality" into priority levels.
//!
//! Istio's locality load balancing has istiod give each endpoint an EDS priority by how much
//! of its locality matches the client's: 0 for the same region, zone and sub-zone, 1 for the
//! same region and zone, 2 for the same region, 3 otherwise. Envoy's priority spill-over
//! ([`PrioritySet`](super::PrioritySet)) then fails traffic over outward as a locality loses
//! health. A proxyless client fed from a local YAML file has no istiod to do this, so the mesh
//! computes the same tiers itself when [`Cluster::locality_weighted`](crate::Cluster) is set.
//!
//! An explicit endpoint priority still comes first: the effective priority is
//! `priority × 5 + tier`, so priority 0 in a far region is still used before priority 1
//! next door, and with all priorities 0 (the YAML default) it is Istio's tiering exactly.
//!
//! Istio's `failover` ([`LocalityFailover::regions`]) adds a fifth tier, as istiod's
//! `applyLocalityFailover` does: for a caller in region `from`, endpoints of another region
//! are tier 3 only in region `to`, and tier 4 elsewhere. `failoverPriority`
//! ([`LocalityFailover::priority_labels`]) ranks endpoints by how many of the listed labels
//! they share with the caller, in order; istiod writes that rank as the endpoint's priority,
//! and so does [`MeshConfig::for_workload`](crate::MeshConfig::for_workload) once the
//! workload's labels are known ([`label_priority`]). With `failoverPriority` and no
//! `failover`, istiod applies no locality tiers at all; with both, the tiers order endpoints
//! within each rank. Weighted `distribute` is not modelled.

use std::sync::Arc;

use crate::{Endpoint, Labels, Locality};

/// The label istiod treats specially as the first `failoverPriority` entry: a mismatch ranks
/// the endpoint after every endpoint of the caller's network, not first among the mismatches.
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// A `failoverPriority` entry: the label name, and the value to compare with (`label=value`)
/// or `None` for the caller's own value.
pub type PriorityLabel = (Arc<str>, Option<Arc<str>>);

/// A DestinationRule's `localityLbSetting.failover` and `failoverPriority`, in effect (istiod
/// applies them only with `outlierDetection`, without which Envoy never fails over).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalityFailover {
    /// `failover`: `(from, to)` regions. For a caller in `from`, endpoints of region `to`
    /// come before those of other regions. Empty is off.
    pub regions: Arc<[(Arc<str>, Arc<str>)]>,
    /// `failoverPriority`: label names in order, each with the value to compare with
    /// (`label=value`) or `None` for the caller's own value. Empty is off.
    pub priority_labels: Arc<[PriorityLabel]>,
}

/// How far `endpoint` is from `caller`: 0 (same sub-zone) to 3 (another region). An empty
/// component only matches an empty one, as Istio compares the strings.
pub fn locality_tier(caller: &Locality, endpoint: &Locality) -> u32 {
    if caller.region != endpoint.region {
        3
    } else if caller.zone != endpoint.zone {
        2
    } else if caller.sub_zone != endpoint.sub_zone {
        1
    } else {
        0
    }
}

/// [`locality_tier`], with `failover`'s regions: another region is tier 3 when it is the
/// `to` of the caller's region's entry (or the caller's region has none), else tier 4.
pub fn failover_tier(caller: &Locality, endpoint: &Locality, failover: &LocalityFailover) -> u32 {
    let tier = locality_tier(caller, endpoint);
    if tier < 3 {
        return tier;
    }
    match failover
        .regions
        .iter()
        .find(|(from, _)| **from == *caller.region)
    {
        Some((_, to)) if **to != *endpoint.region => 4,
        _ => tier,
    }
}

/// The effective priority of `endpoint` for a caller in `caller`: `priority × 5 + tier`,
/// saturating; with `failoverPriority` and no `failover`, just the priority (istiod applies
/// no locality tiers then).
pub fn locality_priority(
    caller: &Locality,
    endpoint: &Endpoint,
    failover: &LocalityFailover,
) -> u32 {
    let tier = if failover.priority_labels.is_empty() || !failover.regions.is_empty() {
        failover_tier(caller, &endpoint.locality, failover)
    } else {
        0
    };
    endpoint.priority.saturating_mul(5).saturating_add(tier)
}

/// The `failoverPriority` rank of an endpoint with `labels` for a caller with
/// `caller_labels`, as istiod's `applyFailoverPriorityPerLocality` computes it: 0 when every
/// listed label matches, else `n − j` for the first label `j` that differs (of `n`); a
/// mismatch of a leading network label adds `n` instead. `None` when the caller has no labels
/// (istiod then leaves priorities alone).
pub fn label_priority(
    labels: &[PriorityLabel],
    caller_labels: &Labels,
    endpoint_labels: &Labels,
) -> Option<u32> {
    if caller_labels.is_empty() || labels.is_empty() {
        return None;
    }
    let n = u32::try_from(labels.len()).unwrap_or(u32::MAX);
    let includes_network = labels.first().is_some_and(|(l, _)| &**l == NETWORK_LABEL);
    let mut adjust = 0;
    for (j, (label, fixed)) in (0u32..).zip(labels.iter()) {
        let want = fixed
            .as_deref()
            .or_else(|| caller_labels.get(label))
            .unwrap_or_default();
        if want != endpoint_labels.get(label).unwrap_or_default() {
            if j == 0 && includes_network {
                adjust = n;
                continue;
            }
            return Some((n - j).saturating_add(adjust));
        }
    }
    Some(adjust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointAddress;

    fn loc(region: &str, zone: &str, sub_zone: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            sub_zone: sub_zone.into(),
        }
    }

    #[test]
    fn tiers_widen_from_sub_zone_to_region() {
        let me = loc("eu-west1", "eu-west1-a", "rack1");
        assert_eq!(
            locality_tier(&me, &loc("eu-west1", "eu-west1-a", "rack1")),
            0
        );
        assert_eq!(
            locality_tier(&me, &loc("eu-west1", "eu-west1-a", "rack2")),
            1
        );
        assert_eq!(
            locality_tier(&me, &loc("eu-west1", "eu-west1-b", "rack1")),
            2
        );
        assert_eq!(
            locality_tier(&me, &loc("us-east1", "eu-west1-a", "rack1")),
            3
        );
        assert_eq!(locality_tier(&Locality::default(), &Locality::default()), 0);
    }

    /// Istio's `failover`: from `eu`, `us` is the next region; `ap` comes last.
    #[test]
    fn failover_puts_the_named_region_before_other_regions() {
        let me = loc("eu", "a", "");
        let failover = LocalityFailover {
            regions: Arc::from([(Arc::from("eu"), Arc::from("us"))]),
            ..LocalityFailover::default()
        };
        assert_eq!(failover_tier(&me, &loc("eu", "b", ""), &failover), 2);
        assert_eq!(failover_tier(&me, &loc("us", "a", ""), &failover), 3);
        assert_eq!(failover_tier(&me, &loc("ap", "a", ""), &failover), 4);
        // A caller of a region with no entry: every other region is tier 3.
        let elsewhere = loc("ap", "a", "");
        assert_eq!(failover_tier(&elsewhere, &loc("us", "a", ""), &failover), 3);
        assert_eq!(failover_tier(&elsewhere, &loc("eu", "a", ""), &failover), 3);
    }

    /// istiod's `applyFailoverPriorityPerLocality`: the rank is `n − j` for the first label
    /// `j` that differs; a leading network label's mismatch adds `n`.
    #[test]
    fn failover_priority_ranks_by_the_first_label_that_differs() {
        let labels = |pairs: &[(&str, &str)]| Labels::new(pairs.iter().copied()).unwrap();
        let order: Vec<(Arc<str>, Option<Arc<str>>)> = vec![
            ("region".into(), None),
            ("zone".into(), None),
            ("rack".into(), Some("r1".into())),
        ];
        let me = labels(&[("region", "eu"), ("zone", "a"), ("rack", "r9")]);
        let rank = |ep: &[(&str, &str)]| label_priority(&order, &me, &labels(ep));
        assert_eq!(
            rank(&[("region", "eu"), ("zone", "a"), ("rack", "r1")]),
            Some(0)
        );
        assert_eq!(
            rank(&[("region", "eu"), ("zone", "a"), ("rack", "r9")]),
            Some(1)
        );
        assert_eq!(rank(&[("region", "eu"), ("zone", "b")]), Some(2));
        assert_eq!(rank(&[("region", "us"), ("zone", "a")]), Some(3));
        assert_eq!(
            label_priority(&order, &Labels::default(), &me),
            None,
            "a caller without labels"
        );
        let network: Vec<(Arc<str>, Option<Arc<str>>)> =
            vec![(NETWORK_LABEL.into(), None), ("zone".into(), None)];
        let me = labels(&[(NETWORK_LABEL, "n1"), ("zone", "a")]);
        let rank = |ep: &[(&str, &str)]| label_priority(&network, &me, &labels(ep));
        assert_eq!(rank(&[(NETWORK_LABEL, "n1"), ("zone", "a")]), Some(0));
        assert_eq!(rank(&[(NETWORK_LABEL, "n1"), ("zone", "b")]), Some(1));
        assert_eq!(rank(&[(NETWORK_LABEL, "n2"), ("zone", "a")]), Some(2));
        assert_eq!(rank(&[(NETWORK_LABEL, "n2"), ("zone", "b")]), Some(3));
    }

    #[test]
    fn an_explicit_priority_outranks_locality() {
        let me = loc("eu", "a", "");
        let mut far = Endpoint::new(EndpointAddress::Socket("10.0.0.1:80".parse().unwrap()));
        far.locality = loc("us", "a", "");
        let mut near_backup =
            Endpoint::new(EndpointAddress::Socket("10.0.0.2:80".parse().unwrap()));
        near_backup.locality = me.clone();
        near_backup.priority = 1;
        let off = LocalityFailover::default();
        assert_eq!(locality_priority(&me, &far, &off), 3);
        assert_eq!(locality_priority(&me, &near_backup, &off), 5);
        near_backup.priority = u32::MAX;
        assert_eq!(locality_priority(&me, &near_backup, &off), u32::MAX);
    }
}
