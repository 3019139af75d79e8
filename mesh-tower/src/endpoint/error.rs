//! Why an endpoint's connection could not be made.

use std::{fmt, sync::Arc};

use mesh_core::EndpointAddress;

/// Connecting to an endpoint failed (refused, unreachable, timed out, handshake failed); cheap to clone so one failed connect can answer every
/// request that waited for it.
#[derive(Clone, Debug)]
pub struct ConnectError {
    address: EndpointAddress,
    reason: Arc<str>,
}

// === impl ConnectError ===

impl ConnectError {
    pub(crate) fn connect(address: &EndpointAddress, reason: impl fmt::Display) -> Self {
        Self {
            address: address.clone(),
            reason: reason.to_string().into(),
        }
    }

    /// The endpoint.
    pub fn address(&self) -> &EndpointAddress {
        &self.address
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connecting to {} failed: {}", self.address, self.reason)
    }
}

impl std::error::Error for ConnectError {}
