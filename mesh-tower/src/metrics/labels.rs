//! Istio's label sets, built once per peer and shared by every series of that peer.

use std::{hash::Hash, sync::Arc};

use mesh_core::GrpcCode;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::{ResponseFlags, server::Workload};

const UNKNOWN: &str = "unknown";

/// The workload-side labels of one end of a request (`*_workload`, `*_workload_namespace`,
/// `*_principal`, `*_app`, `*_version`, `*_canonical_service`, `*_canonical_revision`,
/// `*_cluster`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerLabels {
    workload: Arc<str>,
    namespace: Arc<str>,
    principal: Arc<str>,
    app: Arc<str>,
    version: Arc<str>,
    canonical_service: Arc<str>,
    canonical_revision: Arc<str>,
    cluster: Arc<str>,
}

/// The `destination_service*` labels.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ServiceLabels {
    service: Arc<str>,
    name: Arc<str>,
    namespace: Arc<str>,
}

/// Who reported a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reporter {
    /// The client (`reporter="source"`).
    Source,
    /// The server (`reporter="destination"`).
    Destination,
}

/// `connection_security_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SecurityPolicy {
    /// `mutual_tls`.
    MutualTls,
    /// `none`: plaintext.
    None,
    /// `unknown`.
    Unknown,
}

/// The labels of one series of the standard metrics.
///
/// The shared parts are interned (equal labels share one `Arc`), so comparing and hashing them
/// by address is exact and costs nothing per request.
#[derive(Clone, Debug)]
pub(crate) struct RequestLabels {
    pub(crate) reporter: Reporter,
    pub(crate) source: Arc<PeerLabels>,
    pub(crate) destination: Arc<PeerLabels>,
    pub(crate) service: Arc<ServiceLabels>,
    pub(crate) grpc: bool,
    pub(crate) response_code: u16,
    pub(crate) grpc_status: Option<GrpcCode>,
    pub(crate) flags: Option<ResponseFlags>,
    pub(crate) security: SecurityPolicy,
}

/// `policy` label of the authorization counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PolicyLabels {
    pub(crate) policy: Arc<str>,
}

// === impl PeerLabels ===

impl PeerLabels {
    pub(crate) fn of_workload(w: &Workload) -> Self {
        Self {
            workload: w.name.clone(),
            namespace: w.namespace.clone(),
            principal: w
                .principal
                .as_deref()
                .map_or_else(|| UNKNOWN.into(), |p| format!("spiffe://{p}").into()),
            app: w.app().into(),
            version: w.version().into(),
            canonical_service: w.canonical_service().into(),
            canonical_revision: w.canonical_revision().into(),
            cluster: w.cluster.clone(),
        }
    }

    /// A caller known only by its principal (`cluster.local/ns/<ns>/sa/<sa>`).
    pub(crate) fn of_principal(principal: Option<&str>) -> Self {
        let namespace = principal
            .and_then(|p| {
                let mut parts = p.split('/');
                parts.find(|s| *s == "ns")?;
                parts.next()
            })
            .unwrap_or(UNKNOWN);
        Self {
            workload: UNKNOWN.into(),
            namespace: namespace.into(),
            principal: principal.map_or_else(|| UNKNOWN.into(), |p| format!("spiffe://{p}").into()),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
        }
    }
}

/// The destination labels of an Istio cluster name (`outbound|9080|v2|reviews.default.svc...`,
/// or a bare `host:port`).
pub(crate) fn of_cluster(cluster: &str) -> (PeerLabels, ServiceLabels) {
    let (subset, host) = match cluster.strip_prefix("outbound|") {
        Some(rest) => {
            let mut parts = rest.splitn(3, '|');
            let _port = parts.next();
            let subset = parts.next().unwrap_or("");
            (subset, parts.next().unwrap_or(cluster))
        }
        None => ("", cluster.rsplit_once(':').map_or(cluster, |(h, _)| h)),
    };
    let service = ServiceLabels::of_host(host);
    // Without Envoy's metadata exchange the client does not learn the destination workload's
    // labels: its canonical service is unknown, and its revision is what `version` is, the
    // subset the route chose.
    let version: Arc<str> = if subset.is_empty() { UNKNOWN } else { subset }.into();
    let peer = PeerLabels {
        workload: UNKNOWN.into(),
        namespace: service.namespace.clone(),
        principal: UNKNOWN.into(),
        app: UNKNOWN.into(),
        version: version.clone(),
        canonical_service: UNKNOWN.into(),
        canonical_revision: version,
        cluster: UNKNOWN.into(),
    };
    (peer, service)
}

// === impl ServiceLabels ===

impl ServiceLabels {
    /// `reviews.default.svc.cluster.local` → service name `reviews`, namespace `default`. A
    /// host outside Kubernetes' `<name>.<namespace>.svc` form has namespace `unknown`.
    pub(crate) fn of_host(host: &str) -> Self {
        let mut labels = host.split('.');
        let name = labels.next().unwrap_or(host);
        let namespace = match (labels.next(), labels.next()) {
            (Some(ns), Some("svc")) => ns,
            _ => UNKNOWN,
        };
        Self {
            service: host.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

// === impl RequestLabels ===

impl PartialEq for RequestLabels {
    fn eq(&self, other: &Self) -> bool {
        self.reporter == other.reporter
            && Arc::ptr_eq(&self.source, &other.source)
            && Arc::ptr_eq(&self.destination, &other.destination)
            && Arc::ptr_eq(&self.service, &other.service)
            && self.grpc == other.grpc
            && self.response_code == other.response_code
            && self.grpc_status == other.grpc_status
            && self.flags == other.flags
            && self.security == other.security
    }
}

impl Eq for RequestLabels {}

impl Hash for RequestLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.reporter.hash(state);
        Arc::as_ptr(&self.source).hash(state);
        Arc::as_ptr(&self.destination).hash(state);
        Arc::as_ptr(&self.service).hash(state);
        self.grpc.hash(state);
        self.response_code.hash(state);
        self.grpc_status.hash(state);
        self.flags.hash(state);
        self.security.hash(state);
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let reporter = match self.reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        };
        let (s, d, svc) = (&*self.source, &*self.destination, &*self.service);
        let strings: [(&str, &str); 22] = [
            ("reporter", reporter),
            ("source_workload", &s.workload),
            ("source_canonical_service", &s.canonical_service),
            ("source_canonical_revision", &s.canonical_revision),
            ("source_workload_namespace", &s.namespace),
            ("source_principal", &s.principal),
            ("source_app", &s.app),
            ("source_version", &s.version),
            ("source_cluster", &s.cluster),
            ("destination_workload", &d.workload),
            ("destination_canonical_service", &d.canonical_service),
            ("destination_canonical_revision", &d.canonical_revision),
            ("destination_workload_namespace", &d.namespace),
            ("destination_principal", &d.principal),
            ("destination_app", &d.app),
            ("destination_version", &d.version),
            ("destination_service", &svc.service),
            ("destination_service_name", &svc.name),
            ("destination_service_namespace", &svc.namespace),
            ("destination_cluster", &d.cluster),
            ("request_protocol", if self.grpc { "grpc" } else { "http" }),
            (
                "response_flags",
                self.flags.map_or("-", ResponseFlags::short_code),
            ),
        ];
        for label in strings {
            label.encode(encoder.encode_label())?;
        }
        ("response_code", self.response_code).encode(encoder.encode_label())?;
        let grpc_status = self.grpc_status.map_or("", GrpcCode::as_header_str);
        ("grpc_response_status", grpc_status).encode(encoder.encode_label())?;
        let security = match self.security {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
            SecurityPolicy::Unknown => "unknown",
        };
        ("connection_security_policy", security).encode(encoder.encode_label())?;
        Ok(())
    }
}

impl EncodeLabelSet for PolicyLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("policy", &*self.policy).encode(encoder.encode_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_come_from_istio_cluster_names() {
        let (peer, service) = of_cluster("outbound|9080|v2|reviews.bookinfo.svc.cluster.local");
        assert_eq!(&*service.service, "reviews.bookinfo.svc.cluster.local");
        assert_eq!(&*service.name, "reviews");
        assert_eq!(&*service.namespace, "bookinfo");
        assert_eq!(&*peer.version, "v2");
        assert_eq!(&*peer.namespace, "bookinfo");
        let (peer, service) = of_cluster("outbound|443||api.example.com");
        assert_eq!(
            (&*service.name, &*service.namespace, &*peer.version),
            ("api", UNKNOWN, UNKNOWN)
        );
        let (_, service) = of_cluster("echo:50051");
        assert_eq!(&*service.service, "echo");
    }

    #[test]
    fn a_principal_gives_the_source_namespace() {
        let p = PeerLabels::of_principal(Some("cluster.local/ns/prod/sa/frontend"));
        assert_eq!(&*p.namespace, "prod");
        assert_eq!(&*p.principal, "spiffe://cluster.local/ns/prod/sa/frontend");
        let none = PeerLabels::of_principal(None);
        assert_eq!((&*none.namespace, &*none.principal), (UNKNOWN, UNKNOWN));
        let odd = PeerLabels::of_principal(Some("example.org/workload"));
        assert_eq!(&*odd.namespace, UNKNOWN);
    }
}
