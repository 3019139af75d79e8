//! The mesh's settings: what it is given once (identity, discovery, the local workload,
//! tracing, request controls, metrics, the access log) and how the stacks read them. See the
//! parent module's "Settings".

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock, Weak, atomic::AtomicU32},
};

use mesh_core::{
    DEFAULT_ROOT_NAMESPACE, InboundState, Labels, Locality, MeshConfig, MtlsMode, Workload,
    mtls_mode,
};

use super::{AlreadySet, Inner, Mesh};
use crate::{
    Discovery,
    access_log::AccessLog,
    endpoint::Connector,
    metrics::MeshMetrics,
    request_controls::{self, RequestControls},
    tls::{Admission, CertificateFiles, MeshTls, ServerTls, TlsError},
    trace::{self, Tracing},
};

impl Mesh {
    /// Makes `discovery` the resolver of `xds:///` targets. Only the first call takes effect; a
    /// later one is an [`AlreadySet`] error handing `discovery` back.
    #[must_use = "a discovery source set already is kept and this one returned"]
    pub fn set_discovery(
        &self,
        discovery: Arc<dyn Discovery>,
    ) -> Result<(), AlreadySet<Arc<dyn Discovery>>> {
        self.inner
            .discovery
            .set(discovery)
            .map_err(|d| AlreadySet::new("discovery source", d))
    }

    /// Sets the workload's identity: its certificate chain and private key, and the mesh trust
    /// bundle, as PEM files (`CertificateFiles::identity(chain, key).with_trust_bundle(ca)`).
    /// ISTIO_MUTUAL clusters present it and verify servers with the bundle; mTLS servers
    /// ([`Mesh::server_tls`], [`MeshTls::server`]) present it and verify clients with it. The files are loaded now
    /// (an error keeps the previous identity) and polled for rotation. Connections made from
    /// now on use it; open connections keep theirs.
    pub fn set_workload_identity(&self, files: CertificateFiles) -> Result<(), TlsError> {
        self.inner.tls.set_workload_identity(files)
    }

    /// How the mesh opens endpoint connections.
    pub(crate) fn connector(&self) -> &Connector {
        &self.inner.connector
    }

    /// The mesh's TLS context: the workload identity, the certificate-provider registry the
    /// xDS bootstrap fills (`mesh.tls().certificate_providers().register(..)`), and server-side
    /// acceptors.
    pub fn tls(&self) -> &MeshTls {
        &self.inner.tls
    }

    /// The server side of this workload's `port`, in the mTLS mode the PeerAuthentication
    /// policies of the served configuration give it ([`mtls_mode`] with the workload's
    /// `namespace` and `labels`, root namespace `istio-system`) — or, when an xDS client serves
    /// the port ([`MeshConfig::inbound`]), the mode of its inbound listener's filter chain,
    /// per connection: the chain the listener gives the connection's addresses; while the port
    /// has no listener, connections are closed unanswered) — kept current: every publish re-resolves the mode for new
    /// connections, and a change to STRICT drains open connections without a verified client
    /// certificate (see [`ServerTls`]). Presents the workload identity and verifies
    /// clients with its trust bundle, so one must be set
    /// ([`set_workload_identity`](Self::set_workload_identity)) even while the mode is
    /// PERMISSIVE or DISABLE: a later STRICT must never find the server without material.
    /// Fails outside a tokio runtime (the mode is followed by a task).
    pub fn server_tls(
        &self,
        namespace: impl Into<Arc<str>>,
        labels: Labels,
        port: u16,
    ) -> Result<ServerTls, TlsError> {
        let namespace = namespace.into();
        let resolve = move |config: &MeshConfig| match config.inbound().get(port) {
            None => Admission::Mode(mtls_mode(
                &config.server().peer_authentication,
                &namespace,
                &labels,
                port,
                DEFAULT_ROOT_NAMESPACE,
            )),
            Some(InboundState::Serving(listener)) => Admission::Chains(listener.clone()),
            // Until the inbound listener arrives, connections are closed unanswered (A36).
            Some(InboundState::NotServing(_)) => Admission::NotServing,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TlsError::policy("Mesh::server_tls must be called inside a tokio runtime")
        })?;
        // Built with material even for DISABLE: a later STRICT must not find it without any.
        let identity = self
            .inner
            .tls
            .workload_identity()
            .ok_or(TlsError::NoWorkloadIdentity)?;
        // Subscribed before the first resolution, so no publish in between goes unseen.
        let mut published = self.published();
        let server = ServerTls::new(MtlsMode::Strict, identity)?;
        // Cannot fail: the server was built with material.
        server.set_admission(resolve(&self.config()))?;
        let mesh: Weak<Inner> = Arc::downgrade(&self.inner);
        let follower = server.clone();
        runtime.spawn(async move {
            // Ends when the mesh is dropped (the sender goes) or when no listener uses the
            // server any more (only this task's clone is left).
            while published.changed().await.is_ok() && !follower.is_unused() {
                let Some(inner) = mesh.upgrade() else { return };
                let admission = resolve(&inner.snapshot.load().config);
                if follower.has_admission(&admission) {
                    continue;
                }
                tracing::info!(
                    port,
                    ?admission,
                    "the server's mTLS mode or filter chains changed for new connections"
                );
                // Cannot fail: the server was built with material.
                let _ = follower.set_admission(admission);
            }
        });
        Ok(server)
    }

    /// Makes `namespace` the Kubernetes namespace of this workload: channels made afterwards
    /// resolve short targets (`greeter:50051`, `greeter.prod:50051`) as Kubernetes DNS search
    /// would from a pod in it ([`MeshConfig::listener_in`]), and the Istio Sidecar that
    /// applies to the workload is chosen again at once ([`MeshConfig::for_workload`]). Only
    /// the first call takes effect; a later one is an [`AlreadySet`] error. Default is
    /// `default`.
    #[must_use = "a namespace set already is kept and this one returned"]
    pub fn set_local_namespace(
        &self,
        namespace: impl Into<Arc<str>>,
    ) -> Result<(), AlreadySet<Arc<str>>> {
        self.inner
            .local_namespace
            .set(namespace.into())
            .map_err(|n| AlreadySet::new("local namespace", n))?;
        self.republish();
        Ok(())
    }

    /// The Kubernetes namespace of this workload; `default` unless set.
    pub fn local_namespace(&self) -> Arc<str> {
        self.inner
            .local_namespace
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("default"))
    }

    /// Makes `labels` the pod labels of this workload: routes whose matches name
    /// `sourceLabels` (and `sourceNamespace`, checked against
    /// [`local_namespace`](Self::local_namespace)) apply to channels made afterwards only when
    /// these labels satisfy them, as a sidecar of this pod would decide; the Istio Sidecar
    /// whose `workloadSelector` they match applies at once ([`MeshConfig::for_workload`]).
    /// Only the first call takes effect; a later one is an [`AlreadySet`] error. Default is no
    /// labels, so a route naming `sourceLabels` never applies.
    #[must_use = "labels set already are kept and these returned"]
    pub fn set_local_labels(&self, labels: Labels) -> Result<(), AlreadySet<Labels>> {
        self.inner
            .local_labels
            .set(labels)
            .map_err(|l| AlreadySet::new("local labels", l))?;
        self.republish();
        Ok(())
    }

    /// Stores the published configuration again, narrowed for the workload as it is now
    /// (the Sidecar that applies depends on its namespace and labels).
    fn republish(&self) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let published = self.inner.snapshot.load().published.clone();
        self.store_client(published);
    }

    /// Makes `locality` where this workload runs: clusters with locality load balancing
    /// ([`Cluster::locality_weighted`], set by a DestinationRule's `localityLbSetting`)
    /// prefer endpoints in the same region, zone and sub-zone and fail over outward as those
    /// become unhealthy, as a sidecar in that locality would. Applies at once (the current
    /// configuration is republished, connections kept). Only the first call takes effect; a
    /// later one is an [`AlreadySet`] error. Default is none: every endpoint is equally near.
    ///
    /// [`Cluster::locality_weighted`]: mesh_core::Cluster::locality_weighted
    #[must_use = "a locality set already is kept and this one returned"]
    pub fn set_local_locality(&self, locality: Locality) -> Result<(), AlreadySet<Locality>> {
        self.inner
            .local_locality
            .set(locality)
            .map_err(|l| AlreadySet::new("local locality", l))?;
        self.republish();
        Ok(())
    }

    /// Makes `address` the IP address of this workload: a consistent-hash load balancer with
    /// `useSourceIp` hashes it, as the sidecar of this workload would hash its application's
    /// address, so every request of this workload goes to the same endpoint. Applies to
    /// channels made afterwards. Only the first call takes effect; a later one is an
    /// [`AlreadySet`] error. Default is none: `useSourceIp` yields no hash and the pick is
    /// random, as Envoy's is for a request whose hash policy produced nothing.
    #[must_use = "an address set already is kept and this one returned"]
    pub fn set_local_address(&self, address: IpAddr) -> Result<(), AlreadySet<IpAddr>> {
        self.inner
            .local_address
            .set(address)
            .map_err(|a| AlreadySet::new("local address", a))
    }

    /// Where this workload runs, when set.
    pub fn local_locality(&self) -> Option<&Locality> {
        self.inner.local_locality.get()
    }

    /// This workload as source-scoped routes see it: [`local_namespace`](Self::local_namespace),
    /// the labels of [`set_local_labels`](Self::set_local_labels) and the address of
    /// [`set_local_address`](Self::set_local_address).
    pub fn local_workload(&self) -> Workload {
        let labels = self.inner.local_labels.get().cloned().unwrap_or_default();
        let mut workload = Workload::new(self.local_namespace(), labels);
        workload.address = self.inner.local_address.get().copied();
        workload
    }

    /// The discovery source, when one is set.
    pub fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.inner.discovery.get()
    }

    /// Makes `tracing` the trace settings of every channel of this mesh, including those made
    /// already. Only the first call takes effect; a later one is an [`AlreadySet`] error.
    /// Until then channels propagate W3C + B3 headers and record no spans.
    #[must_use = "tracing set already is kept and this one returned"]
    pub fn set_tracing(&self, tracing: Tracing) -> Result<(), AlreadySet<Tracing>> {
        self.inner
            .tracing
            .set(tracing)
            .map_err(|t| AlreadySet::new("tracing", t))
    }

    /// The trace settings of this mesh's channels.
    pub fn tracing(&self) -> &Tracing {
        self.inner.tracing.get().unwrap_or(&trace::DEFAULT_TRACING)
    }

    /// Makes `controls` say which `x-envoy-*` request headers every channel of this mesh
    /// honours (header-driven faults, trusted timeout and retry overrides). Only the first call
    /// takes effect; a later one is an [`AlreadySet`] error. Default is none: fault headers are
    /// ignored and override headers stripped unread.
    #[must_use = "request controls set already are kept and these returned"]
    pub fn set_request_controls(
        &self,
        controls: RequestControls,
    ) -> Result<(), AlreadySet<RequestControls>> {
        self.inner
            .request_controls
            .set(controls)
            .map_err(|c| AlreadySet::new("request controls", c))
    }

    /// The `x-envoy-*` request headers this mesh honours.
    pub fn request_controls(&self) -> &RequestControls {
        self.inner
            .request_controls
            .get()
            .unwrap_or(&request_controls::DEFAULT_REQUEST_CONTROLS)
    }

    /// The trace settings, shared with channels that read them per request.
    pub(crate) fn shared_tracing(&self) -> Arc<OnceLock<Tracing>> {
        self.inner.tracing.clone()
    }

    pub(crate) fn active_faults(&self) -> &AtomicU32 {
        &self.inner.active_faults
    }

    pub(crate) fn metrics_cell(&self) -> &OnceLock<MeshMetrics> {
        &self.inner.metrics
    }

    /// Makes `metrics` the metrics the mesh's client and server stacks record into. Only the
    /// first call takes effect; a later one is an [`AlreadySet`] error.
    #[must_use = "metrics set already are kept and these returned"]
    pub fn set_metrics(&self, metrics: MeshMetrics) -> Result<(), AlreadySet<MeshMetrics>> {
        self.metrics_cell()
            .set(metrics)
            .map_err(|m| AlreadySet::new("metrics", m))
    }

    /// The installed metrics, if any.
    pub fn metrics(&self) -> Option<&MeshMetrics> {
        self.metrics_cell().get()
    }

    /// Makes `log` the access log of the mesh's client and server stacks, including those made
    /// already: one line per request on each. Only the first call takes effect; a later one is
    /// an [`AlreadySet`] error. Default is no access log.
    #[must_use = "an access log set already is kept and this one returned"]
    pub fn set_access_log(&self, log: AccessLog) -> Result<(), AlreadySet<AccessLog>> {
        self.inner
            .access_log
            .set(log)
            .map_err(|l| AlreadySet::new("access log", l))
    }

    /// The access log, if one is set.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.inner.access_log.get()
    }
}
