//! Which resource applies when several name one host, as istiod decides: ServiceEntry hosts
//! taken literally, DestinationRules by namespace precedence and merged within a namespace,
//! VirtualServices by visibility category and load order.

use super::*;

/// Istio takes ServiceEntry hosts literally; only VirtualService and DestinationRule short
/// names are expanded with the resource's namespace.
#[test]
fn service_entry_short_hosts_are_taken_literally() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: prod}
spec:
  hosts: [legacy]
  resolution: DNS
  ports: [{number: 8080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: prod}
spec:
  hosts: [legacy]
  http:
  - route: [{destination: {host: legacy, port: {number: 8080}}}]
    timeout: 3s
";
    let loaded = load_str("mesh.yaml", yaml).unwrap();
    let config = &loaded.config;
    assert!(
        config.listener("legacy:8080").is_some(),
        "the host as written"
    );
    assert!(config.cluster("outbound|8080||legacy").is_some());
    assert!(
        config
            .cluster("outbound|8080||legacy.prod.svc.cluster.local")
            .is_some(),
        "the VirtualService's `legacy` is legacy.prod.svc.cluster.local, another host (by DNS)"
    );
    // The ServiceEntry's own listener keeps Istio's default route: the VirtualService names
    // another host.
    let table = config.listener("legacy:8080").unwrap();
    let crate::Action::Forward(fwd) = &table.virtual_hosts()[0].routes()[0].action else {
        panic!("not a forward");
    };
    assert_eq!(fwd.timeout, None);
    assert!(
        loaded.warnings.iter().any(|w| w.path == "spec.hosts[0]"
            && w.message.contains("taken literally")
            && w.message.contains("legacy.prod.svc.cluster.local")),
        "{:?}",
        loaded.warnings
    );
}
