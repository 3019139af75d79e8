//! The token bucket, driven by explicit instants.

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
