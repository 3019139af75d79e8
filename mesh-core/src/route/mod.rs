//! Routing policy: virtual hosts, ordered routes, and what a matched route does.
//!
//! The shape follows Envoy's `RouteConfiguration` because both of our sources (Istio YAML and
//! xDS) map onto it without loss: a [`RouteTable`] holds [`VirtualHost`]s chosen by the
//! request's authority; each holds ordered [`Route`]s, first match wins; a route either forwards
//! to weighted clusters, redirects, or answers directly.
//!
//! The lookup is [`RouteTable::find`]; the weighted pick is [`WeightedClusters::pick`].

mod find;
pub mod overrides;
mod weighted;

use std::{sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method};

pub use self::{
    find::{RequestHead, RouteMatch, is_grpc},
    weighted::{WeightedCluster, WeightedClusters},
};
use crate::{
    Error, FaultPolicy, Percentage, RetryPolicy, SourceMatcher,
    matcher::{HeaderMatcher, PathMatcher, QueryParamMatcher, RegexRewrite, StringMatcher},
};

/// The routes of one listener (one target such as `reviews.default.svc.cluster.local:9080`).
///
/// Equality and hashing look at the configuration only, not at the derived domain and path
/// indices.
#[derive(Clone, Debug)]
pub struct RouteTable {
    name: Arc<str>,
    virtual_hosts: Arc<[VirtualHost]>,
    index: Arc<find::DomainIndex>,
    /// Per virtual host, by the same index.
    paths: Arc<[find::PathIndex]>,
}

/// A set of domains and the routes that serve them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualHost {
    name: Arc<str>,
    domains: Arc<[Domain]>,
    routes: Arc<[Route]>,
}

/// One entry of a virtual host's `domains`, in Envoy's four forms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// `reviews.default.svc.cluster.local` (or with a port).
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (stored without the `*`).
    Suffix(String),
    /// `reviews.*`: any host starting with `reviews.` (stored without the `*`).
    Prefix(String),
    /// `*`: anything.
    Any,
}

/// One route: a condition, an action, and the policies that come with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// A name for logs, metrics and the config dump (Istio's `http[].name`).
    pub name: Option<Arc<str>>,
    /// When the route applies.
    pub matcher: RouteMatcher,
    /// What happens to a matched request.
    pub action: Action,
    /// Header changes to the request before it is forwarded.
    pub request_headers: HeaderMutations,
    /// Header changes to the response before it is returned.
    pub response_headers: HeaderMutations,
    /// Client-side fault injection; `None` is off.
    pub fault: Option<Arc<FaultPolicy>>,
}

/// The conditions of a route; all must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteMatcher {
    /// The path (query string excluded). Default is any path.
    pub path: PathMatcher,
    /// Every header condition must hold.
    pub headers: Arc<[HeaderMatcher]>,
    /// Every query-parameter condition must hold.
    pub query: Arc<[QueryParamMatcher]>,
    /// The method; `None` is any.
    pub method: Option<StringMatcher>,
    /// The authority (`:authority` / `Host`); `None` is any.
    pub authority: Option<StringMatcher>,
    /// Only gRPC requests (`content-type: application/grpc*`) match, as Envoy's `grpc: {}`.
    pub grpc_only: bool,
    /// The calling workload (Istio's `sourceNamespace` / `sourceLabels`), checked against
    /// [`RequestHead::source`]; `None` is any caller.
    pub source: Option<Arc<SourceMatcher>>,
}

/// What a matched route does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward upstream to one of the weighted clusters.
    Forward(Arc<Forward>),
    /// Answer with a redirect.
    Redirect(Arc<Redirect>),
    /// Answer with a fixed status and body.
    DirectResponse(Arc<DirectResponse>),
}

/// How a forwarded request is sent upstream (Envoy's `RouteAction`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Forward {
    /// Where it goes.
    pub clusters: WeightedClusters,
    /// A path rewrite; `None` keeps the path.
    pub path_rewrite: Option<PathRewrite>,
    /// A new authority; `None` keeps it.
    pub authority_rewrite: Option<HeaderValue>,
    /// The bound on the whole request, all attempts included; `None` is no timeout
    /// (Istio's default; Envoy's default of 15 s is applied by the xDS decoder).
    pub timeout: Option<Duration>,
    /// The cap applied to a caller's `grpc-timeout` (Envoy's `max_grpc_timeout` /
    /// `max_stream_duration.grpc_timeout_header_max`); `None` is uncapped.
    pub grpc_timeout_max: Option<Duration>,
    /// Retries; `None` is no retries.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Copies of the request sent elsewhere, fire and forget.
    pub mirrors: Arc<[Mirror]>,
    /// What a consistent-hash load balancer hashes; empty is a random hash.
    pub hash_policy: Arc<[HashPolicy]>,
    /// Stateful session affinity (Envoy's `stateful_session` filter, gRFC A55); `None` is off.
    pub session: Option<Arc<SessionAffinity>>,
}

/// Stateful session affinity: a request naming an endpoint of the cluster (in a cookie or a
/// header, base64 of `ip:port`) goes to that endpoint while its health allows it (the
/// cluster's `override_host_status`), bypassing the load balancer; otherwise the balancer
/// picks and the response carries the new session value. Unlike a hash, the pin survives
/// endpoints joining or leaving the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionAffinity {
    /// Where the session value travels.
    pub state: SessionState,
    /// Answer `UNAVAILABLE` / 503 rather than balance when the requested endpoint cannot take
    /// the request (Envoy's `strict`). Default is `false`.
    pub strict: bool,
}

/// Where a session's endpoint is carried (Envoy's session state extensions).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// A cookie (`CookieBasedSessionState`).
    Cookie {
        /// Cookie name.
        name: String,
        /// The cookie's path: requests outside it are neither pinned nor given a cookie
        /// (RFC 6265 path-match). Default is `/`.
        path: String,
        /// The cookie's `Max-Age`; zero is a session cookie (no `Max-Age`).
        ttl: Duration,
    },
    /// A request and response header (`HeaderBasedSessionState`).
    Header(HeaderName),
}

/// A path rewrite.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathRewrite {
    /// Replace the part of the path the route's prefix matched (Envoy's `prefix_rewrite`).
    Prefix(String),
    /// Replace the whole path, keeping the query (Istio's `rewrite.uri` on an exact match).
    FullPath(String),
    /// Envoy's `regex_rewrite` / Istio's `uriRegexRewrite`.
    Regex(RegexRewrite),
}

/// A redirect answer (Envoy's `RedirectAction`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// New scheme; `None` keeps it.
    pub scheme: Option<String>,
    /// New host; `None` keeps it.
    pub host: Option<String>,
    /// New port; `None` keeps it.
    pub port: Option<u16>,
    /// New path; `None` keeps it.
    pub path: Option<PathRewrite>,
    /// Drop the query string.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub status: RedirectStatus,
}

/// A redirect status code; only the five redirect codes are representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RedirectStatus(u16);

/// A fixed answer (Envoy's `DirectResponseAction`, Istio's `directResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirectResponse {
    /// HTTP status, 200..=599.
    pub status: u16,
    /// Body; `None` is empty.
    pub body: Option<Arc<str>>,
}

/// A mirror: a copy of a sampled share of requests sent to another cluster; its response is
/// discarded and its failure never affects the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mirror {
    /// The mirror's cluster.
    pub cluster: Arc<str>,
    /// Share of requests mirrored. Default is 100 %.
    pub percentage: Percentage,
}

/// One input of the request hash used by ring-hash load balancing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HashPolicy {
    /// What to hash.
    pub source: HashSource,
    /// Stop at this policy if it produced a hash (Envoy's `terminal`).
    pub terminal: bool,
}

/// What a [`HashPolicy`] hashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashSource {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value. When the cookie is absent and `ttl` is set, a cookie is generated (as
    /// Envoy does): the request is hashed on the generated value and the response sets it.
    Cookie {
        /// Cookie name.
        name: String,
        /// Lifetime of a generated cookie: `None` never generates one; zero generates a session
        /// cookie (no `Max-Age`).
        ttl: Option<Duration>,
        /// Path of a generated cookie.
        path: Option<String>,
    },
    /// The caller's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// Header changes applied in Envoy's order: remove, then set (replace), then add (append).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderMutations {
    /// Replace these headers (or create them).
    pub set: Arc<[(HeaderName, HeaderValue)]>,
    /// Append these values.
    pub add: Arc<[(HeaderName, HeaderValue)]>,
    /// Remove these headers.
    pub remove: Arc<[HeaderName]>,
}

// === impl RouteTable ===

impl RouteTable {
    /// A table. Two virtual hosts claiming the same domain is an error, as in Envoy.
    pub fn new(name: impl Into<Arc<str>>, virtual_hosts: Vec<VirtualHost>) -> Result<Self, Error> {
        let mut seen = std::collections::HashSet::new();
        for vh in &virtual_hosts {
            for d in vh.domains.iter() {
                if !seen.insert(d) {
                    return Err(Error::invalid(format!(
                        "domain `{d}` is claimed by more than one virtual host (again by `{}`)",
                        vh.name
                    )));
                }
            }
        }
        let index = Arc::new(find::DomainIndex::build(&virtual_hosts));
        let paths = virtual_hosts
            .iter()
            .map(|vh| find::PathIndex::build(&vh.routes))
            .collect();
        Ok(Self {
            name: name.into(),
            virtual_hosts: virtual_hosts.into(),
            index,
            paths,
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual hosts, in configuration order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }
}

impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.virtual_hosts == other.virtual_hosts
    }
}

impl Eq for RouteTable {}

impl std::hash::Hash for RouteTable {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.virtual_hosts.hash(state);
    }
}

// === impl VirtualHost ===

impl VirtualHost {
    /// A virtual host. It needs at least one domain.
    pub fn new(
        name: impl Into<Arc<str>>,
        domains: Vec<Domain>,
        routes: Vec<Route>,
    ) -> Result<Self, Error> {
        let name = name.into();
        if domains.is_empty() {
            return Err(Error::invalid(format!(
                "virtual host `{name}` has no domains"
            )));
        }
        Ok(Self {
            name,
            domains: domains.into(),
            routes: routes.into(),
        })
    }

    /// The virtual host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its domains.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Its routes, in order; the first match wins.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

// === impl Domain ===

impl Domain {
    /// Parses Envoy's domain syntax. Hosts are case-insensitive, so the domain is lower-cased.
    /// A `*` anywhere but alone, leading `*.`-style or trailing is an error.
    pub fn parse(domain: &str) -> Result<Self, Error> {
        let d = domain.to_ascii_lowercase();
        if d == "*" {
            return Ok(Self::Any);
        }
        if d.is_empty() {
            return Err(Error::invalid("empty domain"));
        }
        let stars = d.matches('*').count();
        match stars {
            0 => Ok(Self::Exact(d)),
            1 if d.starts_with('*') => Ok(Self::Suffix(d[1..].to_string())),
            1 if d.ends_with('*') => Ok(Self::Prefix(d[..d.len() - 1].to_string())),
            _ => Err(Error::invalid(format!(
                "domain `{domain}`: a wildcard may only be the first or last character"
            ))),
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(d) => f.write_str(d),
            Self::Suffix(d) => write!(f, "*{d}"),
            Self::Prefix(d) => write!(f, "{d}*"),
            Self::Any => f.write_str("*"),
        }
    }
}

// === impl Route ===

impl Route {
    /// A route with no header mutations and no fault.
    pub fn new(matcher: RouteMatcher, action: Action) -> Self {
        Self {
            name: None,
            matcher,
            action,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            fault: None,
        }
    }
}

// === impl Forward ===

impl Forward {
    /// Forward to `clusters` with no other policy.
    pub fn to(clusters: WeightedClusters) -> Self {
        Self {
            clusters,
            path_rewrite: None,
            authority_rewrite: None,
            timeout: None,
            grpc_timeout_max: None,
            retry: None,
            mirrors: Arc::from([]),
            hash_policy: Arc::from([]),
            session: None,
        }
    }
}

// === impl RedirectStatus ===

impl RedirectStatus {
    /// 301, 302, 303, 307 or 308; anything else is an error.
    pub fn new(code: u16) -> Result<Self, Error> {
        match code {
            301 | 302 | 303 | 307 | 308 => Ok(Self(code)),
            _ => Err(Error::invalid(format!(
                "{code} is not a redirect status (301, 302, 303, 307, 308)"
            ))),
        }
    }

    /// The code.
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl Default for RedirectStatus {
    /// 301, Envoy's and Istio's default.
    fn default() -> Self {
        Self(301)
    }
}

// === impl DirectResponse ===

impl DirectResponse {
    /// A direct response; the status must be 200..=599.
    pub fn new(status: u16, body: Option<Arc<str>>) -> Result<Self, Error> {
        if !(200..=599).contains(&status) {
            return Err(Error::invalid(format!(
                "direct response status {status} is outside 200-599"
            )));
        }
        Ok(Self { status, body })
    }
}

// === impl HeaderMutations ===

impl HeaderMutations {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the changes to `headers` in Envoy's order: remove, set, add.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in self.remove.iter() {
            headers.remove(name);
        }
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in self.add.iter() {
            headers.append(name.clone(), value.clone());
        }
    }
}

// === impl Method-free helpers ===

/// Whether `method` matches an optional method condition.
pub(crate) fn method_matches(cond: &Option<StringMatcher>, method: &Method) -> bool {
    cond.as_ref().is_none_or(|m| m.matches(method.as_str()))
}

#[cfg(test)]
mod tests;
