//! Retries (the layer itself arrives separately).

mod replay;

pub use self::replay::{ReplayBody, ReplayError};
