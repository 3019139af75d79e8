//! Envoy's RBAC HTTP filter as gRPC servers evaluate it (gRFC A41): the authorization that
//! xDS inbound listeners carry.
//!
//! istiod translates each workload's `AuthorizationPolicy` resources into two RBAC filters for
//! proxyless servers: one with action DENY, then one with action ALLOW; each rule of each
//! policy becomes one named [`RbacPolicy`]. The filters run in order and the first denial ends
//! the request, so DENY is decided before ALLOW.
//!
//! # One filter
//!
//! A policy matches when any of its permissions *and* any of its principals match (an empty
//! list matches nothing). With action ALLOW a request passes iff some policy matches (no
//! policies: nothing passes); with DENY it is denied iff some policy matches (no policies:
//! everything passes). A filter without enforced rules does nothing. Shadow rules are
//! evaluated the same way but never decide: a shadow verdict that would deny is reported in
//! [`AuthzDecision::dry_run_denials`] (Istio's dry-run).
//!
//! # gRPC's mapping of the matchers (A41)
//!
//! - `url_path` and the `:path` header are the request path without query.
//! - `:method` and `:authority` (alias `host`) match the request's method and authority.
//! - `destination_port` is the server's port, `destination_ip` its local address (not known
//!   here: indeterminate).
//! - `authenticated.principal_name` matches the peer's URI SAN, i.e. its SPIFFE id *with*
//!   `spiffe://` (as istiod writes it); a plaintext peer has no certificate, so the name is
//!   matched against `""`. `authenticated` without a name matches any mTLS peer.
//! - `source_ip`, `direct_remote_ip` and `remote_ip` are the peer address.
//! - `metadata` never matches; `requested_server_name` is matched against `""`.
//!
//! # Fail closed
//!
//! Matching is three-valued, as in [`authorize`](super::authorize): a fact this process does
//! not know (the peer or local address) makes a matcher indeterminate, and an indeterminate
//! policy denies under DENY and does not allow under ALLOW.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    AuthzDecision, AuthzReason, AuthzRequest,
    authz::{Facts, Tri, canonical_net},
};
use crate::{
    Error,
    matcher::{HeaderMatch, PathMatcher, StringMatcher},
};

/// One RBAC HTTP filter of an inbound listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RbacFilter {
    /// The filter's name (`envoy.filters.http.rbac`), for logs.
    pub name: Arc<str>,
    /// The enforced rules; `None` enforces nothing.
    pub rules: Option<Rbac>,
    /// Rules evaluated and reported but never enforced; `None` is off.
    pub shadow_rules: Option<Rbac>,
}

/// Envoy's `RBAC`: an action and named policies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rbac {
    /// What a matching policy does.
    pub action: RbacAction,
    /// The policies, by name (sorted, as Envoy's map has no order; the first matching name is
    /// reported).
    pub policies: Arc<[RbacPolicy]>,
    /// Which of this RBAC's decisions are audit-logged (gRFC A59); `None` when it has no
    /// audit logger the mesh runs.
    pub audit: AuditCondition,
}

/// When an RBAC's decision is audit-logged (Envoy's `AuditLoggingOptions.AuditCondition`).
/// Deny and allow are this RBAC's decisions, not its action: an ALLOW RBAC that matches
/// nothing denies, a DENY RBAC that matches nothing allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuditCondition {
    /// Never.
    #[default]
    None,
    /// When it denies.
    OnDeny,
    /// When it allows.
    OnAllow,
    /// Always.
    OnDenyAndAllow,
}

/// One audit-logged RBAC decision (gRFC A59's audit context, the request's facts aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacAudit {
    /// The RBAC filter's name.
    pub filter: Arc<str>,
    /// The policy that matched; `None` when none did.
    pub matched_rule: Option<Arc<str>>,
    /// This RBAC's decision.
    pub authorized: bool,
}

/// What a matching [`RbacPolicy`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RbacAction {
    /// Only requests some policy matches pass.
    Allow,
    /// Requests some policy matches are denied.
    Deny,
}

/// Envoy's RBAC `Policy`: any permission and any principal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RbacPolicy {
    /// Its name (istiod: `<namespace>-<policy>-<rule index>`).
    pub name: Arc<str>,
    /// What the request does; any must match.
    pub permissions: Arc<[Permission]>,
    /// Who sends it; any must match.
    pub principals: Arc<[Principal]>,
}

/// Envoy's RBAC `Permission`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Every request.
    Any,
    /// All of these.
    And(Arc<[Permission]>),
    /// Any of these.
    Or(Arc<[Permission]>),
    /// Not this.
    Not(Arc<Permission>),
    /// A request header or pseudo-header.
    Header(RbacHeader),
    /// The path without query.
    UrlPath(PathMatcher),
    /// The server's local address is in this block.
    DestinationIp(IpNet),
    /// The server's port is in `start..end` (a single `destination_port` is `p..p+1`).
    DestinationPort {
        /// Inclusive.
        start: u32,
        /// Exclusive.
        end: u32,
    },
    /// The SNI, which gRPC takes as `""`.
    RequestedServerName(StringMatcher),
    /// Envoy metadata: gRPC has none, so it never matches.
    Metadata,
}

/// Envoy's RBAC `Principal`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Every peer.
    Any,
    /// All of these.
    And(Arc<[Principal]>),
    /// Any of these.
    Or(Arc<[Principal]>),
    /// Not this.
    Not(Arc<Principal>),
    /// An mTLS peer whose identity (`spiffe://...`) matches; `None` is any mTLS peer.
    Authenticated(Option<StringMatcher>),
    /// The peer address is in this block (`source_ip`, `direct_remote_ip`, `remote_ip`).
    RemoteIp(IpNet),
    /// A request header or pseudo-header.
    Header(RbacHeader),
    /// The path without query.
    UrlPath(PathMatcher),
    /// Envoy metadata: never matches.
    Metadata,
}

/// A header condition of a permission or principal; the name may be a pseudo-header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RbacHeader {
    field: HeaderField,
    kind: HeaderMatch,
    invert: bool,
    treat_missing_as_empty: bool,
}

/// Which value an [`RbacHeader`] reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderField {
    /// `:method`.
    Method,
    /// `:authority`, or its alias `host`.
    Authority,
    /// `:path`.
    Path,
    /// A regular header (comma-joined when repeated).
    Header(http::HeaderName),
}

// === impl AuditCondition ===

impl AuditCondition {
    /// Whether a decision (`authorized` or not) is logged.
    pub fn applies(self, authorized: bool) -> bool {
        match self {
            Self::None => false,
            Self::OnDeny => !authorized,
            Self::OnAllow => authorized,
            Self::OnDenyAndAllow => true,
        }
    }
}

// === impl RbacHeader ===

impl RbacHeader {
    /// A condition on `name`: `:method`, `:authority`, `host`, `:path` or a regular header.
    /// As gRPC requires (A41), `:scheme`, other pseudo-headers and `grpc-*` headers are
    /// errors, and a range with `start >= end` is one too.
    pub fn new(
        name: &str,
        kind: HeaderMatch,
        invert: bool,
        treat_missing_as_empty: bool,
    ) -> Result<Self, Error> {
        let lower = name.to_ascii_lowercase();
        let field = match lower.as_str() {
            ":method" => HeaderField::Method,
            ":authority" | "host" => HeaderField::Authority,
            ":path" => HeaderField::Path,
            _ if lower.starts_with(':') => {
                return Err(Error::invalid(format!(
                    "header `{name}`: only :method, :authority and :path can be matched"
                )));
            }
            _ if lower.starts_with("grpc-") => {
                return Err(Error::invalid(format!(
                    "header `{name}`: grpc- headers cannot be matched"
                )));
            }
            _ => HeaderField::Header(
                http::HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| Error::invalid(format!("`{name}` is not a valid header name")))?,
            ),
        };
        if let HeaderMatch::Range { start, end } = kind
            && start >= end
        {
            return Err(Error::invalid(format!(
                "range start {start} must be below end {end}"
            )));
        }
        Ok(Self {
            field,
            kind,
            invert,
            treat_missing_as_empty,
        })
    }

    /// Which value is read.
    pub fn field(&self) -> &HeaderField {
        &self.field
    }

    fn matches(&self, facts: &Facts<'_>) -> bool {
        let joined;
        let value: Option<&str> = match &self.field {
            HeaderField::Method => Some(facts.method),
            HeaderField::Authority => Some(facts.host),
            HeaderField::Path => Some(facts.path),
            // `te` is hop-by-hop: A41 says it must never match.
            HeaderField::Header(name) if name == http::header::TE => None,
            HeaderField::Header(name) => {
                let mut values = facts.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(one), None) => Some(one.to_str().unwrap_or("")),
                    (Some(_), Some(_)) => {
                        joined = facts
                            .headers
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(",");
                        Some(joined.as_str())
                    }
                }
            }
        };
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => "",
            // Envoy: a missing header matches only "absent" (`present_match: false`, or
            // `present_match: true` inverted).
            None => return matches!(self.kind, HeaderMatch::Present(p) if p == self.invert),
        };
        self.kind.matches_value(value) != self.invert
    }
}

// === impl Permission ===

impl Permission {
    fn matches(&self, facts: &Facts<'_>) -> Tri {
        match self {
            Self::Any => Tri::Yes,
            Self::And(all) => all.iter().fold(Tri::Yes, |t, p| t.and(p.matches(facts))),
            Self::Or(any) => any.iter().fold(Tri::No, |t, p| t.or(p.matches(facts))),
            Self::Not(p) => p.matches(facts).not(),
            Self::Header(h) => Tri::from(h.matches(facts)),
            Self::UrlPath(m) => Tri::from(m.matches(facts.path)),
            // The local address is not part of the request view.
            Self::DestinationIp(_) => Tri::Unknown,
            Self::DestinationPort { start, end } => {
                Tri::from((*start..*end).contains(&u32::from(facts.port)))
            }
            Self::RequestedServerName(m) => Tri::from(m.matches("")),
            Self::Metadata => Tri::No,
        }
    }
}

// === impl Principal ===

impl Principal {
    fn matches(&self, facts: &Facts<'_>, identities: &[String]) -> Tri {
        match self {
            Self::Any => Tri::Yes,
            Self::And(all) => all
                .iter()
                .fold(Tri::Yes, |t, p| t.and(p.matches(facts, identities))),
            Self::Or(any) => any
                .iter()
                .fold(Tri::No, |t, p| t.or(p.matches(facts, identities))),
            Self::Not(p) => p.matches(facts, identities).not(),
            Self::Authenticated(None) => Tri::from(!identities.is_empty()),
            // Envoy compares principal_name with every URI SAN: any one matching is a match.
            Self::Authenticated(Some(m)) => Tri::from(if identities.is_empty() {
                m.matches("")
            } else {
                identities.iter().any(|id| m.matches(id))
            }),
            // The address is compared as IPv4 when it is IPv4-mapped, so the block too.
            Self::RemoteIp(net) => match facts.source_ip {
                Some(ip) => Tri::from(canonical_net(*net).contains(&canonical(ip))),
                None => Tri::Unknown,
            },
            Self::Header(h) => Tri::from(h.matches(facts)),
            Self::UrlPath(m) => Tri::from(m.matches(facts.path)),
            Self::Metadata => Tri::No,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

// === impl Rbac ===

impl Rbac {
    /// The first policy (by name) that matches or cannot be decided, with how sure it is.
    fn first_match(&self, facts: &Facts<'_>, identities: &[String]) -> Option<(&Arc<str>, Tri)> {
        let mut unknown = None;
        for policy in self.policies.iter() {
            let permitted = policy
                .permissions
                .iter()
                .fold(Tri::No, |t, p| t.or(p.matches(facts)));
            let principal = policy
                .principals
                .iter()
                .fold(Tri::No, |t, p| t.or(p.matches(facts, identities)));
            match permitted.and(principal) {
                Tri::Yes => return Some((&policy.name, Tri::Yes)),
                Tri::Unknown if unknown.is_none() => unknown = Some(&policy.name),
                _ => {}
            }
        }
        unknown.map(|name| (name, Tri::Unknown))
    }

    /// `Ok` when the request passes (with the ALLOW policy that let it), else `Err` with the
    /// deciding DENY policy (`None`: an ALLOW filter that no policy matched).
    fn judge(
        &self,
        facts: &Facts<'_>,
        identities: &[String],
    ) -> Result<Option<Arc<str>>, Option<Arc<str>>> {
        match (self.action, self.first_match(facts, identities)) {
            (RbacAction::Allow, Some((name, Tri::Yes))) => Ok(Some(name.clone())),
            (RbacAction::Allow, _) => Err(None),
            (RbacAction::Deny, Some((name, _))) => Err(Some(name.clone())),
            (RbacAction::Deny, None) => Ok(None),
        }
    }
}

/// Judges `request` by the RBAC `filters` in order (gRFC A41: each filter decides in turn,
/// shadow rules never decide). The decision's `reason` names the DENY policy that matched, or is
/// [`AuthzReason::NoAllowMatched`] when an ALLOW filter matched nothing; an allowed request
/// names the last ALLOW policy that let it pass, or is [`AuthzReason::NoAllowPolicies`] when
/// no ALLOW filter ran; shadow rules that would
/// deny are listed in `dry_run_denials` by policy name (or by filter name for a shadow ALLOW
/// that matched nothing). Each RBAC that decides as its [`AuditCondition`] asks is listed in
/// `rbac_audits` (A59: one event per such RBAC; a denial ends the chain, so later RBACs are not
/// evaluated and not logged). `audit` (Istio's AUDIT action) is always false here.
pub fn authorize_rbac(filters: &[RbacFilter], request: &AuthzRequest<'_>) -> AuthzDecision {
    let facts = Facts::new(request);
    // principal_name is compared with the URI SANs, which carry the scheme.
    let identities: Vec<String> = facts
        .principals()
        .map(|p| format!("spiffe://{p}"))
        .collect();
    let identities = identities.as_slice();
    let mut dry_run_denials = Vec::new();
    let mut audits = Vec::new();
    let mut allowed_by = None;
    for filter in filters {
        if let Some(shadow) = &filter.shadow_rules
            && let Err(name) = shadow.judge(&facts, identities)
        {
            dry_run_denials.push(name.unwrap_or_else(|| filter.name.clone()));
        }
        let Some(rules) = &filter.rules else {
            continue;
        };
        let verdict = rules.judge(&facts, identities);
        if rules.audit.applies(verdict.is_ok()) {
            let (Ok(matched) | Err(matched)) = &verdict;
            audits.push(RbacAudit {
                filter: filter.name.clone(),
                matched_rule: matched.clone(),
                authorized: verdict.is_ok(),
            });
        }
        match verdict {
            Ok(allowed) => allowed_by = allowed.or(allowed_by),
            Err(deciding) => {
                return AuthzDecision {
                    allowed: false,
                    reason: deciding.map_or(AuthzReason::NoAllowMatched, AuthzReason::Denied),
                    dry_run_denials,
                    audit: false,
                    rbac_audits: audits,
                };
            }
        }
    }
    AuthzDecision {
        allowed: true,
        reason: allowed_by.map_or(AuthzReason::NoAllowPolicies, AuthzReason::Allowed),
        dry_run_denials,
        audit: false,
        rbac_audits: audits,
    }
}

#[cfg(test)]
mod tests;
