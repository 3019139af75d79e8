//! Route actions: `RouteAction` → [`Forward`], `RedirectAction`, `DirectResponseAction`, and the
//! policies a forward carries (retries, hedging, mirrors, hash policies).
//!
//! Defaults are Envoy's: a route `timeout` left unset is 15 s and 0 disables it;
//! `max_stream_duration.max_stream_duration`, when set, replaces `timeout` (0 = none), as
//! gRPC's xDS client does, and so does the connection manager's
//! `common_http_protocol_options.max_stream_duration` for routes without their own;
//! `num_retries` left unset is 1; retry backoff is 25 ms base and
//! 10 × base max. A single `cluster` gets weight 100, as the Istio loader writes it.

use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        core::v3::{DataSource, RuntimeFractionalPercent, data_source::Specifier},
        route::v3::{
            self as pb,
            redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
            route_action::{
                ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration, RequestMirrorPolicy,
                hash_policy::{self, PolicySpecifier},
            },
            weighted_cluster::ClusterWeight,
        },
    },
    r#type::matcher::v3::RegexMatchAndSubstitute,
};
use http::{HeaderName, HeaderValue};
use mesh_core::{
    Backoff, HedgePolicy, Percentage, RetryOn, RetryPolicy,
    matcher::RegexRewrite,
    route::{
        DirectResponse, Forward, HashPolicy, HashSource, Mirror, PathRewrite, Redirect,
        RedirectStatus, WeightedCluster, WeightedClusters,
    },
};

use super::{Scope, cluster_fault, level, merge};
use crate::decode::{
    Ctx, DecodeError,
    fields::{at, duration, fraction, idx, ignore_fields, nonzero},
    filter::fault_override,
};

/// Envoy's route timeout when `timeout` is unset.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Envoy retry-on names the mesh does not implement; reported rather than rejected.
const UNSUPPORTED_RETRY_ON: [&str; 3] = [
    "retriable-headers",
    "reset-before-request",
    "http3-post-connect-failure",
];

#[allow(deprecated)] // `include_vh_rate_limits`, `cors`, `max_grpc_timeout`, ... are read.
pub(super) fn forward(
    ctx: &mut Ctx,
    base: &str,
    ra: &pb::RouteAction,
    scope: &Scope<'_>,
) -> Result<Forward, DecodeError> {
    let pb::RouteAction {
        cluster_not_found_response_code,
        metadata_match,
        prefix_rewrite,
        regex_rewrite,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        timeout,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy,
        retry_policy_typed_config,
        request_mirror_policies,
        priority,
        rate_limits,
        include_vh_rate_limits,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        upgrade_configs,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
        max_stream_duration,
        cluster_specifier,
        host_rewrite_specifier,
    } = ra;
    ignore_fields!(ctx, base;
        cluster_not_found_response_code, metadata_match, path_rewrite_policy, path_rewrite,
        append_x_forwarded_host, idle_timeout, flush_timeout, early_data_policy,
        retry_policy_typed_config, priority, rate_limits, include_vh_rate_limits, cors,
        grpc_timeout_offset, upgrade_configs, internal_redirect_policy,
        internal_redirect_action, max_internal_redirects,
    );
    let clusters = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            WeightedClusters::new(vec![WeightedCluster::new(name.as_str(), 100)])
                .map_err(|e| ctx.error(at(base, "cluster"), e.message()))?
        }
        Some(ClusterSpecifier::Cluster(_)) => {
            return Err(ctx.error(at(base, "cluster"), "must not be empty"));
        }
        Some(ClusterSpecifier::WeightedClusters(wc)) => {
            weighted(ctx, &at(base, "weighted_clusters"), wc, scope)?
        }
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            return Err(ctx.error(
                at(base, "cluster_header"),
                "not supported: the route must name its clusters",
            ));
        }
        Some(ClusterSpecifier::ClusterSpecifierPlugin(_)) => {
            return Err(ctx.error(at(base, "cluster_specifier_plugin"), "not supported"));
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err(ctx.error(at(base, "inline_cluster_specifier_plugin"), "not supported"));
        }
        None => {
            return Err(ctx.error(base, "one of cluster or weighted_clusters is required"));
        }
    };
    let mut fwd = Forward::to(clusters);
    fwd.path_rewrite = match (prefix_rewrite.is_empty(), regex_rewrite) {
        (false, Some(_)) => {
            return Err(ctx.error(
                at(base, "regex_rewrite"),
                "prefix_rewrite and regex_rewrite are mutually exclusive",
            ));
        }
        (false, None) => Some(PathRewrite::Prefix(prefix_rewrite.clone())),
        (true, Some(rr)) => Some(PathRewrite::Regex(regex_rewrite_of(
            ctx,
            &at(base, "regex_rewrite"),
            rr,
        )?)),
        (true, None) => None,
    };
    match host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) if !h.is_empty() => {
            fwd.authority_rewrite = Some(HeaderValue::from_str(h).map_err(|_| {
                ctx.error(at(base, "host_rewrite_literal"), "not a valid authority")
            })?);
        }
        Some(HostRewriteSpecifier::HostRewriteLiteral(_)) | None => {}
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) if !b.value => {}
        Some(_) => ctx.unsupported(at(base, "host_rewrite_specifier"), "ignored"),
    }
    fwd.timeout = match timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(d) => nonzero(duration(ctx, &at(base, "timeout"), d)?),
    };
    if let Some(d) = scope.filters.max_stream_duration {
        fwd.timeout = Some(d);
    }
    if let Some(msd) = max_stream_duration {
        let path = at(base, "max_stream_duration");
        let MaxStreamDuration {
            max_stream_duration,
            grpc_timeout_header_max,
            grpc_timeout_header_offset,
        } = msd;
        ignore_fields!(ctx, &path; grpc_timeout_header_offset);
        if let Some(d) = max_stream_duration {
            fwd.timeout = nonzero(duration(ctx, &at(&path, "max_stream_duration"), d)?);
        }
        if let Some(d) = grpc_timeout_header_max {
            fwd.grpc_timeout_max =
                nonzero(duration(ctx, &at(&path, "grpc_timeout_header_max"), d)?);
        }
    }
    if let (None, Some(d)) = (fwd.grpc_timeout_max, max_grpc_timeout) {
        fwd.grpc_timeout_max = nonzero(duration(ctx, &at(base, "max_grpc_timeout"), d)?);
    }
    let mut retry = match retry_policy {
        Some(r) => Some(retry_of(ctx, &at(base, "retry_policy"), r)?),
        None => scope.retry.clone(),
    };
    let hedge = match hedge_policy {
        Some(h) => Some(hedge_of(ctx, &at(base, "hedge_policy"), h)?),
        None => scope.hedge,
    };
    if let Some(h) = hedge {
        // Hedging without retries is still hedging: zero retries, no conditions.
        retry
            .get_or_insert_with(|| {
                let mut r = RetryPolicy::new(0, RetryOn::NONE);
                r.prefer_other_endpoint = false;
                r
            })
            .hedge = Some(h);
    }
    fwd.retry = retry.map(Arc::new);
    let mirrors = mirrors(ctx, base, request_mirror_policies)?;
    fwd.mirrors = if mirrors.is_empty() {
        scope.mirrors.clone()
    } else {
        mirrors
    };
    let mut hashes = Vec::with_capacity(hash_policy.len());
    for (i, h) in hash_policy.iter().enumerate() {
        if let Some(h) = hash_of(ctx, &idx(base, "hash_policy", i), h)? {
            hashes.push(h);
        }
    }
    fwd.hash_policy = hashes.into();
    Ok(fwd)
}

#[allow(deprecated)] // `total_weight`, reported when set.
fn weighted(
    ctx: &mut Ctx,
    base: &str,
    wc: &pb::WeightedCluster,
    scope: &Scope<'_>,
) -> Result<WeightedClusters, DecodeError> {
    let pb::WeightedCluster {
        clusters,
        total_weight,
        runtime_key_prefix,
        random_value_specifier,
    } = wc;
    ignore_fields!(ctx, base; total_weight, runtime_key_prefix, random_value_specifier);
    let mut out = Vec::with_capacity(clusters.len());
    for (i, cw) in clusters.iter().enumerate() {
        let path = idx(base, "clusters", i);
        let ClusterWeight {
            name,
            cluster_header,
            weight,
            metadata_match,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            typed_per_filter_config,
            host_rewrite_specifier,
        } = cw;
        ignore_fields!(ctx, &path; metadata_match, host_rewrite_specifier);
        if !cluster_header.is_empty() {
            return Err(ctx.error(
                at(&path, "cluster_header"),
                "not supported: the route must name its clusters",
            ));
        }
        if name.is_empty() {
            return Err(ctx.error(at(&path, "name"), "required field is missing"));
        }
        let mut c = WeightedCluster::new(name.as_str(), weight.map_or(0, |w| w.value));
        let req = level(
            ctx,
            &path,
            request_headers_to_add,
            request_headers_to_remove,
            "request",
        )?;
        let resp = level(
            ctx,
            &path,
            response_headers_to_add,
            response_headers_to_remove,
            "response",
        )?;
        c.request_headers = merge(&[req]);
        c.response_headers = merge(&[resp]);
        c.fault = cluster_fault(fault_override(
            ctx,
            &path,
            typed_per_filter_config,
            scope.filters,
        )?);
        out.push(c);
    }
    WeightedClusters::new(out).map_err(|e| ctx.error(at(base, "clusters"), e.message()))
}

fn regex_rewrite_of(
    ctx: &mut Ctx,
    path: &str,
    rr: &RegexMatchAndSubstitute,
) -> Result<RegexRewrite, DecodeError> {
    let Some(pattern) = &rr.pattern else {
        return Err(ctx.error(at(path, "pattern"), "required field is missing"));
    };
    RegexRewrite::new(&pattern.regex, &rr.substitution)
        .map_err(|e| ctx.error(at(path, "pattern.regex"), e.message()))
}

/// A `RetryPolicy`; the hedge policy is attached by the caller.
pub(super) fn retry_of(
    ctx: &mut Ctx,
    path: &str,
    rp: &pb::RetryPolicy,
) -> Result<RetryPolicy, DecodeError> {
    let pb::RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retry_back_off,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    } = rp;
    ignore_fields!(ctx, path;
        per_try_idle_timeout, retry_priority, retry_options_predicates,
        rate_limited_retry_back_off, retriable_headers, retriable_request_headers,
        refresh_cluster_on_retry,
    );
    let mut names = Vec::new();
    for name in retry_on.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if UNSUPPORTED_RETRY_ON.contains(&name) {
            ctx.unsupported(at(path, "retry_on"), format!("`{name}` ignored"));
        } else {
            names.push(name);
        }
    }
    let (on, mut codes) = RetryOn::parse(&names.join(","))
        .map_err(|e| ctx.error(at(path, "retry_on"), e.message()))?;
    for (i, c) in retriable_status_codes.iter().enumerate() {
        let code = u16::try_from(*c)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                ctx.error(
                    idx(path, "retriable_status_codes", i),
                    format!("{c} is not an HTTP status"),
                )
            })?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    let mut policy = RetryPolicy::new(num_retries.map_or(1, |n| n.value), on);
    policy.retriable_status_codes = codes.into();
    policy.per_try_timeout = match per_try_timeout {
        Some(d) => nonzero(duration(ctx, &at(path, "per_try_timeout"), d)?),
        None => None,
    };
    if let Some(b) = retry_back_off {
        let bpath = at(path, "retry_back_off");
        let Some(base) = &b.base_interval else {
            return Err(ctx.error(at(&bpath, "base_interval"), "required field is missing"));
        };
        let base = duration(ctx, &at(&bpath, "base_interval"), base)?;
        policy.backoff = match &b.max_interval {
            Some(max) => Backoff::new(base, duration(ctx, &at(&bpath, "max_interval"), max)?),
            None => Backoff::with_base(base),
        }
        .map_err(|e| ctx.error(&bpath, e.message()))?;
    }
    policy.prefer_other_endpoint = false;
    for (i, p) in retry_host_predicate.iter().enumerate() {
        let previous_hosts = p.name == "envoy.retry_host_predicates.previous_hosts"
            || matches!(
                &p.config_type,
                Some(pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(a))
                    if a.type_url.ends_with(".PreviousHostsPredicate")
            );
        if previous_hosts {
            policy.prefer_other_endpoint = true;
        } else {
            ctx.unsupported(idx(path, "retry_host_predicate", i), "ignored");
        }
    }
    // Envoy's retries of host selection serve `previous_hosts`, which the mesh implements by
    // preferring untried endpoints; on their own they mean nothing.
    if *host_selection_retry_max_attempts != 0 && !policy.prefer_other_endpoint {
        ctx.unsupported(at(path, "host_selection_retry_max_attempts"), "ignored");
    }
    Ok(policy)
}

/// A `HedgePolicy`.
pub(super) fn hedge_of(
    ctx: &mut Ctx,
    path: &str,
    h: &pb::HedgePolicy,
) -> Result<HedgePolicy, DecodeError> {
    let pb::HedgePolicy {
        initial_requests,
        additional_request_chance,
        hedge_on_per_try_timeout,
    } = h;
    let initial_requests = initial_requests.map_or(1, |n| n.value);
    if initial_requests == 0 {
        return Err(ctx.error(at(path, "initial_requests"), "must be at least 1"));
    }
    Ok(HedgePolicy {
        initial_requests,
        additional_request_chance: match additional_request_chance {
            Some(f) => fraction(ctx, &at(path, "additional_request_chance"), f)?,
            None => Percentage::ZERO,
        },
        hedge_on_per_try_timeout: *hedge_on_per_try_timeout,
    })
}

/// `request_mirror_policies` of the level at `base`.
pub(super) fn mirrors(
    ctx: &mut Ctx,
    base: &str,
    list: &[RequestMirrorPolicy],
) -> Result<Arc<[Mirror]>, DecodeError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let path = idx(base, "request_mirror_policies", i);
        let RequestMirrorPolicy {
            cluster,
            cluster_header,
            runtime_fraction,
            trace_sampled,
            disable_shadow_host_suffix_append,
            request_headers_mutations,
            host_rewrite_literal,
        } = m;
        ignore_fields!(ctx, &path;
            trace_sampled, disable_shadow_host_suffix_append, request_headers_mutations,
            host_rewrite_literal,
        );
        if !cluster_header.is_empty() {
            return Err(ctx.error(at(&path, "cluster_header"), "not supported"));
        }
        if cluster.is_empty() {
            return Err(ctx.error(at(&path, "cluster"), "required field is missing"));
        }
        let percentage = match runtime_fraction {
            Some(rf) => runtime_percent(ctx, &at(&path, "runtime_fraction"), rf)?,
            None => Percentage::HUNDRED,
        };
        out.push(Mirror {
            cluster: cluster.as_str().into(),
            percentage,
        });
    }
    Ok(out.into())
}

/// A runtime fraction's default value; the runtime key is reported (there is no runtime).
fn runtime_percent(
    ctx: &mut Ctx,
    path: &str,
    rf: &RuntimeFractionalPercent,
) -> Result<Percentage, DecodeError> {
    let RuntimeFractionalPercent {
        default_value,
        runtime_key,
    } = rf;
    if !runtime_key.is_empty() {
        ctx.unsupported(at(path, "runtime_key"), "ignored: default_value is used");
    }
    match default_value {
        Some(f) => fraction(ctx, &at(path, "default_value"), f),
        None => Err(ctx.error(at(path, "default_value"), "required field is missing")),
    }
}

/// A hash policy; `None` when it hashes nothing the mesh can read (reported).
fn hash_of(
    ctx: &mut Ctx,
    path: &str,
    h: &pb::route_action::HashPolicy,
) -> Result<Option<HashPolicy>, DecodeError> {
    let source = match &h.policy_specifier {
        Some(PolicySpecifier::Header(hash_policy::Header {
            header_name,
            regex_rewrite,
        })) => {
            let p = at(path, "header");
            ignore_fields!(ctx, &p; regex_rewrite);
            HashSource::Header(HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
                ctx.error(
                    at(&p, "header_name"),
                    format!("`{header_name}` is not a valid header name"),
                )
            })?)
        }
        Some(PolicySpecifier::Cookie(hash_policy::Cookie {
            name,
            ttl,
            path: cookie_path,
            attributes,
        })) => {
            let p = at(path, "cookie");
            ignore_fields!(ctx, &p; attributes);
            if name.is_empty() {
                return Err(ctx.error(at(&p, "name"), "required field is missing"));
            }
            HashSource::Cookie {
                name: name.clone(),
                ttl: match ttl {
                    Some(d) => Some(duration(ctx, &at(&p, "ttl"), d)?),
                    None => None,
                },
                path: (!cookie_path.is_empty()).then(|| cookie_path.clone()),
            }
        }
        Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => HashSource::SourceIp,
        Some(PolicySpecifier::ConnectionProperties(_)) => {
            ctx.unsupported(at(path, "connection_properties"), "ignored: hashes nothing");
            return Ok(None);
        }
        Some(PolicySpecifier::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err(ctx.error(
                    at(path, "query_parameter.name"),
                    "required field is missing",
                ));
            }
            HashSource::QueryParameter(q.name.clone())
        }
        Some(PolicySpecifier::FilterState(_)) => {
            ctx.unsupported(at(path, "filter_state"), "ignored");
            return Ok(None);
        }
        None => return Err(ctx.error(path, "policy_specifier is required")),
    };
    Ok(Some(HashPolicy {
        source,
        terminal: h.terminal,
    }))
}

pub(super) fn redirect(
    ctx: &mut Ctx,
    path: &str,
    r: &pb::RedirectAction,
) -> Result<Redirect, DecodeError> {
    let pb::RedirectAction {
        host_redirect,
        port_redirect,
        response_code,
        strip_query,
        scheme_rewrite_specifier,
        path_rewrite_specifier,
    } = r;
    let scheme = match scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let port = match *port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ctx.error(at(path, "port_redirect"), format!("{p} is not a port")))?,
        ),
    };
    let new_path =
        match path_rewrite_specifier {
            Some(PathRewriteSpecifier::PathRedirect(p)) => Some(PathRewrite::FullPath(p.clone())),
            Some(PathRewriteSpecifier::PrefixRewrite(p)) => Some(PathRewrite::Prefix(p.clone())),
            Some(PathRewriteSpecifier::RegexRewrite(rr)) => Some(PathRewrite::Regex(
                regex_rewrite_of(ctx, &at(path, "regex_rewrite"), rr)?,
            )),
            Some(PathRewriteSpecifier::PathRewrite(_)) => {
                ctx.unsupported(at(path, "path_rewrite"), "ignored: the path is kept");
                None
            }
            None => None,
        };
    let code = match RedirectResponseCode::try_from(*response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => 301,
        Ok(RedirectResponseCode::Found) => 302,
        Ok(RedirectResponseCode::SeeOther) => 303,
        Ok(RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ctx.error(
                at(path, "response_code"),
                format!("unknown value {response_code}"),
            ));
        }
    };
    Ok(Redirect {
        scheme,
        host: (!host_redirect.is_empty()).then(|| host_redirect.clone()),
        port,
        path: new_path,
        strip_query: *strip_query,
        status: RedirectStatus::new(code).map_err(|e| ctx.error(path, e.message()))?,
    })
}

pub(super) fn direct_response(
    ctx: &mut Ctx,
    path: &str,
    d: &pb::DirectResponseAction,
) -> Result<DirectResponse, DecodeError> {
    let pb::DirectResponseAction {
        status,
        body,
        body_format,
    } = d;
    ignore_fields!(ctx, path; body_format);
    let body = match body {
        Some(DataSource {
            watched_directory,
            specifier,
        }) => {
            let bpath = at(path, "body");
            ignore_fields!(ctx, &bpath; watched_directory);
            match specifier {
                Some(Specifier::InlineString(s)) => Some(Arc::from(s.as_str())),
                Some(Specifier::InlineBytes(b)) => {
                    Some(Arc::from(std::str::from_utf8(b).map_err(|_| {
                        ctx.error(at(&bpath, "inline_bytes"), "not UTF-8")
                    })?))
                }
                Some(_) => {
                    ctx.unsupported(&bpath, "ignored: only inline bodies are supported");
                    None
                }
                None => None,
            }
        }
        None => None,
    };
    let status = u16::try_from(*status).unwrap_or(u16::MAX);
    DirectResponse::new(status, body).map_err(|e| ctx.error(at(path, "status"), e.message()))
}
