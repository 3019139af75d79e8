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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn updates_are_counted_per_type_and_the_config_age_appears_once_one_is_accepted() {
        let xds = XdsMetrics::new();
        let mut registry = Registry::default();
        xds.register(&mut registry);
        assert!(!scrape(&registry).contains("mesh_xds_config_age_seconds"));

        xds.record_rejected(CDS);
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        xds.record_accepted(CDS, an_hour_ago);
        xds.record_accepted(CDS, an_hour_ago);
        assert_eq!((xds.accepted(CDS), xds.rejected(CDS)), (2, 1));

        let text = scrape(&registry);
        assert!(
            text.contains(&format!(
                "mesh_xds_updates_accepted_total{{type_url=\"{CDS}\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "mesh_xds_updates_rejected_total{{type_url=\"{CDS}\"}} 1\n"
            )),
            "{text}"
        );
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("mesh_xds_config_age_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((3600.0..3700.0).contains(&age), "{age}");
    }
}
