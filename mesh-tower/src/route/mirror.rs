//! Request mirroring: a sampled copy of the request sent to another cluster, fire and forget.
//!
//! The copy's body is a tee of the primary's: each frame the primary sends is also offered to the
//! mirror through a small bounded channel. A mirror that cannot keep up loses its copy (its
//! request is cut off) rather than slowing the primary; its response is discarded; its failure is
//! only logged. The copy goes straight to the mirror cluster's balancer with the authority
//! suffixed `-shadow` (Envoy's convention, so servers can tell shadow traffic apart), bounded by
//! the route's timeout (30 s when the route has none).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{HeaderValue, Request, Uri, header, uri::Authority};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, StreamBody};
use mesh_core::route::Forward;
use pin_project_lite::pin_project;
use tower::Service;

use crate::{
    balance::Balance,
    body::{BoxError, RequestBody},
    decision::RouteDecision,
    mesh::Snapshot,
    rng,
};

/// Frames a mirror may lag behind the primary before its copy is cut off.
const MIRROR_BUFFER: usize = 16;
/// Bound on a mirror request when the route has no timeout.
const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

type FrameSender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

pin_project! {
    /// The primary's body, copying each frame to the mirrors that keep up.
    struct Tee {
        #[pin]
        inner: RequestBody,
        mirrors: Vec<FrameSender>,
    }
}

/// Starts the route's mirrors for `req`, sampling each by its percentage, and returns the
/// request the primary should send (its body teed when any mirror was started).
pub(super) fn start(
    snapshot: &Snapshot,
    forward: &Forward,
    decision: &RouteDecision,
    req: Request<RequestBody>,
) -> Request<RequestBody> {
    let mut senders = Vec::new();
    for mirror in forward.mirrors.iter() {
        if !mirror.percentage.sample(rng::draw()) {
            continue;
        }
        let Some(cluster) = snapshot.clusters.get(&mirror.cluster) else {
            continue;
        };
        let (tx, rx) = mpsc::channel(MIRROR_BUFFER);
        let body = StreamBody::new(rx).boxed_unsync();
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = shadow_uri(req.uri());
        *copy.headers_mut() = req.headers().clone();
        if let Some(host) = copy
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            copy.headers_mut().insert(header::HOST, host);
        }
        let mut mirror_decision = decision.clone();
        mirror_decision.cluster = cluster.clone();
        mirror_decision.fault = None;
        copy.extensions_mut().insert(mirror_decision);
        let bound = forward.timeout.unwrap_or(DEFAULT_MIRROR_TIMEOUT);
        let name = mirror.cluster.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(bound, Balance::new().call(copy)).await {
                Ok(Ok(response)) => {
                    // Drain so the connection's stream and the breaker slot are released.
                    let _ = response.into_body().collect().await;
                }
                Ok(Err(error)) => tracing::debug!(cluster = %name, %error, "mirror request failed"),
                Err(_) => tracing::debug!(cluster = %name, "mirror request timed out"),
            }
        });
        senders.push(tx);
    }
    if senders.is_empty() {
        return req;
    }
    req.map(|inner| {
        Tee {
            inner,
            mirrors: senders,
        }
        .boxed_unsync()
    })
}

/// The URI with `-shadow` appended to the host (before any port).
fn shadow_uri(uri: &Uri) -> Uri {
    let Some(authority) = uri.authority() else {
        return uri.clone();
    };
    let shadow = match authority.port() {
        Some(port) => format!("{}-shadow:{}", authority.host(), port.as_str()),
        None => format!("{}-shadow", authority.host()),
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Authority::try_from(shadow).ok().or(parts.authority);
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            // A full or closed channel drops that mirror: it never holds the primary back.
            Some(Ok(f)) => this
                .mirrors
                .retain_mut(|tx| copy_frame(f).is_some_and(|copy| tx.try_send(Ok(copy)).is_ok())),
            Some(Err(_)) => {
                for tx in this.mirrors.iter_mut() {
                    let _ = tx.try_send(Err("the primary request body failed".into()));
                }
                this.mirrors.clear();
            }
            // The body ended: dropping the senders ends the mirrors' bodies.
            None => this.mirrors.clear(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of a data or trailers frame (`Frame` is not `Clone`; both are cheap to copy).
fn copy_frame(frame: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Some(Frame::data(data.clone())),
        (None, Some(trailers)) => Some(Frame::trailers(trailers.clone())),
        _ => None,
    }
}
