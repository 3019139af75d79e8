//! Route lookup: the virtual host by domain specificity, then the first matching route.
//!
//! Virtual-host choice follows Envoy's documented search order: an exact domain, then the
//! longest `*.suffix`, then the longest `prefix*`, then `*`. At each step the full authority
//! (with port) is tried before the authority without its port, so `reviews:9080` matches a
//! domain written either as `reviews:9080` or as `reviews` — Istio generates both forms, gRPC's
//! xDS client matches the target as given — and an exact domain without port still beats any
//! wildcard (Envoy, which compares the port-ful authority only, would pick `reviews.*` there).
//!
//! Route choice is first match wins, but not a scan of every route: each virtual host keeps a
//! path index of its routes by the first segment of the paths they can match (`/svc/` of
//! `/svc/Method`), built with the table. A lookup tries, in configuration order, only the routes
//! of the request path's segment and the routes no segment describes (regexes, ignored case,
//! prefixes shorter than a segment such as `/`), so a gRPC service with a route per method
//! (1,000 routes) costs a hash lookup and a match or two instead of 1,000 matches.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::{Workload, matcher::PathMatch};

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

/// Path index of one virtual host's routes, built once when the table is built.
#[derive(Clone, Debug, Default)]
pub(super) struct PathIndex {
    /// Routes that can only match paths of this first segment (`segment`), ascending.
    by_segment: HashMap<Box<str>, Vec<usize>, foldhash::fast::RandomState>,
    /// Routes that may match paths of any segment, ascending.
    everywhere: Vec<usize>,
}

// === impl PathIndex ===

impl PathIndex {
    pub(super) fn build(routes: &[Route]) -> Self {
        let mut index = Self::default();
        for (i, route) in routes.iter().enumerate() {
            let path = &route.matcher.path;
            let key = match path.kind() {
                _ if path.ignore_case() => None,
                PathMatch::Exact(exact) => Some(segment(exact)),
                // A path starting with the prefix has the prefix's first segment only when the
                // prefix holds the whole segment (its closing `/`).
                PathMatch::Prefix(prefix) => whole_segment(prefix),
                PathMatch::Any | PathMatch::Regex(_) => None,
            };
            match key {
                Some(key) => index.by_segment.entry(key.into()).or_default().push(i),
                None => index.everywhere.push(i),
            }
        }
        index
    }

    /// The routes that may match `path`, in configuration order.
    fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let segment = self
            .by_segment
            .get(segment(path))
            .map_or(&[][..], Vec::as_slice);
        Merge {
            a: segment.iter().copied().peekable(),
            b: self.everywhere.iter().copied().peekable(),
        }
    }
}

/// The first segment of `path` with its closing `/` (`/svc/` of `/svc/Method`), or the whole
/// path when it has none (`/healthz`).
fn segment(path: &str) -> &str {
    whole_segment(path).unwrap_or(path)
}

/// The first segment of `path` with its closing `/`, when the path has one.
fn whole_segment(path: &str) -> Option<&str> {
    let end = path.get(1..)?.find('/')? + 1;
    path.get(..=end)
}

/// Two ascending sequences of route indices merged into one.
struct Merge<A: Iterator<Item = usize>, B: Iterator<Item = usize>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = usize>, B: Iterator<Item = usize>> Iterator for Merge<A, B> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b < a => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
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
        let host = self.index.select(head.authority)?;
        let virtual_host = self.virtual_hosts.get(host)?;
        let paths = self.paths.get(host)?;
        let (path, query) = head
            .path_and_query
            .split_once('?')
            .unwrap_or((head.path_and_query, ""));
        let routes = virtual_host.routes();
        paths
            .candidates(path)
            .filter_map(|i| Some((i, routes.get(i)?)))
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
