//! A target's API `Listener` and its `RouteConfiguration`.
//!
//! The listener's connection manager names the route configuration over ADS (`rds`), as
//! istiod does for proxyless gRPC (`outbound|port||host`, see [`super::route_config_name`]),
//! rather than inlining it: a route change then pushes one RDS resource, not the listener.
//! Istiod's chain is always the fault filter then the router (its `supportedFilters`); with
//! [`Shape::MeshExtensions`] the fault filter is there only when a route of the table injects
//! faults (a client runs every filter of the chain on every call). The router is always
//! last, which gRPC requires.

use envoy_types::pb::envoy::{
    config::{
        core::v3::{AggregatedConfigSource, ApiVersion, ConfigSource, config_source},
        listener::v3::{ApiListener, Listener},
        route::v3::RouteConfiguration,
    },
    extensions::filters::{
        http::{fault::v3::HttpFault, router::v3::Router},
        network::http_connection_manager::v3::{
            HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
            http_filter::ConfigType,
        },
    },
};
use mesh_core::{Action, RouteTable};

use super::{Shape, any, route, route_config_name};
use crate::decode::filter::FAULT_FILTER;

/// The router filter's conventional name.
const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The listener of `target` and its routes.
pub(super) fn encode(
    target: &str,
    table: &RouteTable,
    shape: Shape,
) -> (Listener, RouteConfiguration) {
    let mut http_filters = Vec::with_capacity(2);
    if shape == Shape::Istiod || injects_faults(table) {
        http_filters.push(HttpFilter {
            name: FAULT_FILTER.to_string(),
            config_type: Some(ConfigType::TypedConfig(any(&HttpFault::default()))),
            ..HttpFilter::default()
        });
    }
    http_filters.push(HttpFilter {
        name: ROUTER_FILTER.to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    });
    let routes = route_config_name(target);
    let hcm = HttpConnectionManager {
        stat_prefix: target.to_string(),
        http_filters,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: routes.clone(),
        })),
        ..HttpConnectionManager::default()
    };
    let listener = Listener {
        name: target.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Listener::default()
    };
    (listener, route::encode(&routes, table))
}

/// "Over the ADS stream", as istiod writes it.
pub(super) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..ConfigSource::default()
    }
}

/// Whether any route or weighted cluster of `table` carries a fault policy.
fn injects_faults(table: &RouteTable) -> bool {
    table.virtual_hosts().iter().any(|vh| {
        vh.routes().iter().any(|r| {
            r.fault.is_some()
                || matches!(&r.action, Action::Forward(f)
                    if f.clusters.clusters().iter().any(|c| c.fault.is_some()))
        })
    })
}
