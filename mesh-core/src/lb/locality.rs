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
//! `priority × 4 + tier`, so priority 0 in a far region is still used before priority 1
//! next door, and with all priorities 0 (the YAML default) it is Istio's tiering exactly.
//! Istio's `failover` / `failoverPriority` settings and weighted `distribute` are not modelled.

use crate::{Endpoint, Locality};

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

/// The effective priority of `endpoint` for a caller in `caller`: `priority × 4 + tier`,
/// saturating.
pub fn locality_priority(caller: &Locality, endpoint: &Endpoint) -> u32 {
    endpoint
        .priority
        .saturating_mul(4)
        .saturating_add(locality_tier(caller, &endpoint.locality))
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

    #[test]
    fn an_explicit_priority_outranks_locality() {
        let me = loc("eu", "a", "");
        let mut far = Endpoint::new(EndpointAddress::Socket("10.0.0.1:80".parse().unwrap()));
        far.locality = loc("us", "a", "");
        let mut near_backup =
            Endpoint::new(EndpointAddress::Socket("10.0.0.2:80".parse().unwrap()));
        near_backup.locality = me.clone();
        near_backup.priority = 1;
        assert_eq!(locality_priority(&me, &far), 3);
        assert_eq!(locality_priority(&me, &near_backup), 4);
        near_backup.priority = u32::MAX;
        assert_eq!(locality_priority(&me, &near_backup), u32::MAX);
    }
}
