//! Envoy resources shaped as istiod sends them to proxyless gRPC, built in Rust.

use std::net::SocketAddr;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{
                Address, AggregatedConfigSource, ConfigSource, Locality, SocketAddress, address,
                config_source, socket_address,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{ApiListener, Listener},
            route::v3::{
                self as rpb, route_action::ClusterSpecifier, route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::{Any, Duration as PbDuration, UInt32Value},
};
use prost::{Message, Name};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// An API listener for `name` whose routes come over RDS as `route_name`.
pub fn listener(name: &str, route_name: &str) -> Any {
    let hcm = HttpConnectionManager {
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(ConfigType::TypedConfig(pack(&Router::default()))),
            ..Default::default()
        }],
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        ..Default::default()
    };
    pack(&Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    })
}

/// A listener that is not an API listener: the client must reject it.
pub fn socket_listener(name: &str) -> Any {
    pack(&Listener {
        name: name.into(),
        ..Default::default()
    })
}

/// A RouteConfiguration `name` for `host` (any port) sending everything to the weighted
/// `clusters`.
pub fn route(name: &str, host: &str, clusters: &[(&str, u32)]) -> Any {
    let action = rpb::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(rpb::WeightedCluster {
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
    };
    pack(&rpb::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rpb::VirtualHost {
            name: host.into(),
            domains: vec![host.into(), format!("{host}:*")],
            routes: vec![rpb::Route {
                r#match: Some(rpb::RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(rpb::route::Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A RouteConfiguration the client must reject (a route without a match).
pub fn bad_route(name: &str) -> Any {
    pack(&rpb::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rpb::VirtualHost {
            name: "bad".into(),
            domains: vec!["*".into()],
            routes: vec![rpb::Route::default()],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// An EDS cluster (endpoints from the ClusterLoadAssignment of the same name).
pub fn cluster(name: &str) -> Any {
    pack(&eds_cluster(name, 1))
}

/// A cluster the client must reject: a negative connect timeout.
pub fn bad_cluster(name: &str) -> Any {
    pack(&eds_cluster(name, -1))
}

fn eds_cluster(name: &str, connect_timeout_secs: i64) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(PbDuration {
            seconds: connect_timeout_secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Endpoints the client must reject: a port above 65535.
pub fn bad_endpoints(name: &str) -> Any {
    let mut any = endpoints(name, &["127.0.0.1:1".parse().unwrap()]);
    let mut cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
    if let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
        &mut cla.endpoints[0].lb_endpoints[0].host_identifier
        && let Some(Address {
            address: Some(address::Address::SocketAddress(sa)),
        }) = &mut e.address
    {
        sa.port_specifier = Some(socket_address::PortSpecifier::PortValue(65_536));
    }
    any.value = cla.encode_to_vec();
    any
}

/// The endpoints of `name`, in one locality.
pub fn endpoints(name: &str, addrs: &[SocketAddr]) -> Any {
    pack(&ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                region: "local".into(),
                zone: "a".into(),
                sub_zone: String::new(),
            }),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            lb_endpoints: addrs
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(SocketAddress {
                                address: a.ip().to_string(),
                                port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                    u32::from(a.port()),
                                )),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

pub fn response(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: type_url.into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}
