use mesh_core::{InboundChain, istio::load_str};

use super::*;
use crate::decode::inbound::decode_inbound_listener;

const NAME: &str = "xds.istio.io/grpc/lds/inbound/10.0.0.1:8080";

fn policy(yaml: &str) -> ServerPolicy {
    (**load_str("p.yaml", yaml).unwrap().config.server()).clone()
}

fn workload(labels: &[(&str, &str)]) -> Workload {
    Workload {
        namespace: "default".into(),
        labels: Labels::new(labels.iter().copied()).unwrap(),
    }
}

/// The listener as this mesh's server decodes it: its one chain, nothing unsupported.
fn chain(policy: &ServerPolicy, w: &Workload) -> std::sync::Arc<InboundChain> {
    let l = encode_inbound(NAME, policy, w).unwrap();
    let decoded = decode_inbound_listener(&l).unwrap();
    assert!(decoded.unsupported.is_empty(), "{:?}", decoded.unsupported);
    decoded.value.chain_for_every_connection().cloned().unwrap()
}

fn peer_authn(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"
    )
}

#[test]
fn only_inbound_names_with_an_address_are_built() {
    let p = ServerPolicy::default();
    let w = workload(&[]);
    assert!(encode_inbound("echo.default.svc.cluster.local:80", &p, &w).is_none());
    assert!(encode_inbound("xds.istio.io/grpc/lds/inbound/nope", &p, &w).is_none());
    assert!(encode_inbound(NAME, &p, &w).is_some());
}

#[test]
fn the_chain_follows_peer_authentication_as_istiod_does_for_grpc() {
    let labelled = workload(&[("security.istio.io/tlsMode", "istio")]);
    let plain = workload(&[]);
    for (mode, w, want) in [
        ("STRICT", &plain, MtlsMode::Strict),
        ("PERMISSIVE", &plain, MtlsMode::Disable),
        ("PERMISSIVE", &labelled, MtlsMode::Strict),
        ("DISABLE", &labelled, MtlsMode::Disable),
    ] {
        let c = chain(&policy(&peer_authn(mode)), w);
        assert_eq!(c.mtls, want, "{mode} {w:?}");
        let suffix = if want == MtlsMode::Strict {
            "mtls"
        } else {
            "plaintext"
        };
        assert_eq!(&*c.name, format!("inbound-{suffix}"));
    }
    // No PeerAuthentication: Istio's default PERMISSIVE, plaintext without the label.
    assert_eq!(
        chain(&ServerPolicy::default(), &plain).mtls,
        MtlsMode::Disable
    );
    // A port-level override on a selected workload.
    let yaml = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  mtls: {mode: DISABLE}
  portLevelMtls: {\"8080\": {mode: STRICT}}
";
    assert_eq!(
        chain(&policy(yaml), &workload(&[("app", "echo")])).mtls,
        MtlsMode::Strict
    );
}

#[test]
fn rbac_is_deny_then_allow_for_the_selected_workload_only() {
    let yaml = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/reviews], namespaces: [\"prod*\"]}}]
    to: [{operation: {paths: [\"/echo.Echo/*\"], methods: [POST], ports: [\"8080\"]}}]
    when: [{key: \"request.headers[x-user]\", values: [jason]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - from: [{source: {notPrincipals: [\"*\"], ipBlocks: [10.0.0.0/8]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec:
  action: AUDIT
  rules: [{}]
";
    let p = policy(yaml);
    let echo = workload(&[("app", "echo")]);
    let c = chain(&p, &echo);
    let names: Vec<&str> = c.rbac.iter().map(|f| &*f.name).collect();
    assert_eq!(names, [RBAC_DENY_FILTER, RBAC_ALLOW_FILTER]);
    let deny = c.rbac[0].rules.as_ref().unwrap();
    assert_eq!(deny.action, mesh_core::RbacAction::Deny);
    assert_eq!(&*deny.policies[0].name, "default-deny-0");
    let allow = c.rbac[1].rules.as_ref().unwrap();
    assert_eq!(&*allow.policies[0].name, "default-allow-0");
    let view = inbound_view(NAME, &p, &echo).unwrap();
    assert_eq!(view.dropped.len(), 1, "{:?}", view.dropped);
    assert!(
        view.dropped[0].contains("default/audit"),
        "{:?}",
        view.dropped
    );
    // Another workload of the namespace: no selected policy, no RBAC filter.
    assert!(chain(&p, &workload(&[("app", "other")])).rbac.is_empty());
}

/// The RBAC sent decides every request of a grid exactly as the mesh's own authorization
/// engine decides it from the YAML.
#[test]
fn the_rbac_sent_decides_as_the_authorization_policies_do() {
    let yaml = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/reviews]}}, {source: {namespaces: [\"prod*\"]}}]
    to: [{operation: {paths: [\"/echo.Echo/*\"], methods: [POST], ports: [\"8080\"]}}]
  - to: [{operation: {paths: [/health]}}]
    when: [{key: \"request.headers[x-user]\", values: [jason]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {notPrincipals: [\"*\"], ipBlocks: [10.0.0.0/8]}}]
  - to: [{operation: {notPaths: [\"*Say\", /health, \"/echo.Echo/*\"]}}]
  - when: [{key: source.ip, values: [192.168.7.7]}]
";
    let p = policy(yaml);
    let w = workload(&[]);
    let filters = chain(&p, &w).rbac.clone();
    let trust = mesh_core::TrustDomains::default();
    let none = http::HeaderMap::new();
    let mut jason = http::HeaderMap::new();
    jason.insert("x-user", http::HeaderValue::from_static("jason"));
    let (mut allowed, mut denied) = (0, 0);
    for (principal, namespace) in [
        (Some("cluster.local/ns/default/sa/reviews"), "default"),
        (Some("cluster.local/ns/production/sa/x"), "production"),
        (Some("cluster.local/ns/other/sa/y"), "other"),
        (None, ""),
    ] {
        let principals: Vec<std::sync::Arc<str>> = principal.into_iter().map(Into::into).collect();
        for ip in ["10.1.2.3", "192.168.0.1", "192.168.7.7"] {
            for port in [8080, 9090] {
                for path in [
                    "/echo.Echo/Say",
                    "/echo.Echo/Shout",
                    "/health",
                    "/x.Y/Say",
                    "/x.Y/Z",
                ] {
                    for method in ["POST", "GET"] {
                        for headers in [&none, &jason] {
                            let request = mesh_core::AuthzRequest {
                                principals: &principals,
                                trust_domains: &trust,
                                source_namespace: principal.map(|_| namespace),
                                source_ip: Some(ip.parse().unwrap()),
                                destination_port: port,
                                host: "echo.default.svc.cluster.local",
                                method,
                                path,
                                headers,
                            };
                            let want = p
                                .authorize("default", &w.labels, DEFAULT_ROOT_NAMESPACE, &request)
                                .allowed;
                            let got = mesh_core::authorize_rbac(&filters, &request).allowed;
                            assert_eq!(got, want, "{request:?}");
                            if want {
                                allowed += 1;
                            } else {
                                denied += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        allowed > 0 && denied > 0,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn principals_are_written_as_istiod_writes_them() {
    assert_eq!(
        with_prefix("cluster.local/ns/a/sa/b", "spiffe://"),
        exact("spiffe://cluster.local/ns/a/sa/b".into())
    );
    assert_eq!(with_prefix("*", "spiffe://"), regex(".+".into()));
    assert_eq!(
        with_prefix("*/sa/b", "spiffe://"),
        regex("spiffe://.*/sa/b".into())
    );
    assert_eq!(namespace_matcher("prod*"), regex(".*/ns/prod.*/.*".into()));
}
