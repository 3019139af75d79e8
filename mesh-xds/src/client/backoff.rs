//! Reconnect delays: gRPC's connection backoff (1 s × 1.6 per attempt, ± 20 % jitter, at most
//! 120 s), [`ExponentialBackoff::GRPC_CONNECTION`], the schedule mesh-core computes for every
//! backoff of the mesh.
//!
//! gRPC applies the jitter after the cap, so its delays can reach 144 s; here the jittered
//! delay is capped too, so 120 s is a hard bound (what operators read as "max 120 s").

use std::time::Duration;

use mesh_core::backoff::{ExponentialBackoff, Jitter};

const SCHEDULE: ExponentialBackoff = ExponentialBackoff::GRPC_CONNECTION;

/// The first delay.
pub const INITIAL: Duration = SCHEDULE.initial();
/// The growth factor per attempt.
pub const MULTIPLIER: f64 = SCHEDULE.multiplier_permille() as f64 / 1000.0;
/// The jitter, as a fraction of the delay (both ways).
pub const JITTER: f64 = match SCHEDULE.jitter() {
    Jitter::Spread { permille } => permille as f64 / 1000.0,
    Jitter::Full | Jitter::Equal => 1.0,
};
/// The longest delay.
pub const MAX: Duration = SCHEDULE.max();

/// The delay before reconnect attempt `attempt` (0 for the first retry), with `random`
/// uniform in `[0, 1)` choosing the jitter (a value outside is clamped, NaN is the middle).
pub fn delay(attempt: u32, random: f64) -> Duration {
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    // `as` saturates: 1.0 is the top of the range.
    let draw = (random * 2f64.powi(64)) as u64;
    SCHEDULE.delay(attempt, draw)
}

/// The delay before reconnect attempt `attempt` with a fresh random draw from the mesh's one
/// random source.
pub(crate) fn next_delay(attempt: u32) -> Duration {
    SCHEDULE.delay(attempt, mesh_tower::rng::draw())
}
