//! Configuration scale: what it costs to load and apply a large configuration (1,000 clusters
//! with 10,000 endpoints) and to look a route up among 1,000 routes.
//!
//! Times are wall-clock medians of a few repetitions in a fresh process. Memory is measured two
//! ways: the growth of this process's resident set (`VmRSS`), which includes allocator slack —
//! an upper bound — and the heap bytes held, counted by the bench binary's allocator (exact,
//! without slack).
//!
//! Two updates are timed beside the one-endpoint change: publishing a new version of one
//! cluster of 10,000 endpoints (every endpoint in a fresh list, 1 % of them moved) next to
//! 999 unchanged clusters, the shape of a large EDS update.

use std::{
    fmt::Write as _,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use http::HeaderMap;
use mesh_core::{MeshConfig, istio};
use mesh_tower::Mesh;
use serde::{Deserialize, Serialize};

use crate::process;

/// Copies kept alive to measure memory (the growth per copy over the second half is reported).
const MEMORY_SAMPLES: usize = 12;

/// What the scale run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Clusters in the configuration.
    pub clusters: usize,
    /// Endpoints over all clusters.
    pub endpoints: usize,
    /// Size of the Istio YAML, bytes.
    pub yaml_bytes: usize,
    /// Parsing and validating the YAML into a `MeshConfig`, milliseconds (median).
    pub load_ms: f64,
    /// `Mesh::publish` of the configuration into an empty mesh, milliseconds (median).
    pub first_publish_ms: f64,
    /// `Mesh::publish` of the same configuration again (every endpoint reused), ms (median).
    pub republish_ms: f64,
    /// `Mesh::publish` of a configuration with one endpoint moved, ms (median).
    pub one_change_publish_ms: f64,
    /// Resident memory per parsed `MeshConfig` held, KiB (growth per copy kept alive).
    pub config_rss_kib: u64,
    /// Resident memory growth per mesh it is published into (per-cluster and per-endpoint
    /// runtime state), KiB (growth per copy kept alive).
    pub publish_rss_kib: u64,
    /// Route lookups: routes in the table → nanoseconds per lookup of the last route (the
    /// worst case of first-match-wins).
    pub route_lookup_ns: Vec<(usize, f64)>,
    /// Heap held by one parsed `MeshConfig`, KiB (counting allocator).
    #[serde(default)]
    pub config_heap_kib: u64,
    /// Heap held by a mesh with the configuration published over an empty mesh (the runtime
    /// state; the configuration itself is shared), KiB (counting allocator).
    #[serde(default)]
    pub publish_heap_kib: u64,
    /// `Mesh::publish` of a new version of one cluster of 10,000 endpoints (1 % moved) beside
    /// 999 unchanged clusters, ms (median).
    #[serde(default)]
    pub eds_10k_publish_ms: f64,
    /// Like `publish_heap_kib`, every cluster without outlier detection.
    #[serde(default)]
    pub publish_heap_kib_without_outlier: u64,
    /// Like `publish_heap_kib`, every cluster without endpoints.
    #[serde(default)]
    pub publish_heap_kib_without_endpoints: u64,
}

/// Heap bytes in use now, from the bench binary's counting allocator (0 without one).
pub type HeapMeter<'a> = &'a dyn Fn() -> u64;

/// An error of the scale run.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The generated configuration was rejected.
    #[error("generated configuration rejected: {0}")]
    Config(String),
    /// A route table could not be built.
    #[error("route table: {0}")]
    Routes(#[from] mesh_core::Error),
    /// `/proc` could not be read.
    #[error(transparent)]
    Proc(#[from] process::ProcError),
}

/// Istio YAML with `clusters` services, each a ServiceEntry of `endpoints_per_cluster` static
/// endpoints and a DestinationRule with a circuit breaker and outlier detection. `moved` shifts
/// the first endpoint's address, for a one-change update.
pub fn yaml(clusters: usize, endpoints_per_cluster: usize, moved: bool) -> String {
    let mut y = String::with_capacity(clusters * (600 + 70 * endpoints_per_cluster));
    for i in 0..clusters {
        let host = format!("svc{i}.bench.svc.cluster.local");
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: bench}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: grpc, protocol: GRPC}}]
  endpoints:
"
        );
        for j in 0..endpoints_per_cluster {
            let last = if moved && i == 0 && j == 0 {
                250
            } else {
                j % 250 + 1
            };
            let _ = writeln!(
                y,
                "  - {{address: 10.{}.{}.{last}, labels: {{version: v{}}}}}",
                i / 256 % 256,
                i % 256,
                j % 2 + 1
            );
        }
        let _ = write!(
            y,
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: bench}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool: {{http: {{http2MaxRequests: 1000, maxRetries: 10}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
---
"
        );
    }
    y
}

/// Loads `text` into a configuration.
pub fn load(text: &str) -> Result<MeshConfig, ScaleError> {
    istio::load_str("scale.yaml", text)
        .map(|l| l.config)
        .map_err(|e| ScaleError::Config(e.to_string()))
}

/// Runs the scale measurements: loading and first publishes are timed on the memory samples,
/// re-publishes `repeat` times each.
pub fn run(
    clusters: usize,
    endpoints_per_cluster: usize,
    repeat: usize,
    heap: HeapMeter<'_>,
) -> Result<ScaleReport, ScaleError> {
    let repeat = repeat.max(1);
    let me = std::process::id();
    let text = yaml(clusters, endpoints_per_cluster, false);
    let moved_text = yaml(clusters, endpoints_per_cluster, true);

    // Memory: keep copies alive and take the growth per copy over the second half only, so
    // memory freed earlier (parse temporaries) and reused by the first copies does not hide
    // their size.
    let mut load_times = Vec::new();
    let mut configs = Vec::new();
    let mut rss_after_configs = Vec::new();
    for _ in 0..MEMORY_SAMPLES {
        let started = Instant::now();
        configs.push(Arc::new(load(&text)?));
        load_times.push(started.elapsed());
        rss_after_configs.push(process::memory(me)?.rss_kib);
    }
    let config = configs[0].clone();
    let moved = Arc::new(load(&moved_text)?);
    let endpoints = config.clusters().values().map(|c| c.endpoints.len()).sum();

    let mut first = Vec::new();
    let mut meshes = Vec::new();
    let mut rss_after_meshes = Vec::new();
    for _ in 0..MEMORY_SAMPLES {
        let mesh = Mesh::new(MeshConfig::empty());
        let started = Instant::now();
        mesh.publish(config.clone());
        first.push(started.elapsed());
        rss_after_meshes.push(process::memory(me)?.rss_kib);
        meshes.push(mesh);
    }
    let mesh = meshes.swap_remove(0);
    drop((meshes, configs));
    let timed = |config: &Arc<MeshConfig>| {
        (0..repeat)
            .map(|_| {
                let started = Instant::now();
                mesh.publish(config.clone());
                started.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let republish = timed(&config);
    let one_change: Vec<Duration> = (0..repeat)
        .flat_map(|_| {
            // Alternate so every timed publish is a real one-endpoint change.
            let t = timed(&moved);
            mesh.publish(config.clone());
            t.into_iter().take(1)
        })
        .collect();

    drop(mesh);

    // Heap held: one parsed config, then the runtime state of one mesh it is published into.
    let empty = Mesh::new(MeshConfig::empty());
    let before = heap();
    let held = Arc::new(load(&text)?);
    let parsed = heap();
    let loaded = Mesh::new(MeshConfig::empty());
    loaded.publish(held.clone());
    let published = heap();
    let config_heap_kib = parsed.saturating_sub(before) / 1024;
    let publish_heap_kib = published.saturating_sub(parsed) / 1024;
    drop((loaded, held, empty));
    // Where the runtime state goes: the same clusters without outlier detection, and without
    // endpoints (what every cluster costs whatever its size).
    let publish_heap_kib_without_outlier =
        runtime_heap(heap, &reshaped(&config, |c| c.outlier = None)?) / 1024;
    let publish_heap_kib_without_endpoints =
        runtime_heap(heap, &reshaped(&config, |c| c.endpoints = Arc::from([]))?) / 1024;

    let eds_10k_publish_ms = eds_update(&config, 10_000, repeat)?;

    let mut route_lookup_ns = Vec::new();
    for routes in [10usize, 1_000, 10_000] {
        route_lookup_ns.push((routes, route_lookup(routes)?));
    }

    Ok(ScaleReport {
        clusters: config.clusters().len(),
        endpoints,
        yaml_bytes: text.len(),
        load_ms: median_ms(load_times),
        first_publish_ms: median_ms(first),
        republish_ms: median_ms(republish),
        one_change_publish_ms: median_ms(one_change),
        config_rss_kib: growth_per_copy(&rss_after_configs),
        publish_rss_kib: growth_per_copy(&rss_after_meshes),
        route_lookup_ns,
        config_heap_kib,
        publish_heap_kib,
        publish_heap_kib_without_outlier,
        publish_heap_kib_without_endpoints,
        eds_10k_publish_ms,
    })
}

/// `config` with `change` made to every cluster.
fn reshaped(
    config: &MeshConfig,
    change: impl Fn(&mut mesh_core::Cluster),
) -> Result<Arc<MeshConfig>, ScaleError> {
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, c)| {
            let mut c = (**c).clone();
            change(&mut c);
            (name.clone(), Arc::new(c))
        })
        .collect();
    let server = mesh_core::ServerPolicy::default();
    MeshConfig::new("reshaped", config.listeners().clone(), clusters, server)
        .map(Arc::new)
        .map_err(|e| ScaleError::Config(e.to_string()))
}

/// Heap bytes a mesh with `config` published holds over an empty mesh.
fn runtime_heap(heap: HeapMeter<'_>, config: &Arc<MeshConfig>) -> u64 {
    let before = heap();
    let mesh = Mesh::new(MeshConfig::empty());
    mesh.publish(config.clone());
    let held = heap().saturating_sub(before);
    drop(mesh);
    held
}

/// Median ms of `Mesh::publish` of a new version of one cluster of `endpoints` endpoints (in a
/// fresh list, 1 % of them moved) beside `config`'s other clusters, unchanged.
fn eds_update(config: &MeshConfig, endpoints: usize, repeat: usize) -> Result<f64, ScaleError> {
    let Some((name, first)) = config.clusters().iter().next() else {
        return Ok(0.0);
    };
    let version = |moved: usize| -> Result<Arc<MeshConfig>, ScaleError> {
        let list: Vec<mesh_core::Endpoint> = (0..endpoints)
            .map(|j| {
                // 1 % of the endpoints move by `moved` addresses each version.
                let k = if j % 100 == 0 {
                    j + moved * endpoints
                } else {
                    j
                };
                let ip = std::net::Ipv4Addr::from(0x0a80_0000 + u32::try_from(k).unwrap_or(0));
                let address = std::net::SocketAddr::from((ip, 8080));
                mesh_core::Endpoint::new(mesh_core::EndpointAddress::Socket(address))
            })
            .collect();
        let mut cluster = (**first).clone();
        cluster.endpoints = list.into();
        let mut clusters = config.clusters().clone();
        clusters.insert(name.clone(), Arc::new(cluster));
        let listeners = config.listeners().clone();
        let server = mesh_core::ServerPolicy::default();
        MeshConfig::new(format!("eds-{moved}"), listeners, clusters, server)
            .map(Arc::new)
            .map_err(|e| ScaleError::Config(e.to_string()))
    };
    let mesh = Mesh::new(MeshConfig::empty());
    mesh.publish(version(0)?);
    let mut times = Vec::new();
    for moved in 1..=repeat.max(1) {
        let next = version(moved)?;
        let started = Instant::now();
        mesh.publish(next);
        times.push(started.elapsed());
    }
    Ok(median_ms(times))
}

/// Nanoseconds per lookup of the last specific route in a table of `routes` prefix routes.
fn route_lookup(routes: usize) -> Result<f64, ScaleError> {
    let table = crate::prefix_route_table(routes)?;
    let headers = HeaderMap::new();
    let path = crate::last_route_path(routes);
    let head = crate::route_head(&path, &headers);
    // About 0.2 s per table whatever its size: calibrate on a short run first.
    let mut n = 100u64;
    loop {
        let started = Instant::now();
        for _ in 0..n {
            black_box(table.find(black_box(&head)).map(|m| m.route_index));
        }
        let took = started.elapsed();
        if took > Duration::from_millis(200) || n >= 1 << 30 {
            return Ok(took.as_nanos() as f64 / n as f64);
        }
        n *= 4;
    }
}

/// RSS growth per copy over the second half of the samples.
fn growth_per_copy(rss_after_each: &[u64]) -> u64 {
    let half = rss_after_each.len() / 2;
    match (rss_after_each.get(half), rss_after_each.last()) {
        (Some(mid), Some(last)) if rss_after_each.len() > half + 1 => {
            last.saturating_sub(*mid) / (rss_after_each.len() - 1 - half) as u64
        }
        _ => 0,
    }
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_configuration_has_the_asked_size() {
        let config = load(&yaml(20, 10, false)).unwrap();
        assert_eq!(config.clusters().len(), 20);
        let endpoints: usize = config.clusters().values().map(|c| c.endpoints.len()).sum();
        assert_eq!(endpoints, 200);
        let moved = load(&yaml(20, 10, true)).unwrap();
        assert_ne!(config.clusters(), moved.clusters());
    }
}
