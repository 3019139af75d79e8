//! Micro-benchmarks of the pure decisions on the request path (route lookup, weighted pick) and
//! of applying a large configuration (`Mesh::publish` of 1,000 clusters / 10,000 endpoints).

// A benchmark with a broken fixture should stop loudly; it is test code, not library code.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use mesh_core::route::{WeightedCluster, WeightedClusters};

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    let headers = HeaderMap::new();
    for routes in [10usize, 1_000, 10_000] {
        let table = mesh_benches::prefix_route_table(routes).expect("valid table");
        // The worst case for first-match-wins: the last specific route.
        let path = mesh_benches::last_route_path(routes);
        let head = mesh_benches::route_head(&path, &headers);
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

fn config_publish(c: &mut Criterion) {
    use std::sync::Arc;

    use mesh_core::MeshConfig;
    use mesh_tower::Mesh;

    let yaml = mesh_benches::scale::yaml(1_000, 10, false);
    let config = Arc::new(mesh_benches::scale::load(&yaml).expect("valid config"));
    let moved = Arc::new(
        mesh_benches::scale::load(&mesh_benches::scale::yaml(1_000, 10, true)).expect("valid"),
    );
    let mut group = c.benchmark_group("config_publish_1000_clusters_10000_endpoints");
    group.sample_size(20);
    group.bench_function("into_empty_mesh", |b| {
        b.iter_with_large_drop(|| {
            let mesh = Mesh::new(MeshConfig::empty());
            mesh.publish(config.clone());
            mesh
        })
    });
    let mesh = Mesh::new(MeshConfig::empty());
    mesh.publish(config.clone());
    let mut flip = false;
    group.bench_function("one_endpoint_changed", |b| {
        b.iter(|| {
            flip = !flip;
            mesh.publish(if flip { moved.clone() } else { config.clone() })
        })
    });
    group.finish();
}

criterion_group!(benches, route_lookup, weighted_pick, config_publish);
criterion_main!(benches);
