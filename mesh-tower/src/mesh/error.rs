//! The error of a set-once setting set again.

use std::{error::Error, fmt};

/// A set-once setting of a [`Mesh`](crate::Mesh) was set again: the mesh kept the first value
/// and hands the rejected one back ([`into_inner`](Self::into_inner)).
///
/// Each setting of the mesh (tracing, metrics, the local workload, ...) is read by channels
/// already made, so it is given once, best through [`Mesh::builder`](crate::Mesh::builder);
/// the `Mesh::set_*` setters are for late binding (an xDS client learning the node after
/// start), and a second call is this error rather than a silent change under running calls.
pub struct AlreadySet<T> {
    setting: &'static str,
    value: T,
}

// === impl AlreadySet ===

impl<T> AlreadySet<T> {
    /// `value` was not set because `setting` already was; for set-once settings of other
    /// crates too (the xDS client's metrics).
    pub fn new(setting: &'static str, value: T) -> Self {
        Self { setting, value }
    }

    /// Which setting was already set, e.g. `local namespace`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The value that was not set.
    pub fn into_inner(self) -> T {
        self.value
    }
}

// The value is left out: some (a discovery source) have no `Debug`, and the setting is what
// a reader of the error needs.
impl<T> fmt::Debug for AlreadySet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlreadySet")
            .field("setting", &self.setting)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AlreadySet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the mesh's {} was already set", self.setting)
    }
}

impl<T> Error for AlreadySet<T> {}
