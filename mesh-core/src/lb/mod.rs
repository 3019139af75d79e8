//! Load balancing: which endpoint of a cluster takes the next request.
//!
//! Every algorithm is a pure function, or a small state machine, over **candidates**: indices
//! into the caller's host list (usually [`Cluster::endpoints`](crate::Cluster::endpoints)).
//! The caller first narrows the hosts with [`PrioritySet`] (priority levels, spill-over, panic
//! mode, outlier ejections), then hands the chosen level's candidates to the picker of the
//! cluster's [`LbPolicy`](crate::LbPolicy):
//!
//! | policy | picker | state |
//! |---|---|---|
//! | `RoundRobin` | [`WeightedRoundRobin::pick`] | per-host current weights |
//! | `Random` | [`pick_weighted_random`] | none |
//! | `LeastRequest` | [`pick_least_request`] | none (loads are read through a closure) |
//! | `RingHash` | [`Ring::pick`], keyed by [`request_hash`] | the ring, rebuilt on host changes |
//!
//! [`Balancer`] puts these together for one cluster: priorities (optionally by the caller's
//! locality, [`locality_priority`]), panic mode, and the cluster's policy, in one `pick`.
//!
//! Weights and loads are read through closures (`Fn(usize) -> u32`) so the data plane can feed
//! effective weights (e.g. locality-scaled) without copying. Random input is always a `u64`
//! argument; where an algorithm needs several draws it expands the one it is given with
//! SplitMix64 ([`Draws`]), so callers pass one value and tests stay reproducible.
//!
//! `PeakEwma` is latency-aware and belongs to the data plane (`tower::load::PeakEwma` with
//! `tower::balance::p2c`); nothing here models it.

mod balancer;
mod hash;
mod least_request;
mod locality;
mod priority;
mod random;
mod ring_hash;
mod round_robin;
mod session;

pub use self::{
    balancer::Balancer,
    hash::{GeneratedCookie, RequestView, request_hash, request_hash_generating},
    least_request::pick_least_request,
    locality::{
        LocalityFailover, PriorityLabel, failover_tier, label_priority, locality_priority,
        locality_tier,
    },
    priority::{Candidates, PrioritySet, healthy_flags},
    random::pick_weighted_random,
    ring_hash::Ring,
    round_robin::WeightedRoundRobin,
    session::{
        SessionRequest, decode_host, encode_host, path_matches, session_request, session_response,
        set_cookie,
    },
};

/// An endless stream of well-mixed `u64`s derived from one random draw (SplitMix64).
///
/// The core never draws randomness of its own; when one decision needs several independent
/// draws (least request's samples, several enforcement coin flips in one outlier interval),
/// they are derived from the caller's single draw. SplitMix64 passes BigCrush and is a
/// bijection per step, so distinct draws stay distinct.
#[derive(Clone, Debug)]
pub struct Draws(u64);

// === impl Draws ===

impl Draws {
    /// The stream seeded by `random`.
    pub fn new(random: u64) -> Self {
        Self(random)
    }
}

impl Iterator for Draws {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Some(z ^ (z >> 31))
    }
}

/// Maps a uniform `u64` onto `0..n` by a widening multiply (Lemire's reduction): cheaper than
/// `%` and with the same negligible bias (< n / 2⁶⁴). `n` must be positive.
fn below(random: u64, n: u64) -> u64 {
    ((u128::from(random) * u128::from(n)) >> 64) as u64
}
