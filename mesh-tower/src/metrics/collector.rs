//! The mesh's internal state per cluster, reported at scrape time, and the metrics installed in
//! a mesh with their collector.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::MeshMetrics;
use crate::{Mesh, server::Workload};

/// Reports the mesh's internal state per cluster at scrape time; see the [module docs](crate::metrics).
#[derive(Debug)]
pub struct MeshCollector {
    mesh: Mesh,
}

// === impl MeshMetrics ===

impl MeshMetrics {
    /// Creates the metrics for `local`, registers them and the [`MeshCollector`] of `mesh` in
    /// `registry`, and installs them in `mesh`. Returns `None` when `mesh` already had metrics.
    pub fn install(mesh: &Mesh, registry: &mut Registry, local: &Workload) -> Option<Self> {
        let metrics = Self::new(local);
        if mesh.set_metrics(metrics.clone()).is_err() {
            return None;
        }
        metrics.register(registry);
        registry.register_collector(Box::new(MeshCollector::new(mesh.clone())));
        Some(metrics)
    }
}

// === impl MeshCollector ===

impl MeshCollector {
    /// Reports `mesh`'s clusters.
    pub fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }
}

impl Collector for MeshCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.mesh.snapshot();
        let mut clusters: Vec<_> = snapshot.clusters.iter().collect();
        clusters.sort_by(|a, b| a.0.cmp(b.0));
        let stats: Vec<_> = clusters
            .iter()
            .map(|(name, entry)| ([("cluster_name", name.to_string())], entry.stats()))
            .collect();

        type Read = fn(&crate::cluster::ClusterStats) -> u64;
        let counters: [(&str, &str, Read); 5] = [
            (
                "mesh_cluster_upstream_rq_overflow",
                "Requests rejected by the cluster's circuit breakers",
                |s| s.overflows,
            ),
            (
                "mesh_cluster_upstream_cx_overflow",
                "New connections that found the cluster at its max_connections threshold",
                |s| s.connection_overflows,
            ),
            (
                "mesh_cluster_upstream_rq_retry",
                "Retries sent to the cluster",
                |s| s.retries,
            ),
            (
                "mesh_cluster_outlier_detection_ejections",
                "Endpoints ejected by outlier detection",
                |s| s.ejections,
            ),
            (
                "mesh_cluster_outlier_detection_outcomes_dropped",
                "Response outcomes outlier detection dropped because its queue was full",
                |s| s.outcomes_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, s) in &stats {
                ConstCounter::new(value(s)).encode(metric.encode_family(labels)?)?;
            }
        }
        let gauges: [(&str, &str, Read); 4] = [
            (
                "mesh_cluster_upstream_rq_active",
                "Requests in flight to the cluster",
                |s| s.active_requests,
            ),
            (
                "mesh_cluster_upstream_cx_active",
                "Connections open to the cluster, draining ones included",
                |s| s.open_connections,
            ),
            ("mesh_cluster_endpoints", "Endpoints of the cluster", |s| {
                s.endpoints
            }),
            (
                "mesh_cluster_outlier_detection_ejections_active",
                "Endpoints currently ejected by outlier detection",
                |s| s.ejected,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, s) in &stats {
                let v = i64::try_from(value(s)).unwrap_or(i64::MAX);
                ConstGauge::new(v).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
