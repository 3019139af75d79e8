//! Fault injection policy and the decision for one request.
//!
//! Delay and abort are sampled independently, as in Envoy: a request can be delayed *and* then
//! aborted. `max_active_faults` bounds the faults in flight; at the bound no fault is injected.
//!
//! **Header-controlled faults** (Envoy's `header_abort` / `header_delay`, "Controlling fault
//! injection via HTTP headers"): the caller names the fault in its request headers —
//! `x-envoy-fault-abort-request` (an HTTP status in 200..600), `x-envoy-fault-abort-grpc-request`
//! (a gRPC code; ignored when the HTTP one is also present, as in Envoy),
//! `x-envoy-fault-delay-request` (milliseconds) — and its share with
//! `x-envoy-fault-abort-request-percentage` / `x-envoy-fault-delay-request-percentage`: a
//! numerator over the configured percentage's denominator, capped at the configured numerator;
//! without (or with an unreadable) percentage header the configured percentage applies. A missing
//! or unreadable fault header injects nothing. [`FaultPolicy::for_request`] turns the headers
//! into a plain policy, which [`FaultPolicy::decide`] samples as usual.
//! `x-envoy-fault-throughput-response` needs Envoy's response rate limit, which the mesh does
//! not implement: the decoders report `response_rate_limit` as unsupported.

use std::time::Duration;

use http::HeaderMap;

use crate::{Error, GrpcCode, Percentage};

/// The HTTP status of a header-controlled abort.
const FAULT_ABORT_REQUEST: &str = "x-envoy-fault-abort-request";
/// The gRPC status of a header-controlled abort.
const FAULT_ABORT_GRPC_REQUEST: &str = "x-envoy-fault-abort-grpc-request";
/// The share of requests a header-controlled abort applies to.
const FAULT_ABORT_REQUEST_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
/// The delay, in milliseconds, of a header-controlled delay.
const FAULT_DELAY_REQUEST: &str = "x-envoy-fault-delay-request";
/// The share of requests a header-controlled delay applies to.
const FAULT_DELAY_REQUEST_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";

/// Fault injection for the requests of a route (client side) or a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultPolicy {
    /// Delay a share of requests; `None` is off.
    pub delay: Option<FaultDelay>,
    /// Abort a share of requests; `None` is off.
    pub abort: Option<FaultAbort>,
    /// At most this many faults (delays or aborts) in flight at once; `None` is unbounded.
    pub max_active_faults: Option<u32>,
    /// Aborts the caller asks for in its headers (Envoy's `header_abort`), up to this share;
    /// `None` is off. Replaces [`abort`](Self::abort) when set.
    pub header_abort: Option<HeaderFaultShare>,
    /// Delays the caller asks for in its headers (Envoy's `header_delay`), up to this share;
    /// `None` is off. Replaces [`delay`](Self::delay) when set.
    pub header_delay: Option<HeaderFaultShare>,
}

/// The share of requests a header-controlled fault may apply to: the configured fraction, whose
/// numerator caps the caller's `…-percentage` header and whose denominator that header's value
/// is read over (Envoy's `FractionalPercent` of a `header_abort` / `header_delay` fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeaderFaultShare {
    max_numerator: u32,
    denominator: u32,
}

/// A fixed delay applied to a share of requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultDelay {
    /// How long.
    pub duration: Duration,
    /// Which share of requests.
    pub percentage: Percentage,
}

/// An injected failure answered instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultAbort {
    /// The failure's status.
    pub status: AbortStatus,
    /// Which share of requests.
    pub percentage: Percentage,
}

/// The status of an injected abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortStatus {
    /// An HTTP status (200..=599). A gRPC caller receives its gRPC mapping.
    Http(u16),
    /// A gRPC status. An HTTP caller receives Envoy's HTTP mapping of it.
    Grpc(GrpcCode),
}

/// What to do to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultDecision {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then answer with this failure instead of forwarding.
    pub abort: Option<AbortStatus>,
}

// === impl FaultPolicy ===

impl FaultPolicy {
    /// Header-controlled aborts and delays only, each up to `share`: what a mesh-wide setting
    /// enables for routes that configure no fault of their own.
    pub fn from_headers(share: HeaderFaultShare) -> Self {
        Self {
            header_abort: Some(share),
            header_delay: Some(share),
            ..Self::default()
        }
    }

    /// Whether any fault depends on the request's headers.
    pub fn reads_headers(&self) -> bool {
        self.header_abort.is_some() || self.header_delay.is_some()
    }

    /// The policy for one request: header-controlled faults resolved from `headers` into
    /// fixed ones (see the module docs); the configured faults as they are otherwise.
    pub fn for_request(&self, headers: &HeaderMap) -> Self {
        let mut resolved = self.clone();
        if let Some(share) = self.header_abort {
            resolved.abort = header_abort_status(headers).map(|status| FaultAbort {
                status,
                percentage: share.of_request(headers, FAULT_ABORT_REQUEST_PERCENTAGE),
            });
        }
        if let Some(share) = self.header_delay {
            resolved.delay = header_number(headers, FAULT_DELAY_REQUEST).map(|ms| FaultDelay {
                duration: Duration::from_millis(ms),
                percentage: share.of_request(headers, FAULT_DELAY_REQUEST_PERCENTAGE),
            });
        }
        resolved.header_abort = None;
        resolved.header_delay = None;
        resolved
    }

    /// Decides for one request, given how many faults are in flight and two independent uniform
    /// random draws (one for the delay, one for the abort).
    pub fn decide(&self, active_faults: u32, delay_draw: u64, abort_draw: u64) -> FaultDecision {
        if self
            .max_active_faults
            .is_some_and(|max| active_faults >= max)
        {
            return FaultDecision::default();
        }
        FaultDecision {
            delay: self
                .delay
                .as_ref()
                .filter(|d| d.percentage.sample(delay_draw))
                .map(|d| d.duration),
            abort: self
                .abort
                .as_ref()
                .filter(|a| a.percentage.sample(abort_draw))
                .map(|a| a.status),
        }
    }
}

/// A header's value as a non-negative integer; `None` when absent or not one.
fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    std::str::from_utf8(headers.get(name)?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The abort the caller's headers ask for: the HTTP status when valid, else the gRPC code.
fn header_abort_status(headers: &HeaderMap) -> Option<AbortStatus> {
    if headers.contains_key(FAULT_ABORT_REQUEST) {
        // Envoy: with both headers present the HTTP one wins, even if the gRPC one is valid.
        return header_number(headers, FAULT_ABORT_REQUEST)
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (200..600).contains(s))
            .map(AbortStatus::Http);
    }
    header_number(headers, FAULT_ABORT_GRPC_REQUEST)
        .and_then(|c| i32::try_from(c).ok())
        .and_then(GrpcCode::from_i32)
        .map(AbortStatus::Grpc)
}

// === impl HeaderFaultShare ===

impl HeaderFaultShare {
    /// 100 %: the caller's percentage header alone decides (100 % without one).
    pub const HUNDRED: Self = Self {
        max_numerator: 100,
        denominator: 100,
    };

    /// `max_numerator / denominator`; the denominator must divide one million (Envoy's 100,
    /// 10,000 or 1,000,000).
    pub fn new(max_numerator: u32, denominator: u32) -> Result<Self, Error> {
        Percentage::from_fraction(max_numerator, denominator)?;
        Ok(Self {
            max_numerator,
            denominator,
        })
    }

    /// The configured numerator: the cap on the caller's.
    pub fn max_numerator(self) -> u32 {
        self.max_numerator
    }

    /// The denominator the configured and the caller's numerators are read over.
    pub fn denominator(self) -> u32 {
        self.denominator
    }

    /// The configured share.
    pub fn max(self) -> Percentage {
        self.share(self.max_numerator)
    }

    /// The share for a request: its `percentage_header` numerator capped at the configured
    /// one, or the configured share without a readable header.
    pub fn of_request(self, headers: &HeaderMap, percentage_header: &str) -> Percentage {
        let requested = header_number(headers, percentage_header)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX).min(self.max_numerator));
        self.share(requested.unwrap_or(self.max_numerator))
    }

    fn share(self, numerator: u32) -> Percentage {
        // `new` checked the denominator.
        Percentage::from_fraction(numerator, self.denominator).unwrap_or(Percentage::ZERO)
    }
}

// === impl AbortStatus ===

impl AbortStatus {
    /// An HTTP abort status; it must be 200..=599.
    pub fn http(status: u16) -> Result<Self, Error> {
        if !(200..=599).contains(&status) {
            return Err(Error::invalid(format!(
                "abort status {status} is outside 200-599"
            )));
        }
        Ok(Self::Http(status))
    }

    /// The gRPC status a gRPC caller receives.
    pub fn grpc_code(self) -> GrpcCode {
        match self {
            Self::Http(status) => GrpcCode::from_http_status(status),
            Self::Grpc(code) => code,
        }
    }

    /// The HTTP status a plain HTTP caller receives.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Http(status) => status,
            Self::Grpc(code) => code.to_http_status(),
        }
    }
}

impl FaultDecision {
    /// Whether the request is faulted at all (and so counts against `max_active_faults`).
    pub fn is_fault(&self) -> bool {
        self.delay.is_some() || self.abort.is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(max: Option<u32>) -> FaultPolicy {
        FaultPolicy {
            delay: Some(FaultDelay {
                duration: Duration::from_secs(3),
                percentage: Percentage::from_percent(5).unwrap(),
            }),
            abort: Some(FaultAbort {
                status: AbortStatus::http(404).unwrap(),
                percentage: Percentage::from_percent(30).unwrap(),
            }),
            max_active_faults: max,
            ..FaultPolicy::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn header_faults_are_read_only_when_enabled() {
        let asked = headers(&[(FAULT_ABORT_REQUEST, "503"), (FAULT_DELAY_REQUEST, "250")]);
        let off = policy(None).for_request(&asked);
        assert_eq!(
            off,
            policy(None),
            "no header_* setting: headers change nothing"
        );
        let on = FaultPolicy::from_headers(HeaderFaultShare::HUNDRED).for_request(&asked);
        assert_eq!(
            on.decide(0, 0, 0),
            FaultDecision {
                delay: Some(Duration::from_millis(250)),
                abort: Some(AbortStatus::Http(503)),
            }
        );
        let none = FaultPolicy::from_headers(HeaderFaultShare::HUNDRED).for_request(&headers(&[]));
        assert!(!none.decide(0, 0, 0).is_fault());
    }

    #[test]
    fn header_abort_statuses_follow_envoy() {
        let p = FaultPolicy::from_headers(HeaderFaultShare::HUNDRED);
        let abort = |pairs| p.for_request(&headers(pairs)).abort.map(|a| a.status);
        assert_eq!(
            abort(&[(FAULT_ABORT_GRPC_REQUEST, "14")]),
            Some(AbortStatus::Grpc(GrpcCode::Unavailable))
        );
        // The HTTP header wins over the gRPC one, and an invalid one injects nothing.
        assert_eq!(
            abort(&[
                (FAULT_ABORT_REQUEST, "429"),
                (FAULT_ABORT_GRPC_REQUEST, "14")
            ]),
            Some(AbortStatus::Http(429))
        );
        assert_eq!(abort(&[(FAULT_ABORT_REQUEST, "600")]), None);
        assert_eq!(abort(&[(FAULT_ABORT_REQUEST, "x")]), None);
        assert_eq!(abort(&[(FAULT_ABORT_GRPC_REQUEST, "17")]), None);
    }

    #[test]
    fn header_percentages_are_capped_by_the_configured_share() {
        let cap = HeaderFaultShare::new(20, 100).unwrap();
        let p = FaultPolicy {
            header_abort: Some(cap),
            ..FaultPolicy::default()
        };
        let share = |pairs| p.for_request(&headers(pairs)).abort.map(|a| a.percentage);
        let pct = |n| Some(Percentage::from_percent(n).unwrap());
        assert_eq!(share(&[(FAULT_ABORT_REQUEST, "500")]), pct(20));
        assert_eq!(
            share(&[
                (FAULT_ABORT_REQUEST, "500"),
                (FAULT_ABORT_REQUEST_PERCENTAGE, "5")
            ]),
            pct(5)
        );
        assert_eq!(
            share(&[
                (FAULT_ABORT_REQUEST, "500"),
                (FAULT_ABORT_REQUEST_PERCENTAGE, "90")
            ]),
            pct(20)
        );
        // The header's numerator is read over the configured denominator.
        let fine = HeaderFaultShare::new(500_000, 1_000_000).unwrap();
        assert_eq!(
            fine.of_request(
                &headers(&[(FAULT_DELAY_REQUEST_PERCENTAGE, "1000")]),
                FAULT_DELAY_REQUEST_PERCENTAGE
            ),
            Percentage::from_ppm(1000).unwrap()
        );
        assert!(HeaderFaultShare::new(1, 3).is_err());
    }

    #[test]
    fn delay_and_abort_are_sampled_independently() {
        let p = policy(None);
        let both = p.decide(0, 0, 0);
        assert_eq!(both.delay, Some(Duration::from_secs(3)));
        assert_eq!(both.abort, Some(AbortStatus::Http(404)));
        let abort_only = p.decide(0, 50_000, 299_999);
        assert_eq!(abort_only.delay, None);
        assert!(abort_only.abort.is_some());
        assert!(!p.decide(0, 50_000, 300_000).is_fault());
    }

    #[test]
    fn the_active_fault_bound_turns_faults_off() {
        assert!(policy(Some(2)).decide(1, 0, 0).is_fault());
        assert!(!policy(Some(2)).decide(2, 0, 0).is_fault());
    }

    #[test]
    fn abort_statuses_map_both_ways() {
        assert_eq!(AbortStatus::Http(503).grpc_code(), GrpcCode::Unavailable);
        assert_eq!(AbortStatus::Grpc(GrpcCode::Unavailable).http_status(), 503);
        assert!(AbortStatus::http(99).is_err());
    }

    #[test]
    fn thirty_percent_aborts_about_thirty_percent() {
        let p = policy(None);
        let mut rng = crate::test_rng::SplitMix64::new(7);
        let n = 100_000;
        let aborted = (0..n)
            .filter(|_| p.decide(0, rng.next(), rng.next()).abort.is_some())
            .count();
        let share = aborted as f64 / n as f64;
        assert!((share - 0.30).abs() < 0.01, "{share}");
    }

    proptest! {
        /// At or above the bound nothing is injected; below it, each fault is injected exactly
        /// when its draw falls inside its percentage.
        #[test]
        fn decisions_follow_the_draws_and_the_bound(
            delay_ppm in 0u32..=1_000_000,
            abort_ppm in 0u32..=1_000_000,
            max in proptest::option::of(0u32..10),
            active in 0u32..20,
            delay_draw: u64,
            abort_draw: u64,
        ) {
            let delay_pct = Percentage::from_ppm(delay_ppm).unwrap();
            let abort_pct = Percentage::from_ppm(abort_ppm).unwrap();
            let p = FaultPolicy {
                delay: Some(FaultDelay { duration: Duration::from_millis(5), percentage: delay_pct }),
                abort: Some(FaultAbort { status: AbortStatus::Grpc(GrpcCode::Unavailable), percentage: abort_pct }),
                max_active_faults: max,
                ..FaultPolicy::default()
            };
            let d = p.decide(active, delay_draw, abort_draw);
            if max.is_some_and(|m| active >= m) {
                prop_assert!(!d.is_fault());
            } else {
                prop_assert_eq!(d.delay.is_some(), delay_pct.sample(delay_draw));
                prop_assert_eq!(d.abort.is_some(), abort_pct.sample(abort_draw));
            }
        }
    }
}
