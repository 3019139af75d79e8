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

const BILLING: &str = "billing.finance.svc.cluster.local:9080";
const BILLING_CLUSTER: &str = "outbound|9080||billing.finance.svc.cluster.local";

/// `billing` in `finance` with `endpoints` (YAML list items, each ending in a newline).
pub(super) fn billing_entry(endpoints: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: billing, namespace: finance}}
spec:
  hosts: [billing.finance.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: grpc}}]
  endpoints:
{endpoints}"
    )
}

/// `billing` in `finance` (one endpoint, labelled `version: v1`), then `extra`.
fn billing(extra: &str) -> String {
    billing_entry("  - {address: 10.0.0.1, labels: {version: v1}}\n") + extra
}

/// A DestinationRule `namespace/name` for billing limiting requests to `max`, with `rest`
/// (`exportTo`, `subsets`) appended to its spec.
fn rule(namespace: &str, name: &str, max: u32, rest: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: billing.finance.svc.cluster.local
  trafficPolicy: {{connectionPool: {{http: {{http2MaxRequests: {max}}}}}}}
{rest}"
    )
}

fn for_namespace(loaded: &Loaded, namespace: &str) -> MeshConfig {
    loaded
        .config
        .for_workload(&crate::Workload::new(namespace, crate::Labels::default()))
}

fn max_requests(config: &MeshConfig, cluster: &str) -> Option<u32> {
    config.cluster(cluster).map(|c| c.breaker.max_requests)
}

/// Istio: a DestinationRule is looked up in the client's namespace, then the service's, then
/// the root namespace, the last two only where exported to the client's namespace.
#[test]
fn destination_rules_in_several_namespaces_apply_by_the_clients_namespace() {
    let yaml = billing(
        &[
            rule("finance", "billing", 10, "  exportTo: [.]\n"),
            rule("prod", "billing", 20, "  exportTo: [.]\n"),
            rule("istio-system", "billing", 30, ""),
            rule("dev", "billing", 40, "  exportTo: [web]\n"),
        ]
        .concat(),
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    let applied = |ns: &str| max_requests(&for_namespace(&loaded, ns), BILLING_CLUSTER);
    assert_eq!(
        applied("prod"),
        Some(20),
        "the client's own namespace first"
    );
    assert_eq!(applied("finance"), Some(10), "the service's namespace");
    assert_eq!(
        applied("web"),
        Some(30),
        "finance's rule is private and dev is neither the client's, the service's nor the root namespace"
    );
    assert_eq!(
        applied("istio-system"),
        Some(30),
        "the root namespace's exported rule"
    );
    // The un-narrowed configuration (what the dev control plane serves) has the service
    // namespace's rule.
    assert_eq!(max_requests(&loaded.config, BILLING_CLUSTER), Some(10));
    // `check --explain` says which rule applied.
    let prod = for_namespace(&loaded, "prod");
    assert_eq!(
        &*prod.outbound().unwrap().rules,
        [(
            Arc::from("billing.finance.svc.cluster.local"),
            Some(Arc::from("prod/billing"))
        )]
    );
    assert!(
        loaded.warnings.iter().any(|w| w
            .message
            .contains("has DestinationRules in namespaces dev, finance, istio-system, prod")),
        "{:?}",
        loaded.warnings
    );

    // Without the root namespace's rule, a client that none applies to has the plain cluster.
    let yaml = billing(&rule("finance", "billing", 10, "  exportTo: [.]\n"));
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    let web = for_namespace(&loaded, "web");
    assert_eq!(max_requests(&web, BILLING_CLUSTER), Some(u32::MAX));
    assert_eq!(
        &*web.outbound().unwrap().rules,
        [(Arc::from("billing.finance.svc.cluster.local"), None)]
    );
}

/// Istio merges the rules of one namespace for one host: subsets are added (the first
/// definition of a name wins) and the first traffic policy applies. A rule whose `exportTo`
/// differs stays apart, and the last of a namespace's rules applies.
#[test]
fn destination_rules_of_one_namespace_are_merged_in_file_order() {
    let v1 = "outbound|9080|v1|billing.finance.svc.cluster.local";
    let v2 = "outbound|9080|v2|billing.finance.svc.cluster.local";
    let yaml = billing(
        &[
            rule(
                "finance",
                "first",
                10,
                "  subsets: [{name: v1, labels: {version: v1}}]\n",
            ),
            rule(
                "finance",
                "second",
                99,
                "  subsets:\n  - {name: v1, labels: {version: v9}}\n  - {name: v2, labels: {version: v2}}\n",
            ),
        ]
        .concat(),
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    for config in [&loaded.config, &for_namespace(&loaded, "web")] {
        assert_eq!(
            max_requests(config, BILLING_CLUSTER),
            Some(10),
            "the first policy"
        );
        let v1 = config.cluster(v1).expect("first's v1");
        assert_eq!(v1.endpoints.len(), 1, "first's labels select 10.0.0.1");
        assert!(config.cluster(v2).is_some(), "second's v2 is added");
    }
    let messages: Vec<&str> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(
        messages.iter().any(
            |m| m.starts_with("merged into DestinationRule finance/first")
                && m.contains("trafficPolicy is ignored")
        ),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m
                .starts_with("subset `v1` is already defined by DestinationRule finance/first")),
        "{messages:?}"
    );
    assert_eq!(
        &*for_namespace(&loaded, "web").outbound().unwrap().rules,
        [(
            Arc::from("billing.finance.svc.cluster.local"),
            Some(Arc::from("finance/first + finance/second"))
        )]
    );

    // Different `exportTo`: two rules, and a workload of the namespace gets the last.
    let yaml = billing(
        &[
            rule("finance", "first", 10, ""),
            rule("finance", "second", 99, "  exportTo: [.]\n"),
        ]
        .concat(),
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    assert_eq!(
        max_requests(&for_namespace(&loaded, "finance"), BILLING_CLUSTER),
        Some(99)
    );
    assert_eq!(
        max_requests(&for_namespace(&loaded, "web"), BILLING_CLUSTER),
        Some(10),
        "only the first is exported"
    );
}

/// A VirtualService `namespace/name` for billing with `timeout` and `rest` (`exportTo`).
fn route(namespace: &str, name: &str, timeout: u64, rest: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [billing.finance.svc.cluster.local]
{rest}  http:
  - route: [{{destination: {{host: billing.finance.svc.cluster.local}}}}]
    timeout: {timeout}s
"
    )
}

fn timeout(config: &MeshConfig) -> Option<u64> {
    let table = config.listener(BILLING)?;
    match &table.virtual_hosts().first()?.routes().first()?.action {
        crate::Action::Forward(f) => f.timeout.map(|t| t.as_secs()),
        _ => None,
    }
}

/// Istio (sidecars): of the VirtualServices for a host, the workload's namespace's private
/// ones first, then those exported to its namespace by name, then the public ones, each in
/// creation (here: file) order; the first imported one routes the host.
#[test]
fn virtual_services_for_one_host_apply_by_the_clients_namespace() {
    let yaml = billing(
        &[
            route("finance", "billing", 1, ""),
            route("prod", "billing", 2, "  exportTo: [.]\n"),
            route("web", "billing", 3, "  exportTo: [prod, qa]\n"),
            route("ops", "billing", 4, ""),
        ]
        .concat(),
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    let applied = |ns: &str| timeout(&for_namespace(&loaded, ns));
    assert_eq!(applied("prod"), Some(2), "its own private one");
    assert_eq!(
        applied("qa"),
        Some(3),
        "exported to it by name, before public ones"
    );
    assert_eq!(applied("web"), Some(1), "the first public one");
    assert_eq!(
        timeout(&loaded.config),
        Some(1),
        "un-narrowed: as for finance"
    );
    assert_eq!(
        &*for_namespace(&loaded, "qa").outbound().unwrap().routed,
        [(Arc::from(BILLING), Some(Arc::from("web/billing")))]
    );
    assert!(
        loaded.warnings.iter().any(|w| w.message.starts_with(
            "host billing.finance.svc.cluster.local also has VirtualService finance/billing"
        )),
        "{:?}",
        loaded.warnings
    );

    // A Sidecar importing only finance's configuration: prod's own VirtualService is not
    // imported, finance's applies.
    let sidecar = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress: [{hosts: [finance/*]}]
";
    let loaded = load_str("mesh.yaml", &format!("{yaml}{sidecar}")).unwrap();
    assert_eq!(timeout(&for_namespace(&loaded, "prod")), Some(1));
}
