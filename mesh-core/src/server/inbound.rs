//! The server side as an xDS control plane gives it: one inbound listener per served port
//! (gRFC A36), each with its transport security (A29) and its RBAC filters (A41).
//!
//! A port the xDS client serves is either *serving* with a listener or *not serving*: the
//! listener has not arrived yet, was removed, or does not exist. A server never guesses a
//! policy for a port that is not serving (see the mesh's server stack for what it answers).
//! A port absent from [`InboundListeners`] is not driven by xDS at all, and follows the local
//! [`ServerPolicy`](super::ServerPolicy).

use std::{collections::BTreeMap, sync::Arc};

use super::{MtlsMode, rbac::RbacFilter};

/// The decoded inbound listener of one port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundListener {
    /// Its resource name (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`).
    pub name: Arc<str>,
    /// The transport its filter chain requires: STRICT for a TLS chain that requires a client
    /// certificate, DISABLE for a plaintext chain.
    pub mtls: MtlsMode,
    /// The chain's RBAC filters, in filter order.
    pub rbac: Arc<[RbacFilter]>,
}

/// Whether an xDS-driven port may serve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InboundState {
    /// The listener has not arrived, was removed or does not exist; the reason is for logs.
    NotServing(Arc<str>),
    /// Serving with this listener.
    Serving(Arc<InboundListener>),
}

/// The xDS server side of the process: the state of each xDS-driven port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InboundListeners {
    ports: BTreeMap<u16, InboundState>,
}

// === impl InboundListeners ===

impl InboundListeners {
    /// The state of every xDS-driven port.
    pub fn new(ports: BTreeMap<u16, InboundState>) -> Self {
        Self { ports }
    }

    /// The state of `port`; `None` when xDS does not drive it.
    pub fn get(&self, port: u16) -> Option<&InboundState> {
        self.ports.get(&port)
    }

    /// Every xDS-driven port.
    pub fn ports(&self) -> &BTreeMap<u16, InboundState> {
        &self.ports
    }

    /// Whether xDS drives no port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}
