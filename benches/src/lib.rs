//! Benchmarks of the proxyless mesh: criterion micro-benchmarks (`benches/`) and, later, the load
//! comparison against plain tonic and a sidecar-proxy hop.
//!
//! The library part holds fixtures shared by the benchmarks.

#![forbid(unsafe_code)]

use std::sync::Arc;

use mesh_core::{
    Action,
    matcher::{PathMatch, PathMatcher},
    route::{Domain, Forward, Route, RouteMatcher, RouteTable, VirtualHost, WeightedClusters},
};

/// A route table with one virtual host of `routes` prefix routes `/svc<i>/`, the shape a large
/// gRPC service (one route per method) produces. The last route is the catch-all `/`.
pub fn prefix_route_table(routes: usize) -> Result<RouteTable, mesh_core::Error> {
    let mut list: Vec<Route> = (0..routes.saturating_sub(1))
        .map(|i| {
            let matcher = RouteMatcher {
                path: PathMatcher::new(PathMatch::Prefix(format!("/svc{i}/")), false),
                ..RouteMatcher::default()
            };
            Route::new(matcher, forward(&format!("cluster-{i}")))
        })
        .collect();
    list.push(Route::new(RouteMatcher::default(), forward("default")));
    let vh = VirtualHost::new(
        "bench",
        vec![Domain::parse("bench.default.svc.cluster.local")?],
        list,
    )?;
    RouteTable::new("bench", vec![vh])
}

fn forward(cluster: &str) -> Action {
    Action::Forward(Arc::new(Forward::to(WeightedClusters::single(cluster))))
}
