//! Server-side policy: peer authentication (mTLS mode), path normalization, authorization,
//! server-side faults and local rate limiting.
//!
//! Authorization follows Istio's `AuthorizationPolicy` (CUSTOM aside): within a rule, every
//! `from`, `to` and `when` block must match (each block matches when any of its entries does),
//! and a policy matches when any of its rules does. A request is denied when any DENY policy
//! matches, else allowed when no ALLOW policy applies to the workload, else allowed only when
//! an ALLOW policy matches. AUDIT policies only mark the request for logging.
//!
//! The model lives here; the decisions live in submodules, one per concern:
//! [`authorize`] (authorization), [`mtls_mode`] (peer authentication) and [`TokenBucket`]
//! (local rate limiting). All are pure: the caller passes the request view, the workload's
//! identity and, for the bucket, the current time.

use std::{sync::Arc, time::Duration};

use ipnet::IpNet;

use crate::{Error, FaultPolicy, Labels, PathNormalizer};

mod authz;
mod inbound;
mod peer_auth;
mod rate_limit;
mod rbac;
mod trust_domain;

pub use self::{
    authz::{AuthzDecision, AuthzReason, AuthzRequest, authorize},
    inbound::{
        FilterChainMatch, InboundChain, InboundListener, InboundListeners, InboundState, SourceType,
    },
    peer_auth::mtls_mode,
    rate_limit::TokenBucket,
    rbac::{
        AuditCondition, HeaderField, Permission, Principal, Rbac, RbacAction, RbacAudit,
        RbacFilter, RbacHeader, RbacPolicy, authorize_rbac,
    },
    trust_domain::{DEFAULT_TRUST_DOMAIN, TrustDomains},
};

/// Istio's default root namespace: policies there without a selector are mesh-wide.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Everything the server side of a workload enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServerPolicy {
    /// Peer-authentication policies, most specific applied (see [`PeerAuthentication`]).
    pub peer_authentication: Arc<[PeerAuthentication]>,
    /// Authorization policies.
    pub authorization: Arc<[AuthorizationPolicy]>,
    /// Server-side fault injection; `None` is off.
    pub fault: Option<Arc<FaultPolicy>>,
    /// Local rate limit; `None` is off.
    pub rate_limit: Option<LocalRateLimit>,
    /// How request paths are normalized (Istio's mesh-wide `MeshConfig.pathNormalization`):
    /// on the server before authorization and before the handler sees them, and on the client
    /// before route matching and before the request is sent. Default is Istio's `BASE`.
    pub path_normalization: PathNormalizer,
}

/// Where a policy applies: a namespace and optionally a label selector on the workload.
/// The mesh's root namespace (`istio-system` by default) makes a policy mesh-wide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkloadScope {
    /// Namespace of the policy.
    pub namespace: Arc<str>,
    /// Workload labels that must all be present; `None` applies to every workload of the
    /// namespace.
    pub selector: Option<Labels>,
}

/// Istio's `PeerAuthentication`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAuthentication {
    /// Its name, for diagnostics.
    pub name: Arc<str>,
    /// Where it applies.
    pub scope: WorkloadScope,
    /// The mode; `None` (UNSET) inherits from the parent scope.
    pub mode: Option<MtlsMode>,
    /// Per-port overrides (only honoured with a selector, as in Istio).
    pub port_modes: Arc<[(u16, MtlsMode)]>,
}

/// Inbound mTLS mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Only mTLS connections are accepted.
    Strict,
    /// mTLS and plaintext on the same port. Istio's default.
    #[default]
    Permissive,
    /// Plaintext only.
    Disable,
}

/// Istio's `AuthorizationPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthorizationPolicy {
    /// Its name, for logs and metrics.
    pub name: Arc<str>,
    /// Where it applies.
    pub scope: WorkloadScope,
    /// What a match does.
    pub action: AuthzAction,
    /// Rules; a policy matches when any rule does. An ALLOW policy with no rules matches
    /// nothing; a DENY policy with no rules matches nothing (as in Istio). A rule with no
    /// conditions matches everything.
    pub rules: Arc<[AuthzRule]>,
    /// Evaluate, log and count, but never deny (Istio's `istio.io/dry-run` annotation).
    pub dry_run: bool,
}

/// What a matched [`AuthorizationPolicy`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthzAction {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
    /// Mark for audit logging; never affects the decision.
    Audit,
}

/// One rule: all of its `from`, `to` and `when` blocks must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthzRule {
    /// Sources; empty matches any source, otherwise any entry must match.
    pub from: Arc<[AuthzSource]>,
    /// Operations; empty matches any operation, otherwise any entry must match.
    pub to: Arc<[AuthzOperation]>,
    /// Extra conditions; all must match.
    pub when: Arc<[AuthzCondition]>,
}

/// Istio's `Source`. Each set field must match; empty lists are unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthzSource {
    /// Peer identities (`cluster.local/ns/default/sa/reviews`, Istio string syntax).
    pub principals: Arc<[IstioString]>,
    /// Excluded peer identities.
    pub not_principals: Arc<[IstioString]>,
    /// Peer namespaces.
    pub namespaces: Arc<[IstioString]>,
    /// Excluded peer namespaces.
    pub not_namespaces: Arc<[IstioString]>,
    /// Peer IP blocks.
    pub ip_blocks: Arc<[IpNet]>,
    /// Excluded peer IP blocks.
    pub not_ip_blocks: Arc<[IpNet]>,
}

/// Istio's `Operation`. Each set field must match; empty lists are unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthzOperation {
    /// Request hosts (authority).
    pub hosts: Arc<[IstioString]>,
    /// Excluded hosts.
    pub not_hosts: Arc<[IstioString]>,
    /// Destination ports.
    pub ports: Arc<[u16]>,
    /// Excluded ports.
    pub not_ports: Arc<[u16]>,
    /// Methods (for gRPC always `POST`).
    pub methods: Arc<[IstioString]>,
    /// Excluded methods.
    pub not_methods: Arc<[IstioString]>,
    /// Paths (for gRPC `/package.Service/Method`).
    pub paths: Arc<[IstioString]>,
    /// Excluded paths.
    pub not_paths: Arc<[IstioString]>,
}

/// Istio's `Condition`: `key` must have one of `values` and none of `not_values`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzCondition {
    /// The attribute.
    pub key: ConditionKey,
    /// Accepted values; empty is unset.
    pub values: Arc<[IstioString]>,
    /// Rejected values; empty is unset.
    pub not_values: Arc<[IstioString]>,
}

/// The condition keys the mesh evaluates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConditionKey {
    /// `request.headers[name]`.
    RequestHeader(http::HeaderName),
    /// `source.ip`.
    SourceIp,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
    /// `destination.port`.
    DestinationPort,
}

/// Istio's authorization string syntax: exact, `prefix*`, `*suffix`, or `*` (present).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IstioString {
    /// Equal to this.
    Exact(Arc<str>),
    /// Starts with this.
    Prefix(Arc<str>),
    /// Ends with this.
    Suffix(Arc<str>),
    /// Any non-empty value.
    Any,
}

/// Envoy's local rate limit: a token bucket per server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalRateLimit {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval: Duration,
}

// === impl ServerPolicy ===

impl ServerPolicy {
    /// [`authorize`] under this policy's authorization policies.
    pub fn authorize(
        &self,
        workload_namespace: &str,
        labels: &Labels,
        root_namespace: &str,
        request: &AuthzRequest<'_>,
    ) -> AuthzDecision {
        authorize(
            &self.authorization,
            workload_namespace,
            labels,
            root_namespace,
            request,
        )
    }

    /// Whether an authorization policy that applies to the workload looks at the peer's
    /// identity (`principals`, `namespaces`, their negations, or a `source.principal` /
    /// `source.namespace` condition): then a request whose connection is unknown cannot be
    /// judged, since "no identity" would satisfy every negation.
    pub fn needs_peer_identity(
        &self,
        workload_namespace: &str,
        labels: &Labels,
        root_namespace: &str,
    ) -> bool {
        self.authorization
            .iter()
            .filter(|p| {
                p.scope
                    .applies_to(workload_namespace, labels, root_namespace)
            })
            .any(AuthorizationPolicy::uses_peer_identity)
    }

    /// [`mtls_mode`] under this policy's peer-authentication policies.
    pub fn mtls_mode(
        &self,
        workload_namespace: &str,
        labels: &Labels,
        port: u16,
        root_namespace: &str,
    ) -> MtlsMode {
        mtls_mode(
            &self.peer_authentication,
            workload_namespace,
            labels,
            port,
            root_namespace,
        )
    }
}

// === impl AuthorizationPolicy ===

impl AuthorizationPolicy {
    /// Whether any rule names the peer's identity: `principals`, `namespaces` (or their
    /// negations) in a source, or a `source.principal` / `source.namespace` condition.
    pub fn uses_peer_identity(&self) -> bool {
        self.rules.iter().any(|rule| {
            rule.from.iter().any(|source| {
                !source.principals.is_empty()
                    || !source.not_principals.is_empty()
                    || !source.namespaces.is_empty()
                    || !source.not_namespaces.is_empty()
            }) || rule.when.iter().any(|condition| {
                matches!(
                    condition.key,
                    ConditionKey::SourcePrincipal | ConditionKey::SourceNamespace
                )
            })
        })
    }
}

// === impl WorkloadScope ===

impl WorkloadScope {
    /// Whether a policy with this scope applies to a workload in `workload_namespace` with
    /// `labels`, as Istio selects `AuthorizationPolicy`: the policy must live in the workload's
    /// namespace or in the mesh's `root_namespace`, and its selector (if any) must be a subset
    /// of the workload's labels. So a root-namespace policy without selector is mesh-wide, and
    /// one with a selector applies to matching workloads of every namespace.
    ///
    /// Peer authentication uses a stricter rule (see [`mtls_mode`]).
    pub fn applies_to(
        &self,
        workload_namespace: &str,
        labels: &Labels,
        root_namespace: &str,
    ) -> bool {
        let in_scope = &*self.namespace == workload_namespace || &*self.namespace == root_namespace;
        in_scope
            && self
                .selector
                .as_ref()
                .is_none_or(|selector| labels.contains_all(selector))
    }

    /// Whether the selector is missing or empty: Istio treats an empty `matchLabels` like no
    /// selector at all.
    pub(crate) fn is_namespace_wide(&self) -> bool {
        self.selector.as_ref().is_none_or(Labels::is_empty)
    }
}

// === impl IstioString ===

impl IstioString {
    /// Parses Istio's syntax. A `*` in the middle is an error (Istio rejects it too).
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(rest) = s.strip_suffix('*')
            && !rest.contains('*')
        {
            return Ok(Self::Prefix(rest.into()));
        }
        if let Some(rest) = s.strip_prefix('*')
            && !rest.contains('*')
        {
            return Ok(Self::Suffix(rest.into()));
        }
        if s.contains('*') {
            return Err(Error::invalid(format!(
                "`{s}`: `*` is only allowed at the start or the end"
            )));
        }
        Ok(Self::Exact(s.into()))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == &**s,
            Self::Prefix(s) => value.starts_with(&**s),
            Self::Suffix(s) => value.ends_with(&**s),
            Self::Any => !value.is_empty(),
        }
    }
}

// === impl LocalRateLimit ===

impl LocalRateLimit {
    /// A bucket of `max_tokens`, refilled by `tokens_per_fill` every `fill_interval`.
    /// All must be positive; Envoy also requires the interval to be at least 50 ms.
    pub fn new(
        max_tokens: u32,
        tokens_per_fill: u32,
        fill_interval: Duration,
    ) -> Result<Self, Error> {
        if max_tokens == 0 || tokens_per_fill == 0 {
            return Err(Error::invalid("rate limit token counts must be positive"));
        }
        if fill_interval < Duration::from_millis(50) {
            return Err(Error::invalid(format!(
                "rate limit fill interval {fill_interval:?} is below 50ms"
            )));
        }
        Ok(Self {
            max_tokens,
            tokens_per_fill,
            fill_interval,
        })
    }

    /// Bucket capacity.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Tokens added per interval.
    pub fn tokens_per_fill(&self) -> u32 {
        self.tokens_per_fill
    }

    /// Refill interval.
    pub fn fill_interval(&self) -> Duration {
        self.fill_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_strings_parse_and_match() {
        assert!(IstioString::parse("/api/*").unwrap().matches("/api/v1"));
        assert!(IstioString::parse("*.svc").unwrap().matches("a.svc"));
        assert!(IstioString::parse("*").unwrap().matches("x"));
        assert!(!IstioString::parse("*").unwrap().matches(""));
        assert!(IstioString::parse("GET").unwrap().matches("GET"));
        assert!(IstioString::parse("a*b").is_err());
    }

    #[test]
    fn rate_limits_are_validated() {
        assert!(LocalRateLimit::new(0, 1, Duration::from_secs(1)).is_err());
        assert!(LocalRateLimit::new(10, 1, Duration::from_millis(10)).is_err());
        assert!(LocalRateLimit::new(10, 5, Duration::from_secs(1)).is_ok());
    }
}
