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
    let request = AuthzRequest {
        principal: r.principal,
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

#[test]
fn sources_match_identities_and_addresses() {
    let allow_from = |source| vec![allow("allow", vec![from(source)])];
    check(vec![
        (
            "principal exact",
            allow_from(principals(&[PRODUCTPAGE])),
            req(),
            ALLOWED,
        ),
        (
            "principal exact, other caller",
            allow_from(principals(&["cluster.local/ns/default/sa/ratings"])),
            req(),
            DENIED,
        ),
        (
            "principal prefix",
            allow_from(principals(&["cluster.local/ns/default/*"])),
            req(),
            ALLOWED,
        ),
        (
            "principal suffix",
            allow_from(principals(&["*/sa/productpage"])),
            req(),
            ALLOWED,
        ),
        (
            "principal `*` needs an identity",
            allow_from(principals(&["*"])),
            req().principal(None),
            DENIED,
        ),
        (
            "principal `*` with mTLS",
            allow_from(principals(&["*"])),
            req(),
            ALLOWED,
        ),
        (
            "a spiffe:// prefix on the peer identity is tolerated",
            allow_from(principals(&[PRODUCTPAGE])),
            req().principal(Some("spiffe://cluster.local/ns/default/sa/productpage")),
            ALLOWED,
        ),
        (
            "namespace derived from the principal",
            allow_from(namespaces(&["default"])),
            req(),
            ALLOWED,
        ),
        (
            "namespace given explicitly",
            allow_from(namespaces(&["prod"])),
            req().namespace("prod"),
            ALLOWED,
        ),
        (
            "namespace of another caller",
            allow_from(namespaces(&["prod"])),
            req(),
            DENIED,
        ),
        (
            "a namespace without a principal is not trusted",
            allow_from(namespaces(&["default"])),
            req().principal(None).namespace("default"),
            DENIED,
        ),
        (
            "notNamespaces excludes",
            allow_from(not_namespaces(&["default"])),
            req(),
            DENIED,
        ),
        (
            "notPrincipals excludes",
            allow_from(not_principals(&["*/sa/productpage"])),
            req(),
            DENIED,
        ),
        (
            "notPrincipals lets other callers in",
            allow_from(not_principals(&["*/sa/ratings"])),
            req(),
            ALLOWED,
        ),
        (
            "plaintext is not in any notPrincipals list (ALLOW)",
            allow_from(not_principals(&["*/sa/ratings"])),
            req().principal(None),
            ALLOWED,
        ),
        (
            "DENY notPrincipals [*] rejects plaintext",
            vec![deny("require-mtls", vec![from(not_principals(&["*"]))])],
            req().principal(None),
            DENIED,
        ),
        (
            "DENY notPrincipals [*] lets mTLS through",
            vec![deny("require-mtls", vec![from(not_principals(&["*"]))])],
            req(),
            ALLOWED,
        ),
        (
            "ipBlocks contains",
            allow_from(ip_blocks(&["10.0.0.0/8"])),
            req(),
            ALLOWED,
        ),
        (
            "ipBlocks single address",
            allow_from(ip_blocks(&["10.0.0.6/32"])),
            req(),
            DENIED,
        ),
        (
            "ipBlocks compares IPv4-mapped IPv6 peers as IPv4",
            allow_from(ip_blocks(&["10.0.0.0/8"])),
            req().ip(Some(ip("::ffff:10.0.0.5"))),
            ALLOWED,
        ),
        (
            "notIpBlocks excludes",
            allow_from(not_ip_blocks(&["10.0.0.0/24"])),
            req(),
            DENIED,
        ),
        (
            "notIpBlocks lets others in",
            allow_from(not_ip_blocks(&["192.168.0.0/16"])),
            req(),
            ALLOWED,
        ),
        (
            "a source needs all of its fields",
            allow_from(AuthzSource {
                principals: strings(&[PRODUCTPAGE]),
                ip_blocks: nets(&["192.168.0.0/16"]),
                ..AuthzSource::default()
            }),
            req(),
            DENIED,
        ),
        (
            "a from list needs any of its sources",
            vec![allow(
                "allow",
                vec![AuthzRule {
                    from: Arc::from([ip_blocks(&["192.168.0.0/16"]), principals(&["*"])]),
                    ..AuthzRule::default()
                }],
            )],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn operations_match_the_request_head() {
    let allow_to = |operation| vec![allow("allow", vec![to(operation)])];
    check(vec![
        (
            "method",
            allow_to(methods(&["GET", "HEAD"])),
            req(),
            ALLOWED,
        ),
        (
            "methods are case-sensitive",
            allow_to(methods(&["get"])),
            req(),
            DENIED,
        ),
        ("notMethods", allow_to(not_methods(&["GET"])), req(), DENIED),
        (
            "path exact",
            allow_to(paths(&["/api/v1/reviews"])),
            req(),
            ALLOWED,
        ),
        ("path prefix", allow_to(paths(&["/api/*"])), req(), ALLOWED),
        (
            "path suffix",
            allow_to(paths(&["*/reviews"])),
            req(),
            ALLOWED,
        ),
        ("path other", allow_to(paths(&["/admin"])), req(), DENIED),
        (
            "notPaths",
            allow_to(not_paths(&["/api/v1/*"])),
            req(),
            DENIED,
        ),
        (
            "a query string cannot dodge a path rule",
            vec![deny("deny-admin", vec![to(paths(&["/admin"]))])],
            req().path("/admin?debug=1"),
            DENIED,
        ),
        (
            "gRPC method by path",
            allow_to(AuthzOperation {
                methods: strings(&["POST"]),
                paths: strings(&["/reviews.v1.Reviews/Get*"]),
                ..AuthzOperation::default()
            }),
            req().grpc("/reviews.v1.Reviews/GetReview"),
            ALLOWED,
        ),
        (
            "gRPC whole service by prefix, other service",
            allow_to(paths(&["/reviews.v1.Reviews/*"])),
            req().grpc("/ratings.v1.Ratings/Rate"),
            DENIED,
        ),
        ("port", allow_to(ports(&[9080])), req(), ALLOWED),
        (
            "port other",
            allow_to(ports(&[8080])),
            req().port(9090),
            DENIED,
        ),
        ("notPorts", allow_to(not_ports(&[9080])), req(), DENIED),
        (
            "notPorts other",
            allow_to(not_ports(&[15090])),
            req(),
            ALLOWED,
        ),
        (
            "host exact, any case",
            allow_to(hosts(&["Reviews.default.svc.cluster.local"])),
            req(),
            ALLOWED,
        ),
        (
            "host suffix",
            allow_to(hosts(&["*.svc.cluster.local"])),
            req(),
            ALLOWED,
        ),
        (
            "host prefix",
            allow_to(hosts(&["REVIEWS.*"])),
            req(),
            ALLOWED,
        ),
        ("host other", allow_to(hosts(&["ratings.*"])), req(), DENIED),
        (
            "notHosts",
            allow_to(not_hosts(&["reviews*"])),
            req(),
            DENIED,
        ),
        (
            "notHosts other",
            allow_to(not_hosts(&["ratings*"])),
            req().host("Reviews"),
            ALLOWED,
        ),
        (
            "an operation needs all of its fields",
            allow_to(AuthzOperation {
                methods: strings(&["GET"]),
                not_paths: strings(&["/api/*"]),
                ..AuthzOperation::default()
            }),
            req(),
            DENIED,
        ),
    ]);
}

#[test]
fn conditions_all_must_hold() {
    let allow_when = |rule| vec![allow("allow", vec![rule])];
    let v1_and_internal = AuthzRule {
        when: Arc::from([
            AuthzCondition {
                key: header("x-version"),
                values: strings(&["v1"]),
                not_values: Arc::default(),
            },
            AuthzCondition {
                key: ConditionKey::SourceIp,
                values: strings(&["10.0.0.0/8"]),
                not_values: Arc::default(),
            },
        ]),
        ..AuthzRule::default()
    };
    check(vec![
        (
            "header value",
            allow_when(when(header("x-user"), &["alice"], &[])),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "header names are case-insensitive",
            allow_when(when(
                ConditionKey::RequestHeader(HeaderName::from_bytes(b"X-User").unwrap()),
                &["alice"],
                &[],
            )),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "header value prefix",
            allow_when(when(header("x-user"), &["al*"], &[])),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "missing header does not match values",
            allow_when(when(header("x-user"), &["*"], &[])),
            req(),
            DENIED,
        ),
        (
            "`*` means present, even with an empty value",
            allow_when(when(header("x-user"), &["*"], &[])),
            req().header("x-user", ""),
            ALLOWED,
        ),
        (
            "missing header is not in notValues",
            allow_when(when(header("x-user"), &[], &["mallory"])),
            req(),
            ALLOWED,
        ),
        (
            "header notValues",
            allow_when(when(header("x-user"), &[], &["mallory"])),
            req().header("x-user", "mallory"),
            DENIED,
        ),
        (
            "repeated header values are joined with commas",
            allow_when(when(header("x-user"), &["alice,bob"], &[])),
            req().header("x-user", "alice").header("x-user", "bob"),
            ALLOWED,
        ),
        (
            "source.ip CIDR",
            allow_when(when(ConditionKey::SourceIp, &["10.0.0.0/16"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "source.ip single address",
            allow_when(when(ConditionKey::SourceIp, &["10.0.0.5"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "source.ip notValues",
            allow_when(when(ConditionKey::SourceIp, &[], &["10.0.0.5"])),
            req(),
            DENIED,
        ),
        (
            "source.principal and source.namespace",
            allow_when(AuthzRule {
                when: Arc::from([
                    AuthzCondition {
                        key: ConditionKey::SourcePrincipal,
                        values: strings(&["*/sa/productpage"]),
                        not_values: Arc::default(),
                    },
                    AuthzCondition {
                        key: ConditionKey::SourceNamespace,
                        values: strings(&["default"]),
                        not_values: Arc::default(),
                    },
                ]),
                ..AuthzRule::default()
            }),
            req(),
            ALLOWED,
        ),
        (
            "destination.port numerically",
            allow_when(when(ConditionKey::DestinationPort, &["9080"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "all conditions: both hold",
            allow_when(v1_and_internal.clone()),
            req().header("x-version", "v1"),
            ALLOWED,
        ),
        (
            "all conditions: one fails",
            allow_when(v1_and_internal),
            req().header("x-version", "v1").ip(Some(ip("192.168.1.1"))),
            DENIED,
        ),
    ]);
}

#[test]
fn only_policies_for_this_workload_apply() {
    check(vec![
        (
            "a selector for other labels does not apply",
            vec![
                allow("ratings-only", vec![to(methods(&["POST"]))]).selector(&[("app", "ratings")]),
            ],
            req(),
            ALLOWED,
        ),
        (
            "a matching selector applies",
            vec![
                allow("reviews-only", vec![to(methods(&["POST"]))]).selector(&[("app", "reviews")]),
            ],
            req(),
            DENIED,
        ),
        (
            "another namespace's policy does not apply",
            vec![deny("deny-all", vec![any_request()]).in_namespace("prod")],
            req(),
            ALLOWED,
        ),
        (
            "the root namespace is mesh-wide",
            vec![deny("deny-all", vec![any_request()]).in_namespace(DEFAULT_ROOT_NAMESPACE)],
            req(),
            DENIED,
        ),
        (
            "a root-namespace selector applies to matching workloads everywhere",
            vec![
                deny("deny-v1", vec![any_request()])
                    .in_namespace(DEFAULT_ROOT_NAMESPACE)
                    .selector(&[("version", "v1")]),
            ],
            req(),
            DENIED,
        ),
        (
            "an ALLOW policy of another workload does not make this one allow-listed",
            vec![
                allow("ratings", vec![to(methods(&["POST"]))]).selector(&[("app", "ratings")]),
                deny("deny-admin", vec![to(paths(&["/admin"]))]),
            ],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn dry_run_policies_are_recorded_but_not_enforced() {
    check(vec![
        (
            "dry-run DENY that matches",
            vec![deny("deny-get", vec![to(methods(&["GET"]))]).dry_run()],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["deny-get"],
                audit: false,
            },
        ),
        (
            "dry-run DENY that does not match",
            vec![deny("deny-post", vec![to(methods(&["POST"]))]).dry_run()],
            req(),
            ALLOWED,
        ),
        (
            "dry-run DENY is recorded even when an enforced DENY already denies",
            vec![
                deny("enforced", vec![any_request()]),
                deny("shadow", vec![any_request()]).dry_run(),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &["shadow"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW that does not match, no enforced ALLOW",
            vec![allow("allow-post", vec![to(methods(&["POST"]))]).dry_run()],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW alone does not make the workload allow-listed",
            vec![
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
                deny("deny-admin", vec![to(paths(&["/admin"]))]),
            ],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW that matches",
            vec![allow("allow-get", vec![to(methods(&["GET"]))]).dry_run()],
            req(),
            ALLOWED,
        ),
        (
            "dry-run ALLOW that misses, but an enforced ALLOW matches: would still allow",
            vec![
                allow("allow-get", vec![to(methods(&["GET"]))]),
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
            ],
            req(),
            ALLOWED,
        ),
        (
            "dry-run ALLOW policies are judged one by one",
            vec![
                allow("allow-get", vec![to(methods(&["GET"]))]).dry_run(),
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
            ],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "denials are listed in policy order",
            vec![
                allow("a-allow-post", vec![to(methods(&["POST"]))]).dry_run(),
                deny("b-deny-get", vec![to(methods(&["GET"]))]).dry_run(),
                allow("c-enforced-post", vec![to(methods(&["POST"]))]),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &["a-allow-post", "b-deny-get"],
                audit: false,
            },
        ),
        (
            "dry-run policies of other workloads are not evaluated",
            vec![
                deny("deny-all", vec![any_request()])
                    .dry_run()
                    .in_namespace("prod"),
            ],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn audit_marks_without_deciding() {
    let audited = Expect {
        allowed: true,
        dry_run_denials: &[],
        audit: true,
    };
    check(vec![
        (
            "matching AUDIT",
            vec![audit("audit-get", vec![to(methods(&["GET"]))])],
            req(),
            audited,
        ),
        (
            "AUDIT does not count as an ALLOW policy",
            vec![audit("audit-post", vec![to(methods(&["POST"]))])],
            req(),
            ALLOWED,
        ),
        (
            "AUDIT on a denied request",
            vec![
                audit("audit-all", vec![any_request()]),
                deny("deny-all", vec![any_request()]),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &[],
                audit: true,
            },
        ),
        (
            "dry-run AUDIT is ignored",
            vec![audit("audit-all", vec![any_request()]).dry_run()],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn what_cannot_be_evaluated_fails_closed() {
    check(vec![
        (
            "unknown source IP under a DENY ipBlocks: deny",
            vec![deny("deny-range", vec![from(ip_blocks(&["10.0.0.0/8"]))])],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under a DENY notIpBlocks: deny",
            vec![deny(
                "deny-outside",
                vec![from(not_ip_blocks(&["10.0.0.0/8"]))],
            )],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under an ALLOW ipBlocks: no allow",
            vec![allow("allow-range", vec![from(ip_blocks(&["10.0.0.0/8"]))])],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under an ALLOW notIpBlocks: no allow",
            vec![allow(
                "allow-outside",
                vec![from(not_ip_blocks(&["192.168.0.0/16"]))],
            )],
            req().ip(None),
            DENIED,
        ),
        (
            "another condition that decides still decides",
            vec![deny(
                "deny-admin-from-range",
                vec![AuthzRule {
                    from: Arc::from([ip_blocks(&["10.0.0.0/8"])]),
                    to: Arc::from([paths(&["/admin"])]),
                    when: Arc::default(),
                }],
            )],
            req().ip(None),
            ALLOWED,
        ),
        (
            "a malformed source.ip value in a DENY: deny",
            vec![deny(
                "deny",
                vec![when(ConditionKey::SourceIp, &["not-an-ip"], &[])],
            )],
            req(),
            DENIED,
        ),
        (
            "a malformed destination.port value in an ALLOW: no allow",
            vec![allow(
                "allow",
                vec![when(ConditionKey::DestinationPort, &["http"], &[])],
            )],
            req(),
            DENIED,
        ),
        (
            "a condition without values in a DENY: deny",
            vec![deny("deny", vec![when(header("x-user"), &[], &[])])],
            req(),
            DENIED,
        ),
        (
            "an indeterminate dry-run DENY is recorded",
            vec![deny("deny-range", vec![from(ip_blocks(&["10.0.0.0/8"]))]).dry_run()],
            req().ip(None),
            Expect {
                allowed: true,
                dry_run_denials: &["deny-range"],
                audit: false,
            },
        ),
    ]);
}

#[test]
fn the_decision_names_the_deciding_policy() {
    let policies = [
        allow("allow-get", vec![to(methods(&["GET"]))]),
        deny("deny-admin", vec![to(paths(&["/admin*"]))]),
        deny("deny-admin-too", vec![to(paths(&["/admin*"]))]),
    ];
    assert_eq!(
        decide(&policies, &req()).reason,
        AuthzReason::Allowed("allow-get".into())
    );
    assert_eq!(
        decide(&policies, &req().path("/admin/users")).reason,
        AuthzReason::Denied("deny-admin".into())
    );
    assert_eq!(
        decide(&policies, &req().method("PUT")).reason,
        AuthzReason::NoAllowMatched
    );
    assert_eq!(
        decide(&policies[1..], &req()).reason,
        AuthzReason::NoAllowPolicies
    );
}

#[test]
fn namespaces_are_read_from_spiffe_paths() {
    assert_eq!(
        namespace_of("cluster.local/ns/default/sa/reviews"),
        Some("default")
    );
    assert_eq!(namespace_of("td/ns//sa/x"), None);
    assert_eq!(namespace_of("cluster.local/sa/reviews"), None);
    assert_eq!(namespace_of("ns"), None);
    assert_eq!(namespace_of("ns/ns/prod/sa/x"), Some("prod"));
    assert_eq!(namespace_of("td/sa/x/ns/prod"), None);
}

/// Laws over random policy sets and requests drawn from a small vocabulary, so that matches
/// and misses are both common.
mod laws {
    use proptest::{collection::vec, option, prelude::*, sample::select};

    use super::*;

    fn istio_strings(vocab: &'static [&'static str]) -> impl Strategy<Value = Arc<[IstioString]>> {
        vec(select(vocab), 0..3).prop_map(|v| strings(&v))
    }

    fn ip_nets() -> impl Strategy<Value = Arc<[IpNet]>> {
        vec(
            select(&["10.0.0.0/8", "10.0.0.5/32", "192.168.0.0/16"][..]),
            0..2,
        )
        .prop_map(|v| nets(&v))
    }

    fn source() -> impl Strategy<Value = AuthzSource> {
        const PRINCIPALS: &[&str] = &["*", PRODUCTPAGE, "*/sa/ratings", "cluster.local/ns/prod/*"];
        const NAMESPACES: &[&str] = &["default", "prod", "*"];
        (
            istio_strings(PRINCIPALS),
            istio_strings(PRINCIPALS),
            istio_strings(NAMESPACES),
            istio_strings(NAMESPACES),
            ip_nets(),
            ip_nets(),
        )
            .prop_map(|(p, np, n, nn, ips, nips)| AuthzSource {
                principals: p,
                not_principals: np,
                namespaces: n,
                not_namespaces: nn,
                ip_blocks: ips,
                not_ip_blocks: nips,
            })
    }

    fn operation() -> impl Strategy<Value = AuthzOperation> {
        const METHODS: &[&str] = &["GET", "POST"];
        const PATHS: &[&str] = &["/a", "/b/*", "*/c"];
        let ports = || vec(select(&[80u16, 9080][..]), 0..2).prop_map(Arc::from);
        (
            istio_strings(METHODS),
            istio_strings(METHODS),
            istio_strings(PATHS),
            istio_strings(PATHS),
            ports(),
            ports(),
        )
            .prop_map(|(m, nm, p, np, po, npo)| AuthzOperation {
                methods: m,
                not_methods: nm,
                paths: p,
                not_paths: np,
                ports: po,
                not_ports: npo,
                ..AuthzOperation::default()
            })
    }

    fn condition() -> impl Strategy<Value = AuthzCondition> {
        let key = select(vec![
            header("x-user"),
            ConditionKey::SourceIp,
            ConditionKey::SourcePrincipal,
            ConditionKey::DestinationPort,
        ]);
        const VALUES: &[&str] = &["alice", "10.0.0.0/8", "9080", "*", PRODUCTPAGE];
        (key, istio_strings(VALUES), istio_strings(VALUES)).prop_map(|(key, values, not_values)| {
            AuthzCondition {
                key,
                values,
                not_values,
            }
        })
    }

    fn rule() -> impl Strategy<Value = AuthzRule> {
        (
            vec(source(), 0..2),
            vec(operation(), 0..2),
            vec(condition(), 0..2),
        )
            .prop_map(|(from, to, when)| AuthzRule {
                from: from.into(),
                to: to.into(),
                when: when.into(),
            })
    }

    fn any_policy() -> impl Strategy<Value = AuthorizationPolicy> {
        let action = select(&[AuthzAction::Allow, AuthzAction::Deny, AuthzAction::Audit][..]);
        let namespace = select(&["default", "prod", DEFAULT_ROOT_NAMESPACE][..]);
        let selector = option::of(select(&["reviews", "ratings"][..]));
        (
            action,
            namespace,
            selector,
            vec(rule(), 0..3),
            proptest::bool::ANY,
        )
            .prop_map(|(action, namespace, selector, rules, dry_run)| {
                let p = policy("p", action, rules).in_namespace(namespace);
                let p = match selector {
                    Some(app) => p.selector(&[("app", app)]),
                    None => p,
                };
                if dry_run { p.dry_run() } else { p }
            })
    }

    /// Policies with distinct names, so dry-run denials can be traced back.
    fn policies() -> impl Strategy<Value = Vec<AuthorizationPolicy>> {
        vec(any_policy(), 0..5).prop_map(|ps| {
            ps.into_iter()
                .enumerate()
                .map(|(i, mut p)| {
                    p.name = format!("p{i}").into();
                    p
                })
                .collect()
        })
    }

    fn request() -> impl Strategy<Value = Req> {
        (
            select(
                &[
                    Some(PRODUCTPAGE),
                    Some("cluster.local/ns/prod/sa/ratings"),
                    None,
                ][..],
            ),
            option::of(select(&["10.0.0.5", "192.168.1.1"][..])),
            select(&["GET", "POST"][..]),
            select(&["/a", "/b/c", "/d"][..]),
            select(&[80u16, 9080][..]),
            option::of(select(&["alice", "bob"][..])),
        )
            .prop_map(|(principal, source_ip, method, path, port, user)| {
                let r = req()
                    .principal(principal)
                    .ip(source_ip.map(ip))
                    .method(method)
                    .path(path)
                    .port(port);
                match user {
                    Some(user) => r.header("x-user", user),
                    None => r,
                }
            })
    }

    proptest! {
        /// Dry-run policies never change the verdict.
        #[test]
        fn dry_run_policies_never_decide(ps in policies(), r in request()) {
            let enforced: Vec<_> = ps.iter().filter(|p| !p.dry_run).cloned().collect();
            prop_assert_eq!(decide(&ps, &r).allowed, decide(&enforced, &r).allowed);
        }

        /// A recorded dry-run policy denies once enforced; an unrecorded one, once enforced,
        /// never denies a request that was allowed.
        #[test]
        fn dry_run_denials_predict_enforcement(ps in policies(), r in request()) {
            let decision = decide(&ps, &r);
            for (i, p) in ps.iter().enumerate().filter(|(_, p)| p.dry_run) {
                let mut enforced = ps.clone();
                enforced[i].dry_run = false;
                let after = decide(&enforced, &r).allowed;
                if decision.dry_run_denials.contains(&p.name) {
                    prop_assert!(!after, "{} was recorded but allows once enforced", p.name);
                } else if p.action != AuthzAction::Audit {
                    prop_assert!(!decision.allowed || after, "{} denies once enforced", p.name);
                }
            }
        }

        /// Not knowing the source IP never lets through what some known IP would not:
        /// indeterminate conditions fail closed.
        #[test]
        fn an_unknown_source_ip_fails_closed(ps in policies(), r in request()) {
            if decide(&ps, &r.clone().ip(None)).allowed {
                for known in ["10.0.0.5", "192.168.1.1"] {
                    prop_assert!(decide(&ps, &r.clone().ip(Some(ip(known)))).allowed);
                }
            }
        }

        /// A DENY policy that matches every request of the workload always denies.
        #[test]
        fn a_deny_all_policy_always_denies(ps in policies(), r in request()) {
            let mut ps = ps;
            ps.push(deny("deny-all", vec![any_request()]));
            prop_assert!(!decide(&ps, &r).allowed);
        }
    }
}
