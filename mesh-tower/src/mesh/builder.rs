//! [`MeshBuilder`]: everything a mesh is given once, before its first channel.

use std::{net::IpAddr, sync::Arc};

use mesh_core::{Labels, Locality, MeshConfig};

use super::Mesh;
use crate::{
    Discovery,
    access_log::AccessLog,
    endpoint::Connector,
    metrics::MeshMetrics,
    request_controls::RequestControls,
    tls::{CertificateFiles, TlsError},
    trace::Tracing,
};

/// Builds a [`Mesh`] with its set-once settings: the workload identity, tracing, metrics, the
/// access log, the `x-envoy-*` request controls, the discovery source and the local workload
/// (namespace, labels, locality, address). Start with [`Mesh::builder`].
///
/// Each setting left out has the default its `Mesh::set_*` setter documents, and can still be
/// given later through that setter, once (an xDS client sets what its bootstrap's node says
/// about the workload when it starts). The configuration is published once, after every
/// setting is in place, so it is narrowed for the local workload from the first request on.
///
/// # Example
///
/// ```no_run
/// use mesh_tower::{Mesh, mesh_core::{Labels, MeshConfig}, tls::CertificateFiles, trace::Tracing};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::builder()
///     .workload_identity(
///         CertificateFiles::identity("cert-chain.pem", "key.pem").with_trust_bundle("root-cert.pem"),
///     )
///     .tracing(Tracing::new())
///     .local_namespace("prod")
///     .local_labels(Labels::new([("app", "web")])?)
///     .build(MeshConfig::empty())?;
/// # let _ = mesh;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build`"]
pub struct MeshBuilder {
    identity: Option<CertificateFiles>,
    tracing: Option<Tracing>,
    metrics: Option<MeshMetrics>,
    access_log: Option<AccessLog>,
    request_controls: Option<RequestControls>,
    discovery: Option<Arc<dyn Discovery>>,
    namespace: Option<Arc<str>>,
    labels: Option<Labels>,
    locality: Option<Locality>,
    address: Option<IpAddr>,
    connector: Connector,
}

// === impl Mesh ===

impl Mesh {
    /// A builder for a mesh with its settings given up front; see [`MeshBuilder`].
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }
}

// === impl MeshBuilder ===

impl MeshBuilder {
    /// The workload's identity: its certificate chain and private key, and the mesh trust
    /// bundle, as PEM files; loaded by [`build`](Self::build). See
    /// [`Mesh::set_workload_identity`]. Default is none: ISTIO_MUTUAL clusters and mTLS servers
    /// fail until one is set.
    pub fn workload_identity(mut self, files: CertificateFiles) -> Self {
        self.identity = Some(files);
        self
    }

    /// Trace propagation and span recording of every channel; see [`Mesh::set_tracing`].
    /// Default propagates W3C + B3 headers and records no spans.
    pub fn tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    /// The metrics the client and server stacks record into; see [`Mesh::set_metrics`].
    /// Register them ([`MeshMetrics::register`]) and the mesh's
    /// [`MeshCollector`](crate::metrics::MeshCollector) in your registry, or leave this out and
    /// call [`MeshMetrics::install`] on the built mesh, which does all three. Default is none.
    pub fn metrics(mut self, metrics: MeshMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The access log of the client and server stacks; see [`Mesh::set_access_log`]. Default
    /// is none.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// The `x-envoy-*` request headers honoured; see [`Mesh::set_request_controls`]. Default
    /// is none.
    pub fn request_controls(mut self, controls: RequestControls) -> Self {
        self.request_controls = Some(controls);
        self
    }

    /// The resolver of `xds:///` targets; see [`Mesh::set_discovery`]. An xDS client sets
    /// itself when it starts, so this is for other sources. Default is none.
    pub fn discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The Kubernetes namespace of this workload; see [`Mesh::set_local_namespace`]. Default
    /// is `default`.
    pub fn local_namespace(mut self, namespace: impl Into<Arc<str>>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The pod labels of this workload; see [`Mesh::set_local_labels`]. Default is none.
    pub fn local_labels(mut self, labels: Labels) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Where this workload runs; see [`Mesh::set_local_locality`]. Default is none.
    pub fn local_locality(mut self, locality: Locality) -> Self {
        self.locality = Some(locality);
        self
    }

    /// The IP address of this workload; see [`Mesh::set_local_address`]. Default is none.
    pub fn local_address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }

    /// How the mesh opens its endpoint connections (TCP unless given); see
    /// [`Mesh::with_connector`].
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = connector;
        self
    }

    /// The mesh, serving `config` (`MeshConfig::empty()` for one an xDS client fills in).
    /// Fails when the workload identity's files do not load.
    pub fn build(self, config: MeshConfig) -> Result<Mesh, TlsError> {
        let mesh = Mesh::unpublished(self.connector);
        let inner = &mesh.inner;
        if let Some(files) = self.identity {
            inner.tls.set_workload_identity(files)?;
        }
        // The cells are fresh: each `set` succeeds.
        if let Some(tracing) = self.tracing {
            let _ = inner.tracing.set(tracing);
        }
        if let Some(metrics) = self.metrics {
            let _ = inner.metrics.set(metrics);
        }
        if let Some(log) = self.access_log {
            let _ = inner.access_log.set(log);
        }
        if let Some(controls) = self.request_controls {
            let _ = inner.request_controls.set(controls);
        }
        if let Some(discovery) = self.discovery {
            let _ = inner.discovery.set(discovery);
        }
        if let Some(namespace) = self.namespace {
            let _ = inner.local_namespace.set(namespace);
        }
        if let Some(labels) = self.labels {
            let _ = inner.local_labels.set(labels);
        }
        if let Some(locality) = self.locality {
            let _ = inner.local_locality.set(locality);
        }
        if let Some(address) = self.address {
            let _ = inner.local_address.set(address);
        }
        mesh.publish(Arc::new(config));
        Ok(mesh)
    }
}
