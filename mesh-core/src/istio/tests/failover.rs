//! `localityLbSetting.failover` and `failoverPriority` as istiod applies them: only with
//! outlier detection, `failover` ordering other regions, `failoverPriority` ranking endpoints
//! by the workload's labels.

use super::*;
use crate::{Labels, Locality, Workload, lb::Balancer};

/// `billing` with one endpoint per `(address, locality, labels)`, and a DestinationRule with
/// `lb` as its `localityLbSetting` and `outlier` as its `outlierDetection` (if any).
fn yaml(endpoints: &[(&str, &str, &str)], lb: &str, outlier: bool) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|(address, locality, labels)| {
            format!("  - {{address: {address}, locality: {locality}, labels: {{{labels}}}}}\n")
        })
        .collect();
    let outlier = if outlier {
        "    outlierDetection: {consecutive5xxErrors: 5}\n"
    } else {
        ""
    };
    let entry = super::precedence::billing_entry(&endpoints);
    format!(
        "{entry}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: billing, namespace: finance}}
spec:
  host: billing.finance.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {lb}
{outlier}"
    )
}

const CLUSTER: &str = "outbound|9080||billing.finance.svc.cluster.local";

fn locality(region: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: String::new().into(),
        sub_zone: String::new().into(),
    }
}

/// The endpoints (by index) that take traffic for a caller in `region` with the endpoints
/// `healthy`.
fn served(config: &MeshConfig, region: &str, healthy: &[bool]) -> Vec<usize> {
    let cluster = config.cluster(CLUSTER).unwrap();
    let mut b = Balancer::new(cluster, healthy, Some(&locality(region)));
    let mut hit = BTreeSet::new();
    for i in 0..60u64 {
        hit.extend(b.pick(None, |_| 0, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }
    hit.into_iter().collect()
}

const REGIONS: [(&str, &str, &str); 3] = [
    ("10.0.0.1", "eu/a", ""),
    ("10.0.0.2", "us/a", ""),
    ("10.0.0.3", "ap/a", ""),
];

/// Istio: "failover: from eu to us": with eu down, a caller in eu goes to us, not ap.
#[test]
fn failover_sends_a_region_to_its_named_region_first() {
    let text = yaml(&REGIONS, "{failover: [{from: eu, to: us}]}", true);
    let loaded = load_str("mesh.yaml", &text).unwrap();
    let config = &loaded.config;
    assert_eq!(served(config, "eu", &[true; 3]), [0]);
    assert_eq!(
        served(config, "eu", &[false, true, true]),
        [1],
        "us, then ap"
    );
    assert_eq!(served(config, "eu", &[false, false, true]), [2]);
    // A caller in ap has no failover entry: the other regions are alike.
    assert_eq!(served(config, "ap", &[true, true, false]), [0, 1]);
    // Without the setting, us and ap are alike for eu too.
    let plain = load_str("mesh.yaml", &yaml(&REGIONS, "{enabled: true}", true)).unwrap();
    assert_eq!(served(&plain.config, "eu", &[false, true, true]), [1, 2]);
}

/// istiod applies failover only with outlier detection, and says so.
#[test]
fn failover_needs_outlier_detection() {
    let text = yaml(&REGIONS, "{failover: [{from: eu, to: us}]}", false);
    let loaded = load_str("mesh.yaml", &text).unwrap();
    assert_eq!(served(&loaded.config, "eu", &[false, true, true]), [1, 2]);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("only with outlierDetection")),
        "{:?}",
        loaded.warnings
    );
    let e = load_str(
        "mesh.yaml",
        &yaml(&REGIONS, "{failover: [{from: eu, to: eu}]}", true),
    )
    .unwrap_err();
    assert!(e.to_string().contains("to the same region"), "{e}");
}

/// Istio: `failoverPriority` ranks endpoints by how many of the listed labels, in order,
/// they share with the client; locality tiers apply only with `failover` as well.
#[test]
fn failover_priority_ranks_endpoints_by_the_workloads_labels() {
    let endpoints = [
        ("10.0.0.1", "eu/a", "net: n1, tier: gold"),
        ("10.0.0.2", "eu/a", "net: n1, tier: silver"),
        ("10.0.0.3", "us/a", "net: n2, tier: gold"),
    ];
    let text = yaml(&endpoints, "{failoverPriority: [net, tier]}", true);
    let loaded = load_str("mesh.yaml", &text).unwrap();
    let client = |labels: &[(&str, &str)]| {
        loaded.config.for_workload(&Workload::new(
            "finance",
            Labels::new(labels.iter().copied()).unwrap(),
        ))
    };
    let gold_n1 = client(&[("net", "n1"), ("tier", "gold")]);
    assert_eq!(served(&gold_n1, "us", &[true; 3]), [0], "both labels match");
    assert_eq!(
        served(&gold_n1, "us", &[false, true, true]),
        [1],
        "then net"
    );
    assert_eq!(served(&gold_n1, "us", &[false, false, true]), [2]);
    let gold_n2 = client(&[("net", "n2"), ("tier", "gold")]);
    assert_eq!(
        served(&gold_n2, "eu", &[true; 3]),
        [2],
        "labels, not locality, with no `failover`"
    );
    // A client without labels: no ranks (istiod leaves priorities alone), locality tiers
    // do not apply either.
    let nobody = client(&[]);
    assert_eq!(served(&nobody, "us", &[true; 3]), [0, 1, 2]);
}
