//! The authorization engine against a reference model of Istio's `AuthorizationPolicy`.
//!
//! [`authz`] turns the fuzzer's bytes into a small [`Case`] (a few policies over a fixed
//! vocabulary of hostile and ordinary values, and one request), judges it with
//! `mesh_core::authorize` and with [`Model`], written here from Istio's documentation alone
//! and sharing no code with the engine, and panics when they disagree.
//!
//! The model's semantics, each from Istio's reference and concept pages
//! (istio.io/latest/docs/reference/config/security/authorization-policy/,
//! /docs/concepts/security/#authorization-policies):
//!
//! - A policy applies to a workload when it lives in the workload's namespace or in the root
//!   namespace and its selector (if any) is a subset of the workload's labels.
//! - CUSTOM, then DENY, then ALLOW: any matching DENY policy denies; without an ALLOW policy the
//!   request is allowed; otherwise it is allowed iff some ALLOW policy matches. (CUSTOM is
//!   refused by the YAML loader, so it never reaches the engine.) AUDIT policies only mark the
//!   request. Dry-run policies never decide.
//! - A policy matches when any rule does (no rules: nothing). A rule matches when every one of
//!   its `from`, `to` and `when` parts does; an empty part is no condition, so an empty rule
//!   matches everything. Within `from` (or `to`) any entry may match; within an entry every
//!   set field must match; within a field any value may match; a `notX` field matches when no
//!   value matches.
//! - Strings: `*` is any non-empty value, `x*` a prefix, `*x` a suffix, else exact. Hosts
//!   compare ASCII case-insensitively, everything else exactly.
//! - Principals are the caller's URI SANs without `spiffe://`; each one counts. A plaintext
//!   caller has none: a positive identity field never matches it, a `notX` one always does.
//! - Trust domains (the trust-domain migration task): the mesh's trust domain and its aliases
//!   name one identity, so `old-td/ns/a/sa/b` and `new-td/ns/a/sa/b` are the same caller when
//!   both domains are the mesh's. In a policy, a principal whose trust domain is
//!   `cluster.local` points to the mesh's trust domains (istiod's
//!   `ReplaceTrustDomainAliases`: it is rewritten to each of them), whatever the mesh's trust
//!   domain is.
//! - Namespaces come from a principal `<td>/ns/<ns>/sa/<sa>` whose trust domain is the mesh's
//!   or an alias (issue 15: a foreign trust domain speaks for no namespace of this mesh).
//! - `when`: `request.headers[h]` (several values of a header joined with `,`; `*` means
//!   present), `source.ip`, `source.namespace`, `source.principal`, `destination.port`.
//! - IPv4-mapped IPv6 addresses (source or block) are the IPv4 addresses they carry.
//! - The path is judged after the server's normalization (what the handler receives), without
//!   its query.
//!
//! An unknown source address cannot be judged exactly: then the model judges the request at
//! every address of [`SOURCE_IPS`] (one per region the vocabulary's blocks cut the address
//! space into) and the engine may only allow when every one of them is allowed, and must audit
//! when any one of them audits.

use std::{net::IpAddr, sync::Arc};

use arbitrary::{Result, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, uri::PathAndQuery};
use ipnet::IpNet;
use mesh_core::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzDecision, AuthzOperation, AuthzReason,
    AuthzRequest, AuthzRule, AuthzSource, ConditionKey, EscapedSlashesAction, IstioString, Labels,
    PathNormalization, PathNormalizer, TrustDomains, WorkloadScope, authorize,
};

// === vocabulary ===

const WORKLOAD_NAMESPACE: &str = "default";
const ROOT_NAMESPACE: &str = "istio-system";
const WORKLOAD_LABELS: [(&str, &str); 2] = [("app", "reviews"), ("version", "v1")];

const POLICY_NAMESPACES: [&str; 3] = ["default", "istio-system", "other"];
const SELECTORS: [Option<&[(&str, &str)]>; 5] = [
    None,
    Some(&[]),
    Some(&[("app", "reviews")]),
    Some(&[("app", "ratings")]),
    Some(&[("app", "reviews"), ("version", "v1")]),
];

/// (trust domain, aliases).
const TRUST_DOMAIN_SETS: [(&str, &[&str]); 5] = [
    ("cluster.local", &[]),
    ("new-td", &[]),
    ("new-td", &["old-td"]),
    ("new-td", &["old-td", "cluster.local"]),
    ("cluster.local", &["old-td"]),
];

const CALLER_PRINCIPALS: [&str; 14] = [
    "cluster.local/ns/prod/sa/web",
    "new-td/ns/prod/sa/web",
    "old-td/ns/prod/sa/web",
    "evil.example.org/ns/prod/sa/web",
    "new-td/ns/dev/sa/admin",
    "cluster.local/ns/dev/sa/admin",
    "old-td/ns/dev/sa/admin",
    "spiffe://new-td/ns/prod/sa/web",
    "spiffe://cluster.local/ns/dev/sa/admin",
    "new-td/x/ns/prod/sa/web",
    "new-td/ns/prod/sa/web/extra",
    "NEW-TD/ns/prod/sa/web",
    "new-td/ns/prod",
    "evil.example.org/ns/dev/sa/admin",
];

const PRINCIPAL_PATTERNS: [&str; 15] = [
    "cluster.local/ns/prod/sa/web",
    "new-td/ns/prod/sa/web",
    "old-td/ns/prod/sa/web",
    "evil.example.org/ns/prod/sa/web",
    "cluster.local/ns/dev/sa/admin",
    "new-td/ns/dev/sa/admin",
    "*",
    "*/ns/prod/sa/web",
    "*/sa/admin",
    "cluster.local/ns/prod/*",
    "old-td/ns/dev/*",
    "new-td/*",
    "*web",
    "old-td/ns/prod/sa/web/extra",
    "cluster.local/*",
];

const NAMESPACE_PATTERNS: [&str; 6] = ["prod", "dev", "prod*", "*ev", "*", "x"];

const IP_BLOCKS: [&str; 11] = [
    "10.0.0.0/8",
    "10.1.2.3/32",
    "10.1.2.3",
    "10.1.2.3/8",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/32",
    "::ffff:10.0.0.0/104",
    "::ffff:10.1.2.3/128",
    "::1",
];

/// Every region the blocks of [`IP_BLOCKS`] cut the address space into has one address here
/// (the model compares IPv4-mapped addresses as IPv4, so those need none of their own).
const SOURCE_IPS: [&str; 7] = [
    "10.1.2.3",
    "10.9.9.9",
    "192.168.1.1",
    "8.8.8.8",
    "2001:db8::1",
    "2001:db9::1",
    "::1",
];

/// What a caller may come from: [`SOURCE_IPS`] and IPv4-mapped forms of some of them.
const CALLER_IPS: [&str; 9] = [
    "10.1.2.3",
    "10.9.9.9",
    "192.168.1.1",
    "8.8.8.8",
    "2001:db8::1",
    "2001:db9::1",
    "::1",
    "::ffff:10.1.2.3",
    "::ffff:8.8.8.8",
];

const HOST_PATTERNS: [&str; 9] = [
    "reviews",
    "Reviews.Default",
    "reviews.default",
    "reviews.default:9080",
    "*.default",
    "*.DEFAULT",
    "reviews.*",
    "*",
    "REVIEWS*",
];

const HOSTS: [&str; 7] = [
    "reviews.default",
    "REVIEWS.default",
    "reviews.default:9080",
    "reviews.default.svc",
    "",
    "evil.com",
    "reviews",
];

const PORTS: [u16; 3] = [8080, 9080, 443];
const DESTINATION_PORTS: [u16; 3] = [8080, 9080, 15006];

const METHOD_PATTERNS: [&str; 7] = ["GET", "POST", "DELETE", "*", "G*", "*T", "get"];
/// Upper case only: the server refuses a method with a lower-case letter before authorization.
const METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"];

const PATH_PATTERNS: [&str; 12] = [
    "/admin",
    "/admin/*",
    "/admin*",
    "*",
    "/files/secret*",
    "*.txt",
    "/public/*",
    "/",
    "*/admin",
    "/Admin",
    "/a/b",
    "*/",
];

/// Path segments requests are built from: hostile encodings of `admin` and `secret`, dot
/// segments plain and escaped, escaped and backslash separators, a NUL.
const PATH_SEGMENTS: [&str; 22] = [
    "admin",
    "public",
    "files",
    "secret.txt",
    "%73ecret.txt",
    "%61dmin",
    "%41dmin",
    "Admin",
    "..",
    ".",
    "%2e%2e",
    "%2E",
    ".%2e",
    "",
    "a%2Fb",
    "a%2fb",
    "a%5Cb",
    "..\\admin",
    "public\\..\\admin",
    "admin%00",
    "a",
    "b",
];

const PATH_SUFFIXES: [&str; 4] = ["", "?x=/admin", "?", "/"];

const NORMALIZATIONS: [PathNormalization; 4] = [
    PathNormalization::Base,
    PathNormalization::None,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

const ESCAPED_SLASHES: [EscapedSlashesAction; 3] = [
    EscapedSlashesAction::KeepUnchanged,
    EscapedSlashesAction::RejectRequest,
    EscapedSlashesAction::UnescapeAndForward,
];

const HEADER_NAMES: [&str; 2] = ["x-user", "x-env"];
const HEADER_VALUES: [&str; 5] = ["admin", "", "guest", "admin,guest", "ADMIN"];
const HEADER_PATTERNS: [&str; 7] = ["admin", "admin*", "*min", "*", "guest", "admin,guest", ""];
const PORT_VALUES: [&str; 3] = ["8080", "9080", "443"];

// === the case ===

/// One generated case, as plain strings: what the engine gets is built from it, and the model
/// reads it directly.
#[derive(Debug)]
struct Case {
    trust_domains: Vec<&'static str>,
    policies: Vec<Policy>,
    request: Request,
}

#[derive(Debug)]
struct Policy {
    name: String,
    namespace: &'static str,
    selector: Option<&'static [(&'static str, &'static str)]>,
    action: Action,
    dry_run: bool,
    rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Audit,
}

#[derive(Debug, Default)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
}

#[derive(Debug, Default)]
struct Source {
    principals: Vec<&'static str>,
    not_principals: Vec<&'static str>,
    namespaces: Vec<&'static str>,
    not_namespaces: Vec<&'static str>,
    ip_blocks: Vec<&'static str>,
    not_ip_blocks: Vec<&'static str>,
}

#[derive(Debug, Default)]
struct Operation {
    hosts: Vec<&'static str>,
    not_hosts: Vec<&'static str>,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    methods: Vec<&'static str>,
    not_methods: Vec<&'static str>,
    paths: Vec<&'static str>,
    not_paths: Vec<&'static str>,
}

#[derive(Debug)]
struct Condition {
    key: Key,
    values: Vec<&'static str>,
    not_values: Vec<&'static str>,
}

#[derive(Clone, Copy, Debug)]
enum Key {
    Header(&'static str),
    SourceIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationPort,
}

#[derive(Debug)]
struct Request {
    principals: Vec<&'static str>,
    source_ip: Option<&'static str>,
    port: u16,
    host: &'static str,
    method: &'static str,
    /// The request target as received.
    raw_path: String,
    normalization: PathNormalization,
    escaped_slashes: EscapedSlashesAction,
    headers: Vec<(&'static str, &'static str)>,
}

/// The fuzz target: see the module docs.
pub fn authz(data: &[u8]) {
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    // The server's first step: parse the request target and normalize its path; a refused
    // path never reaches authorization.
    let Some(path) = normalized_path(&case.request) else {
        return;
    };
    let engine_policies = case.engine_policies();
    let trust_domains = TrustDomains::new(
        case.trust_domains[0],
        case.trust_domains[1..].iter().copied(),
    )
    .expect("valid trust domains");
    let labels = Labels::new(WORKLOAD_LABELS).expect("valid labels");
    let principals: Vec<Arc<str>> = case.request.principals.iter().map(|&p| p.into()).collect();
    let mut headers = HeaderMap::new();
    for &(name, value) in &case.request.headers {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let request = AuthzRequest {
        principals: &principals,
        trust_domains: &trust_domains,
        source_namespace: None,
        source_ip: case.request.source_ip.map(ip),
        destination_port: case.request.port,
        host: case.request.host,
        method: case.request.method,
        path: &path,
        headers: &headers,
    };
    let engine = authorize(
        &engine_policies,
        WORKLOAD_NAMESPACE,
        &labels,
        ROOT_NAMESPACE,
        &request,
    );

    let model = |source_ip: Option<&'static str>| {
        Model {
            case: &case,
            path: &path,
            source_ip: source_ip.map(|s| canonical(ip(s))),
        }
        .decide()
    };
    match case.request.source_ip {
        Some(source_ip) => {
            let expected = model(Some(source_ip));
            assert_eq!(
                engine, expected,
                "engine vs model on {case:#?}\npath {path:?}"
            );
        }
        None => {
            let worlds: Vec<AuthzDecision> = SOURCE_IPS.iter().map(|&s| model(Some(s))).collect();
            if engine.allowed {
                assert!(
                    worlds.iter().all(|d| d.allowed),
                    "the engine allows a caller of unknown address that some address would \
                     not be allowed from: {case:#?}\npath {path:?}\nengine {engine:?}"
                );
            }
            if worlds.iter().any(|d| d.audit) {
                assert!(engine.audit, "not audited: {case:#?}\npath {path:?}");
            }
        }
    }
}

/// The path the server judges and forwards: the request target's path, normalized, as
/// `mesh-tower`'s server stack does it; `None` when the request is refused.
fn normalized_path(request: &Request) -> Option<String> {
    let target = PathAndQuery::try_from(request.raw_path.as_str()).ok()?;
    let normalizer =
        PathNormalizer::new(request.normalization).with_escaped_slashes(request.escaped_slashes);
    let normalized = normalizer.normalize(target.path()).ok()?;
    let forwarded = match target.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized.into_owned(),
    };
    Some(PathAndQuery::try_from(forwarded).ok()?.path().to_owned())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("vocabulary addresses parse")
}

// === generation ===

fn pick<T: Copy>(u: &mut Unstructured<'_>, from: &[T]) -> Result<T> {
    Ok(*u.choose(from)?)
}

/// Up to `max` values, usually none.
fn some<T: Copy>(u: &mut Unstructured<'_>, from: &[T], max: usize) -> Result<Vec<T>> {
    if !u.ratio(1, 3)? {
        return Ok(Vec::new());
    }
    let n = u.int_in_range(1..=max)?;
    (0..n).map(|_| pick(u, from)).collect()
}

fn up_to<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut f: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

impl Case {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let (domain, aliases) = pick(u, &TRUST_DOMAIN_SETS)?;
        let trust_domains = std::iter::once(domain)
            .chain(aliases.iter().copied())
            .collect();
        let mut policies = up_to(u, 4, Policy::arbitrary)?;
        for (i, policy) in policies.iter_mut().enumerate() {
            policy.name = format!("p{i}");
        }
        Ok(Self {
            trust_domains,
            policies,
            request: Request::arbitrary(u)?,
        })
    }
}

impl Policy {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(Self {
            name: String::new(),
            namespace: pick(u, &POLICY_NAMESPACES)?,
            selector: pick(u, &SELECTORS)?,
            action: pick(
                u,
                &[
                    Action::Allow,
                    Action::Allow,
                    Action::Deny,
                    Action::Deny,
                    Action::Audit,
                ],
            )?,
            dry_run: u.ratio(1, 6)?,
            rules: up_to(u, 2, Rule::arbitrary)?,
        })
    }
}

impl Rule {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(Self {
            from: up_to(u, 2, Source::arbitrary)?,
            to: up_to(u, 2, Operation::arbitrary)?,
            when: up_to(u, 2, Condition::arbitrary)?,
        })
    }
}

impl Source {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(Self {
            principals: some(u, &PRINCIPAL_PATTERNS, 3)?,
            not_principals: some(u, &PRINCIPAL_PATTERNS, 2)?,
            namespaces: some(u, &NAMESPACE_PATTERNS, 2)?,
            not_namespaces: some(u, &NAMESPACE_PATTERNS, 2)?,
            ip_blocks: some(u, &IP_BLOCKS, 2)?,
            not_ip_blocks: some(u, &IP_BLOCKS, 2)?,
        })
    }
}

impl Operation {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(Self {
            hosts: some(u, &HOST_PATTERNS, 2)?,
            not_hosts: some(u, &HOST_PATTERNS, 2)?,
            ports: some(u, &PORTS, 2)?,
            not_ports: some(u, &PORTS, 2)?,
            methods: some(u, &METHOD_PATTERNS, 2)?,
            not_methods: some(u, &METHOD_PATTERNS, 2)?,
            paths: some(u, &PATH_PATTERNS, 3)?,
            not_paths: some(u, &PATH_PATTERNS, 2)?,
        })
    }
}

impl Condition {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let key = match u.int_in_range(0..=4)? {
            0 => Key::Header(pick(u, &HEADER_NAMES)?),
            1 => Key::SourceIp,
            2 => Key::SourceNamespace,
            3 => Key::SourcePrincipal,
            _ => Key::DestinationPort,
        };
        let vocabulary: &[&'static str] = match key {
            Key::Header(_) => &HEADER_PATTERNS,
            Key::SourceIp => &IP_BLOCKS,
            Key::SourceNamespace => &NAMESPACE_PATTERNS,
            Key::SourcePrincipal => &PRINCIPAL_PATTERNS,
            Key::DestinationPort => &PORT_VALUES,
        };
        let mut values = some(u, vocabulary, 2)?;
        let not_values = some(u, vocabulary, 2)?;
        // Istio requires `values` or `notValues`.
        if values.is_empty() && not_values.is_empty() {
            values.push(pick(u, vocabulary)?);
        }
        Ok(Self {
            key,
            values,
            not_values,
        })
    }
}

impl Request {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Self> {
        let principals = up_to(u, 3, |u| pick(u, &CALLER_PRINCIPALS))?;
        let source_ip = if u.ratio(1, 8)? {
            None
        } else {
            Some(pick(u, &CALLER_IPS)?)
        };
        let segments = up_to(u, 4, |u| pick(u, &PATH_SEGMENTS))?;
        let separator = if u.ratio(1, 8)? { "\\" } else { "/" };
        let raw_path = format!("/{}{}", segments.join(separator), pick(u, &PATH_SUFFIXES)?);
        let headers = up_to(u, 3, |u| {
            Ok((pick(u, &HEADER_NAMES)?, pick(u, &HEADER_VALUES)?))
        })?;
        Ok(Self {
            principals,
            source_ip,
            port: pick(u, &DESTINATION_PORTS)?,
            host: pick(u, &HOSTS)?,
            method: pick(u, &METHODS)?,
            raw_path,
            normalization: pick(u, &NORMALIZATIONS)?,
            escaped_slashes: pick(u, &ESCAPED_SLASHES)?,
            headers,
        })
    }
}

// === the engine's input ===

impl Case {
    fn engine_policies(&self) -> Vec<AuthorizationPolicy> {
        self.policies
            .iter()
            .map(|p| AuthorizationPolicy {
                name: p.name.as_str().into(),
                scope: WorkloadScope {
                    namespace: p.namespace.into(),
                    selector: p
                        .selector
                        .map(|pairs| Labels::new(pairs.iter().copied()).expect("valid selector")),
                },
                action: match p.action {
                    Action::Allow => AuthzAction::Allow,
                    Action::Deny => AuthzAction::Deny,
                    Action::Audit => AuthzAction::Audit,
                },
                rules: p.rules.iter().map(Rule::to_engine).collect(),
                dry_run: p.dry_run,
            })
            .collect()
    }
}

fn strings(values: &[&str]) -> Arc<[IstioString]> {
    values
        .iter()
        .map(|v| IstioString::parse(v).expect("vocabulary strings parse"))
        .collect()
}

fn nets(values: &[&str]) -> Arc<[IpNet]> {
    values
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .expect("vocabulary blocks parse")
        })
        .collect()
}

impl Rule {
    fn to_engine(&self) -> AuthzRule {
        AuthzRule {
            from: self
                .from
                .iter()
                .map(|s| AuthzSource {
                    principals: strings(&s.principals),
                    not_principals: strings(&s.not_principals),
                    namespaces: strings(&s.namespaces),
                    not_namespaces: strings(&s.not_namespaces),
                    ip_blocks: nets(&s.ip_blocks),
                    not_ip_blocks: nets(&s.not_ip_blocks),
                })
                .collect(),
            to: self
                .to
                .iter()
                .map(|o| AuthzOperation {
                    hosts: strings(&o.hosts),
                    not_hosts: strings(&o.not_hosts),
                    ports: o.ports.as_slice().into(),
                    not_ports: o.not_ports.as_slice().into(),
                    methods: strings(&o.methods),
                    not_methods: strings(&o.not_methods),
                    paths: strings(&o.paths),
                    not_paths: strings(&o.not_paths),
                })
                .collect(),
            when: self
                .when
                .iter()
                .map(|c| AuthzCondition {
                    key: match c.key {
                        Key::Header(name) => {
                            ConditionKey::RequestHeader(HeaderName::from_static(name))
                        }
                        Key::SourceIp => ConditionKey::SourceIp,
                        Key::SourceNamespace => ConditionKey::SourceNamespace,
                        Key::SourcePrincipal => ConditionKey::SourcePrincipal,
                        Key::DestinationPort => ConditionKey::DestinationPort,
                    },
                    values: strings(&c.values),
                    not_values: strings(&c.not_values),
                })
                .collect(),
        }
    }
}

// === the reference model ===

/// Istio's semantics, naively: see the module docs.
struct Model<'a> {
    case: &'a Case,
    /// The normalized path, without query.
    path: &'a str,
    /// Canonical (IPv4-mapped as IPv4).
    source_ip: Option<IpAddr>,
}

impl Model<'_> {
    fn decide(&self) -> AuthzDecision {
        let applicable: Vec<&Policy> = self
            .case
            .policies
            .iter()
            .filter(|p| self.applies(p))
            .collect();
        let enforced = |action: Action| {
            applicable
                .iter()
                .filter(move |p| p.action == action && !p.dry_run)
        };
        let first_deny = enforced(Action::Deny).find(|p| self.policy_matches(p));
        let has_allow = enforced(Action::Allow).next().is_some();
        let first_allow = enforced(Action::Allow).find(|p| self.policy_matches(p));
        let audit = enforced(Action::Audit).any(|p| self.policy_matches(p));

        let (allowed, reason) = if let Some(deny) = first_deny {
            (false, AuthzReason::Denied(deny.name.as_str().into()))
        } else if !has_allow {
            (true, AuthzReason::NoAllowPolicies)
        } else if let Some(allow) = first_allow {
            (true, AuthzReason::Allowed(allow.name.as_str().into()))
        } else {
            (false, AuthzReason::NoAllowMatched)
        };

        // Dry run answers "would this policy, enforced, deny?": a DENY one when it matches; an
        // ALLOW one when neither it nor an enforced ALLOW policy matches.
        let mut dry_run_denials = Vec::new();
        for policy in applicable.iter().filter(|p| p.dry_run) {
            let would_deny = match policy.action {
                Action::Deny => self.policy_matches(policy),
                Action::Allow => !self.policy_matches(policy) && first_allow.is_none(),
                Action::Audit => false,
            };
            if would_deny {
                dry_run_denials.push(policy.name.as_str().into());
            }
        }
        AuthzDecision {
            allowed,
            reason,
            dry_run_denials,
            audit,
            // Local (Istio) policies never carry xDS RBAC audit entries (gRFC A59).
            rbac_audits: Vec::new(),
        }
    }

    fn applies(&self, policy: &Policy) -> bool {
        let namespace_ok =
            policy.namespace == WORKLOAD_NAMESPACE || policy.namespace == ROOT_NAMESPACE;
        let selector_ok = match policy.selector {
            None => true,
            Some(pairs) => pairs.iter().all(|pair| WORKLOAD_LABELS.contains(pair)),
        };
        namespace_ok && selector_ok
    }

    fn policy_matches(&self, policy: &Policy) -> bool {
        policy.rules.iter().any(|rule| self.rule_matches(rule))
    }

    fn rule_matches(&self, rule: &Rule) -> bool {
        let from = rule.from.is_empty() || rule.from.iter().any(|s| self.source_matches(s));
        let to = rule.to.is_empty() || rule.to.iter().any(|o| self.operation_matches(o));
        let when = rule.when.iter().all(|c| self.condition_matches(c));
        from && to && when
    }

    fn source_matches(&self, s: &Source) -> bool {
        field(&s.principals, &s.not_principals, |p| self.has_principal(p))
            && field(&s.namespaces, &s.not_namespaces, |n| self.in_namespace(n))
            && field(&s.ip_blocks, &s.not_ip_blocks, |b| self.in_block(b))
    }

    fn operation_matches(&self, o: &Operation) -> bool {
        let request = &self.case.request;
        field(&o.hosts, &o.not_hosts, |h| {
            istio_match(&h.to_ascii_lowercase(), &request.host.to_ascii_lowercase())
        }) && field(&o.ports, &o.not_ports, |&p| p == request.port)
            && field(&o.methods, &o.not_methods, |m| {
                istio_match(m, request.method)
            })
            && field(&o.paths, &o.not_paths, |p| istio_match(p, self.path))
    }

    fn condition_matches(&self, c: &Condition) -> bool {
        let request = &self.case.request;
        let value_matches = |v: &&str| match c.key {
            Key::Header(name) => {
                let values: Vec<&str> = request
                    .headers
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .collect();
                if values.is_empty() {
                    false
                } else if *v == "*" {
                    true
                } else {
                    istio_match(v, &values.join(","))
                }
            }
            Key::SourceIp => self.in_block(v),
            Key::SourceNamespace => self.in_namespace(v),
            Key::SourcePrincipal => self.has_principal(v),
            Key::DestinationPort => v.parse::<u16>() == Ok(request.port),
        };
        field(&c.values, &c.not_values, value_matches)
    }

    /// The caller's identities, without `spiffe://`.
    fn caller_principals(&self) -> Vec<&str> {
        self.case
            .request
            .principals
            .iter()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
            .filter(|p| !p.is_empty())
            .collect()
    }

    fn is_mesh_domain(&self, domain: &str) -> bool {
        self.case.trust_domains.contains(&domain)
    }

    /// Whether some identity of the caller matches the policy principal `pattern`.
    fn has_principal(&self, pattern: &str) -> bool {
        // `cluster.local/...` in a policy stands for every trust domain of the mesh.
        let mut patterns = vec![pattern.to_owned()];
        if let Some(rest) = pattern.strip_prefix("cluster.local/") {
            patterns = self
                .case
                .trust_domains
                .iter()
                .map(|domain| format!("{domain}/{rest}"))
                .collect();
        }
        // A caller of a mesh trust domain is the same caller in every other one.
        let mut names = Vec::new();
        for principal in self.caller_principals() {
            names.push(principal.to_owned());
            if let Some((domain, rest)) = principal.split_once('/')
                && self.is_mesh_domain(domain)
            {
                for other in &self.case.trust_domains {
                    names.push(format!("{other}/{rest}"));
                }
            }
        }
        patterns
            .iter()
            .any(|p| names.iter().any(|name| istio_match(p, name)))
    }

    /// Whether the caller is from a namespace matching `pattern`.
    fn in_namespace(&self, pattern: &str) -> bool {
        self.caller_principals().iter().any(|principal| {
            let parts: Vec<&str> = principal.split('/').collect();
            parts.len() == 5
                && self.is_mesh_domain(parts[0])
                && parts[1] == "ns"
                && !parts[2].is_empty()
                && parts[3] == "sa"
                && istio_match(pattern, parts[2])
        })
    }

    /// Whether the caller's address is in `block` (an address or a CIDR block).
    fn in_block(&self, block: &str) -> bool {
        let Some(source) = self.source_ip else {
            unreachable!("the model is only asked with a known address");
        };
        let (address, prefix) = match block.split_once('/') {
            Some((address, prefix)) => (ip(address), prefix.parse::<u32>().expect("a prefix")),
            None => {
                let address = ip(block);
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        // An IPv4-mapped block is the IPv4 block it carries.
        let (address, prefix) = match (address, canonical(address)) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (address, prefix),
        };
        // As in Envoy, an address is only in a block of its own family.
        match (address, source) {
            (IpAddr::V4(block), IpAddr::V4(source)) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                u32::from(block) & mask == u32::from(source) & mask
            }
            (IpAddr::V6(block), IpAddr::V6(source)) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                u128::from(block) & mask == u128::from(source) & mask
            }
            _ => false,
        }
    }
}

/// A field and its `notX` twin: some value of `values` matches (when set) and none of
/// `not_values` does (when set).
fn field<T>(values: &[T], not_values: &[T], matches: impl Fn(&T) -> bool) -> bool {
    let positive = values.is_empty() || values.iter().any(&matches);
    let negative = not_values.is_empty() || !not_values.iter().any(&matches);
    positive && negative
}

/// Istio's string syntax: `*` any non-empty value, `x*` prefix, `*x` suffix, else exact.
fn istio_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        value == pattern
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}
