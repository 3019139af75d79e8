//! A validated percentage with parts-per-million precision.
//!
//! Envoy expresses fractions as `FractionalPercent` with a denominator of up to one million and
//! Istio as a `double` percent; both fit losslessly into an integer count of parts per million.
//! An integer keeps `Eq` and `Hash` honest (no `f64`), and sampling is a single comparison.

use std::fmt;

use crate::Error;

/// One million: the denominator of every [`Percentage`].
const MILLION: u32 = 1_000_000;

/// A percentage between 0 % and 100 %, stored as parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percentage(u32);

// === impl Percentage ===

impl Percentage {
    /// 0 %: never.
    pub const ZERO: Self = Self(0);
    /// 100 %: always.
    pub const HUNDRED: Self = Self(MILLION);

    /// A percentage from parts per million; more than 1,000,000 is an error.
    pub fn from_ppm(ppm: u32) -> Result<Self, Error> {
        if ppm > MILLION {
            return Err(Error::invalid(format!(
                "{ppm} parts per million is more than 100%"
            )));
        }
        Ok(Self(ppm))
    }

    /// A percentage from a whole number of percent (0..=100), as Istio's integer fields use.
    pub fn from_percent(percent: u32) -> Result<Self, Error> {
        if percent > 100 {
            return Err(Error::invalid(format!("{percent}% is more than 100%")));
        }
        Ok(Self(percent * 10_000))
    }

    /// A percentage from a floating-point percent (Istio's `percentage.value`), rounded to the
    /// nearest part per million. NaN, negatives and values over 100 are errors.
    pub fn from_percent_f64(percent: f64) -> Result<Self, Error> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(Error::invalid(format!(
                "{percent}% is not a percentage between 0 and 100"
            )));
        }
        // In range by the check above, so the cast cannot truncate.
        Ok(Self((percent * 10_000.0).round() as u32))
    }

    /// A fraction `numerator / denominator` as Envoy's `FractionalPercent` gives it
    /// (denominator 100, 10,000 or 1,000,000). Values above the denominator are capped at 100 %,
    /// as Envoy does.
    pub fn from_fraction(numerator: u32, denominator: u32) -> Result<Self, Error> {
        if denominator == 0 || !MILLION.is_multiple_of(denominator) {
            return Err(Error::invalid(format!(
                "denominator {denominator} must divide one million"
            )));
        }
        let scaled = u64::from(numerator) * u64::from(MILLION / denominator);
        Ok(Self(scaled.min(u64::from(MILLION)) as u32))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The percentage as a floating-point percent, for display and config dumps.
    pub fn as_percent_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Whether a uniformly random draw falls inside this percentage.
    ///
    /// `random` is any uniformly distributed `u64`; the bias of reducing it modulo one million
    /// is below 10⁻¹³ and irrelevant here.
    pub fn sample(self, random: u64) -> bool {
        (random % u64::from(MILLION)) < u64::from(self.0)
    }

    /// `value × self`, rounded down, for percent-of-a-count arithmetic (budgets, ejections).
    pub fn of(self, value: u64) -> u64 {
        // u64 × 1e6 cannot overflow for any count a process can hold (< 2^44).
        value.saturating_mul(u64::from(self.0)) / u64::from(MILLION)
    }
}

impl fmt::Display for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.as_percent_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_validate_their_range() {
        assert_eq!(Percentage::from_percent(30).unwrap().ppm(), 300_000);
        assert!(Percentage::from_percent(101).is_err());
        assert!(Percentage::from_ppm(1_000_001).is_err());
        assert_eq!(Percentage::from_percent_f64(0.1).unwrap().ppm(), 1_000);
        assert!(Percentage::from_percent_f64(f64::NAN).is_err());
        assert!(Percentage::from_percent_f64(-1.0).is_err());
        assert!(Percentage::from_percent_f64(100.5).is_err());
        assert_eq!(Percentage::from_fraction(5, 100).unwrap().ppm(), 50_000);
        assert_eq!(
            Percentage::from_fraction(200, 100).unwrap(),
            Percentage::HUNDRED
        );
        assert!(Percentage::from_fraction(1, 3).is_err());
    }

    #[test]
    fn sampling_respects_the_edges() {
        assert!(!Percentage::ZERO.sample(0));
        assert!(Percentage::HUNDRED.sample(u64::MAX));
        let ten = Percentage::from_percent(10).unwrap();
        assert!(ten.sample(99_999));
        assert!(!ten.sample(100_000));
    }

    #[test]
    fn percent_of_a_count_rounds_down() {
        let twenty = Percentage::from_percent(20).unwrap();
        assert_eq!(twenty.of(10), 2);
        assert_eq!(twenty.of(4), 0);
        assert_eq!(Percentage::HUNDRED.of(7), 7);
    }
}
