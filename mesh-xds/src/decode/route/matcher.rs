//! `RouteMatch` → [`RouteMatcher`]: path, headers, query parameters, `grpc: {}`.
//!
//! `case_sensitive` (default true) applies to `prefix`, `path` and `path_separated_prefix`,
//! never to regexes, as in Envoy. `path_separated_prefix` is expressed exactly, as the regex
//! `<prefix>(/.*)?`. Header matchers on the pseudo-headers `:authority` and `:method` become
//! the matcher's authority and method conditions; any other pseudo-header is an error.
//! `None` means the route must be skipped because a condition cannot be evaluated.

use envoy_types::pb::envoy::{
    config::route::v3::{
        self as pb, header_matcher::HeaderMatchSpecifier,
        query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
    },
    r#type::matcher::v3::{self as pbm, string_matcher::MatchPattern},
};
use http::HeaderName;
use mesh_core::{
    matcher::{
        HeaderMatch, HeaderMatcher, PathMatch, PathMatcher, QueryParamMatcher, Regex, StringMatch,
        StringMatcher,
    },
    route::RouteMatcher,
};

use crate::decode::{
    Ctx, DecodeError,
    fields::{at, idx, ignore_fields},
};

/// The note of a skipped route.
const SKIPPED: &str = "route skipped: the condition cannot be evaluated";

/// What one `HeaderMatcher` becomes.
enum HeaderCond {
    Header(HeaderMatcher),
    Authority(StringMatcher),
    Method(StringMatcher),
    Skip,
}

pub(super) fn route_match(
    ctx: &mut Ctx,
    base: &str,
    m: &pb::RouteMatch,
) -> Result<Option<RouteMatcher>, DecodeError> {
    let pb::RouteMatch {
        case_sensitive,
        runtime_fraction,
        headers,
        query_parameters,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
        path_specifier,
    } = m;
    ignore_fields!(ctx, base; runtime_fraction);
    let mut skip = false;
    for (field, set) in [
        ("cookies", !cookies.is_empty()),
        ("tls_context", tls_context.is_some()),
        ("dynamic_metadata", !dynamic_metadata.is_empty()),
        ("filter_state", !filter_state.is_empty()),
    ] {
        if set {
            ctx.unsupported(at(base, field), SKIPPED);
            skip = true;
        }
    }
    let ignore_case = case_sensitive.is_some_and(|c| !c.value);
    let path = match path_specifier {
        // `prefix: /` is every path: the model's `Any` (case cannot matter for `/`).
        Some(PathSpecifier::Prefix(p)) if p == "/" => PathMatcher::any(),
        Some(PathSpecifier::Prefix(p)) => {
            PathMatcher::new(PathMatch::Prefix(p.clone()), ignore_case)
        }
        Some(PathSpecifier::Path(p)) => PathMatcher::new(PathMatch::Exact(p.clone()), ignore_case),
        Some(PathSpecifier::SafeRegex(r)) => PathMatcher::new(
            PathMatch::Regex(regex(ctx, &at(base, "safe_regex"), r)?),
            false,
        ),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            let flags = if ignore_case { "(?i)" } else { "" };
            let pattern = format!("{flags}{}(?:/.*)?", regex::escape(p));
            let re = Regex::new(&pattern)
                .map_err(|e| ctx.error(at(base, "path_separated_prefix"), e.message()))?;
            PathMatcher::new(PathMatch::Regex(re), false)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            ctx.unsupported(at(base, "connect_matcher"), SKIPPED);
            return Ok(None);
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            ctx.unsupported(at(base, "path_match_policy"), SKIPPED);
            return Ok(None);
        }
        None => return Err(ctx.error(base, "one of prefix, path or safe_regex is required")),
    };
    let mut out = RouteMatcher {
        path,
        grpc_only: grpc.is_some(),
        ..RouteMatcher::default()
    };
    let mut header_list = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let path = idx(base, "headers", i);
        match header(ctx, &path, h)? {
            HeaderCond::Header(m) => header_list.push(m),
            HeaderCond::Authority(m) if out.authority.is_none() => out.authority = Some(m),
            HeaderCond::Method(m) if out.method.is_none() => out.method = Some(m),
            HeaderCond::Authority(_) | HeaderCond::Method(_) => {
                return Err(ctx.error(at(&path, "name"), "a second matcher of this pseudo-header"));
            }
            HeaderCond::Skip => skip = true,
        }
    }
    out.headers = header_list.into();
    let mut query = Vec::with_capacity(query_parameters.len());
    for (i, q) in query_parameters.iter().enumerate() {
        let path = idx(base, "query_parameters", i);
        if q.name.is_empty() {
            return Err(ctx.error(at(&path, "name"), "required field is missing"));
        }
        let value = match &q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(sm)) => {
                match string_matcher(ctx, &at(&path, "string_match"), sm)? {
                    Some(m) => Some(m),
                    None => {
                        skip = true;
                        continue;
                    }
                }
            }
            Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
            Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
                ctx.unsupported(at(&path, "present_match"), SKIPPED);
                skip = true;
                continue;
            }
        };
        query.push(QueryParamMatcher::new(q.name.as_str(), value));
    }
    out.query = query.into();
    Ok((!skip).then_some(out))
}

fn header(ctx: &mut Ctx, path: &str, h: &pb::HeaderMatcher) -> Result<HeaderCond, DecodeError> {
    let pb::HeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier: _,
    } = h;
    let Some(kind) = header_kind(ctx, path, h)? else {
        return Ok(HeaderCond::Skip);
    };
    if let Some(pseudo) = name.strip_prefix(':') {
        return match (pseudo, kind) {
            ("authority", HeaderMatch::String(m)) if !invert_match => Ok(HeaderCond::Authority(m)),
            ("method", HeaderMatch::String(m)) if !invert_match => Ok(HeaderCond::Method(m)),
            _ => Err(ctx.error(
                at(path, "name"),
                format!("`{name}`: only string matches of :authority and :method are supported"),
            )),
        };
    }
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ctx.error(
            at(path, "name"),
            format!("`{name}` is not a valid header name"),
        )
    })?;
    let range = matches!(kind, HeaderMatch::Range { .. });
    let m = HeaderMatcher::new(header_name, kind, *invert_match).map_err(|e| {
        ctx.error(
            if range {
                at(path, "range_match")
            } else {
                path.to_string()
            },
            e.message(),
        )
    })?;
    Ok(HeaderCond::Header(m.with_treat_missing_as_empty(
        *treat_missing_header_as_empty,
    )))
}

/// What a `HeaderMatcher` checks; `None` for a custom string matcher (reported).
#[allow(deprecated)] // The direct `*_match` fields predate `string_match`; both are read.
pub(crate) fn header_kind(
    ctx: &mut Ctx,
    path: &str,
    h: &pb::HeaderMatcher,
) -> Result<Option<HeaderMatch>, DecodeError> {
    use HeaderMatchSpecifier as S;
    let kind = match &h.header_match_specifier {
        // Envoy: no specifier means "the header is present".
        None => HeaderMatch::Present(true),
        Some(S::ExactMatch(s)) => HeaderMatch::String(StringMatcher::exact(s.as_str())),
        Some(S::PrefixMatch(s)) => HeaderMatch::String(StringMatcher::prefix(s.as_str())),
        Some(S::SuffixMatch(s)) => {
            HeaderMatch::String(StringMatcher::new(StringMatch::Suffix(s.clone()), false))
        }
        Some(S::ContainsMatch(s)) => {
            HeaderMatch::String(StringMatcher::new(StringMatch::Contains(s.clone()), false))
        }
        Some(S::SafeRegexMatch(r)) => HeaderMatch::String(StringMatcher::new(
            StringMatch::Regex(regex(ctx, &at(path, "safe_regex_match"), r)?),
            false,
        )),
        Some(S::RangeMatch(r)) => HeaderMatch::Range {
            start: r.start,
            end: r.end,
        },
        Some(S::PresentMatch(p)) => HeaderMatch::Present(*p),
        Some(S::StringMatch(sm)) => match string_matcher(ctx, &at(path, "string_match"), sm)? {
            Some(m) => HeaderMatch::String(m),
            None => return Ok(None),
        },
    };
    Ok(Some(kind))
}

/// An Envoy `StringMatcher`; `None` for a custom matcher (reported, the route is skipped).
pub(crate) fn string_matcher(
    ctx: &mut Ctx,
    path: &str,
    sm: &pbm::StringMatcher,
) -> Result<Option<StringMatcher>, DecodeError> {
    let pbm::StringMatcher {
        ignore_case,
        match_pattern,
    } = sm;
    let kind = match match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(s.clone()),
        // Envoy: `ignore_case` has no effect on regexes.
        Some(MatchPattern::SafeRegex(r)) => {
            return Ok(Some(StringMatcher::new(
                StringMatch::Regex(regex(ctx, &at(path, "safe_regex"), r)?),
                false,
            )));
        }
        Some(MatchPattern::Custom(_)) => {
            ctx.unsupported(at(path, "custom"), SKIPPED);
            return Ok(None);
        }
        None => return Err(ctx.error(path, "match_pattern is required")),
    };
    Ok(Some(StringMatcher::new(kind, *ignore_case)))
}

/// A `RegexMatcher`; the engine is always RE2-compatible, so `engine_type` is not read.
pub(crate) fn regex(
    ctx: &mut Ctx,
    path: &str,
    r: &pbm::RegexMatcher,
) -> Result<Regex, DecodeError> {
    Regex::new(&r.regex).map_err(|e| ctx.error(at(path, "regex"), e.message()))
}
