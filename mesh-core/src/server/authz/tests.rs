//! The authorization matrix: policies × requests → decision.
//!
//! The story: `reviews` (namespace `default`, labels `app=reviews, version=v1`) is called by
//! `productpage` over mTLS from 10.0.0.5. Each case changes the policies or the request and
//! states the expected verdict, the dry-run denials and the audit flag.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::{DEFAULT_ROOT_NAMESPACE, WorkloadScope};

const PRODUCTPAGE: &str = "cluster.local/ns/default/sa/productpage";

// --- requests ---

#[derive(Clone, Debug)]
struct Req {
    principal: Option<&'static str>,
    namespace: Option<&'static str>,
    ip: Option<IpAddr>,
    port: u16,
    host: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn req() -> Req {
    Req {
        principal: Some(PRODUCTPAGE),
        namespace: None,
        ip: Some(ip("10.0.0.5")),
        port: 9080,
        host: "reviews.default.svc.cluster.local",
        method: "GET",
        path: "/api/v1/reviews",
        headers: vec![],
    }
}

impl Req {
    fn principal(mut self, p: Option<&'static str>) -> Self {
        self.principal = p;
        self
    }
    fn namespace(mut self, ns: &'static str) -> Self {
        self.namespace = Some(ns);
        self
    }
    fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }
    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn grpc(self, path: &'static str) -> Self {
        self.method("POST")
            .path(path)
            .header("content-type", "application/grpc")
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// --- policies ---

fn strings(values: &[&str]) -> Arc<[IstioString]> {
    values
        .iter()
        .map(|v| IstioString::parse(v).unwrap())
        .collect()
}

fn nets(values: &[&str]) -> Arc<[IpNet]> {
    values.iter().map(|v| v.parse().unwrap()).collect()
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: name.into(),
        scope: WorkloadScope {
            namespace: "default".into(),
            selector: None,
        },
        action,
        rules: rules.into(),
        dry_run: false,
    }
}

fn allow(name: &str, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    policy(name, AuthzAction::Allow, rules)
}

fn deny(name: &str, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    policy(name, AuthzAction::Deny, rules)
}

fn audit(name: &str, rules: Vec<AuthzRule>) -> AuthorizationPolicy {
    policy(name, AuthzAction::Audit, rules)
}

trait PolicyExt {
    fn dry_run(self) -> Self;
    fn in_namespace(self, ns: &str) -> Self;
    fn selector(self, labels: &[(&str, &str)]) -> Self;
}

impl PolicyExt for AuthorizationPolicy {
    fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
    fn in_namespace(mut self, ns: &str) -> Self {
        self.scope.namespace = ns.into();
        self
    }
    fn selector(mut self, labels: &[(&str, &str)]) -> Self {
        self.scope.selector = Some(Labels::new(labels.iter().copied()).unwrap());
        self
    }
}

fn any_request() -> AuthzRule {
    AuthzRule::default()
}

fn from(source: AuthzSource) -> AuthzRule {
    AuthzRule {
        from: Arc::from([source]),
        ..AuthzRule::default()
    }
}

fn to(operation: AuthzOperation) -> AuthzRule {
    AuthzRule {
        to: Arc::from([operation]),
        ..AuthzRule::default()
    }
}

fn when(key: ConditionKey, values: &[&str], not_values: &[&str]) -> AuthzRule {
    AuthzRule {
        when: Arc::from([AuthzCondition {
            key,
            values: strings(values),
            not_values: strings(not_values),
        }]),
        ..AuthzRule::default()
    }
}

fn header(name: &'static str) -> ConditionKey {
    ConditionKey::RequestHeader(HeaderName::from_static(name))
}

fn principals(p: &[&str]) -> AuthzSource {
    AuthzSource {
        principals: strings(p),
        ..AuthzSource::default()
    }
}

fn not_principals(p: &[&str]) -> AuthzSource {
    AuthzSource {
        not_principals: strings(p),
        ..AuthzSource::default()
    }
}

fn namespaces(ns: &[&str]) -> AuthzSource {
    AuthzSource {
        namespaces: strings(ns),
        ..AuthzSource::default()
    }
}

fn not_namespaces(ns: &[&str]) -> AuthzSource {
    AuthzSource {
        not_namespaces: strings(ns),
        ..AuthzSource::default()
    }
}

fn ip_blocks(blocks: &[&str]) -> AuthzSource {
    AuthzSource {
        ip_blocks: nets(blocks),
        ..AuthzSource::default()
    }
}

fn not_ip_blocks(blocks: &[&str]) -> AuthzSource {
    AuthzSource {
        not_ip_blocks: nets(blocks),
        ..AuthzSource::default()
    }
}

fn methods(m: &[&str]) -> AuthzOperation {
    AuthzOperation {
        methods: strings(m),
        ..AuthzOperation::default()
    }
}

fn not_methods(m: &[&str]) -> AuthzOperation {
    AuthzOperation {
        not_methods: strings(m),
        ..AuthzOperation::default()
    }
}

fn paths(p: &[&str]) -> AuthzOperation {
    AuthzOperation {
        paths: strings(p),
        ..AuthzOperation::default()
    }
}

fn not_paths(p: &[&str]) -> AuthzOperation {
    AuthzOperation {
        not_paths: strings(p),
        ..AuthzOperation::default()
    }
}

fn ports(p: &[u16]) -> AuthzOperation {
    AuthzOperation {
        ports: Arc::from(p),
        ..AuthzOperation::default()
    }
}

fn not_ports(p: &[u16]) -> AuthzOperation {
    AuthzOperation {
        not_ports: Arc::from(p),
        ..AuthzOperation::default()
    }
}

fn hosts(h: &[&str]) -> AuthzOperation {
    AuthzOperation {
        hosts: strings(h),
        ..AuthzOperation::default()
    }
}

fn not_hosts(h: &[&str]) -> AuthzOperation {
    AuthzOperation {
        not_hosts: strings(h),
        ..AuthzOperation::default()
    }
}

// --- evaluation ---

fn reviews_labels() -> Labels {
    Labels::new([("app", "reviews"), ("version", "v1")]).unwrap()
}

fn decide(policies: &[AuthorizationPolicy], r: &Req) -> AuthzDecision {
    let mut headers = HeaderMap::new();
    for (name, value) in &r.headers {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let principals: Vec<Arc<str>> = r.principal.into_iter().map(Arc::from).collect();
    let request = AuthzRequest {
        principals: &principals,
        trust_domains: &TrustDomains::default(),
        source_namespace: r.namespace,
        source_ip: r.ip,
        destination_port: r.port,
        host: r.host,
        method: r.method,
        path: r.path,
        headers: &headers,
    };
    authorize(
        policies,
        "default",
        &reviews_labels(),
        DEFAULT_ROOT_NAMESPACE,
        &request,
    )
}

/// The expected outcome of one case.
#[derive(Debug)]
struct Expect {
    allowed: bool,
    dry_run_denials: &'static [&'static str],
    audit: bool,
}

const ALLOWED: Expect = Expect {
    allowed: true,
    dry_run_denials: &[],
    audit: false,
};

const DENIED: Expect = Expect {
    allowed: false,
    dry_run_denials: &[],
    audit: false,
};

fn check(cases: Vec<(&str, Vec<AuthorizationPolicy>, Req, Expect)>) {
    for (name, policies, request, expect) in cases {
        let decision = decide(&policies, &request);
        let dry: Vec<&str> = decision.dry_run_denials.iter().map(|n| &**n).collect();
        assert_eq!(
            (decision.allowed, dry.as_slice(), decision.audit),
            (expect.allowed, expect.dry_run_denials, expect.audit),
            "case `{name}`: {decision:?}"
        );
    }
}

// --- the matrix ---

#[test]
fn actions_combine_as_in_istio() {
    check(vec![
        ("no policies at all: allow", vec![], req(), ALLOWED),
        (
            "only DENY policies, none matching: allow",
            vec![deny("deny-admin", vec![to(paths(&["/admin*"]))])],
            req(),
            ALLOWED,
        ),
        (
            "DENY beats ALLOW",
            vec![
                allow("allow-all", vec![any_request()]),
                deny("deny-get", vec![to(methods(&["GET"]))]),
            ],
            req(),
            DENIED,
        ),
        (
            "ALLOW exists but none matches: deny",
            vec![allow("allow-post", vec![to(methods(&["POST"]))])],
            req(),
            DENIED,
        ),
        (
            "one of several ALLOW policies matches: allow",
            vec![
                allow("allow-post", vec![to(methods(&["POST"]))]),
                allow("allow-get", vec![to(methods(&["GET"]))]),
            ],
            req(),
            ALLOWED,
        ),
        (
            "ALLOW with no rules is allow-nothing",
            vec![allow("allow-nothing", vec![])],
            req(),
            DENIED,
        ),
        (
            "DENY with no rules denies nothing",
            vec![deny("deny-nothing", vec![])],
            req(),
            ALLOWED,
        ),
        (
            "a rule needs all of from, to and when",
            vec![allow(
                "allow-productpage-get",
                vec![AuthzRule {
                    from: Arc::from([principals(&[PRODUCTPAGE])]),
                    to: Arc::from([methods(&["POST"])]),
                    when: Arc::default(),
                }],
            )],
            req(),
            DENIED,
        ),
        (
            "a policy matches when any rule does",
            vec![allow(
                "allow",
                vec![to(methods(&["POST"])), to(paths(&["/api/*"]))],
            )],
            req(),
            ALLOWED,
        ),
    ]);
}

mod laws;
mod matchers;
mod policies;
