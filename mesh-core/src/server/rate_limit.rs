//! A token bucket with Envoy's local-rate-limit semantics, driven by the caller's clock.
//!
//! Envoy's bucket starts full and a timer adds `tokens_per_fill` every `fill_interval`, capped
//! at `max_tokens`. Here there is no timer: the bucket catches up lazily, on each call, by the
//! number of *whole* intervals elapsed since the last fill, and keeps the fill schedule aligned
//! to its creation time (a partial interval is carried, not lost). The arithmetic is in `u128`
//! nanoseconds and saturating, so an arbitrarily long gap between calls fills the bucket
//! without overflowing, and a `now` earlier than the last fill (a caller bug) changes nothing.

use std::time::{Duration, Instant};

use super::LocalRateLimit;

/// The state of one [`LocalRateLimit`] bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    limit: LocalRateLimit,
    tokens: u32,
    /// The most recent fill time on the schedule `created + k * fill_interval`.
    last_fill: Instant,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket, created at `now`.
    pub fn new(limit: LocalRateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.max_tokens(),
            limit,
            last_fill: now,
        }
    }

    /// Takes one token at `now`, if there is one.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        self.refill(now);
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }

    /// Tokens available at `now`, without taking any.
    pub fn available(&self, now: Instant) -> u32 {
        let mut bucket = self.clone();
        bucket.refill(now);
        bucket.tokens
    }

    /// When the next fill is due: the time an empty bucket gets tokens again. If that instant
    /// is not representable (an absurdly long interval), the last fill time is returned.
    pub fn next_refill(&self) -> Instant {
        self.last_fill
            .checked_add(self.limit.fill_interval())
            .unwrap_or(self.last_fill)
    }

    /// The limit this bucket enforces.
    pub fn limit(&self) -> &LocalRateLimit {
        &self.limit
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last_fill) else {
            return;
        };
        // `LocalRateLimit` guarantees a positive interval; `max(1)` keeps this division total
        // regardless.
        let interval = self.limit.fill_interval().as_nanos().max(1);
        let elapsed = elapsed.as_nanos();
        let fills = elapsed / interval;
        if fills == 0 {
            return;
        }
        let added = fills.saturating_mul(u128::from(self.limit.tokens_per_fill()));
        let tokens = u128::from(self.tokens).saturating_add(added);
        self.tokens = u32::try_from(tokens)
            .unwrap_or(u32::MAX)
            .min(self.limit.max_tokens());
        // Move to the latest scheduled fill: `now` minus the partial interval.
        let carried = elapsed % interval;
        let carried = Duration::new(
            u64::try_from(carried / 1_000_000_000).unwrap_or(u64::MAX),
            u32::try_from(carried % 1_000_000_000).unwrap_or(0),
        );
        self.last_fill = now.checked_sub(carried).unwrap_or(now);
    }
}

#[cfg(test)]
mod tests;
