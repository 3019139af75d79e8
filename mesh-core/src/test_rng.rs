//! A deterministic generator for statistical tests of the pure decisions: the mesh's one
//! SplitMix64 ([`Draws`]) from a fixed seed.

use crate::lb::Draws;

#[derive(Debug)]
pub(crate) struct SplitMix64(Draws);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(Draws::new(seed))
    }

    pub(crate) fn next(&mut self) -> u64 {
        // `Draws` is endless.
        self.0.next().unwrap_or_default()
    }
}
