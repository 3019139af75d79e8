//! Jittered exponential backoff: the one delay schedule behind retries, endpoint reconnects and
//! xDS reconnects, as a pure function of the attempt number and a random draw.
//!
//! The n-th delay (n from 0) is `initial × multiplierⁿ` capped at `max`, then spread by the
//! [`Jitter`] (and capped at `max` again, so `max` is a hard bound). Each user picks the shape
//! its reference implementation has:
//!
//! - retries: Envoy's, ×2 and [`Jitter::Full`] ([`Backoff`](crate::Backoff));
//! - xDS reconnects: gRPC's connection backoff (`doc/connection-backoff.md` in grpc/grpc),
//!   [`ExponentialBackoff::GRPC_CONNECTION`];
//! - endpoint reconnects: ×2 from 100 ms to 10 s with [`Jitter::Equal`], so a dead endpoint is
//!   retried soon but never by every caller at once.
//!
//! Integer arithmetic only (the multiplier in thousandths), so a backoff is `Eq` and `Hash` like
//! the rest of the policy model, and the same inputs give the same delay on every platform.

use std::time::Duration;

/// An exponential backoff schedule; [`delay`](Self::delay) computes one delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExponentialBackoff {
    initial: Duration,
    /// Growth per attempt in thousandths (2000 doubles); at least 1000.
    multiplier_permille: u32,
    max: Duration,
    jitter: Jitter,
}

/// How a delay `d` is spread, from one uniform random draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Uniform in `[0, d)` ("full jitter", Envoy's retry backoff).
    Full,
    /// Uniform in `[d/2, d)` ("equal jitter"): at least half the delay is always waited.
    Equal,
    /// Uniform in `[d × (1 − r), d × (1 + r))` with `r` in thousandths (at most 1000), then
    /// capped at `max` (gRPC's connection backoff: 200, ± 20 %).
    Spread {
        /// `r`, in thousandths of the delay.
        permille: u16,
    },
}

// === impl ExponentialBackoff ===

impl ExponentialBackoff {
    /// gRPC's connection backoff (`doc/connection-backoff.md` in grpc/grpc): 1 s × 1.6 per
    /// attempt, ± 20 % jitter, at most 120 s.
    ///
    /// gRPC applies the jitter after the cap, so its delays can reach 144 s; here the jittered
    /// delay is capped too, so 120 s is a hard bound (what operators read as "max 120 s").
    pub const GRPC_CONNECTION: Self = Self::new(
        Duration::from_secs(1),
        1600,
        Duration::from_secs(120),
        Jitter::Spread { permille: 200 },
    );

    /// `initial × (multiplier_permille / 1000)ⁿ`, capped at `max`, spread by `jitter`.
    ///
    /// Every argument gives a usable schedule, so policy constants can be `const`: a multiplier
    /// below 1000 (a shrinking delay) is taken as 1000, a `max` below `initial` as `initial`,
    /// and a spread above 1000 as 1000. Validate user input before (see
    /// [`Backoff::new`](crate::Backoff::new)).
    pub const fn new(
        initial: Duration,
        multiplier_permille: u32,
        max: Duration,
        jitter: Jitter,
    ) -> Self {
        let multiplier_permille = if multiplier_permille < 1000 {
            1000
        } else {
            multiplier_permille
        };
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        let jitter = match jitter {
            Jitter::Spread { permille } if permille > 1000 => Jitter::Spread { permille: 1000 },
            other => other,
        };
        Self {
            initial,
            multiplier_permille,
            max,
            jitter,
        }
    }

    /// The first delay, before jitter.
    pub const fn initial(&self) -> Duration {
        self.initial
    }

    /// The growth per attempt, in thousandths.
    pub const fn multiplier_permille(&self) -> u32 {
        self.multiplier_permille
    }

    /// The longest delay.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// How each delay is spread.
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before attempt `attempt` (0 for the first wait), from `random`, one uniform
    /// draw over all of `u64`. Never above [`max`](Self::max); never shorter for a later
    /// attempt with the same draw.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let max = fixed(self.max);
        let d = self.unjittered(attempt);
        let (low, high) = match self.jitter {
            Jitter::Full => (0, d),
            Jitter::Equal => (d / 2, d),
            Jitter::Spread { permille } => {
                let r = u128::from(permille);
                (permille_of(d, 1000 - r), permille_of(d, 1000 + r))
            }
        };
        // `random / 2⁶⁴` of the span: uniform, and exact at the ends (0 → low).
        let offset = scale(high - low, random);
        from_fixed((low + offset).min(max))
    }

    /// `initial × multiplierⁿ` capped at `max`, in fixed point.
    fn unjittered(&self, attempt: u32) -> u128 {
        let max = fixed(self.max);
        let multiplier = u128::from(self.multiplier_permille);
        let mut d = fixed(self.initial).min(max);
        // Each step grows `d` or stops: at most ~log(max / initial) steps whatever `attempt`.
        for _ in 0..attempt {
            let next = d
                .checked_mul(multiplier)
                .map_or(max, |grown| (grown / 1000).min(max));
            if next == d {
                break;
            }
            d = next;
        }
        d
    }
}

/// Fractional bits of the fixed-point nanoseconds the arithmetic runs on: a growth step's
/// rounding then costs 2⁻³² ns, so the schedule stays within a nanosecond of the exact product
/// (1 s × 1.6¹⁰ is 109951162777.6 ns), and 2⁹⁴ ns (`Duration::MAX`) still fits a `u128`.
const FRACTION_BITS: u32 = 32;

fn fixed(d: Duration) -> u128 {
    d.as_nanos() << FRACTION_BITS
}

/// Whole nanoseconds of a fixed-point value, rounded down.
fn from_fixed(value: u128) -> Duration {
    let nanos = value >> FRACTION_BITS;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10⁹, so it fits.
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, subsec)
}

/// `value × permille / 1000` rounded down, without overflowing for any `value` below 2¹²⁷.
fn permille_of(value: u128, permille: u128) -> u128 {
    value / 1000 * permille + value % 1000 * permille / 1000
}

/// `value × random / 2⁶⁴` rounded down, without overflow (`value` split at 2⁶⁴).
fn scale(value: u128, random: u64) -> u128 {
    let random = u128::from(random);
    (value >> 64) * random + (((value & u128::from(u64::MAX)) * random) >> 64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn doubling(jitter: Jitter) -> ExponentialBackoff {
        ExponentialBackoff::new(100 * MS, 2000, 10_000 * MS, jitter)
    }

    /// The draw that is `fraction` of the way through `u64`.
    fn at(fraction: f64) -> u64 {
        (fraction * 2f64.powi(64)) as u64
    }

    #[test]
    fn grows_by_the_multiplier_up_to_the_cap() {
        let b = doubling(Jitter::Equal);
        let ceilings: Vec<Duration> = (0..10).map(|n| b.delay(n, u64::MAX)).collect();
        for (n, (got, want)) in ceilings
            .iter()
            .zip([100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000])
            .enumerate()
        {
            let want = want * MS;
            assert!(*got < want && want - *got < MS, "{n}: {got:?} {want:?}");
        }
        assert_eq!(b.delay(u32::MAX, 0), 5_000 * MS, "capped, then half");
    }

    #[test]
    fn each_jitter_spans_its_range() {
        let d = 400 * MS;
        assert_eq!(doubling(Jitter::Full).delay(2, 0), Duration::ZERO);
        assert_eq!(doubling(Jitter::Full).delay(2, at(0.5)), d / 2);
        assert_eq!(doubling(Jitter::Equal).delay(2, 0), d / 2);
        assert_eq!(doubling(Jitter::Equal).delay(2, at(0.5)), d * 3 / 4);
        let spread = doubling(Jitter::Spread { permille: 200 });
        assert_eq!(spread.delay(2, 0), d * 4 / 5);
        assert_eq!(spread.delay(2, at(0.5)), d);
        assert!(spread.delay(2, u64::MAX) < d * 6 / 5);
        // Above the cap the spread is cut at `max`.
        assert_eq!(spread.delay(30, u64::MAX), 10_000 * MS);
        assert_eq!(spread.delay(30, 0), 8_000 * MS);
    }

    #[test]
    fn grpc_connection_backoff_is_grpcs() {
        let b = ExponentialBackoff::GRPC_CONNECTION;
        let middle: Vec<f64> = (0..12).map(|n| b.delay(n, at(0.5)).as_secs_f64()).collect();
        let want = [
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
        for (got, want) in middle.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{middle:?}");
        }
        assert_eq!(b.delay(0, 0), 800 * MS);
        assert_eq!(b.delay(u32::MAX, u64::MAX), Duration::from_secs(120));
        // Within a nanosecond of the exact ± 20 % at both ends, through the cap.
        for (n, want) in want.iter().enumerate() {
            let (low, high) = (b.delay(n as u32, 0), b.delay(n as u32, u64::MAX));
            assert!(low.as_secs_f64() >= want * 0.8 - 1e-9, "{n}: {low:?}");
            assert!(
                high.as_secs_f64() <= (want * 1.2).min(120.0) + 1e-9,
                "{n}: {high:?}"
            );
        }
    }

    #[test]
    fn arguments_out_of_range_are_brought_into_it() {
        let b = ExponentialBackoff::new(5 * MS, 500, MS, Jitter::Spread { permille: 5000 });
        assert_eq!(b.max(), 5 * MS, "max at least initial");
        assert_eq!(b.delay(100, u64::MAX), 5 * MS, "no shrinking, capped");
        assert_eq!(b.delay(0, 0), Duration::ZERO, "a spread of at most 100 %");
        let flat = ExponentialBackoff::new(MS, 1000, Duration::MAX, Jitter::Full);
        assert!(
            flat.delay(u32::MAX, u64::MAX) < MS,
            "no growth, and no endless loop"
        );
    }

    proptest! {
        #[test]
        fn delays_stay_in_bounds_and_never_shrink_with_the_attempt(
            initial_ms in 1u64..10_000,
            multiplier in 1000u32..5000,
            factor in 1u32..1000,
            spread in 0u16..=1000,
            jitter in 0u8..3,
            attempt in 0u32..200,
            random: u64,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let jitter = match jitter {
                0 => Jitter::Full,
                1 => Jitter::Equal,
                _ => Jitter::Spread { permille: spread },
            };
            let b = ExponentialBackoff::new(initial, multiplier, initial * factor, jitter);
            let d = b.delay(attempt, random);
            prop_assert!(d <= b.max());
            prop_assert!(b.delay(attempt + 1, random) >= d);
            let low = match jitter {
                Jitter::Full => Duration::ZERO,
                Jitter::Equal => initial / 2,
                Jitter::Spread { permille } => initial * u32::from(1000 - permille) / 1000,
            };
            prop_assert!(d + Duration::from_nanos(1) >= low, "{d:?} below {low:?}");
        }
    }
}
