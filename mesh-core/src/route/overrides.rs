//! Envoy's per-request override headers: a caller tightening or loosening its route's timeout
//! and retries (Envoy's router, "HTTP headers consumed by the router").
//!
//! - `x-envoy-upstream-rq-timeout-ms` replaces the route timeout; `0` is no timeout.
//! - `x-envoy-upstream-rq-per-try-timeout-ms` sets the per-try timeout (a route without retries
//!   gets it for its one attempt); ignored unless it is below the (possibly overridden) route
//!   timeout, as Envoy ignores it.
//! - `x-envoy-retry-on` / `x-envoy-retry-grpc-on` add conditions to the route's (Envoy ORs
//!   them); unknown names are skipped, and the gRPC header takes only gRPC conditions. Without
//!   a route retry policy they create one with Envoy's default of 1 retry.
//! - `x-envoy-max-retries` replaces the number of retries, when any condition is in force.
//!
//! A value that is not a number is ignored, as Envoy ignores it. Whether a caller is trusted to
//! send these at all is the data plane's setting; untrusted, they are stripped unread.

use std::{sync::Arc, time::Duration};

use http::HeaderMap;

use super::Forward;
use crate::{RetryOn, RetryPolicy};

/// The route timeout override, in milliseconds.
pub const UPSTREAM_RQ_TIMEOUT_MS: &str = "x-envoy-upstream-rq-timeout-ms";
/// The per-try timeout override, in milliseconds.
pub const UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
/// The number of retries.
pub const MAX_RETRIES: &str = "x-envoy-max-retries";
/// Retry conditions added to the route's.
pub const RETRY_ON: &str = "x-envoy-retry-on";
/// gRPC retry conditions added to the route's.
pub const RETRY_GRPC_ON: &str = "x-envoy-retry-grpc-on";

/// Every override header: what is stripped from an untrusted caller's request, and what a
/// trusted caller's request no longer carries once read (Envoy consumes them).
pub const OVERRIDE_HEADERS: [&str; 5] = [
    UPSTREAM_RQ_TIMEOUT_MS,
    UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    MAX_RETRIES,
    RETRY_ON,
    RETRY_GRPC_ON,
];

/// Whether `headers` carry any override header (the cheap check before
/// [`Forward::with_override_headers`]).
pub fn has_override_headers(headers: &HeaderMap) -> bool {
    // One pass over the request's few names rather than five lookups, each of which parses and
    // hashes its name: this runs on every routed request, which almost never has one.
    headers.keys().any(|name| {
        name.as_str().starts_with("x-envoy-") && OVERRIDE_HEADERS.contains(&name.as_str())
    })
}

/// A header's value as a non-negative integer; `None` when absent or not one.
fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    std::str::from_utf8(headers.get(name)?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

// === impl Forward ===

impl Forward {
    /// This forwarding policy with a trusted caller's override headers applied (see the module
    /// docs); `None` when the request carries none of them.
    pub fn with_override_headers(&self, headers: &HeaderMap) -> Option<Self> {
        if !has_override_headers(headers) {
            return None;
        }
        let mut forward = self.clone();
        if let Some(ms) = number(headers, UPSTREAM_RQ_TIMEOUT_MS) {
            forward.timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        let extra_on = text(headers, RETRY_ON).map_or(RetryOn::NONE, RetryOn::parse_lenient)
            | text(headers, RETRY_GRPC_ON)
                .map_or(RetryOn::NONE, |l| RetryOn::parse_lenient(l).grpc_only());
        let per_try = number(headers, UPSTREAM_RQ_PER_TRY_TIMEOUT_MS)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .filter(|t| forward.timeout.is_none_or(|route| *t < route));
        let mut retry = match &self.retry {
            Some(route) => Some((**route).clone()),
            // Envoy's default when only the headers ask for retries: 1 retry.
            None if !extra_on.is_empty() => Some(RetryPolicy::new(1, RetryOn::NONE)),
            // A per-try timeout bounds the one attempt even without retries.
            None if per_try.is_some() => Some(RetryPolicy::new(0, RetryOn::NONE)),
            None => None,
        };
        if let Some(policy) = retry.as_mut() {
            policy.retry_on = policy.retry_on | extra_on;
            if let Some(n) = number(headers, MAX_RETRIES).filter(|_| !policy.retry_on.is_empty()) {
                policy.max_retries = u32::try_from(n).unwrap_or(u32::MAX);
            }
            if per_try.is_some() {
                policy.per_try_timeout = per_try;
            }
        }
        forward.retry = retry.map(Arc::new);
        Some(forward)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;
    use crate::route::WeightedClusters;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    fn forward(retry: Option<RetryPolicy>) -> Forward {
        let mut f = Forward::to(WeightedClusters::single("c"));
        f.timeout = Some(Duration::from_secs(10));
        f.retry = retry.map(Arc::new);
        f
    }

    #[test]
    fn no_header_changes_nothing() {
        assert!(forward(None).with_override_headers(&headers(&[])).is_none());
    }

    #[test]
    fn timeouts_follow_envoy() {
        let f = forward(Some(RetryPolicy::new(2, RetryOn::FIVE_XX)));
        let o = f
            .with_override_headers(&headers(&[
                (UPSTREAM_RQ_TIMEOUT_MS, "250"),
                (UPSTREAM_RQ_PER_TRY_TIMEOUT_MS, "100"),
            ]))
            .unwrap();
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            o.retry.unwrap().per_try_timeout,
            Some(Duration::from_millis(100))
        );
        // A per-try timeout not below the route timeout is ignored; 0 is no route timeout.
        let o = f
            .with_override_headers(&headers(&[(UPSTREAM_RQ_PER_TRY_TIMEOUT_MS, "10000")]))
            .unwrap();
        assert_eq!(o.retry.unwrap().per_try_timeout, None);
        let o = f
            .with_override_headers(&headers(&[(UPSTREAM_RQ_TIMEOUT_MS, "0")]))
            .unwrap();
        assert_eq!(o.timeout, None);
        let o = f
            .with_override_headers(&headers(&[(UPSTREAM_RQ_TIMEOUT_MS, "soon")]))
            .unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(10)));
    }

    #[test]
    fn retry_headers_add_to_the_route_policy() {
        let o = forward(Some(RetryPolicy::new(2, RetryOn::FIVE_XX)))
            .with_override_headers(&headers(&[
                (RETRY_GRPC_ON, "unavailable,5xx,bogus"),
                (MAX_RETRIES, "4"),
            ]))
            .unwrap();
        let retry = o.retry.unwrap();
        assert_eq!(retry.retry_on, RetryOn::FIVE_XX | RetryOn::UNAVAILABLE);
        assert_eq!(retry.max_retries, 4);
    }

    #[test]
    fn retry_headers_alone_make_a_policy_of_one_retry() {
        let o = forward(None)
            .with_override_headers(&headers(&[(RETRY_ON, "connect-failure")]))
            .unwrap();
        let retry = o.retry.unwrap();
        assert_eq!(retry.retry_on, RetryOn::CONNECT_FAILURE);
        assert_eq!(retry.max_retries, 1);
        // A per-try timeout alone bounds the one attempt.
        let o = forward(None)
            .with_override_headers(&headers(&[(UPSTREAM_RQ_PER_TRY_TIMEOUT_MS, "50")]))
            .unwrap();
        let retry = o.retry.unwrap();
        assert_eq!(
            (retry.max_retries, retry.per_try_timeout),
            (0, Some(Duration::from_millis(50)))
        );
        // Max retries without any condition retries nothing.
        let o = forward(None)
            .with_override_headers(&headers(&[(MAX_RETRIES, "3")]))
            .unwrap();
        assert!(o.retry.is_none());
    }
}
