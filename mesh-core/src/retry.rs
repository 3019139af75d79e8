//! Retry policy: which outcomes are retried, how long to wait, how many retries the cluster
//! can afford, and hedging.
//!
//! Semantics follow Envoy's `RetryPolicy` (Istio's `retries` maps onto it):
//! - `max_retries` counts retries, not attempts: 2 retries is up to 3 attempts.
//! - `5xx` and `gateway-error` include "no response" (connect failure, reset, refused stream,
//!   per-try timeout); `reset` covers every no-response outcome; `connect-failure` and
//!   `refused-stream` only their own.
//! - Backoff is Envoy's fully jittered exponential: the n-th retry waits a uniform random time
//!   in `[0, min(base × 2ⁿ, max))`. Defaults: base 25 ms, max 10 × base.
//! - The budget is Envoy's `retry_budget`, a cluster setting (see
//!   [`CircuitBreakers::retry_budget`](crate::CircuitBreakers::retry_budget)): retries in flight
//!   may not exceed `max(min_concurrency, budget_percent × active requests)`.

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    Error, GrpcCode, Outcome, Percentage,
    backoff::{ExponentialBackoff, Jitter},
};

/// The retry policy of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Retries after the first attempt. 0 disables retries (hedging may still apply).
    pub max_retries: u32,
    /// Bound of each attempt; `None` is bounded only by the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// Which outcomes are retried.
    pub retry_on: RetryOn,
    /// HTTP statuses retried when `retry_on` has [`RetryOn::RETRIABLE_STATUS_CODES`].
    pub retriable_status_codes: Arc<[u16]>,
    /// Wait between attempts.
    pub backoff: Backoff,
    /// Send a retry to a different endpoint than the ones already tried when one exists
    /// (Envoy's `previous_hosts` predicate, which Istio always configures). Default is `true`.
    pub prefer_other_endpoint: bool,
    /// Hedging; `None` is off.
    pub hedge: Option<HedgePolicy>,
}

/// A set of retry-on conditions (Envoy's `x-envoy-retry-on` / `x-envoy-retry-grpc-on` names).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryOn(u32);

/// Envoy's retry backoff: validated bounds of an [`ExponentialBackoff`] that doubles with full
/// jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff(ExponentialBackoff);

/// Envoy's retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    /// Share of active requests that may be retries. Default is 20 %.
    pub budget_percent: Percentage,
    /// Retries always allowed regardless of load. Default is 3.
    pub min_retry_concurrency: u32,
}

/// Envoy's `HedgePolicy`: extra attempts raced against the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HedgePolicy {
    /// Attempts started at once (≥ 1). Default is 1.
    pub initial_requests: u32,
    /// Chance of one more attempt at the start. Default is 0 %.
    pub additional_request_chance: Percentage,
    /// On a per-try timeout, start another attempt but keep waiting for the first, taking
    /// whichever answers first. Default is `false`.
    pub hedge_on_per_try_timeout: bool,
}

const CONDITIONS: [(&str, u32); 13] = [
    ("5xx", 1 << 0),
    ("gateway-error", 1 << 1),
    ("reset", 1 << 2),
    ("connect-failure", 1 << 3),
    ("refused-stream", 1 << 4),
    ("retriable-4xx", 1 << 5),
    ("retriable-status-codes", 1 << 6),
    ("cancelled", 1 << 7),
    ("deadline-exceeded", 1 << 8),
    ("internal", 1 << 9),
    ("resource-exhausted", 1 << 10),
    ("unavailable", 1 << 11),
    ("envoy-ratelimited", 1 << 12),
];

// === impl RetryOn ===

#[allow(missing_docs)] // Each constant is the Envoy condition of the same name.
impl RetryOn {
    pub const FIVE_XX: Self = Self(1 << 0);
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    pub const REFUSED_STREAM: Self = Self(1 << 4);
    pub const RETRIABLE_4XX: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    pub const CANCELLED: Self = Self(1 << 7);
    pub const DEADLINE_EXCEEDED: Self = Self(1 << 8);
    pub const INTERNAL: Self = Self(1 << 9);
    pub const RESOURCE_EXHAUSTED: Self = Self(1 << 10);
    pub const UNAVAILABLE: Self = Self(1 << 11);
    pub const ENVOY_RATELIMITED: Self = Self(1 << 12);
}

impl RetryOn {
    /// No condition.
    pub const NONE: Self = Self(0);

    /// Parses Envoy's / Istio's comma-separated list, e.g. `5xx,connect-failure,reset`.
    /// Whitespace around names is ignored; an unknown name is an error naming it.
    ///
    /// Istio also allows bare HTTP status codes in `retryOn` (`503`); those are returned in
    /// the second element and imply [`RetryOn::RETRIABLE_STATUS_CODES`].
    pub fn parse(list: &str) -> Result<(Self, Vec<u16>), Error> {
        let mut set = Self::NONE;
        let mut codes = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(code) = name.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    return Err(Error::invalid(format!("{code} is not an HTTP status")));
                }
                codes.push(code);
                set = set | Self::RETRIABLE_STATUS_CODES;
                continue;
            }
            let bit = CONDITIONS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown retry-on condition `{name}` (known: {})",
                        CONDITIONS.map(|(n, _)| n).join(", ")
                    ))
                })?;
            set = set | Self(bit);
        }
        Ok((set, codes))
    }

    /// Parses a caller's `x-envoy-retry-on` list as Envoy's router does: unknown names (and
    /// bare status codes, which need `x-envoy-retriable-status-codes`) are skipped.
    pub fn parse_lenient(list: &str) -> Self {
        list.split(',')
            .map(str::trim)
            .filter_map(|name| CONDITIONS.iter().find(|(n, _)| *n == name))
            .fold(Self::NONE, |set, (_, bit)| set | Self(*bit))
    }

    /// Only the gRPC conditions of `self`: what `x-envoy-retry-grpc-on` may set.
    pub fn grpc_only(self) -> Self {
        let grpc = Self::CANCELLED
            | Self::DEADLINE_EXCEEDED
            | Self::INTERNAL
            | Self::RESOURCE_EXHAUSTED
            | Self::UNAVAILABLE;
        Self(self.0 & grpc.0)
    }

    /// Whether every condition of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether no condition is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether an attempt with `outcome` should be retried under these conditions.
    pub fn should_retry(self, outcome: Outcome, retriable_status_codes: &[u16]) -> bool {
        match outcome {
            Outcome::ConnectFailure => {
                self.any(Self::FIVE_XX | Self::GATEWAY_ERROR | Self::RESET | Self::CONNECT_FAILURE)
            }
            Outcome::RefusedStream => {
                self.any(Self::FIVE_XX | Self::GATEWAY_ERROR | Self::RESET | Self::REFUSED_STREAM)
            }
            Outcome::Reset | Outcome::Timeout => {
                self.any(Self::FIVE_XX | Self::GATEWAY_ERROR | Self::RESET)
            }
            Outcome::Response {
                http_status,
                grpc_status,
            } => {
                let by_http = (self.contains(Self::FIVE_XX) && http_status >= 500)
                    || (self.contains(Self::GATEWAY_ERROR) && matches!(http_status, 502..=504))
                    || (self.contains(Self::RETRIABLE_4XX) && http_status == 409)
                    || (self.contains(Self::RETRIABLE_STATUS_CODES)
                        && retriable_status_codes.contains(&http_status));
                let by_grpc = match grpc_status {
                    Some(GrpcCode::Cancelled) => self.contains(Self::CANCELLED),
                    Some(GrpcCode::DeadlineExceeded) => self.contains(Self::DEADLINE_EXCEEDED),
                    Some(GrpcCode::Internal) => self.contains(Self::INTERNAL),
                    Some(GrpcCode::ResourceExhausted) => self.contains(Self::RESOURCE_EXHAUSTED),
                    Some(GrpcCode::Unavailable) => self.contains(Self::UNAVAILABLE),
                    _ => false,
                };
                by_http || by_grpc
            }
        }
    }

    /// Whether a response carrying Envoy's `x-envoy-ratelimited` header is retried: only under
    /// `envoy-ratelimited`, which Envoy defines by that header, not by the status (a plain 429
    /// is the application's answer, not a rate limit an Envoy in front of it applied).
    pub fn retries_envoy_rate_limit(self) -> bool {
        self.contains(Self::ENVOY_RATELIMITED)
    }

    fn any(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RetryOn {
    /// The comma-separated Envoy names, in a fixed order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, bit) in CONDITIONS {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

// === impl Backoff ===

impl Backoff {
    /// Bounds; `base` must be positive and `max` at least `base`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, Error> {
        if base.is_zero() {
            return Err(Error::invalid("backoff base interval must be positive"));
        }
        if max < base {
            return Err(Error::invalid(format!(
                "backoff max interval {max:?} is below the base interval {base:?}"
            )));
        }
        Ok(Self::envoy(base, max))
    }

    /// Envoy's default bounds for `base`: max is 10 × base.
    pub fn with_base(base: Duration) -> Result<Self, Error> {
        Self::new(base, base.saturating_mul(10))
    }

    const fn envoy(base: Duration, max: Duration) -> Self {
        Self(ExponentialBackoff::new(base, 2000, max, Jitter::Full))
    }

    /// The base interval.
    pub fn base(self) -> Duration {
        self.0.initial()
    }

    /// The maximum interval.
    pub fn max(self) -> Duration {
        self.0.max()
    }

    /// The wait before retry number `retry` (1 for the first retry), from one uniform random
    /// draw: uniform in `[0, min(base × 2^(retry-1), max))`, so never above `max`.
    pub fn delay(self, retry: u32, random: u64) -> Duration {
        self.0.delay(retry.saturating_sub(1), random)
    }
}

impl Default for Backoff {
    /// Envoy's default: base 25 ms, max 250 ms.
    fn default() -> Self {
        Self::envoy(Duration::from_millis(25), Duration::from_millis(250))
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// The most retries that may be in flight with `active_requests` requests in flight.
    pub fn max_active_retries(&self, active_requests: u64) -> u64 {
        self.budget_percent
            .of(active_requests)
            .max(u64::from(self.min_retry_concurrency))
    }

    /// Whether one more retry may start now.
    pub fn allows(&self, active_requests: u64, active_retries: u64) -> bool {
        active_retries < self.max_active_retries(active_requests)
    }
}

impl Default for RetryBudget {
    /// Envoy's defaults: 20 % with at least 3 concurrent retries.
    fn default() -> Self {
        Self {
            budget_percent: Percentage::from_ppm(200_000).unwrap_or(Percentage::ZERO),
            min_retry_concurrency: 3,
        }
    }
}

// === impl HedgePolicy ===

impl HedgePolicy {
    /// How many attempts to start at once, from one uniform random draw for the additional
    /// request chance.
    pub fn initial_attempts(&self, random: u64) -> u32 {
        let extra = u32::from(self.additional_request_chance.sample(random));
        self.initial_requests.max(1).saturating_add(extra)
    }
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            initial_requests: 1,
            additional_request_chance: Percentage::ZERO,
            hedge_on_per_try_timeout: false,
        }
    }
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// A policy with `max_retries` on `retry_on`, Envoy's default backoff, no per-try timeout
    /// and no hedging.
    pub fn new(max_retries: u32, retry_on: RetryOn) -> Self {
        Self {
            max_retries,
            per_try_timeout: None,
            retry_on,
            retriable_status_codes: Arc::from([]),
            backoff: Backoff::default(),
            prefer_other_endpoint: true,
            hedge: None,
        }
    }

    /// Whether the attempt numbered `attempt` (1 for the first), whose response carried
    /// Envoy's `x-envoy-ratelimited` header, should be followed by another (Envoy's
    /// `envoy-ratelimited`: the header decides, whatever the status).
    pub fn should_retry_envoy_rate_limit(&self, attempt: u32) -> bool {
        attempt <= self.max_retries && self.retry_on.retries_envoy_rate_limit()
    }

    /// Whether the attempt numbered `attempt` (1 for the first) that ended with `outcome`
    /// should be followed by another: the outcome is retriable and retries remain.
    /// The cluster's retry budget or `max_retries` threshold is a separate check made by the
    /// data plane at that moment.
    pub fn should_retry(&self, attempt: u32, outcome: Outcome) -> bool {
        attempt <= self.max_retries
            && self
                .retry_on
                .should_retry(outcome, &self.retriable_status_codes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn istio_retry_on_lists_parse() {
        let (on, codes) = RetryOn::parse("5xx, connect-failure,reset,503").unwrap();
        assert!(on.contains(RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE | RetryOn::RESET));
        assert!(on.contains(RetryOn::RETRIABLE_STATUS_CODES));
        assert_eq!(codes, [503]);
        assert_eq!(
            on.to_string(),
            "5xx,reset,connect-failure,retriable-status-codes"
        );
        let err = RetryOn::parse("5xx,bogus").unwrap_err();
        assert!(err.message().contains("`bogus`"), "{err}");
    }

    #[test]
    fn conditions_follow_envoy() {
        let (five, _) = RetryOn::parse("5xx").unwrap();
        assert!(five.should_retry(Outcome::http(500), &[]));
        assert!(five.should_retry(Outcome::ConnectFailure, &[]));
        assert!(five.should_retry(Outcome::Timeout, &[]));
        assert!(!five.should_retry(Outcome::http(404), &[]));
        // A gRPC failure arrives as HTTP 200: only the gRPC conditions retry it.
        assert!(!five.should_retry(Outcome::grpc(GrpcCode::Unavailable), &[]));
        let (grpc, _) = RetryOn::parse("unavailable,cancelled").unwrap();
        assert!(grpc.should_retry(Outcome::grpc(GrpcCode::Unavailable), &[]));
        assert!(!grpc.should_retry(Outcome::grpc(GrpcCode::Internal), &[]));
        let (cf, _) = RetryOn::parse("connect-failure").unwrap();
        assert!(cf.should_retry(Outcome::ConnectFailure, &[]));
        assert!(!cf.should_retry(Outcome::Reset, &[]));
        let (codes, list) = RetryOn::parse("retriable-status-codes").unwrap();
        assert!(codes.should_retry(Outcome::http(418), &[418]));
        assert!(list.is_empty());
        // `envoy-ratelimited` is about Envoy's header, not the status.
        let (limited, _) = RetryOn::parse("envoy-ratelimited").unwrap();
        assert!(!limited.should_retry(Outcome::http(429), &[]));
        assert!(limited.retries_envoy_rate_limit());
        assert!(!five.retries_envoy_rate_limit());
        assert!(RetryPolicy::new(1, limited).should_retry_envoy_rate_limit(1));
        assert!(!RetryPolicy::new(1, limited).should_retry_envoy_rate_limit(2));
        assert!(
            RetryOn::parse("retriable-4xx")
                .unwrap()
                .0
                .should_retry(Outcome::http(409), &[])
        );
    }

    #[test]
    fn attempts_stop_at_the_limit() {
        let p = RetryPolicy::new(2, RetryOn::UNAVAILABLE);
        let fail = Outcome::grpc(GrpcCode::Unavailable);
        assert!(p.should_retry(1, fail));
        assert!(p.should_retry(2, fail));
        assert!(!p.should_retry(3, fail), "2 retries = 3 attempts");
        assert!(!p.should_retry(1, Outcome::grpc(GrpcCode::Ok)));
    }

    #[test]
    fn budget_is_a_share_with_a_floor() {
        let b = RetryBudget::default();
        assert_eq!(b.max_active_retries(0), 3);
        assert_eq!(b.max_active_retries(100), 20);
        assert!(b.allows(100, 19));
        assert!(!b.allows(100, 20));
    }

    #[test]
    fn backoff_bounds_are_validated() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn hedging_adds_an_attempt_by_chance() {
        let h = HedgePolicy {
            initial_requests: 2,
            additional_request_chance: Percentage::from_percent(50).unwrap(),
            hedge_on_per_try_timeout: false,
        };
        assert_eq!(h.initial_attempts(0), 3);
        assert_eq!(h.initial_attempts(600_000), 2);
    }

    proptest! {
        #[test]
        fn backoff_is_always_within_bounds(
            base_ms in 1u64..10_000,
            factor in 1u32..100,
            retry in 0u32..200,
            random: u64,
        ) {
            let base = Duration::from_millis(base_ms);
            let b = Backoff::new(base, base * factor).unwrap();
            let d = b.delay(retry, random);
            prop_assert!(d < b.max() || (d == Duration::ZERO));
            let ceiling = base.saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX));
            prop_assert!(d < ceiling.min(b.max()).max(Duration::from_nanos(1)));
        }

        #[test]
        fn budget_never_allows_more_than_its_share_above_the_floor(
            active in 0u64..100_000,
            pct in 0u32..=100,
            floor in 0u32..50,
        ) {
            let b = RetryBudget { budget_percent: Percentage::from_percent(pct).unwrap(), min_retry_concurrency: floor };
            let max = b.max_active_retries(active);
            prop_assert!(max <= (active * u64::from(pct) / 100).max(u64::from(floor)));
            prop_assert!(!b.allows(active, max));
            prop_assert!(max == 0 || b.allows(active, max - 1));
        }
    }
}
