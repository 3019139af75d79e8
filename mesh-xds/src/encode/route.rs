//! A [`RouteTable`] as a `RouteConfiguration`: virtual hosts, routes with every matcher and
//! action of the model, and fault policies as `typed_per_filter_config`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                DataSource, HeaderValue as PbHeaderValue, HeaderValueOption,
                RuntimeFractionalPercent, data_source, header_value_option::HeaderAppendAction,
            },
            route::v3::{
                self as pb, FilterConfig,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                route_action::{
                    ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration, RequestMirrorPolicy,
                    hash_policy,
                },
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        extensions::{
            filters::{
                common::fault::v3::{
                    FaultDelay as PbDelay,
                    fault_delay::{FaultDelaySecifier, HeaderDelay},
                },
                http::fault::v3::{
                    FaultAbort as PbAbort, HttpFault,
                    fault_abort::{ErrorType, HeaderAbort},
                },
            },
            retry::host::previous_hosts::v3::PreviousHostsPredicate,
        },
        r#type::{
            matcher::v3::{
                RegexMatchAndSubstitute, RegexMatcher, StringMatcher as PbStringMatcher,
                string_matcher::MatchPattern,
            },
            v3::{FractionalPercent, Int64Range, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{self, Any, BoolValue, UInt32Value},
};
use mesh_core::{
    AbortStatus, FaultPolicy, HeaderFaultShare, Percentage, RetryOn, RetryPolicy, RouteTable,
    matcher::{HeaderMatch, PathMatch, Regex, RegexRewrite, StringMatch, StringMatcher},
    route::{
        Action, DirectResponse, Forward, HashPolicy, HashSource, HeaderMutations, Mirror,
        PathRewrite, Redirect, Route, RouteMatcher, VirtualHost,
    },
};

use super::any;
use crate::decode::filter::FAULT_FILTER;

/// Envoy's retry-on names, each parsed by [`RetryOn::parse`] to find its bit.
pub(super) const RETRY_ON_NAMES: [&str; 13] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "envoy-ratelimited",
];

/// How many times Envoy tries another host for `previous_hosts` (istiod's value).
const HOST_SELECTION_ATTEMPTS: i64 = 5;

/// The route configuration of a listener, named after it.
pub(super) fn encode(name: &str, table: &RouteTable) -> pb::RouteConfiguration {
    pb::RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: table.virtual_hosts().iter().map(virtual_host).collect(),
        ..pb::RouteConfiguration::default()
    }
}

fn virtual_host(vh: &VirtualHost) -> pb::VirtualHost {
    pb::VirtualHost {
        name: vh.name().to_string(),
        domains: vh.domains().iter().map(ToString::to_string).collect(),
        // A route scoped by its caller (`sourceLabels`, `sourceNamespace`) is one istiod
        // sends only to the proxies it selects; one set of resources for every node cannot
        // say whom it is for, so it is left out rather than widened to every caller.
        routes: vh
            .routes()
            .iter()
            .filter(|r| r.matcher.source.is_none())
            .map(route)
            .collect(),
        ..pb::VirtualHost::default()
    }
}

fn route(r: &Route) -> pb::Route {
    let mut typed_per_filter_config = HashMap::new();
    if let Some(f) = r.fault.as_deref().filter(|f| injects(f)) {
        typed_per_filter_config.insert(FAULT_FILTER.to_string(), any(&http_fault(f)));
    }
    let (request_headers_to_add, request_headers_to_remove) = mutations(&r.request_headers);
    let (response_headers_to_add, response_headers_to_remove) = mutations(&r.response_headers);
    use pb::route::Action as A;
    let action = match &r.action {
        Action::Forward(f) => A::Route(forward(&r.matcher, f)),
        Action::Redirect(rd) => A::Redirect(redirect(rd)),
        Action::DirectResponse(d) => A::DirectResponse(direct_response(d)),
    };
    pb::Route {
        name: r.name.as_deref().unwrap_or_default().to_string(),
        r#match: Some(route_match(&r.matcher)),
        typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        action: Some(action),
        ..pb::Route::default()
    }
}

fn route_match(m: &RouteMatcher) -> pb::RouteMatch {
    let ignore_case = m.path.ignore_case();
    let (path_specifier, case_matters) = match m.path.kind() {
        PathMatch::Any => (PathSpecifier::Prefix("/".into()), false),
        PathMatch::Exact(p) => (PathSpecifier::Path(p.clone()), true),
        PathMatch::Prefix(p) => (PathSpecifier::Prefix(p.clone()), true),
        PathMatch::Regex(re) => (PathSpecifier::SafeRegex(regex(re)), false),
    };
    let mut headers: Vec<pb::HeaderMatcher> = Vec::new();
    for (pseudo, cond) in [(":authority", &m.authority), (":method", &m.method)] {
        if let Some(s) = cond {
            headers.push(pb::HeaderMatcher {
                name: pseudo.to_string(),
                header_match_specifier: Some(
                    pb::header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(s)),
                ),
                ..pb::HeaderMatcher::default()
            });
        }
    }
    for h in m.headers.iter() {
        use pb::header_matcher::HeaderMatchSpecifier as S;
        let spec = match h.kind() {
            HeaderMatch::Present(p) => S::PresentMatch(*p),
            HeaderMatch::String(s) => S::StringMatch(string_matcher(s)),
            HeaderMatch::Range { start, end } => S::RangeMatch(Int64Range {
                start: *start,
                end: *end,
            }),
        };
        headers.push(pb::HeaderMatcher {
            name: h.name().as_str().to_string(),
            invert_match: h.invert(),
            treat_missing_header_as_empty: h.treat_missing_as_empty(),
            header_match_specifier: Some(spec),
        });
    }
    let query_parameters = m
        .query
        .iter()
        .map(|q| {
            use pb::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            pb::QueryParameterMatcher {
                name: q.name().to_string(),
                query_parameter_match_specifier: Some(match q.value() {
                    Some(v) => Q::StringMatch(string_matcher(v)),
                    None => Q::PresentMatch(true),
                }),
            }
        })
        .collect();
    pb::RouteMatch {
        case_sensitive: (case_matters && ignore_case).then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        grpc: m
            .grpc_only
            .then(pb::route_match::GrpcRouteMatchOptions::default),
        path_specifier: Some(path_specifier),
        ..pb::RouteMatch::default()
    }
}

pub(super) fn string_matcher(s: &StringMatcher) -> PbStringMatcher {
    let (pattern, case_matters) = match s.kind() {
        StringMatch::Exact(v) => (MatchPattern::Exact(v.clone()), true),
        StringMatch::Prefix(v) => (MatchPattern::Prefix(v.clone()), true),
        StringMatch::Suffix(v) => (MatchPattern::Suffix(v.clone()), true),
        StringMatch::Contains(v) => (MatchPattern::Contains(v.clone()), true),
        StringMatch::Regex(re) => (MatchPattern::SafeRegex(regex(re)), false),
    };
    PbStringMatcher {
        ignore_case: case_matters && s.ignore_case(),
        match_pattern: Some(pattern),
    }
}

fn regex(re: &Regex) -> RegexMatcher {
    RegexMatcher {
        regex: re.as_str().to_string(),
        ..RegexMatcher::default()
    }
}

fn regex_rewrite(rr: &RegexRewrite) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: rr.pattern().to_string(),
            ..RegexMatcher::default()
        }),
        substitution: rr.substitution().to_string(),
    }
}

fn forward(matcher: &RouteMatcher, f: &Forward) -> pb::RouteAction {
    let clusters = f.clusters.clusters();
    let cluster_specifier = match clusters {
        [one]
            if one.weight == 100
                && one.request_headers.is_empty()
                && one.response_headers.is_empty()
                && one.fault.is_none() =>
        {
            ClusterSpecifier::Cluster(one.name.to_string())
        }
        _ => ClusterSpecifier::WeightedClusters(pb::WeightedCluster {
            clusters: clusters
                .iter()
                .map(|c| {
                    let (request_headers_to_add, request_headers_to_remove) =
                        mutations(&c.request_headers);
                    let (response_headers_to_add, response_headers_to_remove) =
                        mutations(&c.response_headers);
                    let mut typed_per_filter_config = HashMap::new();
                    if let Some(fault) = &c.fault {
                        typed_per_filter_config
                            .insert(FAULT_FILTER.to_string(), cluster_fault(fault));
                    }
                    ClusterWeight {
                        name: c.name.to_string(),
                        weight: Some(UInt32Value { value: c.weight }),
                        request_headers_to_add,
                        request_headers_to_remove,
                        response_headers_to_add,
                        response_headers_to_remove,
                        typed_per_filter_config,
                        ..ClusterWeight::default()
                    }
                })
                .collect(),
            ..pb::WeightedCluster::default()
        }),
    };
    let (prefix_rewrite, regex_rewrite) = match &f.path_rewrite {
        None => (String::new(), None),
        Some(PathRewrite::Prefix(p)) => (p.clone(), None),
        Some(PathRewrite::Regex(rr)) => (String::new(), Some(self::regex_rewrite(rr))),
        Some(PathRewrite::FullPath(p)) => match full_path_rewrite(matcher, p) {
            PathRewrite::Prefix(p) => (p, None),
            PathRewrite::Regex(rr) => (String::new(), Some(self::regex_rewrite(&rr))),
            PathRewrite::FullPath(_) => (String::new(), None),
        },
    };
    let retry = f.retry.as_deref();
    pb::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        prefix_rewrite,
        regex_rewrite,
        host_rewrite_specifier: f.authority_rewrite.as_ref().map(|h| {
            HostRewriteSpecifier::HostRewriteLiteral(String::from_utf8_lossy(h.as_bytes()).into())
        }),
        // 0 is "no timeout"; unset would be Envoy's 15 s.
        timeout: Some(duration(f.timeout.unwrap_or_default())),
        // gRPC reads the deadline from here, not from `timeout`.
        max_stream_duration: (f.timeout.is_some() || f.grpc_timeout_max.is_some()).then(|| {
            MaxStreamDuration {
                max_stream_duration: f.timeout.map(duration),
                grpc_timeout_header_max: f.grpc_timeout_max.map(duration),
                ..MaxStreamDuration::default()
            }
        }),
        retry_policy: retry.map(retry_policy),
        hedge_policy: retry.and_then(|r| r.hedge).map(|h| pb::HedgePolicy {
            initial_requests: Some(UInt32Value {
                value: h.initial_requests,
            }),
            additional_request_chance: Some(fraction(h.additional_request_chance)),
            hedge_on_per_try_timeout: h.hedge_on_per_try_timeout,
        }),
        request_mirror_policies: f.mirrors.iter().map(mirror).collect(),
        hash_policy: f.hash_policy.iter().map(hash).collect(),
        ..pb::RouteAction::default()
    }
}

/// What a full-path rewrite of a forward becomes: a prefix rewrite under an exact match (the
/// matched prefix is the whole path), else a regex rewrite of the whole path.
pub(super) fn full_path_rewrite(matcher: &RouteMatcher, path: &str) -> PathRewrite {
    if let PathMatch::Exact(_) = matcher.path.kind() {
        return PathRewrite::Prefix(path.to_string());
    }
    // Backslashes would read as group references in Envoy's substitution syntax.
    let literal = path.replace('\\', "");
    match RegexRewrite::new("^.*$", &literal) {
        Ok(rr) => PathRewrite::Regex(rr),
        Err(_) => PathRewrite::Prefix(path.to_string()),
    }
}

fn retry_policy(r: &RetryPolicy) -> pb::RetryPolicy {
    let names: Vec<&str> = RETRY_ON_NAMES
        .into_iter()
        .filter(|name| {
            RetryOn::parse(name).is_ok_and(|(bit, _)| !bit.is_empty() && r.retry_on.contains(bit))
        })
        .collect();
    let backoff = r.backoff;
    pb::RetryPolicy {
        retry_on: names.join(","),
        num_retries: Some(UInt32Value {
            value: r.max_retries,
        }),
        per_try_timeout: r.per_try_timeout.map(duration),
        retriable_status_codes: r
            .retriable_status_codes
            .iter()
            .map(|c| u32::from(*c))
            .collect(),
        retry_back_off: Some(pb::retry_policy::RetryBackOff {
            base_interval: Some(duration(backoff.base())),
            max_interval: Some(duration(backoff.max())),
        }),
        retry_host_predicate: if r.prefer_other_endpoint {
            vec![pb::retry_policy::RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".into(),
                config_type: Some(
                    pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                        &PreviousHostsPredicate {},
                    )),
                ),
            }]
        } else {
            Vec::new()
        },
        host_selection_retry_max_attempts: if r.prefer_other_endpoint {
            HOST_SELECTION_ATTEMPTS
        } else {
            0
        },
        ..pb::RetryPolicy::default()
    }
}

fn mirror(m: &Mirror) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: m.cluster.to_string(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction(m.percentage)),
            runtime_key: String::new(),
        }),
        ..RequestMirrorPolicy::default()
    }
}

fn hash(h: &HashPolicy) -> pb::route_action::HashPolicy {
    use hash_policy::PolicySpecifier as P;
    let spec = match &h.source {
        HashSource::Header(name) => P::Header(hash_policy::Header {
            header_name: name.as_str().to_string(),
            regex_rewrite: None,
        }),
        HashSource::Cookie { name, ttl, path } => P::Cookie(hash_policy::Cookie {
            name: name.clone(),
            ttl: ttl.map(duration),
            path: path.clone().unwrap_or_default(),
            attributes: Vec::new(),
        }),
        HashSource::SourceIp => {
            P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
        }
        HashSource::QueryParameter(name) => {
            P::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
        }
    };
    pb::route_action::HashPolicy {
        terminal: h.terminal,
        policy_specifier: Some(spec),
    }
}

fn redirect(r: &Redirect) -> pb::RedirectAction {
    let response_code = match r.status.as_u16() {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    pb::RedirectAction {
        host_redirect: r.host.clone().unwrap_or_default(),
        port_redirect: r.port.map_or(0, u32::from),
        response_code: response_code as i32,
        strip_query: r.strip_query,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r.path.as_ref().map(|p| match p {
            PathRewrite::FullPath(p) => PathRewriteSpecifier::PathRedirect(p.clone()),
            PathRewrite::Prefix(p) => PathRewriteSpecifier::PrefixRewrite(p.clone()),
            PathRewrite::Regex(rr) => PathRewriteSpecifier::RegexRewrite(regex_rewrite(rr)),
        }),
    }
}

fn direct_response(d: &DirectResponse) -> pb::DirectResponseAction {
    pb::DirectResponseAction {
        status: u32::from(d.status),
        body: d.body.as_ref().map(|b| DataSource {
            specifier: Some(data_source::Specifier::InlineString(b.to_string())),
            ..DataSource::default()
        }),
        ..pb::DirectResponseAction::default()
    }
}

/// Header changes as one Envoy level: sets overwrite, adds append, removals listed apart
/// (Envoy applies removals first, as the model does).
fn mutations(m: &HeaderMutations) -> (Vec<HeaderValueOption>, Vec<String>) {
    let option = |(name, value): &(http::HeaderName, http::HeaderValue), action| {
        let (value, raw_value) = match value.to_str() {
            Ok(v) => (v.to_string(), Vec::new()),
            Err(_) => (String::new(), value.as_bytes().to_vec()),
        };
        HeaderValueOption {
            keep_empty_value: value.is_empty() && raw_value.is_empty(),
            header: Some(PbHeaderValue {
                key: name.as_str().to_string(),
                value,
                raw_value,
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        }
    };
    let add = m
        .set
        .iter()
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            m.add
                .iter()
                .map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect();
    let remove = m.remove.iter().map(|n| n.as_str().to_string()).collect();
    (add, remove)
}

/// Whether a fault policy injects anything.
pub(super) fn injects(f: &FaultPolicy) -> bool {
    f.delay.is_some() || f.abort.is_some() || f.reads_headers()
}

/// A weighted cluster's fault override: its policy, or "disabled" when it injects nothing.
fn cluster_fault(f: &FaultPolicy) -> Any {
    if injects(f) {
        any(&http_fault(f))
    } else {
        any(&FilterConfig {
            config: None,
            is_optional: false,
            disabled: true,
        })
    }
}

fn http_fault(f: &FaultPolicy) -> HttpFault {
    let header_delay = f.header_delay.map(|share| PbDelay {
        percentage: Some(header_fraction(share)),
        fault_delay_secifier: Some(FaultDelaySecifier::HeaderDelay(HeaderDelay::default())),
    });
    let header_abort = f.header_abort.map(|share| PbAbort {
        percentage: Some(header_fraction(share)),
        error_type: Some(ErrorType::HeaderAbort(HeaderAbort::default())),
        ..PbAbort::default()
    });
    HttpFault {
        delay: header_delay.or_else(|| {
            f.delay.as_ref().map(|d| PbDelay {
                percentage: Some(fraction(d.percentage)),
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(d.duration))),
            })
        }),
        abort: header_abort.or_else(|| {
            f.abort.as_ref().map(|a| PbAbort {
                percentage: Some(fraction(a.percentage)),
                error_type: Some(match a.status {
                    AbortStatus::Http(s) => ErrorType::HttpStatus(u32::from(s)),
                    AbortStatus::Grpc(code) => {
                        ErrorType::GrpcStatus(u32::try_from(code.as_i32()).unwrap_or(2))
                    }
                }),
                ..PbAbort::default()
            })
        }),
        max_active_faults: f.max_active_faults.map(|value| UInt32Value { value }),
        ..HttpFault::default()
    }
}

/// A header-controlled fault's share, with its own denominator (the caller's percentage
/// header is read over it).
fn header_fraction(share: HeaderFaultShare) -> FractionalPercent {
    let denominator = match share.denominator() {
        100 => DenominatorType::Hundred,
        10_000 => DenominatorType::TenThousand,
        _ => DenominatorType::Million,
    };
    FractionalPercent {
        numerator: share.max_numerator(),
        denominator: denominator as i32,
    }
}

/// A percentage as parts per million, exact.
pub(super) fn fraction(p: Percentage) -> FractionalPercent {
    FractionalPercent {
        numerator: p.ppm(),
        denominator: DenominatorType::Million as i32,
    }
}

/// A [`Duration`] as a protobuf duration (saturating at `i64::MAX` seconds).
pub(crate) fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A route as decoding will see it (see the module docs of [`super`]).
pub(super) fn canonical_route(r: &mut Route) {
    // Envoy ignores case-insensitivity for regexes (and `prefix: /` is any path).
    if matches!(r.matcher.path.kind(), PathMatch::Any | PathMatch::Regex(_)) {
        r.matcher.path = mesh_core::matcher::PathMatcher::new(r.matcher.path.kind().clone(), false);
    }
    if r.fault.as_deref().is_some_and(|f| !injects(f)) {
        r.fault = None;
    }
    if let Action::Forward(fwd) = &r.action {
        let mut f = (**fwd).clone();
        // A status listed twice is retried once: Envoy's list is a set.
        if let Some(retry) = &f.retry {
            let mut codes: Vec<u16> = Vec::new();
            for c in retry.retriable_status_codes.iter() {
                if !codes.contains(c) {
                    codes.push(*c);
                }
            }
            let mut retry = (**retry).clone();
            retry.retriable_status_codes = codes.into();
            f.retry = Some(Arc::new(retry));
        }
        let clusters: Vec<_> = f
            .clusters
            .clusters()
            .iter()
            .cloned()
            .map(|mut c| {
                if c.fault.as_deref().is_some_and(|f| !injects(f)) {
                    c.fault = Some(Arc::new(FaultPolicy::default()));
                }
                c
            })
            .collect();
        if let Ok(wc) = mesh_core::route::WeightedClusters::new(clusters) {
            f.clusters = wc;
        }
        r.action = Action::Forward(Arc::new(f));
    }
}
