//! The xDS client's metrics: updates accepted and rejected, and the configuration's age.
//!
//! They live with the client that updates them and need only the metrics registry crate
//! mesh-tower re-exports ([`mesh_tower::prometheus_client`]), so an application registers them
//! in the same registry as the mesh's own ([`mesh_tower::MeshMetrics`]).
//!
//! The age is the time since the ADS stream was last known healthy, not since the last change:
//! istiod sends nothing while nothing changes, so an idle, healthy mesh has age 0, and the age
//! grows only once the stream is lost (or the configuration came from a persisted file).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use mesh_tower::prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge},
    registry::Registry,
};

/// Counters the xDS client updates, and the age of its configuration. Register once with
/// [`XdsMetrics::register`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    accepted: Family<TypeUrl, Counter>,
    rejected: Family<TypeUrl, Counter>,
    freshness: Arc<Mutex<Freshness>>,
}

/// How fresh the configuration is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Freshness {
    /// No configuration yet: no age is reported.
    #[default]
    Unknown,
    /// The stream is open and has delivered an accepted update: age 0.
    Healthy,
    /// The configuration was last known fresh at this time (the stream broke then, or a
    /// persisted configuration was saved then).
    StaleSince(SystemTime),
}

/// The `type_url` label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TypeUrl(Arc<str>);

/// Reports `mesh_xds_config_age_seconds` at scrape time.
#[derive(Debug)]
struct AgeCollector {
    freshness: Arc<Mutex<Freshness>>,
}

// === impl XdsMetrics ===

impl XdsMetrics {
    /// New counters, at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `mesh_xds_updates_accepted_total`, `mesh_xds_updates_rejected_total` (by
    /// `type_url`) and `mesh_xds_config_age_seconds`: 0 while the stream is healthy, the time
    /// since it was last healthy otherwise, absent until there is a configuration.
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
            freshness: self.freshness.clone(),
        }));
    }

    /// Counts an accepted update of `type_url`: the stream is healthy.
    pub fn record_accepted(&self, type_url: &str) {
        self.accepted.get_or_create(&TypeUrl(type_url.into())).inc();
        self.record_stream_healthy();
    }

    /// The stream is open and known healthy (an accepted update on it): age 0 from now on.
    pub fn record_stream_healthy(&self) {
        *self.freshness() = Freshness::Healthy;
    }

    /// The healthy stream broke at `now`: the age counts from then. Nothing changes when the
    /// stream was not known healthy (the age keeps counting from the last time it was).
    pub fn record_stream_lost(&self, now: SystemTime) {
        let mut freshness = self.freshness();
        if *freshness == Freshness::Healthy {
            *freshness = Freshness::StaleSince(now);
        }
    }

    /// The configuration in use is one last known fresh at `since` (a persisted one, at a cold
    /// start without the control plane). Ignored once a stream is healthy.
    pub fn record_stale_since(&self, since: SystemTime) {
        let mut freshness = self.freshness();
        if *freshness != Freshness::Healthy {
            *freshness = Freshness::StaleSince(since);
        }
    }

    /// The configuration's age at `now`, as `mesh_xds_config_age_seconds` reports it: zero
    /// while the stream is healthy, `None` before any configuration.
    pub fn config_age(&self, now: SystemTime) -> Option<Duration> {
        self.freshness().age(now)
    }

    fn freshness(&self) -> std::sync::MutexGuard<'_, Freshness> {
        self.freshness.lock().unwrap_or_else(|p| p.into_inner())
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

impl Freshness {
    fn age(self, now: SystemTime) -> Option<Duration> {
        match self {
            Self::Unknown => None,
            Self::Healthy => Some(Duration::ZERO),
            Self::StaleSince(since) => Some(now.duration_since(since).unwrap_or_default()),
        }
    }
}

impl Collector for AgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let freshness = *self.freshness.lock().unwrap_or_else(|p| p.into_inner());
        let Some(age) = freshness.age(SystemTime::now()) else {
            return Ok(());
        };
        let gauge = ConstGauge::new(age.as_secs_f64());
        let metric = encoder.encode_descriptor(
            "mesh_xds_config_age_seconds",
            "Seconds since the xDS stream was last known healthy (0 while it is)",
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        mesh_tower::prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn age(registry: &Registry) -> Option<f64> {
        scrape(registry)
            .lines()
            .find_map(|l| l.strip_prefix("mesh_xds_config_age_seconds "))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn updates_are_counted_per_type() {
        let xds = XdsMetrics::new();
        let mut registry = Registry::default();
        xds.register(&mut registry);
        xds.record_rejected(CDS);
        xds.record_accepted(CDS);
        xds.record_accepted(CDS);
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
    }

    /// Issue 13 item 8: an idle, healthy mesh is not stale.
    #[test]
    fn the_age_is_zero_while_the_stream_is_healthy_and_counts_from_when_it_was_lost() {
        let xds = XdsMetrics::new();
        let mut registry = Registry::default();
        xds.register(&mut registry);
        assert_eq!(age(&registry), None, "no configuration yet");

        // Accepted long ago, and the stream is still open: fresh, however long ago.
        xds.record_accepted(CDS);
        assert_eq!(age(&registry), Some(0.0));

        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        xds.record_stream_lost(an_hour_ago);
        let stale = age(&registry).unwrap();
        assert!((3600.0..3700.0).contains(&stale), "{stale}");
        // A second loss (a reconnect that failed) does not reset the age.
        xds.record_stream_lost(SystemTime::now());
        assert!(age(&registry).unwrap() >= 3600.0);

        xds.record_stream_healthy();
        assert_eq!(age(&registry), Some(0.0));
        // A persisted configuration does not override a healthy stream.
        xds.record_stale_since(an_hour_ago);
        assert_eq!(age(&registry), Some(0.0));
    }

    #[test]
    fn a_persisted_configuration_is_as_old_as_its_file() {
        let xds = XdsMetrics::new();
        let mut registry = Registry::default();
        xds.register(&mut registry);
        xds.record_stale_since(SystemTime::now() - Duration::from_secs(600));
        let stale = age(&registry).unwrap();
        assert!((600.0..700.0).contains(&stale), "{stale}");
    }
}
