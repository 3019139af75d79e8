//! mTLS between mesh clients and mesh servers on 127.0.0.1, with rcgen-made certificates:
//! identity checks, the three PeerAuthentication modes, the peer's identity in handlers,
//! certificate-provider instances, and rotation under load.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_test_support::{echo as support, pki as certs};

mod harness;
mod in_memory;
mod matrix;
mod rotation;
