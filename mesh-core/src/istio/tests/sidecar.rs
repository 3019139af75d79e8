//! Sidecar: loaded, and applied to the workload it selects.

use super::*;
use crate::{
    Action, Labels, Workload,
    sidecar::{OutboundMode, OutboundScope},
};

/// Two services in two namespaces, a VirtualService for each, and `sidecar`.
fn mesh(sidecar: &str) -> String {
    let service = |name: &str, ns: &str| {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{port: 9080, name: grpc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{name}]
  http:
  - route: [{{destination: {{host: {name}}}}}]
    timeout: 3s
---
"
        )
    };
    format!(
        "{}{}{sidecar}",
        service("ratings", "prod"),
        service("billing", "finance")
    )
}

const RATINGS: &str = "ratings.prod.svc.cluster.local:9080";
const BILLING: &str = "billing.finance.svc.cluster.local:9080";

fn scoped(yaml: &str, namespace: &str, labels: &[(&str, &str)]) -> MeshConfig {
    let loaded = load_str("mesh.yaml", yaml).unwrap();
    let labels = Labels::new(labels.iter().map(|(k, v)| (*k, *v))).unwrap();
    loaded
        .config
        .for_workload(&Workload::new(namespace, labels))
}

fn outbound(config: &MeshConfig) -> &OutboundScope {
    config.outbound().unwrap()
}

fn has_timeout(config: &MeshConfig, target: &str) -> bool {
    let table = config.listener(target).unwrap();
    let route = &table.virtual_hosts()[0].routes()[0];
    matches!(&route.action, Action::Forward(f) if f.timeout.is_some())
}

#[test]
fn egress_hosts_narrow_what_the_selected_workload_sees() {
    let yaml = mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: prod}
spec:
  workloadSelector: {labels: {app: web}}
  egress:
  - hosts: [./*]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    );
    let web = scoped(&yaml, "prod", &[("app", "web")]);
    assert!(web.listener(RATINGS).is_some());
    assert!(web.listener(BILLING).is_none(), "not imported");
    assert_eq!(outbound(&web).mode, OutboundMode::RegistryOnly);
    assert_eq!(outbound(&web).sidecar.as_deref(), Some("prod/web"));
    assert_eq!(&*outbound(&web).hidden, &[Arc::from(BILLING)]);

    // Another workload of the namespace is not selected: it sees everything, ALLOW_ANY.
    let api = scoped(&yaml, "prod", &[("app", "api")]);
    assert!(api.listener(BILLING).is_some());
    assert_eq!(outbound(&api).mode, OutboundMode::AllowAny);
    assert_eq!(outbound(&api).sidecar, None);
}

#[test]
fn a_service_imported_without_its_virtual_service_gets_the_default_route() {
    // billing's VirtualService lives in another namespace than its service: the root
    // Sidecar imports the service's namespace, not the VirtualService's.
    let yaml = mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: [./*, finance/*]
",
    )
    .replace(
        "metadata: {name: billing, namespace: finance}\nspec:\n  hosts: [billing]\n  http:\n  - route: [{destination: {host: billing}}]",
        "metadata: {name: billing, namespace: routing}\nspec:\n  hosts: [billing.finance.svc.cluster.local]\n  http:\n  - route: [{destination: {host: billing.finance.svc.cluster.local}}]",
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    assert!(has_timeout(&loaded.config, BILLING), "as loaded");
    let prod = scoped(&yaml, "prod", &[]);
    assert!(has_timeout(&prod, RATINGS));
    assert!(
        !has_timeout(&prod, BILLING),
        "its VirtualService is not imported"
    );
    assert_eq!(
        &*outbound(&prod).unrouted,
        &[(Arc::from(BILLING), Arc::from("routing/billing"))]
    );
    // The root namespace's Sidecar: `./` is the workload's own namespace.
    let finance = scoped(&yaml, "finance", &[]);
    assert!(finance.listener(BILLING).is_some());
    assert!(finance.listener(RATINGS).is_none());
}

#[test]
fn an_egress_port_imports_for_that_port_only() {
    let yaml = mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress:
  - port: {number: 8080, protocol: HTTP, name: http}
    hosts: ['*/*']
  - hosts: [./*]
",
    );
    let prod = scoped(&yaml, "prod", &[]);
    assert!(
        prod.listener(RATINGS).is_some(),
        "port 9080: the port-less listener"
    );
    assert!(prod.listener(BILLING).is_none());
}

#[test]
fn what_a_proxyless_workload_cannot_apply_is_reported_by_field() {
    let yaml = mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  inboundConnectionPool: {http: {http1MaxPendingRequests: 10}}
  egress:
  - bind: 127.0.0.2
    captureMode: NONE
    hosts: ['*/*']
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.istio-system.svc.cluster.local, port: {number: 443}}
",
    );
    let loaded = load_str("mesh.yaml", &yaml).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    for field in [
        "spec.ingress: is not supported",
        "spec.inboundConnectionPool: is not supported",
        "spec.egress[0].bind: is not supported",
        "spec.egress[0].captureMode: is not supported",
        "spec.outboundTrafficPolicy.egressProxy: is not supported",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(field)),
            "{field}: {warnings:?}"
        );
    }
    // Passing through would bypass the egress proxy: unknown hosts are refused.
    let prod = loaded
        .config
        .for_workload(&Workload::new("prod", Labels::default()));
    assert_eq!(outbound(&prod).mode, OutboundMode::RegistryOnly);
}

#[test]
fn a_host_entry_without_a_namespace_is_an_error_on_its_path() {
    let yaml = mesh(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress:
  - hosts: [ratings.prod.svc.cluster.local]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    );
    let errors = errors(&yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("(Sidecar default): spec.egress[0].hosts[0]: `ratings.prod.svc.cluster.local` is not `namespace/dnsName`"),
        "{errors:?}"
    );
}

#[test]
fn without_a_sidecar_everything_is_visible_and_unknown_hosts_pass_through() {
    let yaml = mesh("");
    let prod = scoped(&yaml, "prod", &[]);
    assert!(prod.listener(RATINGS).is_some() && prod.listener(BILLING).is_some());
    assert_eq!(
        outbound(&prod).mode,
        OutboundMode::AllowAny,
        "MeshConfig's default"
    );
}

#[test]
fn registry_only_hides_hosts_only_resolved_through_dns() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: prod}
spec:
  hosts: [api.example.com]
  http:
  - route: [{destination: {host: api.example.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let prod = scoped(yaml, "prod", &[]);
    assert!(prod.listener("api.example.com:443").is_none());
    let allow = scoped(&yaml.replace("REGISTRY_ONLY", "ALLOW_ANY"), "prod", &[]);
    assert!(allow.listener("api.example.com:443").is_some());
}

/// The examples of Istio's Sidecar reference load; only what a proxyless workload cannot
/// apply (`ingress`) is reported.
#[test]
fn the_sidecar_references_examples_load() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-config
spec:
  egress:
  - hosts:
    - \"./*\"
    - \"istio-system/*\"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: prod-us1
spec:
  egress:
  - hosts:
    - \"prod-us1/*\"
    - \"prod-apis/*\"
    - \"istio-system/*\"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - \"prod-us1/*\"
  - hosts:
    - \"istio-system/*\"
";
    let loaded = load_str("sidecars.yaml", yaml).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("(Sidecar ratings): spec.ingress: is not supported")
            && warnings[0].ends_with("at line 33 column 3"),
        "{warnings:?}"
    );
    let ratings = Workload::new("prod-us1", Labels::new([("app", "ratings")]).unwrap());
    let scoped = loaded.config.for_workload(&ratings);
    assert_eq!(
        outbound(&scoped).sidecar.as_deref(),
        Some("prod-us1/ratings")
    );
}
