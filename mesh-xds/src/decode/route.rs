//! `RouteConfiguration` → [`RouteTable`], with Envoy's field semantics as istiod generates them
//! for proxyless gRPC.
//!
//! Mapping decisions:
//! - Virtual hosts keep their order, routes theirs (first match wins); domains go through
//!   [`Domain::parse`].
//! - Settings that Envoy lets a virtual host (or the route configuration) give its routes are
//!   resolved here, so each [`Route`] carries its effective policy: `retry_policy`,
//!   `hedge_policy` and `request_mirror_policies` fall back route → virtual host (→ route
//!   configuration for mirrors); fault configs resolve as described in [`super::filter`].
//! - Header mutations of the three levels are applied in Envoy's order — route, then virtual
//!   host, then route configuration (reversed by `most_specific_header_mutations_wins`) — and
//!   folded into one [`HeaderMutations`] that has the same effect: a later level's removal or
//!   overwrite discards what an earlier level wrote for that header.
//! - A route whose match condition the mesh cannot evaluate (`cookies`, `tls_context`,
//!   `dynamic_metadata`, `filter_state`, `connect_matcher`, `path_match_policy`, custom string
//!   matchers) is *skipped* and reported, as gRPC's xDS client does: ignoring the condition
//!   would widen the route. `runtime_fraction` is reported and ignored.
//! - A route with a non-forwarding action (`filter_action`, `non_forwarding_action`) answers
//!   503, which a gRPC caller sees as `UNAVAILABLE` — what gRPC's xDS client does for them.

use std::sync::Arc;

use envoy_types::pb::envoy::config::{
    core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction},
    route::v3 as pb,
};
use http::{HeaderName, HeaderValue};
use mesh_core::{
    FaultPolicy, HedgePolicy, RetryPolicy, RouteTable,
    route::{
        Action, DirectResponse, Domain, HeaderMutations, Mirror, Route, SessionAffinity,
        VirtualHost,
    },
};

use super::{
    Ctx, DecodeError, Decoded, HttpFilters,
    fields::{at, idx, ignore_fields},
    filter::{FaultOverride, fault_override, session_override},
};

mod action;
pub(crate) mod matcher;
#[cfg(test)]
mod tests;

/// Decodes a `RouteConfiguration` (from RDS) for a listener whose HTTP filter chain is
/// `filters`.
pub fn decode_route_configuration(
    rc: &pb::RouteConfiguration,
    filters: &HttpFilters,
) -> Result<Decoded<RouteTable>, DecodeError> {
    let mut ctx = Ctx::new("RouteConfiguration", rc.name.clone());
    let table = route_configuration(&mut ctx, "", rc, filters)?;
    Ok(ctx.done(table))
}

/// What a virtual host's routes inherit from their enclosing levels.
#[derive(Debug)]
struct Scope<'a> {
    filters: &'a HttpFilters,
    /// The fault policy of a route without its own fault config.
    fault: Option<Arc<FaultPolicy>>,
    /// The session affinity of a route without its own session config.
    session: Option<Arc<SessionAffinity>>,
    retry: Option<RetryPolicy>,
    hedge: Option<HedgePolicy>,
    mirrors: Arc<[Mirror]>,
    /// Header changes of the enclosing levels, innermost first (virtual host, route config).
    request: Vec<Level>,
    response: Vec<Level>,
    most_specific_wins: bool,
}

/// The header changes of one level: removals, then sets and appends in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Level {
    remove: Vec<HeaderName>,
    ops: Vec<(bool, HeaderName, HeaderValue)>,
}

/// Decodes a `RouteConfiguration` at `base` (empty at the top; the inline route config of a
/// listener has its own path).
pub(crate) fn route_configuration(
    ctx: &mut Ctx,
    base: &str,
    rc: &pb::RouteConfiguration,
    filters: &HttpFilters,
) -> Result<RouteTable, DecodeError> {
    let pb::RouteConfiguration {
        name,
        virtual_hosts,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        validate_clusters: _, // Snapshots are only assembled complete: always validated.
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata,
        route_specifiers,
    } = rc;
    ignore_fields!(ctx, base;
        vhds, internal_only_headers, max_direct_response_body_size_bytes,
        cluster_specifier_plugins, ignore_port_in_host_matching, vhost_header,
        ignore_path_parameters_in_path_matching, metadata, route_specifiers,
    );
    let fault = match fault_override(ctx, base, typed_per_filter_config, filters)? {
        Some(o) => o,
        None => filters.fault.as_ref().and_then(|f| f.default.clone()),
    };
    let session = match session_override(ctx, base, typed_per_filter_config, filters)? {
        Some(o) => o,
        None => filters.session.as_ref().and_then(|s| s.default.clone()),
    };
    let request = level(
        ctx,
        base,
        request_headers_to_add,
        request_headers_to_remove,
        "request",
    )?;
    let response = level(
        ctx,
        base,
        response_headers_to_add,
        response_headers_to_remove,
        "response",
    )?;
    let mirrors = action::mirrors(ctx, base, request_mirror_policies)?;
    let mut hosts = Vec::with_capacity(virtual_hosts.len());
    for (i, vh) in virtual_hosts.iter().enumerate() {
        let scope = Scope {
            filters,
            fault: fault.clone(),
            session: session.clone(),
            retry: None,
            hedge: None,
            mirrors: mirrors.clone(),
            request: vec![request.clone()],
            response: vec![response.clone()],
            most_specific_wins: *most_specific_header_mutations_wins,
        };
        hosts.push(virtual_host(
            ctx,
            &idx(base, "virtual_hosts", i),
            vh,
            scope,
        )?);
    }
    RouteTable::new(name.as_str(), hosts)
        .map_err(|e| ctx.error(at(base, "virtual_hosts"), e.message()))
}

#[allow(deprecated)] // `per_request_buffer_limit_bytes`, reported when set.
fn virtual_host(
    ctx: &mut Ctx,
    base: &str,
    vh: &pb::VirtualHost,
    mut scope: Scope<'_>,
) -> Result<VirtualHost, DecodeError> {
    let pb::VirtualHost {
        name,
        domains,
        routes,
        matcher,
        require_tls,
        virtual_clusters,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata,
        route_specifiers,
    } = vh;
    ignore_fields!(ctx, base;
        matcher, require_tls, virtual_clusters, rate_limits, cors,
        include_request_attempt_count, include_attempt_count_in_response,
        retry_policy_typed_config, include_is_timeout_retry_header,
        per_request_buffer_limit_bytes, request_body_buffer_limit, metadata, route_specifiers,
    );
    let mut parsed = Vec::with_capacity(domains.len());
    for (i, d) in domains.iter().enumerate() {
        parsed.push(Domain::parse(d).map_err(|e| ctx.error(idx(base, "domains", i), e.message()))?);
    }
    if let Some(o) = fault_override(ctx, base, typed_per_filter_config, scope.filters)? {
        scope.fault = o;
    }
    if let Some(o) = session_override(ctx, base, typed_per_filter_config, scope.filters)? {
        scope.session = o;
    }
    scope.request.insert(
        0,
        level(
            ctx,
            base,
            request_headers_to_add,
            request_headers_to_remove,
            "request",
        )?,
    );
    scope.response.insert(
        0,
        level(
            ctx,
            base,
            response_headers_to_add,
            response_headers_to_remove,
            "response",
        )?,
    );
    if let Some(r) = retry_policy {
        scope.retry = Some(action::retry_of(ctx, &at(base, "retry_policy"), r)?);
    }
    if let Some(h) = hedge_policy {
        scope.hedge = Some(action::hedge_of(ctx, &at(base, "hedge_policy"), h)?);
    }
    let mirrors = action::mirrors(ctx, base, request_mirror_policies)?;
    if !mirrors.is_empty() {
        scope.mirrors = mirrors;
    }
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        if let Some(r) = route(ctx, &idx(base, "routes", i), r, &scope)? {
            out.push(r);
        }
    }
    VirtualHost::new(name.as_str(), parsed, out)
        .map_err(|e| ctx.error(at(base, "domains"), e.message()))
}

#[allow(deprecated)] // `per_request_buffer_limit_bytes`, reported when set.
fn route(
    ctx: &mut Ctx,
    base: &str,
    r: &pb::Route,
    scope: &Scope<'_>,
) -> Result<Option<Route>, DecodeError> {
    let pb::Route {
        name,
        r#match,
        metadata,
        decorator,
        typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        tracing,
        per_request_buffer_limit_bytes,
        stat_prefix,
        request_body_buffer_limit,
        route_specifiers,
        action,
    } = r;
    ignore_fields!(ctx, base;
        metadata, decorator, tracing, per_request_buffer_limit_bytes, stat_prefix,
        request_body_buffer_limit, route_specifiers,
    );
    let match_path = at(base, "match");
    let Some(m) = r#match else {
        return Err(ctx.error(match_path, "required field is missing"));
    };
    let Some(matcher) = matcher::route_match(ctx, &match_path, m)? else {
        return Ok(None);
    };
    let fault = match fault_override(ctx, base, typed_per_filter_config, scope.filters)? {
        Some(o) => o,
        None => scope.fault.clone(),
    };
    let session = match session_override(ctx, base, typed_per_filter_config, scope.filters)? {
        Some(o) => o,
        None => scope.session.clone(),
    };
    let request = level(
        ctx,
        base,
        request_headers_to_add,
        request_headers_to_remove,
        "request",
    )?;
    let response = level(
        ctx,
        base,
        response_headers_to_add,
        response_headers_to_remove,
        "response",
    )?;
    use pb::route::Action as A;
    let action = match action {
        Some(A::Route(ra)) => {
            let mut forward = action::forward(ctx, &at(base, "route"), ra, scope)?;
            forward.session = session;
            Action::Forward(Arc::new(forward))
        }
        Some(A::Redirect(rd)) => {
            Action::Redirect(Arc::new(action::redirect(ctx, &at(base, "redirect"), rd)?))
        }
        Some(A::DirectResponse(d)) => Action::DirectResponse(Arc::new(action::direct_response(
            ctx,
            &at(base, "direct_response"),
            d,
        )?)),
        Some(A::FilterAction(_)) => non_forwarding(ctx, &at(base, "filter_action"))?,
        Some(A::NonForwardingAction(_)) => non_forwarding(ctx, &at(base, "non_forwarding_action"))?,
        None => {
            return Err(ctx.error(
                base,
                "one of route, redirect or direct_response is required",
            ));
        }
    };
    let mut out = Route::new(matcher, action);
    out.name = (!name.is_empty()).then(|| Arc::from(name.as_str()));
    out.fault = fault;
    out.request_headers = merge(&scope.levels(request, &scope.request));
    out.response_headers = merge(&scope.levels(response, &scope.response));
    Ok(Some(out))
}

/// gRPC's xDS client fails RPCs on non-forwarding routes with `UNAVAILABLE`; a 503 answer
/// does the same for gRPC callers and keeps later routes from catching the traffic.
fn non_forwarding(ctx: &mut Ctx, path: &str) -> Result<Action, DecodeError> {
    ctx.unsupported(path, "answered with 503 (gRPC UNAVAILABLE)");
    DirectResponse::new(503, None)
        .map(|d| Action::DirectResponse(Arc::new(d)))
        .map_err(|e| ctx.error(path, e.message()))
}

/// The fault of a weighted cluster: its own override, where "disabled" must still override
/// the route's policy, so it becomes an empty policy.
pub(crate) fn cluster_fault(o: Option<FaultOverride>) -> Option<Arc<FaultPolicy>> {
    o.map(|o| o.unwrap_or_else(|| Arc::new(FaultPolicy::default())))
}

// === impl Scope ===

impl Scope<'_> {
    /// The levels of a route in application order.
    fn levels(&self, own: Level, outer: &[Level]) -> Vec<Level> {
        let mut all = Vec::with_capacity(outer.len() + 1);
        all.push(own);
        all.extend(outer.iter().cloned());
        if self.most_specific_wins {
            all.reverse();
        }
        all
    }
}

#[allow(deprecated)] // The legacy `append` flag is read.
/// Decodes `<side>_headers_to_add` / `<side>_headers_to_remove` of the level at `base`.
pub(crate) fn level(
    ctx: &mut Ctx,
    base: &str,
    to_add: &[HeaderValueOption],
    to_remove: &[String],
    side: &str,
) -> Result<Level, DecodeError> {
    let mut out = Level::default();
    let remove_field = format!("{side}_headers_to_remove");
    for (i, name) in to_remove.iter().enumerate() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ctx.error(
                idx(base, &remove_field, i),
                format!("`{name}` is not a valid header name"),
            )
        })?;
        out.remove.push(name);
    }
    let add_field = format!("{side}_headers_to_add");
    for (i, o) in to_add.iter().enumerate() {
        let path = idx(base, &add_field, i);
        let HeaderValueOption {
            header,
            append,
            append_action,
            keep_empty_value,
        } = o;
        let Some(h) = header else {
            return Err(ctx.error(at(&path, "header"), "required field is missing"));
        };
        let name = HeaderName::from_bytes(h.key.as_bytes()).map_err(|_| {
            ctx.error(
                at(&path, "header.key"),
                format!("`{}` is not a valid header name", h.key),
            )
        })?;
        let value = if h.raw_value.is_empty() {
            HeaderValue::from_str(&h.value)
        } else {
            HeaderValue::from_bytes(&h.raw_value)
        }
        .map_err(|_| ctx.error(at(&path, "header.value"), "not a valid header value"))?;
        // Envoy drops a header whose value is empty unless told to keep it.
        if value.is_empty() && !keep_empty_value {
            continue;
        }
        let append_new = match (append, HeaderAppendAction::try_from(*append_action)) {
            (Some(_), _) if *append_action != 0 => {
                return Err(ctx.error(&path, "append and append_action are mutually exclusive"));
            }
            (Some(a), _) => a.value,
            (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => true,
            (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => false,
            (None, Ok(other)) => {
                ctx.unsupported(
                    at(&path, "append_action"),
                    format!("{}: header not written", other.as_str_name()),
                );
                continue;
            }
            (None, Err(_)) => {
                return Err(ctx.error(
                    at(&path, "append_action"),
                    format!("unknown value {append_action}"),
                ));
            }
        };
        out.ops.push((append_new, name, value));
    }
    Ok(out)
}

/// Folds levels, in application order, into one set of changes with the same effect.
pub(crate) fn merge(levels: &[Level]) -> HeaderMutations {
    let mut remove: Vec<HeaderName> = Vec::new();
    let mut set: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut add: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for l in levels {
        for name in &l.remove {
            set.retain(|(n, _)| n != name);
            add.retain(|(n, _)| n != name);
            if !remove.contains(name) {
                remove.push(name.clone());
            }
        }
        for (append, name, value) in &l.ops {
            if *append {
                add.push((name.clone(), value.clone()));
            } else {
                set.retain(|(n, _)| n != name);
                add.retain(|(n, _)| n != name);
                set.push((name.clone(), value.clone()));
            }
        }
    }
    HeaderMutations {
        set: set.into(),
        add: add.into(),
        remove: remove.into(),
    }
}
