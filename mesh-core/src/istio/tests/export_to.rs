//! `exportTo` of services, VirtualServices and DestinationRules, evaluated for the workload's
//! namespace, and routes to services the workload cannot see.

use super::*;
use crate::{Action, Labels, Workload};

const BILLING: &str = "billing.finance.svc.cluster.local:9080";
const BILLING_CLUSTER: &str = "outbound|9080||billing.finance.svc.cluster.local";
const BILLING_V1: &str = "outbound|9080|v1|billing.finance.svc.cluster.local";

/// `billing` in `finance` (a Kubernetes Service with `annotations`), and `extra` documents.
fn billing(annotations: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: billing, namespace: finance, annotations: {{{annotations}}}}}
spec:
  ports: [{{port: 9080, name: grpc}}]
---
{extra}"
    )
}

fn scoped(yaml: &str, namespace: &str) -> MeshConfig {
    load_str("mesh.yaml", yaml)
        .unwrap()
        .config
        .for_workload(&Workload::new(namespace, Labels::default()))
}

fn has_timeout(config: &MeshConfig, target: &str) -> bool {
    let table = config.listener(target).unwrap();
    let route = &table.virtual_hosts()[0].routes()[0];
    matches!(&route.action, Action::Forward(f) if f.timeout.is_some())
}

#[test]
fn a_service_is_visible_only_to_the_namespaces_it_is_exported_to() {
    let service_entry = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: finance}
spec:
  hosts: [ledger.example.com]
  exportTo: [., audit]
  resolution: DNS
  ports: [{number: 443, name: grpc}]
";
    let yaml = billing("networking.istio.io/exportTo: \".\"", service_entry);
    let ledger = "ledger.example.com:443";
    let ledger_cluster = "outbound|443||ledger.example.com";

    let finance = scoped(&yaml, "finance");
    assert!(finance.listener(BILLING).is_some());
    assert!(finance.listener(ledger).is_some());
    assert!(finance.cluster(BILLING_CLUSTER).is_some());

    let prod = scoped(&yaml, "prod");
    assert!(prod.listener(BILLING).is_none(), "exported to finance only");
    assert!(
        prod.listener(ledger).is_none(),
        "exported to finance and audit"
    );
    assert!(prod.cluster(BILLING_CLUSTER).is_none());
    assert!(prod.cluster(ledger_cluster).is_none());
    let outbound = prod.outbound().unwrap();
    assert!(outbound.hidden.iter().any(|h| &**h == BILLING));

    let audit = scoped(&yaml, "audit");
    assert!(audit.listener(ledger).is_some());
    assert!(audit.listener(BILLING).is_none());

    // `~`: visible to no namespace, not even its own.
    let hidden = billing("networking.istio.io/exportTo: \"~\"", "");
    assert!(scoped(&hidden, "finance").listener(BILLING).is_none());
}

#[test]
fn a_virtual_service_not_exported_to_the_namespace_leaves_the_default_route() {
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: billing, namespace: finance}
spec:
  hosts: [billing]
  exportTo: [.]
  http:
  - route: [{destination: {host: billing}}]
    timeout: 3s
";
    let yaml = billing("", vs);
    assert!(has_timeout(&scoped(&yaml, "finance"), BILLING));
    let prod = scoped(&yaml, "prod");
    assert!(
        !has_timeout(&prod, BILLING),
        "the VirtualService is private"
    );
    assert_eq!(
        &*prod.outbound().unwrap().unrouted,
        &[(Arc::from(BILLING), Arc::from("finance/billing"))]
    );
}

/// A DestinationRule for `billing` in `namespace`, exported to `export_to`, with subset `v1`
/// and a limit on requests.
fn rule(namespace: &str, export_to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: billing, namespace: {namespace}}}
spec:
  host: billing.finance.svc.cluster.local
  exportTo: {export_to}
  trafficPolicy: {{connectionPool: {{http: {{http2MaxRequests: 7}}}}}}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
"
    )
}

fn shaped(config: &MeshConfig) -> bool {
    config
        .cluster(BILLING_CLUSTER)
        .unwrap()
        .breaker
        .max_requests
        == 7
}

#[test]
fn a_destination_rule_applies_where_istiod_looks_it_up_and_it_is_exported() {
    // In the service's namespace, private: for finance's workloads only.
    let yaml = billing("", &rule("finance", "[.]"));
    let finance = scoped(&yaml, "finance");
    assert!(shaped(&finance));
    assert!(finance.cluster(BILLING_V1).is_some());
    let prod = scoped(&yaml, "prod");
    assert!(!shaped(&prod), "the rule is not exported to prod");
    assert!(
        prod.cluster(BILLING_V1).is_none(),
        "only the rule defines it"
    );
    assert_eq!(
        &*prod.outbound().unwrap().unshaped,
        &[
            (Arc::from(BILLING_V1), Arc::from("finance/billing")),
            (Arc::from(BILLING_CLUSTER), Arc::from("finance/billing")),
        ]
    );

    // In the client's namespace: for its own workloads, even for another namespace's service.
    let yaml = billing("", &rule("prod", "[.]"));
    assert!(shaped(&scoped(&yaml, "prod")));
    assert!(!shaped(&scoped(&yaml, "finance")));

    // In a third namespace: istiod looks in the client's, the service's and the root
    // namespace only, so exporting it everywhere applies it to its own namespace alone.
    let yaml = billing("", &rule("tools", "['*']"));
    assert!(shaped(&scoped(&yaml, "tools")));
    assert!(!shaped(&scoped(&yaml, "prod")));

    // In the root namespace, exported: everyone's.
    let yaml = billing("", &rule("istio-system", "['*']"));
    assert!(shaped(&scoped(&yaml, "prod")));
}

#[test]
fn a_visible_route_to_a_hidden_service_names_a_missing_cluster() {
    let extra = "apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: prod}
spec:
  ports: [{port: 9080, name: grpc}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: billing.finance.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress:
  - hosts: [./*]
";
    let yaml = billing("", extra);
    let prod = scoped(&yaml, "prod");
    let table = prod
        .listener("ratings.prod.svc.cluster.local:9080")
        .unwrap();
    let route = &table.virtual_hosts()[0].routes()[0];
    let Action::Forward(forward) = &route.action else {
        panic!("{route:?}")
    };
    assert_eq!(&*forward.clusters.clusters()[0].name, BILLING_CLUSTER);
    assert!(prod.cluster(BILLING_CLUSTER).is_none(), "billing is hidden");
    assert_eq!(
        &*prod.outbound().unwrap().hidden_clusters,
        &[Arc::from(BILLING_CLUSTER)]
    );
    // Finance has no Sidecar: it sees billing and its cluster.
    assert!(scoped(&yaml, "finance").cluster(BILLING_CLUSTER).is_some());
}

#[test]
fn export_to_is_validated_as_istio_does() {
    let vs = |export_to: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: billing, namespace: finance}}
spec:
  hosts: [billing]
  exportTo: {export_to}
  http:
  - route: [{{destination: {{host: billing}}}}]
"
        )
    };
    for (export_to, message) in [
        ("['*', prod]", "cannot be combined"),
        ("['~']", "only allowed for services"),
        ("[Prod_]", "not `*`, `.`, `~` or a namespace name"),
        ("[., finance]", "listed twice"),
    ] {
        let errors = errors(&billing("", &vs(export_to)));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("spec.exportTo") && e.contains(message)),
            "{export_to}: {errors:?}"
        );
    }
    let errors = errors(&billing("networking.istio.io/exportTo: \"*, prod\"", ""));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("networking.istio.io/exportTo") && e.contains("cannot be combined")),
        "{errors:?}"
    );
}
