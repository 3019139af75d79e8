//! The honest baselines beside plain tonic: what the mesh's wire headers cost without the mesh
//! (`a-hdr`), and the policy stack a Rust user would assemble by hand from tower (`e`).
//!
//! - [`TraceHeaders`] is the trivial client layer of `a-hdr` and `e`: on every call it writes the
//!   headers the mesh's default propagation writes — `traceparent`, `b3` (single header, with
//!   the parent span id, as the mesh's attempt spans have one) and `x-request-id` (a version-4
//!   UUID) — with fresh random ids. Like the mesh, it encodes all three into one buffer that the
//!   header values slice, and marks them sensitive (HPACK never-indexed): values that never
//!   repeat would only churn both ends' HPACK tables. So `b − a-hdr` is what the mesh's logic
//!   adds, not a difference in how the same bytes are put on the wire.
//! - [`ReadTraceHeaders`] is the trivial server layer of `a-hdr` and `e`: it reads the three
//!   headers, as any server that logs or continues the trace does.
//! - [`hand_made`] is `e`: tonic with tower's own `timeout` (overall, 10 s), `retry` (2 retries on
//!   a transport error or `UNAVAILABLE`, a [`TpsBudget`]), `limit::ConcurrencyLimit`, and
//!   `balance::p2c` (least pending requests) over the same endpoints as the mesh, behind a
//!   `Buffer` so clones share the balancer. Replaying a request needs its body: the request's
//!   body is collected into [`Bytes`] first, as any retrying stack must.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tonic::{body::Body, transport::Channel};
use tower::{
    BoxError, Layer, Service,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::ServiceList,
    limit::ConcurrencyLimit,
    load::{CompleteOnResponse, PendingRequests},
    retry::{
        Policy, Retry,
        budget::{Budget, TpsBudget},
    },
    timeout::Timeout,
    util::MapRequest,
};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `b3`.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The overall timeout of `e`, as the mesh route's.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Retries per call of `e`, as the mesh route's (`attempts: 2`).
pub const MAX_RETRIES: usize = 2;
/// Calls in flight `e` admits, as the mesh's `http2MaxRequests`.
pub const MAX_IN_FLIGHT: usize = 100_000;
/// Requests the `Buffer` in front of `e`'s balancer queues.
pub const BUFFER: usize = 1024;

const TRACEPARENT_LEN: usize = 55;
const B3_LEN: usize = 32 + 1 + 16 + 1 + 1 + 1 + 16;
const UUID_LEN: usize = 36;

/// Writes `traceparent`, `b3` and `x-request-id` with fresh random ids on every request.
#[derive(Clone, Debug)]
pub struct TraceHeaders<S> {
    inner: S,
}

/// A [`Layer`] of [`TraceHeaders`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceHeadersLayer;

/// Reads `traceparent`, `b3` and `x-request-id` of every request.
#[derive(Clone, Debug)]
pub struct ReadTraceHeaders<S> {
    inner: S,
}

/// A [`Layer`] of [`ReadTraceHeaders`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadTraceHeadersLayer;

// === impl TraceHeaders ===

impl<S> Layer<S> for TraceHeadersLayer {
    type Service = TraceHeaders<S>;

    fn layer(&self, inner: S) -> TraceHeaders<S> {
        TraceHeaders { inner }
    }
}

impl<S, B> Service<Request<B>> for TraceHeaders<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let [traceparent, b3, request_id] = trace_header_values();
        let headers = req.headers_mut();
        headers.insert(TRACEPARENT, traceparent);
        headers.insert(B3, b3);
        headers.insert(X_REQUEST_ID, request_id);
        self.inner.call(req)
    }
}

/// Fresh `traceparent`, `b3` and `x-request-id` values: a new trace id, span id and parent span
/// id, sampled, and a version-4 UUID; all three slices of one buffer, marked sensitive.
pub fn trace_header_values() -> [HeaderValue; 3] {
    let mut trace = [0u8; 32];
    hex(&random().to_be_bytes(), &mut trace[..16]);
    hex(&random().to_be_bytes(), &mut trace[16..]);
    let mut span = [0u8; 16];
    hex(&random().to_be_bytes(), &mut span);
    let mut parent = [0u8; 16];
    hex(&random().to_be_bytes(), &mut parent);
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&random().to_be_bytes());
    uuid[8..].copy_from_slice(&random().to_be_bytes());
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;

    let mut buf = BytesMut::with_capacity(TRACEPARENT_LEN + B3_LEN + UUID_LEN);
    for part in [&b"00-"[..], &trace, b"-", &span, b"-01"] {
        buf.extend_from_slice(part);
    }
    for part in [&trace[..], b"-", &span, b"-1-", &parent] {
        buf.extend_from_slice(part);
    }
    let mut text = [b'-'; UUID_LEN];
    let mut at = 0;
    for (from, to) in [(0, 4), (4, 6), (6, 8), (8, 10), (10, 16)] {
        let digits = 2 * (to - from);
        hex(&uuid[from..to], &mut text[at..at + digits]);
        at += digits + 1;
    }
    buf.extend_from_slice(&text);
    let buf = buf.freeze();
    let value = |from: usize, len: usize| {
        // Hex digits and dashes are always a valid header value.
        let mut value = HeaderValue::from_maybe_shared(buf.slice(from..from + len))
            .unwrap_or(HeaderValue::from_static("-"));
        value.set_sensitive(true);
        value
    };
    [
        value(0, TRACEPARENT_LEN),
        value(TRACEPARENT_LEN, B3_LEN),
        value(TRACEPARENT_LEN + B3_LEN, UUID_LEN),
    ]
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// A SplitMix64 draw from a per-thread state (what the mesh's ids are drawn from, too).
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish());
    }
    STATE.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    })
}

// === impl ReadTraceHeaders ===

impl<S> Layer<S> for ReadTraceHeadersLayer {
    type Service = ReadTraceHeaders<S>;

    fn layer(&self, inner: S) -> ReadTraceHeaders<S> {
        ReadTraceHeaders { inner }
    }
}

impl<S, B> Service<Request<B>> for ReadTraceHeaders<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let headers = req.headers();
        for name in [TRACEPARENT, B3, X_REQUEST_ID] {
            std::hint::black_box(headers.get(name).and_then(|v| v.to_str().ok()));
        }
        self.inner.call(req)
    }
}

// === e: the hand-made tower stack ===

/// The balancer of `e`: tower's power of two choices over the endpoints, least pending
/// requests.
pub type Balancer =
    Balance<ServiceList<Vec<PendingRequests<Channel, CompleteOnResponse>>>, Request<Body>>;

/// One attempt of `e`: the replayable request turned back into a tonic body, through the
/// shared concurrency limit, to the buffered balancer.
pub type Attempt = ConcurrencyLimit<
    MapRequest<
        Buffer<Request<Body>, <Balancer as Service<Request<Body>>>::Future>,
        fn(Request<Bytes>) -> Request<Body>,
    >,
>;

/// Variant `e`: trace headers, overall timeout, body collected for replay, retries with a
/// budget, concurrency limit, p2c balancer.
pub type HandMade = TraceHeaders<Timeout<CollectBody<Retry<RetryPolicy, Attempt>>>>;

/// `e` over `endpoints` (connected channels, one per endpoint). Must run inside a tokio
/// runtime (the `Buffer` spawns the balancer's task).
pub fn hand_made(endpoints: Vec<Channel>) -> HandMade {
    let endpoints = endpoints
        .into_iter()
        .map(|channel| PendingRequests::new(channel, CompleteOnResponse::default()))
        .collect();
    let balancer: Balancer = Balance::new(ServiceList::new::<Request<Body>>(endpoints));
    let to_body: fn(Request<Bytes>) -> Request<Body> =
        |req| req.map(|bytes| Body::new(Full::new(bytes)));
    let attempt = ConcurrencyLimit::new(
        MapRequest::new(Buffer::new(balancer, BUFFER), to_body),
        MAX_IN_FLIGHT,
    );
    let policy = RetryPolicy {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        retries_left: MAX_RETRIES,
    };
    TraceHeaders {
        inner: Timeout::new(
            CollectBody {
                inner: Retry::new(policy, attempt),
            },
            TIMEOUT,
        ),
    }
}

/// Retries a transport error or an `UNAVAILABLE` response (trailers-only: `grpc-status` in
/// the head), while retries and the budget last.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    retries_left: usize,
}

impl<RB> Policy<Request<Bytes>, Response<RB>, BoxError> for RetryPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Bytes>,
        result: &mut Result<Response<RB>, BoxError>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .is_some_and(|status| status.as_bytes() == b"14"),
            Err(_) => true,
        };
        if !retryable {
            self.budget.deposit();
            return None;
        }
        if self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<Bytes>) -> Option<Request<Bytes>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// Collects the request body into [`Bytes`] so that retries can send it again.
#[derive(Clone, Debug)]
pub struct CollectBody<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for CollectBody<S>
where
    S: Service<Request<Bytes>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The ready service goes with the call; the clone waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            ready.call(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_have_the_mesh_formats_and_change_every_call() {
        let [traceparent, b3, request_id] = trace_header_values();
        let traceparent = traceparent.to_str().unwrap();
        let b3 = b3.to_str().unwrap();
        let request_id = request_id.to_str().unwrap();
        assert_eq!(traceparent.len(), TRACEPARENT_LEN);
        assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"));
        let trace_id = &traceparent[3..35];
        let span_id = &traceparent[36..52];
        assert_eq!(&b3[..49], format!("{trace_id}-{span_id}"));
        assert_eq!(&b3[49..52], "-1-");
        assert_eq!(b3.len(), B3_LEN);
        assert_eq!(request_id.len(), UUID_LEN);
        assert_eq!(&request_id[14..15], "4");
        let [next, ..] = trace_header_values();
        assert_ne!(next.to_str().unwrap(), traceparent);
    }
}
