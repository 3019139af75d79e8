//! Reconnect backoff bounds: 1 s × 1.6^n, ± 20 %, never above 120 s.

use std::time::Duration;

use mesh_xds::client::backoff::delay;
use proptest::prelude::*;

#[test]
fn the_sequence_without_jitter() {
    let secs: Vec<f64> = (0..12).map(|n| delay(n, 0.5).as_secs_f64()).collect();
    let expected = [
        1.0,
        1.6,
        2.56,
        4.096,
        6.5536,
        10.48576,
        16.777216,
        26.8435456,
        42.94967296,
        68.719476736,
        109.9511627776,
        120.0,
    ];
    for (got, want) in secs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{secs:?}");
    }
    assert_eq!(delay(0, 0.0), Duration::from_millis(800));
    assert_eq!(delay(u32::MAX, 0.0), Duration::from_secs(96));
    assert_eq!(delay(u32::MAX, 0.999_999_999), Duration::from_secs(120));
    assert_eq!(delay(3, f64::NAN), delay(3, 0.5));
}

proptest! {
    #[test]
    fn delays_stay_within_twenty_percent_of_the_base_and_the_cap(attempt in 0u32..10_000, random in any::<f64>()) {
        let base = (1.6f64.powi(attempt.min(16) as i32)).min(120.0);
        let d = delay(attempt, random).as_secs_f64();
        prop_assert!(d >= base * 0.8 - 1e-9, "{attempt} {random} {d}");
        prop_assert!(d <= (base * 1.2).min(120.0) + 1e-9, "{attempt} {random} {d}");
    }

    #[test]
    fn delays_never_shrink_with_the_attempt(attempt in 0u32..40, random in 0.0f64..1.0) {
        prop_assert!(delay(attempt + 1, random) >= delay(attempt, random));
    }
}
