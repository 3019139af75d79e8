//! Fault injection policy and the decision for one request.
//!
//! Delay and abort are sampled independently, as in Envoy: a request can be delayed *and* then
//! aborted. `max_active_faults` bounds the faults in flight; at the bound no fault is injected.

use std::time::Duration;

use crate::{Error, GrpcCode, Percentage};

/// Fault injection for the requests of a route (client side) or a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultPolicy {
    /// Delay a share of requests; `None` is off.
    pub delay: Option<FaultDelay>,
    /// Abort a share of requests; `None` is off.
    pub abort: Option<FaultAbort>,
    /// At most this many faults (delays or aborts) in flight at once; `None` is unbounded.
    pub max_active_faults: Option<u32>,
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
        }
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
