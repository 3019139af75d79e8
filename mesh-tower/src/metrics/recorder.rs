//! One request's record: started when the request arrives, written when its response ends.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::time::Instant;

use super::{
    Inner,
    labels::{PolicyLabels, Reporter, RequestLabels, SecurityPolicy},
};
use crate::{Mesh, Peer, ResponseFlags, server::Workload};

/// What is known of one request until its response ends; recorded once, at the end of the
/// response body or when it is dropped (a reset, an abandoned call).
#[derive(Debug)]
pub(crate) struct Recorder {
    metrics: Arc<Inner>,
    labels: RequestLabels,
    start: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

// === impl Recorder ===

impl Recorder {
    /// A server-side (`reporter="destination"`) record, when `mesh` has metrics.
    pub(crate) fn start(
        mesh: &Mesh,
        workload: &Arc<Workload>,
        peer: &Peer,
        is_grpc: bool,
    ) -> Option<Self> {
        let metrics = mesh.metrics()?.inner().clone();
        let (destination, service) = metrics.local_destination(workload);
        let security = if peer.identity.is_some() {
            SecurityPolicy::MutualTls
        } else if peer.address.is_some() {
            SecurityPolicy::None
        } else {
            SecurityPolicy::Unknown
        };
        let labels = RequestLabels {
            reporter: Reporter::Destination,
            source: metrics.source(peer.principal()),
            destination,
            service,
            grpc: is_grpc,
            response_code: 0,
            grpc_status: None,
            flags: None,
            security,
        };
        Some(Self::new(metrics, labels))
    }

    /// A client-side (`reporter="source"`) record of a request to `destination`: the cluster
    /// the route layer chose (an Istio cluster name or `host:port`), or the channel's target for
    /// a request the route layer answered itself.
    pub(crate) fn client(mesh: &Mesh, destination: &str, is_grpc: bool) -> Option<Self> {
        let metrics = mesh.metrics()?.inner().clone();
        let (destination, service) = metrics.destination(destination);
        let labels = RequestLabels {
            reporter: Reporter::Source,
            source: metrics.local.clone(),
            destination,
            service,
            grpc: is_grpc,
            response_code: 0,
            grpc_status: None,
            flags: None,
            security: SecurityPolicy::Unknown,
        };
        Some(Self::new(metrics, labels))
    }

    fn new(metrics: Arc<Inner>, labels: RequestLabels) -> Self {
        Self {
            metrics,
            labels,
            start: Instant::now(),
            request_bytes: Arc::default(),
            response_bytes: 0,
        }
    }

    /// The shared count of request body bytes, for a counting body.
    pub(crate) fn request_bytes(&self) -> Arc<AtomicU64> {
        self.request_bytes.clone()
    }

    /// Wraps `req`'s body so its bytes are counted.
    pub(crate) fn meter_request<B: crate::server::MeteredRequestBody>(
        &self,
        req: Request<B>,
    ) -> Request<B> {
        let count = self.request_bytes();
        req.map(|body| body.metered(count))
    }

    /// Sets a response flag (the last one set wins).
    pub(crate) fn flag(&mut self, flag: ResponseFlags) {
        self.labels.flags = Some(flag);
    }

    /// Reads the response head: status, a trailers-only `grpc-status`, the mesh's flags.
    pub(crate) fn head<B>(&mut self, response: &Response<B>) {
        self.labels.response_code = response.status().as_u16();
        if let Some(status) = crate::names::grpc_status(response.headers()) {
            self.labels.grpc_status = Some(status);
        }
        if let Some(flags) = response.extensions().get::<ResponseFlags>() {
            self.labels.flags = Some(*flags);
        }
    }

    /// Reads the trailers' `grpc-status`.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(status) = crate::names::grpc_status(trailers) {
            self.labels.grpc_status = Some(status);
        }
    }

    /// Counts response body bytes.
    pub(crate) fn response_bytes(&mut self, n: usize) {
        self.response_bytes = self
            .response_bytes
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// The route's timeout cut the response body off (`UT`).
    pub(crate) fn timed_out(&mut self) {
        self.labels.flags = Some(ResponseFlags::UpstreamRequestTimeout);
    }

    /// The response body failed mid-stream (`UR`-like): Envoy reports such a stream with
    /// `response_code` as sent and a reset flag.
    pub(crate) fn reset(&mut self) {
        self.labels.flags = Some(ResponseFlags::UpstreamReset);
    }

    /// Counts a denial by `policy` (`None`: no ALLOW policy matched).
    pub(crate) fn denied(&mut self, policy: Option<&str>) {
        let policy = PolicyLabels {
            policy: policy.unwrap_or("-").into(),
        };
        self.metrics.authz_denied.get_or_create(&policy).inc();
    }

    /// Counts a dry-run denial by `policy`.
    pub(crate) fn dry_run_denied(&self, policy: &Arc<str>) {
        let policy = PolicyLabels {
            policy: policy.clone(),
        };
        self.metrics
            .authz_dry_run_denied
            .get_or_create(&policy)
            .inc();
    }
}

/// Feeds one polled response frame to the record in `slot`: data sizes; at the trailers, the
/// end of the body or its error, writes the record (it is taken out of `slot`).
pub(crate) fn observe<E>(slot: &mut Option<Recorder>, frame: &Option<Result<Frame<Bytes>, E>>) {
    let Some(recorder) = slot.as_mut() else {
        return;
    };
    match frame {
        Some(Ok(f)) => {
            // Trailers are the last frame; a caller such as tonic stops polling once it has them.
            let Some(trailers) = f.trailers_ref() else {
                if let Some(data) = f.data_ref() {
                    recorder.response_bytes(data.len());
                }
                return;
            };
            recorder.trailers(trailers);
        }
        Some(Err(_)) => recorder.reset(),
        None => {}
    }
    // Ended or failed: record now, not when the body is dropped.
    slot.take();
}

impl Drop for Recorder {
    fn drop(&mut self) {
        #[allow(clippy::cast_precision_loss)]
        let (ms, req, resp) = (
            self.start.elapsed().as_secs_f64() * 1000.0,
            self.request_bytes.load(Ordering::Relaxed) as f64,
            self.response_bytes as f64,
        );
        self.metrics.record(&self.labels, ms, req, resp);
    }
}
