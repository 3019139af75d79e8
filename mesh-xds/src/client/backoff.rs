//! Reconnect delays: gRPC's connection backoff (1 s × 1.6 per attempt, ± 20 % jitter, at most
//! 120 s), as a pure function of the attempt number and a random draw.
//!
//! gRPC applies the jitter after the cap, so its delays can reach 144 s; here the jittered
//! delay is capped too, so 120 s is a hard bound (what operators read as "max 120 s").

use std::time::Duration;

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(1);
/// The growth factor per attempt.
pub const MULTIPLIER: f64 = 1.6;
/// The jitter, as a fraction of the delay (both ways).
pub const JITTER: f64 = 0.2;
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(120);

/// The delay before reconnect attempt `attempt` (0 for the first retry), with `random`
/// uniform in `[0, 1)` choosing the jitter.
pub fn delay(attempt: u32, random: f64) -> Duration {
    let max = MAX.as_secs_f64();
    // 1.6^11 > 120: past that the base is the cap whatever the attempt.
    let base = (INITIAL.as_secs_f64() * MULTIPLIER.powi(attempt.min(16) as i32)).min(max);
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let jittered = base * (1.0 + JITTER * (2.0 * random - 1.0));
    Duration::from_secs_f64(jittered.clamp(0.0, max))
}

/// A random draw in `[0, 1)` from the process's hash seed (no extra dependency, no I/O).
pub(crate) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
