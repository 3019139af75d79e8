//! Hooks for the xDS client: updates accepted and rejected, and the configuration's age.

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge},
    registry::Registry,
};

/// Counters the xDS client updates, and the age of the last accepted configuration. Register
/// once with [`XdsMetrics::register`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    accepted: Family<TypeUrl, Counter>,
    rejected: Family<TypeUrl, Counter>,
    last_accepted: Arc<Mutex<Option<SystemTime>>>,
}

/// The `type_url` label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TypeUrl(Arc<str>);

/// Reports `mesh_xds_config_age_seconds` at scrape time.
#[derive(Debug)]
struct AgeCollector {
    last_accepted: Arc<Mutex<Option<SystemTime>>>,
}

// === impl XdsMetrics ===

impl XdsMetrics {
    /// New counters, at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `mesh_xds_updates_accepted_total`, `mesh_xds_updates_rejected_total` (by
    /// `type_url`) and `mesh_xds_config_age_seconds` (absent until an update is accepted).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mesh_xds_updates_accepted",
            "xDS responses accepted (ACKed), by resource type",
            self.accepted.clone(),
        );
        registry.register(
            "mesh_xds_updates_rejected",
            "xDS responses rejected (NACKed), by resource type",
            self.rejected.clone(),
        );
        registry.register_collector(Box::new(AgeCollector {
            last_accepted: self.last_accepted.clone(),
        }));
    }

    /// Counts an accepted update of `type_url` at `now`.
    pub fn record_accepted(&self, type_url: &str, now: SystemTime) {
        self.accepted.get_or_create(&TypeUrl(type_url.into())).inc();
        *self.last_accepted.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// Counts a rejected update of `type_url`.
    pub fn record_rejected(&self, type_url: &str) {
        self.rejected.get_or_create(&TypeUrl(type_url.into())).inc();
    }

    /// Accepted updates of `type_url` so far.
    pub fn accepted(&self, type_url: &str) -> u64 {
        self.accepted.get_or_create(&TypeUrl(type_url.into())).get()
    }

    /// Rejected updates of `type_url` so far.
    pub fn rejected(&self, type_url: &str) -> u64 {
        self.rejected.get_or_create(&TypeUrl(type_url.into())).get()
    }
}

impl EncodeLabelSet for TypeUrl {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("type_url", &*self.0).encode(encoder.encode_label())
    }
}

impl Collector for AgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let last = *self.last_accepted.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = last else {
            return Ok(());
        };
        let age = SystemTime::now()
            .duration_since(last)
            .unwrap_or_default()
            .as_secs_f64();
        let gauge = ConstGauge::new(age);
        let metric = encoder.encode_descriptor(
            "mesh_xds_config_age_seconds",
            "Seconds since the last accepted xDS update",
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(metric)
    }
}
