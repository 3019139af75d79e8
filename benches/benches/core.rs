//! Micro-benchmarks of the pure decisions on the request path: route lookup and weighted pick.

// A benchmark with a broken fixture should stop loudly; it is test code, not library code.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use mesh_core::route::{RequestHead, WeightedCluster, WeightedClusters};

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    let headers = HeaderMap::new();
    for routes in [10usize, 1_000, 10_000] {
        let table = mesh_benches::prefix_route_table(routes).expect("valid table");
        // The worst case for first-match-wins: the last specific route.
        let path = format!("/svc{}/Method", routes.saturating_sub(2));
        let head = RequestHead {
            method: &Method::POST,
            authority: "bench.default.svc.cluster.local:9080",
            path_and_query: &path,
            headers: &headers,
        };
        group.bench_with_input(BenchmarkId::from_parameter(routes), &head, |b, head| {
            b.iter(|| black_box(table.find(black_box(head)).map(|m| m.route_index)))
        });
    }
    group.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("v1", 80),
        WeightedCluster::new("v2", 15),
        WeightedCluster::new("v3", 5),
    ])
    .expect("valid weights");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("weighted_pick", |b| {
        b.iter(|| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(split.pick(x).weight)
        })
    });
}

criterion_group!(benches, route_lookup, weighted_pick);
criterion_main!(benches);
