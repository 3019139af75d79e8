//! Route lookup: the virtual host by domain specificity, then the first matching route.
//!
//! Virtual-host choice follows Envoy's documented search order: an exact domain, then the
//! longest `*.suffix`, then the longest `prefix*`, then `*`. At each step the full authority
//! (with port) is tried before the authority without its port, so `reviews:9080` matches a
//! domain written either as `reviews:9080` or as `reviews` — Istio generates both forms, gRPC's
//! xDS client matches the target as given — and an exact domain without port still beats any
//! wildcard (Envoy, which compares the port-ful authority only, would pick `reviews.*` there).

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::Workload;

use super::{Domain, Route, RouteMatcher, RouteTable, VirtualHost, method_matches};

/// The parts of a request that routing reads, borrowed from it without copying.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The authority (`:authority` or `Host`), possibly with a port.
    pub authority: &'a str,
    /// The path with its query string, e.g. `/reviews.Reviews/Get?x=1`.
    pub path_and_query: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The calling workload, for [`RouteMatcher::source`]; `None` when unknown, which no
    /// source condition accepts.
    pub source: Option<&'a Workload>,
}

/// The result of a successful lookup.
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'a> {
    /// The virtual host chosen by domain.
    pub virtual_host: &'a VirtualHost,
    /// The first route of that host whose conditions hold.
    pub route: &'a Route,
    /// The route's position in the host, for the config dump and metrics.
    pub route_index: usize,
}

/// Domain index of a [`RouteTable`], built once when the table is built.
#[derive(Clone, Debug, Default)]
pub(super) struct DomainIndex {
    /// Looked up on every request: foldhash, several times cheaper than SipHash on host names.
    exact: HashMap<String, usize, foldhash::fast::RandomState>,
    /// `(suffix, vhost)`, longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// `(prefix, vhost)`, longest prefix first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
}

// === impl DomainIndex ===

impl DomainIndex {
    pub(super) fn build(virtual_hosts: &[VirtualHost]) -> Self {
        let mut index = Self::default();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in vh.domains() {
                match d {
                    Domain::Exact(h) => {
                        index.exact.insert(h.clone(), i);
                    }
                    Domain::Suffix(s) => index.suffixes.push((s.clone(), i)),
                    Domain::Prefix(p) => index.prefixes.push((p.clone(), i)),
                    Domain::Any => index.any = Some(i),
                }
            }
        }
        // Stable sorts keep configuration order among equal lengths.
        index
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        index
            .prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        index
    }

    fn exact(&self, host: &str) -> Option<usize> {
        self.exact.get(host).copied()
    }

    // A wildcard must stand for at least one character, as in Envoy.
    fn suffix(&self, host: &str) -> Option<usize> {
        self.suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, i)| *i)
    }

    fn prefix(&self, host: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
            .map(|(_, i)| *i)
    }

    fn select(&self, authority: &str) -> Option<usize> {
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let portless = strip_port(host);
        let both = |f: fn(&Self, &str) -> Option<usize>| {
            f(self, host).or_else(|| portless.and_then(|h| f(self, h)))
        };
        both(Self::exact)
            .or_else(|| both(Self::suffix))
            .or_else(|| both(Self::prefix))
            .or(self.any)
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `[::1]:80` → `[::1]`; a bare `::1` has no port to strip.
    if host.contains(':') && !host.ends_with(']') {
        return None;
    }
    Some(host)
}

// === impl RouteTable ===

impl RouteTable {
    /// The virtual host for `authority` by Envoy's domain search order, or `None`.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        self.index
            .select(authority)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    /// The route for a request: its virtual host by domain, then the first route whose
    /// conditions all hold. `None` when no host or no route matches.
    pub fn find<'a>(&'a self, head: &RequestHead<'_>) -> Option<RouteMatch<'a>> {
        let virtual_host = self.virtual_host(head.authority)?;
        let (path, query) = head
            .path_and_query
            .split_once('?')
            .unwrap_or((head.path_and_query, ""));
        virtual_host
            .routes()
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches(head, path, query))
            .map(|(route_index, route)| RouteMatch {
                virtual_host,
                route,
                route_index,
            })
    }
}

// === impl RouteMatcher ===

impl RouteMatcher {
    /// Whether every condition holds. `path` and `query` are the split `path_and_query`.
    pub fn matches(&self, head: &RequestHead<'_>, path: &str, query: &str) -> bool {
        self.path.matches(path)
            && method_matches(&self.method, head.method)
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(head.authority))
            && (!self.grpc_only || is_grpc(head.headers))
            && self.headers.iter().all(|h| h.matches(head.headers))
            && self.query.iter().all(|q| q.matches(query))
            && self.source.as_ref().is_none_or(|s| s.matches(head.source))
    }
}

/// Whether the request is gRPC (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.starts_with(b"application/grpc") && matches!(ct.get(16), None | Some(b'+') | Some(b';'))
    })
}
