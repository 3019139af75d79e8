//! Benchmarks of the proxyless mesh: criterion micro-benchmarks (`benches/`) and the load
//! comparison against plain tonic and a sidecar-proxy hop (the `mesh-bench` tool; `benches/run`
//! runs everything and writes `benches/RESULTS.md`).
//!
//! - [`variant`]: what each variant's client and server are; [`baseline`]: the trace headers
//!   of `a-hdr` and the hand-made tower stack of `e`.
//! - [`cell`]: one variant under one load shape, measured by its own client process.
//! - [`compare`]: the interleaved comparison of all variants; [`nginx`]: the sidecar hops.
//! - [`tls`]: the TLS baseline of variant d (tonic over rustls) and the mesh's certificates
//!   for d-mtls.
//! - [`process`]: CPU time and memory per process from `/proc`.
//! - [`instr`]: instructions per call under callgrind, plain tonic against the mesh.
//! - [`scale`]: loading and applying 1,000 clusters / 10,000 endpoints; route lookup.
//! - [`report`]: `benches/RESULTS.md` and its SVG chart from the parts' JSON reports.
//!
//! The library also holds fixtures shared by the criterion benchmarks.

#![forbid(unsafe_code)]

pub mod baseline;
pub mod cell;
pub mod compare;
pub mod instr;
pub mod nginx;
pub mod process;
pub mod report;
pub mod scale;
pub mod tls;
pub mod variant;

use std::sync::Arc;

use http::{HeaderMap, Method};
use mesh_core::{
    Action,
    matcher::{PathMatch, PathMatcher},
    route::{
        Domain, Forward, RequestHead, Route, RouteMatcher, RouteTable, VirtualHost,
        WeightedClusters,
    },
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

/// The path that matches the last specific route of [`prefix_route_table`]`(routes)`: the worst
/// case of first-match-wins.
pub fn last_route_path(routes: usize) -> String {
    format!("/svc{}/Method", routes.saturating_sub(2))
}

/// A gRPC request head for `path` on the host of [`prefix_route_table`].
pub fn route_head<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestHead<'a> {
    RequestHead {
        method: &Method::POST,
        authority: "bench.default.svc.cluster.local:9080",
        path_and_query: path,
        headers,
        source: None,
    }
}

fn forward(cluster: &str) -> Action {
    Action::Forward(Arc::new(Forward::to(WeightedClusters::single(cluster))))
}
