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
use crate::{
    Mesh, Peer, ResponseFlags,
    access_log::{Entry, Outcome, Side},
    server::Workload,
};
use mesh_core::GrpcCode;

/// What is known of one request until its response ends; recorded once, at the end of the
/// response body or when it is dropped (a reset, an abandoned call), in the metrics and the
/// access log, whichever the mesh has.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The metrics and this request's series, when the mesh has metrics.
    metrics: Option<(Arc<Inner>, RequestLabels)>,
    /// This request's access log entry, when the mesh has an access log.
    access: Option<Box<Entry>>,
    response_code: u16,
    grpc_status: Option<GrpcCode>,
    flags: Option<ResponseFlags>,
    start: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
}

// === impl Recorder ===

impl Recorder {
    /// A server-side (`reporter="destination"`) record of `req`, when `mesh` has metrics or an
    /// access log.
    pub(crate) fn start<B>(
        mesh: &Mesh,
        workload: &Arc<Workload>,
        peer: &Peer,
        is_grpc: bool,
        req: &Request<B>,
    ) -> Option<Self> {
        let access = mesh.access_log().map(|log| {
            let cluster = format!("inbound|{}||{}", workload.port, workload.service);
            Box::new(
                log.entry(Side::Server, req)
                    .with_peer(peer)
                    .with_cluster(cluster.into()),
            )
        });
        let metrics = mesh.metrics().map(|metrics| {
            let metrics = metrics.inner().clone();
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
            (metrics, labels)
        });
        Self::new(metrics, access)
    }

    /// A client-side (`reporter="source"`) record of `req` to `destination`: the cluster
    /// the route layer chose (an Istio cluster name or `host:port`), or the channel's target for
    /// a request the route layer answered itself.
    pub(crate) fn client<B>(
        mesh: &Mesh,
        destination: &str,
        is_grpc: bool,
        req: &Request<B>,
    ) -> Option<Self> {
        let access = mesh
            .access_log()
            .map(|log| Box::new(log.entry(Side::Client, req)));
        let metrics = mesh.metrics().map(|metrics| {
            let metrics = metrics.inner().clone();
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
            (metrics, labels)
        });
        Self::new(metrics, access)
    }

    fn new(
        metrics: Option<(Arc<Inner>, RequestLabels)>,
        access: Option<Box<Entry>>,
    ) -> Option<Self> {
        if metrics.is_none() && access.is_none() {
            return None;
        }
        Some(Self {
            metrics,
            access,
            response_code: 0,
            grpc_status: None,
            flags: None,
            start: Instant::now(),
            request_bytes: Arc::default(),
            response_bytes: 0,
        })
    }

    /// The shared count of request body bytes, for a counting body.
    pub(crate) fn request_bytes(&self) -> Arc<AtomicU64> {
        self.request_bytes.clone()
    }

    /// Wraps `req`'s body so its bytes are counted.
    pub(crate) fn meter_request<B: crate::metrics::metered::MeteredRequestBody>(
        &self,
        req: Request<B>,
    ) -> Request<B> {
        let count = self.request_bytes();
        req.map(|body| body.metered(count))
    }

    /// Sets a response flag (the last one set wins).
    pub(crate) fn flag(&mut self, flag: ResponseFlags) {
        self.flags = Some(flag);
    }

    /// Reads the response head: status, a trailers-only `grpc-status`, the mesh's flags.
    pub(crate) fn head<B>(&mut self, response: &Response<B>) {
        self.response_code = response.status().as_u16();
        if let Some(entry) = self.access.as_mut() {
            entry.head(response);
        }
        if let Some(status) = crate::names::grpc_status(response.headers()) {
            self.grpc_status = Some(status);
        }
        if let Some(flags) = response.extensions().get::<ResponseFlags>() {
            self.flags = Some(*flags);
        }
    }

    /// Reads the trailers' `grpc-status`.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(status) = crate::names::grpc_status(trailers) {
            self.grpc_status = Some(status);
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
        self.flags = Some(ResponseFlags::UpstreamRequestTimeout);
    }

    /// The response body failed mid-stream (`UR`-like): Envoy reports such a stream with
    /// `response_code` as sent and a reset flag.
    pub(crate) fn reset(&mut self) {
        self.flags = Some(ResponseFlags::UpstreamReset);
    }

    /// Counts a denial by `policy` (`None`: no ALLOW policy matched).
    pub(crate) fn denied(&mut self, policy: Option<&str>) {
        let Some((metrics, _)) = &self.metrics else {
            return;
        };
        let policy = PolicyLabels {
            policy: policy.unwrap_or("-").into(),
        };
        metrics.authz_denied.get_or_create(&policy).inc();
    }

    /// Counts a dry-run denial by `policy`.
    pub(crate) fn dry_run_denied(&self, policy: &Arc<str>) {
        let Some((metrics, _)) = &self.metrics else {
            return;
        };
        let policy = PolicyLabels {
            policy: policy.clone(),
        };
        metrics.authz_dry_run_denied.get_or_create(&policy).inc();
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
        let duration = self.start.elapsed();
        let request_bytes = self.request_bytes.load(Ordering::Relaxed);
        if let Some((metrics, labels)) = &mut self.metrics {
            labels.response_code = self.response_code;
            labels.grpc_status = self.grpc_status;
            labels.flags = self.flags;
            #[allow(clippy::cast_precision_loss)]
            let (ms, req, resp) = (
                duration.as_secs_f64() * 1000.0,
                request_bytes as f64,
                self.response_bytes as f64,
            );
            metrics.record(labels, ms, req, resp);
        }
        if let Some(entry) = &self.access {
            entry.write(&Outcome {
                code: self.response_code,
                grpc_status: self.grpc_status,
                flags: self.flags,
                bytes_received: request_bytes,
                bytes_sent: self.response_bytes,
                duration,
            });
        }
    }
}
