//! Listener decoding tests: api listeners with RDS and inline routes, and the filter chain.

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                AggregatedConfigSource, ConfigSource, HttpProtocolOptions, PathConfigSource,
                config_source,
            },
            listener::v3::{ApiListener, Filter, FilterChain, Listener},
            route::v3::{self as rpb, route_match::PathSpecifier},
        },
        extensions::filters::{
            common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier},
            http::{fault::v3::HttpFault, rbac::v3::Rbac, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
        r#type::v3::FractionalPercent,
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use mesh_core::route::Action;
use proptest::prelude::*;
use prost::{Message, Name};

use super::{ListenerRoutes, decode_listener};

const TARGET: &str = "reviews.default.svc.cluster.local:9080";

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    filter("envoy.filters.http.router", pack(&Router::default()))
}

fn fault() -> HttpFilter {
    filter(
        "envoy.filters.http.fault",
        pack(&HttpFault {
            delay: Some(FaultDelay {
                percentage: Some(FractionalPercent {
                    numerator: 100,
                    denominator: 0,
                }),
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(PbDuration {
                    seconds: 2,
                    nanos: 0,
                })),
            }),
            ..Default::default()
        }),
    )
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn rds(name: &str, source: ConfigSource) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        config_source: Some(source),
        route_config_name: name.into(),
    })
}

fn api_listener(spec: RouteSpecifier, filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        http_filters: filters,
        route_specifier: Some(spec),
        ..Default::default()
    };
    Listener {
        name: TARGET.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    }
}

#[test]
fn an_rds_listener_names_its_route_configuration() {
    let d = decode_listener(&api_listener(rds(TARGET, ads()), vec![fault(), router()])).unwrap();
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    assert_eq!(
        d.value.routes,
        ListenerRoutes::Rds {
            route_config_name: TARGET.into()
        }
    );
    let fault = d.value.filters.fault.expect("fault filter");
    assert_eq!(fault.name, "envoy.filters.http.fault");
    let delay = fault
        .default
        .and_then(|p| p.delay.clone())
        .expect("default delay");
    assert_eq!(delay.duration.as_secs(), 2);
    assert_eq!(
        d.value.filters.names,
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
}

#[test]
fn an_rds_source_other_than_ads_is_reported() {
    let path = ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::PathConfigSource(
            PathConfigSource::default(),
        )),
        ..Default::default()
    };
    let d = decode_listener(&api_listener(rds(TARGET, path), vec![router()])).unwrap();
    let fields: Vec<_> = d.unsupported.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["api_listener.api_listener.rds.config_source"]);
}

#[test]
fn an_inline_route_config_is_decoded_with_the_listeners_filters() {
    let rc = rpb::RouteConfiguration {
        name: "inline".into(),
        virtual_hosts: vec![rpb::VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![rpb::Route {
                r#match: Some(rpb::RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(rpb::route::Action::Route(rpb::RouteAction {
                    cluster_specifier: Some(rpb::route_action::ClusterSpecifier::Cluster(
                        "outbound|9080||r".into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let l = api_listener(
        RouteSpecifier::RouteConfig(rc.clone()),
        vec![fault(), router()],
    );
    let d = decode_listener(&l).unwrap();
    let ListenerRoutes::Inline(table) = &d.value.routes else {
        panic!("inline routes expected");
    };
    let route = &table.virtual_hosts()[0].routes()[0];
    assert!(matches!(route.action, Action::Forward(_)));
    assert!(route.fault.is_some(), "the filter's default applies");

    // Errors inside the inline config name the listener and the full path.
    let mut bad = rc;
    bad.virtual_hosts[0].domains = vec![];
    let e = decode_listener(&api_listener(
        RouteSpecifier::RouteConfig(bad),
        vec![router()],
    ))
    .unwrap_err();
    assert_eq!((e.kind, e.name.as_str()), ("Listener", TARGET));
    assert_eq!(
        e.field,
        "api_listener.api_listener.route_config.virtual_hosts[0].domains"
    );
}

#[test]
fn the_connection_managers_max_stream_duration_bounds_routes() {
    let route = |msd: Option<i64>| rpb::Route {
        r#match: Some(rpb::RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(
                if msd.is_some() { "/own" } else { "/" }.into(),
            )),
            ..Default::default()
        }),
        action: Some(rpb::route::Action::Route(rpb::RouteAction {
            cluster_specifier: Some(rpb::route_action::ClusterSpecifier::Cluster("c".into())),
            max_stream_duration: msd.map(|s| rpb::route_action::MaxStreamDuration {
                max_stream_duration: Some(PbDuration {
                    seconds: s,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let rc = rpb::RouteConfiguration {
        virtual_hosts: vec![rpb::VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![route(Some(3)), route(None)],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        http_filters: vec![router()],
        route_specifier: Some(RouteSpecifier::RouteConfig(rc)),
        common_http_protocol_options: Some(HttpProtocolOptions {
            max_stream_duration: Some(PbDuration {
                seconds: 30,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let l = Listener {
        name: TARGET.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    };
    let d = decode_listener(&l).unwrap();
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    assert_eq!(
        d.value.filters.max_stream_duration,
        Some(Duration::from_secs(30))
    );
    let ListenerRoutes::Inline(table) = &d.value.routes else {
        panic!("inline routes expected");
    };
    let timeouts: Vec<_> = table.virtual_hosts()[0]
        .routes()
        .iter()
        .map(|r| match &r.action {
            Action::Forward(f) => f.timeout,
            _ => None,
        })
        .collect();
    assert_eq!(
        timeouts,
        [Some(Duration::from_secs(3)), Some(Duration::from_secs(30))]
    );
}

#[test]
fn socket_listeners_are_rejected() {
    let l = Listener {
        name: "0.0.0.0_9080".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = decode_listener(&l).unwrap_err();
    assert_eq!(e.field, "api_listener");
    assert_eq!(e.message, "only api_listener is supported by the client");
}

#[test]
fn the_filter_chain_is_checked() {
    let unknown = Any {
        type_url: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua".into(),
        value: vec![],
    };
    // A required unknown filter is an error.
    let l = api_listener(
        rds(TARGET, ads()),
        vec![filter("lua", unknown.clone()), router()],
    );
    let e = decode_listener(&l).unwrap_err();
    assert_eq!(
        e.field,
        "api_listener.api_listener.http_filters[0].typed_config"
    );

    // An optional one is reported; RBAC is reported (not enforced on the client).
    let mut optional = filter("lua", unknown);
    optional.is_optional = true;
    let rbac = filter("envoy.filters.http.rbac", pack(&Rbac::default()));
    let d = decode_listener(&api_listener(
        rds(TARGET, ads()),
        vec![optional, rbac, router()],
    ))
    .unwrap();
    let fields: Vec<_> = d.unsupported.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "api_listener.api_listener.http_filters[0]",
            "api_listener.api_listener.http_filters[1]",
        ]
    );
    assert_eq!(
        d.value.filters.rbac.as_deref(),
        Some("envoy.filters.http.rbac")
    );

    // The router must be last.
    let e =
        decode_listener(&api_listener(rds(TARGET, ads()), vec![router(), fault()])).unwrap_err();
    assert_eq!(e.field, "api_listener.api_listener.http_filters[1]");
    let e = decode_listener(&api_listener(rds(TARGET, ads()), vec![fault()])).unwrap_err();
    assert_eq!(e.field, "api_listener.api_listener.http_filters");
}

#[test]
fn the_api_listener_must_hold_a_connection_manager() {
    let mut l = api_listener(rds(TARGET, ads()), vec![router()]);
    l.api_listener = Some(ApiListener {
        api_listener: Some(pack(&Router::default())),
    });
    let e = decode_listener(&l).unwrap_err();
    assert_eq!(e.field, "api_listener.api_listener");
    assert!(e.message.contains("HttpConnectionManager"), "{e}");
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(l) = Listener::decode(bytes.as_slice()) {
            let _ = decode_listener(&l);
        }
    }

    #[test]
    fn mutated_valid_listeners_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let hcm = HttpConnectionManager {
            http_filters: vec![fault(), router()],
            route_specifier: Some(RouteSpecifier::RouteConfig(rpb::RouteConfiguration {
                name: "inline".into(),
                virtual_hosts: vec![rpb::VirtualHost {
                    name: "vh".into(),
                    domains: vec!["*".into()],
                    routes: vec![rpb::Route {
                        r#match: Some(rpb::RouteMatch {
                            path_specifier: Some(PathSpecifier::Prefix("/".into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut bytes = hcm.encode_to_vec();
        for (at, x) in flips {
            let len = bytes.len();
            if let Some(b) = bytes.get_mut(at % len) {
                *b ^= x;
            }
        }
        let l = Listener {
            name: TARGET.into(),
            api_listener: Some(ApiListener {
                api_listener: Some(Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: bytes,
                }),
            }),
            ..Default::default()
        };
        let _ = decode_listener(&l);
    }
}
