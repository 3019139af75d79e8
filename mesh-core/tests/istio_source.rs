//! Matches scoped by caller or gateway narrow the routes mesh traffic sees, never widen them.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, Method};
use mesh_core::{
    Labels, MeshConfig, Workload,
    istio::{Loaded, load_str},
    route::{Action, RequestHead},
};

const TARGET: &str = "reviews.default.svc.cluster.local:9080";

const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - number: 9080
    name: http
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
  - address: 10.0.0.2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
---
";

fn loaded(vs: &str) -> Loaded {
    match load_str("mesh.yaml", &format!("{SERVICE}{vs}")) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

fn workload(namespace: &str, labels: &[(&str, &str)]) -> Workload {
    Workload::new(
        namespace,
        Labels::new(labels.iter().map(|(k, v)| (*k, *v))).unwrap(),
    )
}

/// The cluster a request from `source` goes to, or `None` when no route matches.
fn cluster_for(config: &MeshConfig, source: Option<&Workload>) -> Option<String> {
    let headers = HeaderMap::new();
    let head = RequestHead {
        method: &Method::GET,
        authority: "reviews:9080",
        path_and_query: "/",
        headers: &headers,
        source,
    };
    let m = config.listener(TARGET).expect("a listener").find(&head)?;
    match &m.route.action {
        Action::Forward(f) => Some(f.clusters.clusters()[0].name.to_string()),
        other => panic!("not a forward: {other:?}"),
    }
}

const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

/// Istio's "route by source labels" example: only callers labelled `app: productpage` take
/// the first route; everyone else falls through to the second.
#[test]
fn source_labels_and_namespace_choose_the_route_by_caller() {
    let l = loaded(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: productpage}
      sourceNamespace: default
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let productpage = workload("default", &[("app", "productpage"), ("version", "v1")]);
    assert_eq!(
        cluster_for(&l.config, Some(&productpage)).as_deref(),
        Some(V2)
    );
    let other_app = workload("default", &[("app", "ratings")]);
    assert_eq!(
        cluster_for(&l.config, Some(&other_app)).as_deref(),
        Some(V1)
    );
    let other_ns = workload("prod", &[("app", "productpage")]);
    assert_eq!(cluster_for(&l.config, Some(&other_ns)).as_deref(), Some(V1));
    assert_eq!(cluster_for(&l.config, None).as_deref(), Some(V1));
}

/// A VirtualService bound only to a gateway configures that gateway: mesh traffic keeps the
/// default route, and the loader says why the rule is not applied.
#[test]
fn a_gateway_only_virtual_service_does_not_apply_to_mesh_traffic() {
    let l = loaded(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-edge
spec:
  hosts: [reviews, reviews.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
",
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.to_string().contains("not `mesh`")),
        "{:?}",
        l.warnings
    );
    assert_eq!(
        cluster_for(&l.config, None).as_deref(),
        Some("outbound|9080||reviews.default.svc.cluster.local")
    );
    // Its gateway-side host is neither resolved through DNS for the mesh nor warned about.
    assert!(
        !l.warnings
            .iter()
            .any(|w| w.to_string().contains("reviews.example.com")),
        "{:?}",
        l.warnings
    );
    assert!(l.config.listener("reviews.example.com:9080").is_none());
}

/// A match's own `gateways` override the VirtualService's: a match naming only gateways never
/// matches mesh traffic, one naming `mesh` does even in a gateway-bound VirtualService.
#[test]
fn match_gateways_are_honoured() {
    let l = loaded(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [mesh, edge]
  http:
  - match:
    - gateways: [edge]
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    assert_eq!(cluster_for(&l.config, None).as_deref(), Some(V1));

    let l = loaded(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [edge]
  http:
  - match:
    - gateways: [edge]
    route:
    - destination: {host: reviews, subset: v1}
  - match:
    - gateways: [mesh]
    route:
    - destination: {host: reviews, subset: v2}
",
    );
    assert_eq!(cluster_for(&l.config, None).as_deref(), Some(V2));
}
