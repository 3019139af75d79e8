//! Authorization: evaluates Istio `AuthorizationPolicy` (ALLOW, DENY, AUDIT; dry-run) for one
//! request.
//!
//! # Decision
//!
//! Only policies that apply to the workload count (see
//! [`WorkloadScope::applies_to`](super::WorkloadScope::applies_to)). Then, as in Istio:
//!
//! 1. If any enforced DENY policy matches, the request is denied (the first such policy, in
//!    slice order, is named in the decision).
//! 2. Else, if no enforced ALLOW policy applies to the workload, the request is allowed.
//! 3. Else, it is allowed iff some enforced ALLOW policy matches (the first one is named).
//!
//! AUDIT policies never change the decision; a matching one sets [`AuthzDecision::audit`].
//!
//! # Dry-run
//!
//! A dry-run policy (Istio's `istio.io/dry-run: "true"` annotation) is evaluated but never
//! changes [`AuthzDecision::allowed`]. [`AuthzDecision::dry_run_denials`] lists, in slice order:
//!
//! - every dry-run DENY policy that matches, whatever the enforced decision;
//! - every dry-run ALLOW policy `p` such that the ALLOW step over the enforced ALLOW policies
//!   *plus `p` alone* would deny: `p` does not match and no enforced ALLOW policy matches. Each
//!   dry-run ALLOW policy is judged on its own (answering "what if I enforced this one?"), and
//!   independently of the DENY step, so a dry-run ALLOW policy is recorded even when an
//!   enforced DENY policy already denies the request.
//!
//! Dry-run AUDIT policies are ignored (Istio supports dry-run for ALLOW and DENY only).
//!
//! # Missing identity
//!
//! Principals and namespaces come from the authenticated peer (mTLS). Without a principal (a
//! plaintext peer) the request has *no* principal and *no* namespace, as in Envoy's RBAC:
//! positive lists (`principals`, `namespaces`, `values` of `source.principal` /
//! `source.namespace`) do not match, and negative lists (`not_principals`, `not_namespaces`,
//! `not_values`) do match, since the absent identity is not in them. This is what makes
//! Istio's idiom "DENY with `notPrincipals: ["*"]`" reject plaintext callers. A
//! [`AuthzRequest::source_namespace`] without a principal is ignored: a namespace is only
//! trusted when it is vouched for by a peer certificate. A missing request header is treated
//! the same way (not in any list).
//!
//! # Several identities, several trust domains
//!
//! A certificate may carry several SPIFFE URI SANs; every one of them is a principal of the
//! peer, as Envoy's principal matchers match any SAN. A principal entry matches when any of the
//! peer's principals does, so a DENY on `principals` catches a caller whichever SAN is first,
//! and `notPrincipals` (which matches when *none* of the principals is in the list) cannot be
//! escaped by adding an innocent SAN.
//!
//! Principals of the mesh's trust domain and its aliases ([`TrustDomains`]) are one: a
//! policy entry `old-td/ns/foo/sa/bar` matches a peer `new-td/ns/foo/sa/bar` when both are in
//! the set (Istio's trust-domain migration). As in istiod, a policy entry in the trust domain
//! `cluster.local` names the mesh's trust domains when `cluster.local` is not one of them
//! (`cluster.local/ns/foo/sa/bar` matches `new-td/ns/foo/sa/bar`, and not a foreign
//! `cluster.local/ns/foo/sa/bar`). Namespaces come only from principals of that set:
//! a caller `evil.example.org/ns/prod/sa/x` is from no namespace of this mesh, so it satisfies
//! `namespaces: [prod]` only when `evil.example.org` is an alias, and it satisfies every
//! `notNamespaces`, like a caller without identity.
//!
//! # Fail closed
//!
//! Some conditions cannot be evaluated: an unknown source IP (`source_ip: None`) against
//! `ip_blocks`/`not_ip_blocks`/`source.ip`, a `source.ip` value that is not an address or CIDR,
//! a `destination.port` value that is not a port number, a condition with neither `values`
//! nor `not_values`. Matching uses three-valued logic (yes / no / unknown, with
//! Kleene's AND, OR and NOT), and an unknown policy result is resolved against the caller:
//! an unknown DENY policy denies, an unknown ALLOW policy does not allow, an unknown AUDIT
//! policy audits. This reproduces Istio's own choice for unsupported fields (drop the
//! condition from a DENY rule, drop the whole rule from an ALLOW policy) without losing
//! precision when another condition of the same rule already decides.
//!
//! # Request normalization
//!
//! The caller passes the request as the application will see it: the path normalized by the
//! server policy's [`PathNormalizer`](crate::PathNormalizer) (and forwarded so), the authority
//! the handler reads, and only upper-case methods (Istio answers a lower-case one with 400
//! before authorization; `mesh-tower`'s server stack does the same). Anything from the first
//! `?` or `#` on is dropped here defensively so a query string can never dodge a path rule. A `spiffe://` prefix on the principal is dropped too. IPv4-mapped
//! IPv6 source addresses are compared as IPv4. Hosts compare ASCII case-insensitively; methods,
//! paths, principals and namespaces compare exactly. Several values of one header are joined
//! with `,` before matching, as Envoy does, and a header value of `*` means "present" (even
//! if empty), as istiod generates it.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, IstioString, TrustDomains, rbac::RbacAudit,
};
use crate::Labels;

/// The parts of a request that authorization looks at, borrowed from the request head and the
/// connection.
#[derive(Clone, Copy, Debug)]
pub struct AuthzRequest<'a> {
    /// The peer's SPIFFE identities, one per `spiffe://` URI SAN of its certificate, with or
    /// without `spiffe://` (`cluster.local/ns/default/sa/reviews`); empty for a plaintext peer.
    /// Each counts (see the module docs).
    pub principals: &'a [Arc<str>],
    /// The mesh's trust domain and its aliases: the identities that speak for a namespace.
    pub trust_domains: &'a TrustDomains,
    /// The peer's namespace; `None` derives it from each principal's `/ns/<namespace>/`
    /// segment. Ignored without a principal of the mesh's trust domains.
    pub source_namespace: Option<&'a str>,
    /// The peer's IP address; `None` when unknown (then IP conditions are indeterminate and
    /// fail closed).
    pub source_ip: Option<IpAddr>,
    /// The local port the request arrived on.
    pub destination_port: u16,
    /// The `:authority` (or `Host`) as received.
    pub host: &'a str,
    /// The HTTP method; always `POST` for gRPC.
    pub method: &'a str,
    /// The normalized path without query; `/package.Service/Method` for gRPC.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

/// The outcome of [`authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why, naming the deciding policy when there is one.
    pub reason: AuthzReason,
    /// Dry-run policies that would have denied the request, in policy order (see the module
    /// docs for exactly which).
    pub dry_run_denials: Vec<Arc<str>>,
    /// Whether an enforced AUDIT policy matched: the request should be audit-logged.
    pub audit: bool,
    /// The RBAC decisions to audit-log (xDS RBAC filters with audit logging, gRFC A59), in
    /// filter order; empty for local policies.
    pub rbac_audits: Vec<RbacAudit>,
}

/// Why [`authorize`] decided as it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthzReason {
    /// This enforced DENY policy matched (or could not be evaluated).
    Denied(Arc<str>),
    /// This enforced ALLOW policy matched.
    Allowed(Arc<str>),
    /// Enforced ALLOW policies apply to the workload but none matched.
    NoAllowMatched,
    /// No enforced ALLOW policy applies to the workload, and no DENY policy matched.
    NoAllowPolicies,
}

/// Three-valued match result. The order (`No < Unknown < Yes`) makes AND the minimum and OR
/// the maximum, which is Kleene's logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Tri {
    No,
    Unknown,
    Yes,
}

/// The request, normalized once for all policies (shared with the RBAC engine).
#[derive(Debug)]
pub(super) struct Facts<'a> {
    principals: &'a [Arc<str>],
    trust_domains: &'a TrustDomains,
    /// The namespace given with the request, when a principal of the mesh vouches for it.
    namespace: Option<&'a str>,
    /// IPv4-mapped addresses as IPv4.
    pub(super) source_ip: Option<IpAddr>,
    pub(super) port: u16,
    pub(super) host: &'a str,
    pub(super) method: &'a str,
    /// Without query or fragment.
    pub(super) path: &'a str,
    pub(super) headers: &'a http::HeaderMap,
}

/// Decides whether `request` may reach the workload in `workload_namespace` with `labels`,
/// under `policies` (every policy the server knows; those that do not apply to this workload
/// are skipped). `root_namespace` is the mesh's root namespace, usually
/// [`DEFAULT_ROOT_NAMESPACE`](super::DEFAULT_ROOT_NAMESPACE).
///
/// See the module documentation for the exact semantics.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use mesh_core::{
///     AuthorizationPolicy, AuthzAction, AuthzReason, AuthzRequest, AuthzRule, AuthzSource,
///     DEFAULT_ROOT_NAMESPACE, IstioString, Labels, TrustDomains, WorkloadScope, authorize,
/// };
///
/// // Only callers from the `default` namespace may reach workloads of `default`.
/// let policy = AuthorizationPolicy {
///     name: "same-namespace".into(),
///     scope: WorkloadScope { namespace: "default".into(), selector: None },
///     action: AuthzAction::Allow,
///     rules: Arc::from([AuthzRule {
///         from: Arc::from([AuthzSource {
///             namespaces: Arc::from([IstioString::parse("default")?]),
///             ..AuthzSource::default()
///         }]),
///         ..AuthzRule::default()
///     }]),
///     dry_run: false,
/// };
/// let headers = http::HeaderMap::new();
/// let request = AuthzRequest {
///     principals: &[Arc::from("cluster.local/ns/prod/sa/frontend")],
///     trust_domains: &TrustDomains::default(),
///     source_namespace: None,
///     source_ip: None,
///     destination_port: 8080,
///     host: "reviews.default.svc",
///     method: "POST",
///     path: "/reviews.v1.Reviews/Get",
///     headers: &headers,
/// };
/// let labels = Labels::new([("app", "reviews")])?;
/// let decision = authorize(&[policy], "default", &labels, DEFAULT_ROOT_NAMESPACE, &request);
/// assert!(!decision.allowed);
/// assert_eq!(decision.reason, AuthzReason::NoAllowMatched);
/// # Ok::<(), mesh_core::Error>(())
/// ```
pub fn authorize(
    policies: &[AuthorizationPolicy],
    workload_namespace: &str,
    labels: &Labels,
    root_namespace: &str,
    request: &AuthzRequest<'_>,
) -> AuthzDecision {
    let facts = Facts::new(request);

    let mut denied_by: Option<&Arc<str>> = None;
    let mut allowed_by: Option<&Arc<str>> = None;
    let mut has_enforced_allow = false;
    let mut audit = false;
    // Dry-run policies that would deny, with whether the verdict still depends on the
    // enforced ALLOW policies (true for dry-run ALLOW policies that did not match).
    let mut dry_run: Vec<(&Arc<str>, bool)> = Vec::new();

    let applicable = policies.iter().filter(|p| {
        p.scope
            .applies_to(workload_namespace, labels, root_namespace)
    });
    for policy in applicable {
        match (policy.action, policy.dry_run) {
            (AuthzAction::Deny, false) => {
                if denied_by.is_none() && policy_matches(policy, &facts) != Tri::No {
                    denied_by = Some(&policy.name);
                }
            }
            (AuthzAction::Deny, true) => {
                if policy_matches(policy, &facts) != Tri::No {
                    dry_run.push((&policy.name, false));
                }
            }
            (AuthzAction::Allow, false) => {
                has_enforced_allow = true;
                if allowed_by.is_none() && policy_matches(policy, &facts) == Tri::Yes {
                    allowed_by = Some(&policy.name);
                }
            }
            (AuthzAction::Allow, true) => {
                if policy_matches(policy, &facts) != Tri::Yes {
                    dry_run.push((&policy.name, true));
                }
            }
            (AuthzAction::Audit, false) => {
                if !audit && policy_matches(policy, &facts) != Tri::No {
                    audit = true;
                }
            }
            (AuthzAction::Audit, true) => {}
        }
    }

    // A dry-run ALLOW policy that did not match would only deny if no enforced ALLOW policy
    // matched either.
    let dry_run_denials = dry_run
        .into_iter()
        .filter(|&(_, needs_no_enforced_allow)| !needs_no_enforced_allow || allowed_by.is_none())
        .map(|(name, _)| name.clone())
        .collect();

    let (allowed, reason) = match (denied_by, allowed_by) {
        (Some(name), _) => (false, AuthzReason::Denied(name.clone())),
        (None, Some(name)) => (true, AuthzReason::Allowed(name.clone())),
        (None, None) if has_enforced_allow => (false, AuthzReason::NoAllowMatched),
        (None, None) => (true, AuthzReason::NoAllowPolicies),
    };
    AuthzDecision {
        allowed,
        reason,
        dry_run_denials,
        audit,
        rbac_audits: Vec::new(),
    }
}

/// A policy matches when any rule does; no rules match nothing.
fn policy_matches(policy: &AuthorizationPolicy, facts: &Facts<'_>) -> Tri {
    any(&policy.rules, |rule| rule_matches(rule, facts))
}

/// A rule matches when its `from`, `to` and `when` parts all do; an empty part is no
/// condition.
fn rule_matches(rule: &AuthzRule, facts: &Facts<'_>) -> Tri {
    let from = positive(&rule.from, |source| source_matches(source, facts));
    let to = positive(&rule.to, |operation| operation_matches(operation, facts));
    let when = rule
        .when
        .iter()
        .map(|condition| condition_matches(condition, facts))
        .fold(Tri::Yes, Tri::and);
    from.and(to).and(when)
}

fn source_matches(source: &AuthzSource, facts: &Facts<'_>) -> Tri {
    let principal = |p: &IstioString| facts.principal_matches(p);
    let namespace = |p: &IstioString| facts.namespace_matches(p);
    let ip = |net: &IpNet| facts.ip_in(net);
    positive(&source.principals, principal)
        .and(negative(&source.not_principals, principal))
        .and(positive(&source.namespaces, namespace))
        .and(negative(&source.not_namespaces, namespace))
        .and(positive(&source.ip_blocks, ip))
        .and(negative(&source.not_ip_blocks, ip))
}

fn operation_matches(operation: &AuthzOperation, facts: &Facts<'_>) -> Tri {
    let host = |p: &IstioString| Tri::from(matches_ignore_ascii_case(p, facts.host));
    let port = |p: &u16| Tri::from(*p == facts.port);
    let method = |p: &IstioString| Tri::from(p.matches(facts.method));
    let path = |p: &IstioString| Tri::from(p.matches(facts.path));
    positive(&operation.hosts, host)
        .and(negative(&operation.not_hosts, host))
        .and(positive(&operation.ports, port))
        .and(negative(&operation.not_ports, port))
        .and(positive(&operation.methods, method))
        .and(negative(&operation.not_methods, method))
        .and(positive(&operation.paths, path))
        .and(negative(&operation.not_paths, path))
}

fn condition_matches(condition: &AuthzCondition, facts: &Facts<'_>) -> Tri {
    if condition.values.is_empty() && condition.not_values.is_empty() {
        // Istio rejects such a condition; it constrains nothing we can name, so fail closed.
        return Tri::Unknown;
    }
    let check = |value: &IstioString| -> Tri {
        match &condition.key {
            ConditionKey::RequestHeader(name) => facts.header_matches(name, value),
            ConditionKey::SourceIp => match parse_ip_value(value) {
                Some(IpValue::Net(net)) => facts.ip_in(&net),
                Some(IpValue::Present) => facts.source_ip.map_or(Tri::Unknown, |_| Tri::Yes),
                None => Tri::Unknown,
            },
            ConditionKey::SourceNamespace => facts.namespace_matches(value),
            ConditionKey::SourcePrincipal => facts.principal_matches(value),
            ConditionKey::DestinationPort => match value {
                IstioString::Any => Tri::Yes,
                IstioString::Exact(port) => port
                    .parse::<u16>()
                    .map_or(Tri::Unknown, |port| Tri::from(port == facts.port)),
                IstioString::Prefix(_) | IstioString::Suffix(_) => Tri::Unknown,
            },
        }
    };
    positive(&condition.values, check).and(negative(&condition.not_values, check))
}

/// A `source.ip` condition value.
enum IpValue {
    Net(IpNet),
    /// `*`: any known address.
    Present,
}

/// Parses a `source.ip` value: an address or a CIDR block. Prefix/suffix forms are not
/// meaningful for addresses.
fn parse_ip_value(value: &IstioString) -> Option<IpValue> {
    match value {
        IstioString::Any => Some(IpValue::Present),
        IstioString::Exact(s) => s
            .parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
            .map(IpValue::Net),
        IstioString::Prefix(_) | IstioString::Suffix(_) => None,
    }
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as the IPv4 block it denotes, so that it
/// compares with canonical source addresses.
pub(super) fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// Any entry matches; an empty list is no condition.
fn positive<T>(list: &[T], f: impl Fn(&T) -> Tri) -> Tri {
    if list.is_empty() {
        Tri::Yes
    } else {
        list.iter().map(f).fold(Tri::No, Tri::or)
    }
}

/// No entry matches; an empty list is no condition.
fn negative<T>(list: &[T], f: impl Fn(&T) -> Tri) -> Tri {
    if list.is_empty() {
        Tri::Yes
    } else {
        list.iter().map(f).fold(Tri::No, Tri::or).not()
    }
}

/// Any entry matches; an empty list matches nothing.
fn any<T>(list: &[T], f: impl Fn(&T) -> Tri) -> Tri {
    list.iter().map(f).fold(Tri::No, Tri::or)
}

/// Istio string matching with ASCII case folding, on bytes so no char boundary can panic.
fn matches_ignore_ascii_case(pattern: &IstioString, value: &str) -> bool {
    let value = value.as_bytes();
    match pattern {
        IstioString::Exact(p) => value.eq_ignore_ascii_case(p.as_bytes()),
        IstioString::Prefix(p) => value
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
        IstioString::Suffix(p) => value
            .len()
            .checked_sub(p.len())
            .and_then(|start| value.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(p.as_bytes())),
        IstioString::Any => !value.is_empty(),
    }
}

/// Istio string matching on raw bytes (header values need not be UTF-8).
fn matches_bytes(pattern: &IstioString, value: &[u8]) -> bool {
    match pattern {
        IstioString::Exact(p) => value == p.as_bytes(),
        IstioString::Prefix(p) => value.starts_with(p.as_bytes()),
        IstioString::Suffix(p) => value.ends_with(p.as_bytes()),
        IstioString::Any => !value.is_empty(),
    }
}

/// The namespace of an Istio SPIFFE identity `<trust-domain>/ns/<namespace>/sa/<account>`
/// when its trust domain is one of `trusted`. Only that exact shape (Istio's own identity
/// parser's) names a namespace: `td/ns/prod` or `td/ns/prod/sa/x/y` is no workload identity, so
/// it cannot satisfy `namespaces: [prod]` (it does satisfy `notNamespaces`, which denies it
/// under the usual "DENY notNamespaces" idiom).
fn namespace_of<'p>(principal: &'p str, trusted: &TrustDomains) -> Option<&'p str> {
    let mut segments = principal.split('/');
    let (domain, ns, namespace, sa, _account) = (
        segments.next()?,
        segments.next()?,
        segments.next()?,
        segments.next()?,
        segments.next()?,
    );
    let istio_shape = ns == "ns" && sa == "sa" && segments.next().is_none();
    (istio_shape && trusted.contains(domain) && !namespace.is_empty()).then_some(namespace)
}

/// When `pattern` (exact or prefix) names a principal of the trust domain `cluster.local` and
/// that is not one of the mesh's: the rest of the pattern after `cluster.local/`, and whether
/// it is a prefix. Istio treats `cluster.local` in a policy as a pointer to the mesh's trust
/// domain and its aliases (istiod rewrites such principals to each of them, and Istio's
/// trust-domain migration task recommends writing policies so), so the pattern matches the
/// mesh's callers, and not a caller whose certificate says `cluster.local` (a foreign domain).
fn mesh_pointer<'p>(pattern: &'p IstioString, trusted: &TrustDomains) -> Option<(&'p str, bool)> {
    const POINTER: &str = "cluster.local/";
    if trusted.contains(super::DEFAULT_TRUST_DOMAIN) {
        return None;
    }
    match pattern {
        IstioString::Exact(p) => p.strip_prefix(POINTER).map(|rest| (rest, false)),
        IstioString::Prefix(p) => p.strip_prefix(POINTER).map(|rest| (rest, true)),
        IstioString::Suffix(_) | IstioString::Any => None,
    }
}

/// A principal without its `spiffe://` scheme; `None` when nothing is left.
fn bare(principal: &str) -> Option<&str> {
    Some(principal.strip_prefix("spiffe://").unwrap_or(principal)).filter(|p| !p.is_empty())
}

// === impl Tri ===

impl Tri {
    pub(super) fn and(self, other: Self) -> Self {
        self.min(other)
    }

    pub(super) fn or(self, other: Self) -> Self {
        self.max(other)
    }

    pub(super) fn not(self) -> Self {
        match self {
            Self::No => Self::Yes,
            Self::Unknown => Self::Unknown,
            Self::Yes => Self::No,
        }
    }
}

impl From<bool> for Tri {
    fn from(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }
}

// === impl Facts ===

impl<'a> Facts<'a> {
    pub(super) fn new(request: &AuthzRequest<'a>) -> Self {
        // A namespace is only as good as the identity that vouches for it.
        let vouched = request
            .principals
            .iter()
            .filter_map(|p| bare(p))
            .any(|p| namespace_of(p, request.trust_domains).is_some());
        let namespace = request
            .source_namespace
            .filter(|ns| vouched && !ns.is_empty());
        let path = request
            .path
            .find(['?', '#'])
            .and_then(|end| request.path.get(..end))
            .unwrap_or(request.path);
        Self {
            principals: request.principals,
            trust_domains: request.trust_domains,
            namespace,
            source_ip: request.source_ip.map(|ip| ip.to_canonical()),
            port: request.destination_port,
            host: request.host,
            method: request.method,
            path,
            headers: request.headers,
        }
    }

    /// The peer's principals without their scheme.
    pub(super) fn principals(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.principals.iter().filter_map(|p| bare(p))
    }

    /// Whether any principal matches `pattern`, also under every other name its trust domain
    /// has in the mesh (the aliases). A pattern in the trust domain `cluster.local` names the
    /// mesh's trust domains instead when `cluster.local` is not one of them (see
    /// [`mesh_pointer`]).
    fn principal_matches(&self, pattern: &IstioString) -> Tri {
        if let Some((rest, is_prefix)) = mesh_pointer(pattern, self.trust_domains) {
            return Tri::from(self.principals().any(|p| {
                p.split_once('/').is_some_and(|(domain, path)| {
                    self.trust_domains.contains(domain)
                        && if is_prefix {
                            path.starts_with(rest)
                        } else {
                            path == rest
                        }
                })
            }));
        }
        Tri::from(
            self.principals()
                .any(|p| pattern.matches(p) || self.matches_as_alias(p, pattern)),
        )
    }

    /// Whether `principal`, of a trust domain of the mesh, matches `pattern` with its trust
    /// domain replaced by another of the mesh's.
    fn matches_as_alias(&self, principal: &str, pattern: &IstioString) -> bool {
        let all = self.trust_domains.all();
        if all.len() < 2 {
            return false;
        }
        let Some((domain, rest)) = principal.split_once('/') else {
            return false;
        };
        if !self.trust_domains.contains(domain) {
            return false;
        }
        all.iter()
            .filter(|other| ***other != *domain)
            .any(|other| pattern.matches(&format!("{other}/{rest}")))
    }

    fn namespace_matches(&self, pattern: &IstioString) -> Tri {
        if let Some(namespace) = self.namespace {
            return Tri::from(pattern.matches(namespace));
        }
        Tri::from(
            self.principals()
                .filter_map(|p| namespace_of(p, self.trust_domains))
                .any(|ns| pattern.matches(ns)),
        )
    }

    /// Whether the peer is in `net`; an IPv4-mapped block is the IPv4 block it names, as the
    /// peer's address is compared as IPv4 (else `ipBlocks: ["::ffff:10.0.0.0/104"]` in a DENY
    /// would catch nobody).
    fn ip_in(&self, net: &IpNet) -> Tri {
        match self.source_ip {
            Some(ip) => Tri::from(canonical_net(*net).contains(&ip)),
            None => Tri::Unknown,
        }
    }

    fn header_matches(&self, name: &http::HeaderName, pattern: &IstioString) -> Tri {
        let mut values = self.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Tri::No;
        };
        if *pattern == IstioString::Any {
            // Istio turns `*` into Envoy's `present_match`: an empty value counts.
            return Tri::Yes;
        }
        let Some(second) = values.next() else {
            // The common case: one value, matched in place.
            return Tri::from(matches_bytes(pattern, first.as_bytes()));
        };
        // Envoy matches several values of one header as their comma-joined concatenation.
        let mut joined: Vec<u8> = first.as_bytes().to_vec();
        for value in std::iter::once(second).chain(values) {
            joined.push(b',');
            joined.extend_from_slice(value.as_bytes());
        }
        Tri::from(matches_bytes(pattern, &joined))
    }
}

#[cfg(test)]
mod tests;
