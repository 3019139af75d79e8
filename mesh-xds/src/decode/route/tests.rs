//! Route decoding tests: protos built in Rust, checked through `RouteTable::find`.

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                self as core, HeaderValue as PbHeaderValue, HeaderValueOption,
                RuntimeFractionalPercent,
            },
            route::v3::{
                self as pb, RetryPolicy as PbRetry,
                header_matcher::HeaderMatchSpecifier,
                route_action::{self, ClusterSpecifier, HostRewriteSpecifier, hash_policy},
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        r#type::{
            matcher::v3::{RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher},
            v3::{FractionalPercent, Int64Range},
        },
    },
    google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use mesh_core::{
    Percentage, RetryOn,
    route::{Action, Forward, HashSource, PathRewrite, RequestHead, Route},
};
use prost::{Message, Name};

use super::decode_route_configuration;
use crate::decode::{DecodeError, Decoded, HttpFilters};

const HOST: &str = "reviews.default.svc.cluster.local";
const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
const V3: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";

mod fault;
mod fuzz;
mod session;

// === builders ===

fn secs(s: i64) -> PbDuration {
    PbDuration {
        seconds: s,
        nanos: 0,
    }
}

fn pct(n: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: n,
        denominator: 0,
    }
}

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn prefix(p: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

fn action(cluster: &str) -> pb::RouteAction {
    pb::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn route(m: pb::RouteMatch, a: pb::RouteAction) -> pb::Route {
    pb::Route {
        r#match: Some(m),
        action: Some(pb::route::Action::Route(a)),
        ..Default::default()
    }
}

fn vhost(routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: format!("{HOST}:9080"),
        domains: vec![HOST.into(), format!("{HOST}:9080")],
        routes,
        ..Default::default()
    }
}

fn config(vhosts: Vec<pb::VirtualHost>) -> pb::RouteConfiguration {
    pb::RouteConfiguration {
        name: format!("{HOST}:9080"),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn decode(rc: &pb::RouteConfiguration) -> Decoded<mesh_core::RouteTable> {
    decode_route_configuration(rc, &HttpFilters::default()).unwrap()
}

fn decode_err(rc: &pb::RouteConfiguration) -> DecodeError {
    decode_route_configuration(rc, &HttpFilters::default()).unwrap_err()
}

fn weighted(clusters: &[(&str, u32)]) -> pb::RouteAction {
    pb::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(pb::WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(n, w)| ClusterWeight {
                    name: (*n).into(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn exact_header(name: &str, value: &str) -> pb::HeaderMatcher {
    pb::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            ignore_case: false,
            match_pattern: Some(string_matcher::MatchPattern::Exact(value.into())),
        })),
        ..Default::default()
    }
}

fn find<'t>(
    table: &'t mesh_core::RouteTable,
    authority: &str,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> Option<&'t Route> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(*k, HeaderValue::from_static(v));
    }
    let head = RequestHead {
        method: &Method::POST,
        authority,
        path_and_query: path,
        headers: &map,
        source: None,
    };
    table.find(&head).map(|m| m.route)
}

fn fwd(r: &Route) -> &Forward {
    match &r.action {
        Action::Forward(f) => f,
        other => panic!("not a forward: {other:?}"),
    }
}

fn only_route(d: &Decoded<mesh_core::RouteTable>) -> &Route {
    &d.value.virtual_hosts()[0].routes()[0]
}

fn fields(d: &Decoded<mesh_core::RouteTable>) -> Vec<&str> {
    d.unsupported.iter().map(|u| u.field.as_str()).collect()
}

fn istio_retry() -> PbRetry {
    PbRetry {
        retry_on: "5xx,connect-failure,reset".into(),
        num_retries: Some(UInt32Value { value: 3 }),
        per_try_timeout: Some(secs(2)),
        retry_host_predicate: vec![pb::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: None,
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

// === tests ===

#[test]
fn an_istiod_route_configuration_routes_as_expected() {
    let mut jason = action(V2);
    jason.timeout = Some(secs(10));
    jason.retry_policy = Some(istio_retry());
    let mut m = prefix("/");
    m.headers = vec![exact_header("end-user", "jason")];
    let mut split = weighted(&[(V1, 90), (V3, 10)]);
    split.timeout = Some(secs(10));
    split.retry_policy = Some(istio_retry());
    let mut r1 = route(m, jason);
    r1.name = "jason".into();
    let rc = config(vec![vhost(vec![r1, route(prefix("/"), split)])]);
    let d = decode(&rc);
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);

    for authority in [HOST, "reviews.default.svc.cluster.local:9080"] {
        let r = find(
            &d.value,
            authority,
            "/reviews.Reviews/Get",
            &[("end-user", "jason")],
        );
        let r = r.expect("jason's route");
        assert_eq!(r.name.as_deref(), Some("jason"));
        let f = fwd(r);
        assert_eq!(&*f.clusters.pick(0).name, V2);
        assert_eq!(f.timeout, Some(Duration::from_secs(10)));
        let retry = f.retry.as_ref().expect("retry policy");
        assert_eq!(retry.max_retries, 3);
        assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            retry.retry_on,
            RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE | RetryOn::RESET
        );
        assert!(retry.prefer_other_endpoint);
    }
    let other = find(
        &d.value,
        HOST,
        "/reviews.Reviews/Get",
        &[("end-user", "mike")],
    )
    .unwrap();
    let f = fwd(other);
    assert_eq!(f.clusters.total(), 100);
    assert_eq!(&*f.clusters.pick(0).name, V1);
    assert_eq!(&*f.clusters.pick(89).name, V1);
    assert_eq!(&*f.clusters.pick(90).name, V3);
    assert!(find(&d.value, "ratings:9080", "/", &[]).is_none());
}

#[test]
fn the_timeout_defaults_to_15s_and_zero_disables_it() {
    let mut off = action(V1);
    off.timeout = Some(secs(0));
    let d = decode(&config(vec![vhost(vec![
        route(prefix("/a"), action(V1)),
        route(prefix("/b"), off),
    ])]));
    let routes = d.value.virtual_hosts()[0].routes();
    assert_eq!(fwd(&routes[0]).timeout, Some(Duration::from_secs(15)));
    assert_eq!(fwd(&routes[1]).timeout, None);
    assert_eq!(fwd(&routes[0]).retry, None, "no retry policy, no retries");
    assert_eq!(fwd(&routes[0]).clusters.clusters()[0].weight, 100);
}

#[test]
fn max_stream_duration_replaces_the_timeout_and_caps_grpc_timeout() {
    let mut a = action(V1);
    a.timeout = Some(secs(0));
    a.max_stream_duration = Some(route_action::MaxStreamDuration {
        max_stream_duration: Some(secs(7)),
        grpc_timeout_header_max: Some(secs(5)),
        grpc_timeout_header_offset: None,
    });
    let mut zero = action(V1);
    zero.max_stream_duration = Some(route_action::MaxStreamDuration {
        max_stream_duration: Some(secs(0)),
        grpc_timeout_header_max: Some(secs(0)),
        grpc_timeout_header_offset: None,
    });
    let d = decode(&config(vec![vhost(vec![
        route(prefix("/a"), a),
        route(prefix("/b"), zero),
    ])]));
    let routes = d.value.virtual_hosts()[0].routes();
    assert_eq!(fwd(&routes[0]).timeout, Some(Duration::from_secs(7)));
    assert_eq!(
        fwd(&routes[0]).grpc_timeout_max,
        Some(Duration::from_secs(5))
    );
    assert_eq!(fwd(&routes[1]).timeout, None);
    assert_eq!(fwd(&routes[1]).grpc_timeout_max, None);
}

#[test]
fn redirects_and_direct_responses() {
    let redirect = pb::Route {
        r#match: Some(prefix("/old")),
        action: Some(pb::route::Action::Redirect(pb::RedirectAction {
            host_redirect: "new.example.com".into(),
            port_redirect: 8443,
            response_code: 4,
            strip_query: true,
            scheme_rewrite_specifier: Some(
                pb::redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
            ),
            path_rewrite_specifier: Some(pb::redirect_action::PathRewriteSpecifier::PrefixRewrite(
                "/new".into(),
            )),
        })),
        ..Default::default()
    };
    let direct = pb::Route {
        r#match: Some(prefix("/health")),
        action: Some(pb::route::Action::DirectResponse(
            pb::DirectResponseAction {
                status: 200,
                body: Some(core::DataSource {
                    watched_directory: None,
                    specifier: Some(core::data_source::Specifier::InlineString("ok".into())),
                }),
                body_format: None,
            },
        )),
        ..Default::default()
    };
    let d = decode(&config(vec![vhost(vec![redirect, direct])]));
    let Action::Redirect(r) = &find(&d.value, HOST, "/old/x", &[]).unwrap().action else {
        panic!("redirect expected");
    };
    assert_eq!(r.status.as_u16(), 308);
    assert_eq!(r.scheme.as_deref(), Some("https"));
    assert_eq!(r.host.as_deref(), Some("new.example.com"));
    assert_eq!(r.port, Some(8443));
    assert_eq!(r.path, Some(PathRewrite::Prefix("/new".into())));
    assert!(r.strip_query);
    let Action::DirectResponse(dr) = &find(&d.value, HOST, "/health", &[]).unwrap().action else {
        panic!("direct response expected");
    };
    assert_eq!((dr.status, dr.body.as_deref()), (200, Some("ok")));

    let mut bad = config(vec![vhost(vec![pb::Route {
        r#match: Some(prefix("/")),
        action: Some(pb::route::Action::DirectResponse(
            pb::DirectResponseAction {
                status: 99,
                ..Default::default()
            },
        )),
        ..Default::default()
    }])]);
    assert_eq!(
        decode_err(&bad).field,
        "virtual_hosts[0].routes[0].direct_response.status"
    );
    bad.virtual_hosts[0].routes[0].action = Some(pb::route::Action::NonForwardingAction(
        pb::NonForwardingAction {},
    ));
    let d = decode(&bad);
    assert!(matches!(&only_route(&d).action, Action::DirectResponse(r) if r.status == 503));
}

#[test]
fn hash_policies_keep_their_order_and_terminal_flag() {
    use hash_policy::PolicySpecifier as P;
    let mut a = action(V1);
    let policy = |p, terminal| route_action::HashPolicy {
        terminal,
        policy_specifier: Some(p),
    };
    a.hash_policy = vec![
        policy(
            P::Header(hash_policy::Header {
                header_name: "x-user".into(),
                regex_rewrite: None,
            }),
            true,
        ),
        policy(
            P::Cookie(hash_policy::Cookie {
                name: "session".into(),
                ttl: Some(secs(60)),
                path: "/".into(),
                attributes: vec![],
            }),
            false,
        ),
        policy(
            P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true }),
            false,
        ),
        policy(
            P::QueryParameter(hash_policy::QueryParameter { name: "id".into() }),
            false,
        ),
        policy(
            P::FilterState(hash_policy::FilterState { key: "k".into() }),
            false,
        ),
    ];
    let d = decode(&config(vec![vhost(vec![route(prefix("/"), a)])]));
    let h = &fwd(only_route(&d)).hash_policy;
    assert_eq!(h.len(), 4);
    assert_eq!(
        h[0].source,
        HashSource::Header(HeaderName::from_static("x-user"))
    );
    assert!(h[0].terminal);
    assert_eq!(
        h[1].source,
        HashSource::Cookie {
            name: "session".into(),
            ttl: Some(Duration::from_secs(60)),
            path: Some("/".into()),
        }
    );
    assert_eq!(h[2].source, HashSource::SourceIp);
    assert_eq!(h[3].source, HashSource::QueryParameter("id".into()));
    assert_eq!(
        fields(&d),
        ["virtual_hosts[0].routes[0].route.hash_policy[4].filter_state"]
    );
}

#[test]
fn rewrites_are_decoded() {
    let mut re = action(V1);
    re.regex_rewrite = Some(RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: "^/service/([^/]+)(/.*)$".into(),
            engine_type: None,
        }),
        substitution: "\\2/instance/\\1".into(),
    });
    re.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
        "reviews.internal".into(),
    ));
    let mut pre = action(V1);
    pre.prefix_rewrite = "/v2/".into();
    let d = decode(&config(vec![vhost(vec![
        route(prefix("/service"), re),
        route(prefix("/v1/"), pre),
    ])]));
    let f = fwd(find(&d.value, HOST, "/service/foo/v1/api", &[]).unwrap());
    let Some(PathRewrite::Regex(rw)) = &f.path_rewrite else {
        panic!("regex rewrite expected");
    };
    assert_eq!(rw.apply("/service/foo/v1/api"), "/v1/api/instance/foo");
    assert_eq!(
        f.authority_rewrite,
        Some(HeaderValue::from_static("reviews.internal"))
    );
    let f = fwd(find(&d.value, HOST, "/v1/x", &[]).unwrap());
    assert_eq!(f.path_rewrite, Some(PathRewrite::Prefix("/v2/".into())));
}

fn hvo(name: &str, value: &str, action: i32, append: Option<bool>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.into(),
            value: value.into(),
            raw_value: vec![],
        }),
        #[allow(deprecated)]
        append: append.map(|value| BoolValue { value }),
        append_action: action,
        keep_empty_value: false,
    }
}

#[test]
fn header_mutations_follow_envoys_level_order() {
    let mut r = route(prefix("/"), action(V1));
    r.request_headers_to_add = vec![
        hvo("x-route", "r", 0, None),
        hvo("x-both", "route", 0, None),
        hvo("x-legacy", "l", 0, Some(false)),
        hvo("x-removed-later", "r", 0, None),
        hvo("x-empty", "", 0, None),
        hvo("x-absent", "a", 1, None),
    ];
    r.response_headers_to_remove = vec!["server".into()];
    let mut vh = vhost(vec![r]);
    vh.request_headers_to_add = vec![hvo("x-both", "vhost", 2, None)];
    vh.request_headers_to_remove = vec!["x-removed-later".into()];
    let mut rc = config(vec![vh]);
    rc.request_headers_to_add = vec![hvo("x-rc", "c", 0, None)];
    let d = decode(&rc);
    let route = only_route(&d);
    let req = &route.request_headers;
    let pairs = |v: &[(HeaderName, HeaderValue)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(
        pairs(&req.set),
        [
            ("x-legacy".into(), "l".into()),
            ("x-both".into(), "vhost".into())
        ]
    );
    assert_eq!(
        pairs(&req.add),
        [("x-route".into(), "r".into()), ("x-rc".into(), "c".into())]
    );
    assert_eq!(&*req.remove, [HeaderName::from_static("x-removed-later")]);
    assert_eq!(
        &*route.response_headers.remove,
        [HeaderName::from_static("server")]
    );
    assert_eq!(
        fields(&d),
        ["virtual_hosts[0].routes[0].request_headers_to_add[5].append_action"]
    );

    // With `most_specific_header_mutations_wins` the order reverses: the route writes last.
    let mut reversed = rc.clone();
    reversed.most_specific_header_mutations_wins = true;
    let d = decode(&reversed);
    let req = &only_route(&d).request_headers;
    assert!(pairs(&req.set).contains(&("x-both".into(), "vhost".into())));
    assert!(pairs(&req.add).contains(&("x-both".into(), "route".into())));
    // The vhost's removal now comes first: the caller's header goes, the route's value stays.
    assert_eq!(&*req.remove, [HeaderName::from_static("x-removed-later")]);
    assert!(pairs(&req.add).contains(&("x-removed-later".into(), "r".into())));

    let mut bad = rc.clone();
    bad.virtual_hosts[0].routes[0].request_headers_to_add = vec![hvo("x", "y", 2, Some(true))];
    assert_eq!(
        decode_err(&bad).field,
        "virtual_hosts[0].routes[0].request_headers_to_add[0]"
    );
}

#[test]
fn header_and_query_matchers() {
    #[allow(deprecated)]
    let deprecated = pb::HeaderMatcher {
        name: "x-version".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::PrefixMatch("v2".into())),
        ..Default::default()
    };
    let range = pb::HeaderMatcher {
        name: "x-n".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 1,
            end: 10,
        })),
        ..Default::default()
    };
    let mut inverted = exact_header("x-env", "prod");
    inverted.invert_match = true;
    let mut m = prefix("/");
    m.headers = vec![
        deprecated,
        range,
        inverted,
        exact_header(":authority", HOST),
    ];
    m.query_parameters = vec![pb::QueryParameterMatcher {
        name: "debug".into(),
        query_parameter_match_specifier: None,
    }];
    m.grpc = Some(pb::route_match::GrpcRouteMatchOptions {});
    let d = decode(&config(vec![vhost(vec![route(m, action(V2))])]));
    let t = &d.value;
    let grpc = [
        ("content-type", "application/grpc"),
        ("x-version", "v2.1"),
        ("x-n", "5"),
        ("x-env", "dev"),
    ];
    assert!(find(t, HOST, "/x?debug", &grpc).is_some());
    assert!(
        find(t, HOST, "/x", &grpc).is_none(),
        "query parameter missing"
    );
    assert!(
        find(
            t,
            "reviews.default.svc.cluster.local:9080",
            "/x?debug",
            &grpc
        )
        .is_none()
    );
    let mut prod = grpc;
    prod[3] = ("x-env", "prod");
    assert!(find(t, HOST, "/x?debug", &prod).is_none(), "inverted");
    assert!(
        find(t, HOST, "/x?debug", &grpc[..3]).is_none(),
        "an inverted match on a missing header fails, as in Envoy"
    );
    let plain = [("x-version", "v2.1"), ("x-n", "5"), ("x-env", "dev")];
    assert!(find(t, HOST, "/x?debug", &plain).is_none(), "grpc only");
}

#[test]
fn path_separated_prefix_and_case_insensitive_paths() {
    let sep = pb::RouteMatch {
        path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/api".into())),
        ..Default::default()
    };
    let mut exact = pb::RouteMatch {
        path_specifier: Some(PathSpecifier::Path("/Health".into())),
        ..Default::default()
    };
    exact.case_sensitive = Some(BoolValue { value: false });
    let d = decode(&config(vec![vhost(vec![
        route(sep, action(V1)),
        route(exact, action(V2)),
    ])]));
    let cluster = |p| find(&d.value, HOST, p, &[]).map(|r| fwd(r).clusters.pick(0).name.clone());
    assert_eq!(cluster("/api").as_deref(), Some(V1));
    assert_eq!(cluster("/api/x?y").as_deref(), Some(V1));
    assert_eq!(cluster("/apix"), None);
    assert_eq!(cluster("/health").as_deref(), Some(V2));
}

#[test]
fn errors_name_the_field() {
    let mut bad_regex = prefix("/");
    bad_regex.path_specifier = Some(PathSpecifier::SafeRegex(RegexMatcher {
        regex: "(".into(),
        engine_type: None,
    }));
    let e = decode_err(&config(vec![vhost(vec![route(bad_regex, action(V1))])]));
    assert_eq!(e.kind, "RouteConfiguration");
    assert_eq!(e.name, "reviews.default.svc.cluster.local:9080");
    assert_eq!(e.field, "virtual_hosts[0].routes[0].match.safe_regex.regex");

    let mut a = action(V1);
    a.retry_policy = Some(PbRetry {
        retry_on: "5xx,sometimes".into(),
        ..Default::default()
    });
    let e = decode_err(&config(vec![vhost(vec![route(prefix("/"), a)])]));
    assert_eq!(
        e.field,
        "virtual_hosts[0].routes[0].route.retry_policy.retry_on"
    );
    assert!(e.message.contains("sometimes"), "{e}");

    let zero = weighted(&[(V1, 0), (V3, 0)]);
    let e = decode_err(&config(vec![vhost(vec![route(prefix("/"), zero)])]));
    assert_eq!(
        e.field,
        "virtual_hosts[0].routes[0].route.weighted_clusters.clusters"
    );

    let mut header = action(V1);
    header.cluster_specifier = Some(ClusterSpecifier::ClusterHeader("x-cluster".into()));
    let e = decode_err(&config(vec![vhost(vec![route(prefix("/"), header)])]));
    assert_eq!(e.field, "virtual_hosts[0].routes[0].route.cluster_header");

    let mut dup = config(vec![vhost(vec![]), vhost(vec![])]);
    dup.virtual_hosts[1].name = "again".into();
    assert_eq!(decode_err(&dup).field, "virtual_hosts");
    let mut bad_domain = config(vec![vhost(vec![])]);
    bad_domain.virtual_hosts[0].domains[1] = "a*b*".into();
    assert_eq!(decode_err(&bad_domain).field, "virtual_hosts[0].domains[1]");
}

#[test]
fn unsupported_fields_are_reported() {
    let mut a = action(V1);
    a.idle_timeout = Some(secs(1));
    let mut m = prefix("/");
    m.runtime_fraction = Some(RuntimeFractionalPercent {
        default_value: Some(pct(50)),
        runtime_key: String::new(),
    });
    let mut r = route(m, a);
    r.decorator = Some(pb::Decorator {
        operation: "op".into(),
        propagate: None,
    });
    let mut cookie = prefix("/c");
    cookie.cookies = vec![pb::CookieMatcher {
        name: "c".into(),
        ..Default::default()
    }];
    let mut vh = vhost(vec![route(cookie, action(V2)), r]);
    vh.require_tls = 1;
    let d = decode(&config(vec![vh]));
    assert_eq!(
        fields(&d),
        [
            "virtual_hosts[0].require_tls",
            "virtual_hosts[0].routes[0].match.cookies",
            "virtual_hosts[0].routes[1].decorator",
            "virtual_hosts[0].routes[1].match.runtime_fraction",
            "virtual_hosts[0].routes[1].route.idle_timeout",
        ]
    );
    assert_eq!(
        d.value.virtual_hosts()[0].routes().len(),
        1,
        "cookie route skipped"
    );
}

#[test]
fn virtual_host_retry_hedge_and_mirrors_are_fallbacks() {
    let mut vh = vhost(vec![
        route(prefix("/own"), {
            let mut a = action(V1);
            a.retry_policy = Some(PbRetry {
                retry_on: "unavailable,cancelled".into(),
                retriable_status_codes: vec![503],
                retry_back_off: Some(pb::retry_policy::RetryBackOff {
                    base_interval: Some(PbDuration {
                        seconds: 0,
                        nanos: 100_000_000,
                    }),
                    max_interval: None,
                }),
                ..Default::default()
            });
            a
        }),
        route(prefix("/"), action(V2)),
    ]);
    vh.retry_policy = Some(istio_retry());
    vh.hedge_policy = Some(pb::HedgePolicy {
        initial_requests: Some(UInt32Value { value: 2 }),
        additional_request_chance: None,
        hedge_on_per_try_timeout: true,
    });
    vh.request_mirror_policies = vec![route_action::RequestMirrorPolicy {
        cluster: V3.into(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(pct(25)),
            runtime_key: String::new(),
        }),
        ..Default::default()
    }];
    let d = decode(&config(vec![vh]));
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let own = fwd(find(&d.value, HOST, "/own", &[]).unwrap());
    let r = own.retry.as_ref().unwrap();
    assert_eq!(r.max_retries, 1, "Envoy's default");
    assert_eq!(r.retry_on, RetryOn::UNAVAILABLE | RetryOn::CANCELLED);
    assert_eq!(&*r.retriable_status_codes, [503]);
    assert_eq!(r.backoff.max(), Duration::from_secs(1));
    assert!(!r.prefer_other_endpoint);
    assert_eq!(r.hedge.map(|h| h.initial_requests), Some(2));
    let other = fwd(find(&d.value, HOST, "/x", &[]).unwrap());
    assert_eq!(other.retry.as_ref().unwrap().max_retries, 3);
    assert_eq!(other.mirrors.len(), 1);
    assert_eq!(&*other.mirrors[0].cluster, V3);
    assert_eq!(
        other.mirrors[0].percentage,
        Percentage::from_percent(25).unwrap()
    );
}
