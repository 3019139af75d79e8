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
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limit(max: u32, per_fill: u32) -> LocalRateLimit {
        LocalRateLimit::new(max, per_fill, SECOND).unwrap()
    }

    fn drain(bucket: &mut TokenBucket, now: Instant) -> u32 {
        let mut n = 0;
        while bucket.try_acquire(now) {
            n += 1;
        }
        n
    }

    #[test]
    fn starts_full_and_runs_dry() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(3, 1), t0);
        assert_eq!(bucket.available(t0), 3);
        assert_eq!(drain(&mut bucket, t0), 3);
        assert!(!bucket.try_acquire(t0));
        assert_eq!(bucket.next_refill(), t0 + SECOND);
    }

    #[test]
    fn refills_only_after_a_whole_interval() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(3, 2), t0);
        drain(&mut bucket, t0);
        assert!(!bucket.try_acquire(t0 + SECOND - Duration::from_millis(1)));
        assert_eq!(drain(&mut bucket, t0 + SECOND), 2);
        // The schedule stays aligned to creation: 1.5 s later is still the first interval.
        assert!(!bucket.try_acquire(t0 + SECOND + SECOND / 2));
        assert_eq!(bucket.next_refill(), t0 + 2 * SECOND);
        assert_eq!(drain(&mut bucket, t0 + 2 * SECOND), 2);
    }

    #[test]
    fn partial_intervals_are_carried() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(1, 1), t0);
        drain(&mut bucket, t0);
        // 1.7 s: one fill, and 0.7 s carried toward the next.
        assert_eq!(drain(&mut bucket, t0 + Duration::from_millis(1700)), 1);
        assert_eq!(drain(&mut bucket, t0 + Duration::from_millis(2000)), 1);
    }

    #[test]
    fn never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(5, 2), t0);
        assert!(bucket.try_acquire(t0));
        assert_eq!(bucket.available(t0 + 10 * SECOND), 5);
        assert_eq!(drain(&mut bucket, t0 + 10 * SECOND), 5);
    }

    #[test]
    fn a_huge_gap_fills_without_overflow() {
        let t0 = Instant::now();
        let limit = LocalRateLimit::new(u32::MAX, u32::MAX, Duration::from_millis(50)).unwrap();
        let mut bucket = TokenBucket::new(limit, t0);
        assert!(bucket.try_acquire(t0));
        let later = t0 + Duration::from_secs(100 * 365 * 24 * 3600);
        assert_eq!(bucket.available(later), u32::MAX);
        assert!(bucket.try_acquire(later));
    }

    #[test]
    fn time_going_backwards_changes_nothing() {
        let t0 = Instant::now() + 10 * SECOND;
        let mut bucket = TokenBucket::new(limit(1, 1), t0);
        assert!(bucket.try_acquire(t0));
        assert!(!bucket.try_acquire(t0 - 5 * SECOND));
        assert_eq!(bucket.next_refill(), t0 + SECOND);
    }

    proptest! {
        /// Over any sequence of acquisitions, the bucket grants at most its initial capacity
        /// plus one fill per whole interval elapsed.
        #[test]
        fn grants_are_bounded_by_capacity_plus_fills(
            max in 1u32..20,
            per_fill in 1u32..10,
            interval_ms in 50u64..2_000,
            mut offsets_ms in proptest::collection::vec(0u64..20_000, 1..200),
        ) {
            let interval = Duration::from_millis(interval_ms);
            let limit = LocalRateLimit::new(max, per_fill, interval).unwrap();
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(limit, t0);
            offsets_ms.sort_unstable();
            let mut granted = 0u64;
            for &ms in &offsets_ms {
                if bucket.try_acquire(t0 + Duration::from_millis(ms)) {
                    granted += 1;
                }
            }
            let last = offsets_ms.last().copied().unwrap_or(0);
            let fills = last / interval_ms;
            prop_assert!(granted <= u64::from(max) + u64::from(per_fill) * fills);
        }

        /// The bound is not met by being stingy: a full bucket grants exactly its capacity,
        /// and one interval after running dry exactly one fill (capped at the capacity).
        #[test]
        fn a_full_bucket_grants_its_capacity(max in 1u32..50, per_fill in 1u32..10) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(LocalRateLimit::new(max, per_fill, SECOND).unwrap(), t0);
            prop_assert_eq!(drain(&mut bucket, t0), max);
            prop_assert_eq!(drain(&mut bucket, t0 + SECOND), per_fill.min(max));
        }
    }
}
