//! A route's `match[]` entries: URI, headers, query parameters, port, source workload.

use std::sync::Arc;

use http::HeaderName;

use crate::istio::cursor::{Node, Obj};
use crate::{
    Labels, SourceMatcher,
    matcher::{
        HeaderMatch, HeaderMatcher, PathMatch, PathMatcher, QueryParamMatcher, Regex, StringMatch,
        StringMatcher,
    },
    route::RouteMatcher,
};

/// A string match before it is turned into a matcher.
enum Sm<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

/// One `match[]` entry.
pub(super) struct MatchEntry {
    pub(super) name: Option<String>,
    pub(super) matcher: RouteMatcher,
    pub(super) port: Option<u16>,
    pub(super) exact_uri: bool,
}

/// One `match[]` entry, or `None` when it is invalid or does not apply to mesh traffic.
/// `vs_for_mesh` is whether the VirtualService's own `gateways` include `mesh`; a match's own
/// `gateways` override them, as in Istio.
pub(super) fn read_match(mut m: Obj<'_>, vs_for_mesh: bool) -> Option<MatchEntry> {
    let cx = m.cx();
    let errors = cx.error_count();
    let gateways = m.str_list("gateways");
    let for_mesh = if gateways.is_empty() {
        vs_for_mesh
    } else {
        let mesh = gateways.iter().any(|(_, g)| *g == "mesh");
        // In a gateway-only VirtualService the warning on `gateways` already says it.
        if !mesh && vs_for_mesh {
            m.warn(
                "gateways",
                "names only gateways, not `mesh`: this match never applies to mesh traffic",
            );
        }
        mesh
    };
    let source = read_source(&mut m);
    let name = m.str("name").map(str::to_string);
    let ignore_case = m.bool("ignoreUriCase").unwrap_or(false);
    let uri = m.node("uri").and_then(|n| string_match(&n));
    let exact_uri = matches!(uri, Some(Sm::Exact(_)));
    let path = match uri {
        None | Some(Sm::Any) => PathMatcher::any(),
        Some(Sm::Exact(s)) => PathMatcher::new(PathMatch::Exact(s.to_string()), ignore_case),
        Some(Sm::Prefix(s)) => PathMatcher::new(PathMatch::Prefix(s.to_string()), ignore_case),
        Some(Sm::Regex(s)) => match Regex::new(s) {
            Ok(re) => PathMatcher::new(PathMatch::Regex(re), ignore_case),
            Err(e) => {
                m.error("uri.regex", e.message());
                PathMatcher::any()
            }
        },
    };
    let method = m.node("method").and_then(|n| string_matcher(&n));
    let authority = m.node("authority").and_then(|n| string_matcher(&n));
    let mut headers = Vec::new();
    for (key, invert) in [("headers", false), ("withoutHeaders", true)] {
        let Some(mut hs) = m.obj(key) else { continue };
        for (name, n) in hs.entries() {
            let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                n.error(format!("`{name}` is not a valid header name"));
                continue;
            };
            let kind = match string_match(&n) {
                None => continue,
                Some(Sm::Any) => HeaderMatch::Present(true),
                Some(sm) => match to_string_matcher(&n, sm) {
                    Some(s) => HeaderMatch::String(s),
                    None => continue,
                },
            };
            // `withoutHeaders` with a value means "no header with that value": a request
            // without the header qualifies, so a missing header is compared as empty. With
            // `{}` it means "the header is absent": Envoy's inverted presence match, which a
            // missing header satisfies on its own (compared as empty, it would be present).
            let missing_as_empty = invert && !matches!(kind, HeaderMatch::Present(_));
            match HeaderMatcher::new(hn, kind, invert) {
                Ok(hm) => headers.push(hm.with_treat_missing_as_empty(missing_as_empty)),
                Err(e) => n.error(e.message()),
            }
        }
    }
    let mut query = Vec::new();
    if let Some(mut qs) = m.obj("queryParams") {
        for (name, n) in qs.entries() {
            match string_match(&n) {
                None => {}
                Some(Sm::Any) => query.push(QueryParamMatcher::new(name, None)),
                Some(sm) => {
                    if let Some(s) = to_string_matcher(&n, sm) {
                        query.push(QueryParamMatcher::new(name, Some(s)));
                    }
                }
            }
        }
    }
    let port = m.port("port");
    m.unsupported("scheme");
    m.unsupported("statPrefix");
    drop(m);
    if cx.error_count() != errors || !for_mesh {
        return None;
    }
    Some(MatchEntry {
        name,
        matcher: RouteMatcher {
            path,
            headers: headers.into(),
            query: query.into(),
            method,
            authority,
            grpc_only: false,
            source,
        },
        port,
        exact_uri,
    })
}

/// `sourceNamespace` and `sourceLabels`: conditions on the calling workload, evaluated
/// against the local workload at request time; `None` when neither is set.
fn read_source(m: &mut Obj<'_>) -> Option<Arc<SourceMatcher>> {
    let namespace = m.str("sourceNamespace").map(Arc::from);
    let at = m.at("sourceLabels");
    let pairs = m.str_map("sourceLabels");
    let labels = match Labels::new(pairs) {
        Ok(labels) => labels,
        Err(e) => {
            m.cx().error(&at, e.message());
            Labels::default()
        }
    };
    if namespace.is_none() && labels.is_empty() {
        return None;
    }
    Some(Arc::new(SourceMatcher { namespace, labels }))
}

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex`; `{}` is "any".
fn string_match<'a>(n: &Node<'a>) -> Option<Sm<'a>> {
    let mut o = n.obj()?;
    let exact = o.str("exact");
    let prefix = o.str("prefix");
    let regex = o.str("regex");
    let set = [exact.is_some(), prefix.is_some(), regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        o.error_here("only one of exact, prefix or regex may be set");
        return None;
    }
    Some(match (exact, prefix, regex) {
        (Some(s), _, _) => Sm::Exact(s),
        (_, Some(s), _) => Sm::Prefix(s),
        (_, _, Some(s)) => Sm::Regex(s),
        _ => Sm::Any,
    })
}

fn to_string_matcher(n: &Node<'_>, sm: Sm<'_>) -> Option<StringMatcher> {
    Some(match sm {
        Sm::Any => return None,
        Sm::Exact(s) => StringMatcher::exact(s),
        Sm::Prefix(s) => StringMatcher::prefix(s),
        Sm::Regex(s) => match Regex::new(s) {
            Ok(re) => StringMatcher::new(StringMatch::Regex(re), false),
            Err(e) => {
                n.error(e.message());
                return None;
            }
        },
    })
}

fn string_matcher(n: &Node<'_>) -> Option<StringMatcher> {
    let sm = string_match(n)?;
    to_string_matcher(n, sm)
}
