//! Local rate limiting: one token bucket per server, Envoy's `local_ratelimit` semantics.
//!
//! The bucket arithmetic is `mesh-core`'s [`TokenBucket`], fed with tokio's clock (so tests run
//! on paused time). A request that finds the bucket empty is answered at once, as Envoy does:
//! HTTP 429, or a trailers-only `RESOURCE_EXHAUSTED` for gRPC callers, with
//! [`ResponseFlags::RateLimited`] (`RL`). When the policy's limit changes, the bucket starts
//! over, full, with the new limit.

use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use mesh_core::{GrpcCode, LocalRateLimit, TokenBucket};
use tokio::time::Instant;

use crate::{
    body::ResponseBody,
    synthesize::{Failure, ResponseFlags},
};

/// The server's token bucket, shared by every connection and clone of its layer.
#[derive(Clone, Debug, Default)]
pub(super) struct RateLimiter {
    bucket: Arc<Mutex<Option<TokenBucket>>>,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// Takes a token under `limit` now; `false` means the request is over the limit.
    pub(super) fn try_acquire(&self, limit: LocalRateLimit) -> bool {
        let now = Instant::now().into_std();
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        match bucket.as_mut() {
            Some(b) if *b.limit() == limit => b.try_acquire(now),
            _ => {
                let mut fresh = TokenBucket::new(limit, now);
                let admitted = fresh.try_acquire(now);
                *bucket = Some(fresh);
                admitted
            }
        }
    }
}

/// The response to a rate-limited request.
pub(crate) fn limited_response(is_grpc: bool) -> Response<ResponseBody> {
    Failure::new(
        GrpcCode::ResourceExhausted,
        StatusCode::TOO_MANY_REQUESTS,
        ResponseFlags::RateLimited,
        "local_rate_limited",
    )
    .into_response(is_grpc)
}
