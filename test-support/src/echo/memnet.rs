//! The echo server on the in-memory network, for tests of timing-dependent logic (backoffs,
//! idle timeouts, ejection times) under `start_paused = true`: every wait is a timer the paused
//! clock jumps over, and no socket is involved.

use std::sync::Arc;

pub use crate::memnet::MemNet;

use super::{Behavior, EchoServer, Running};

/// Starts an echo server named `name` at a fresh address of `net`, served by tonic as
/// [`spawn_echo`](super::spawn_echo) serves it on 127.0.0.1.
pub fn spawn_echo_in(net: &MemNet, name: &str, behavior: Behavior) -> Running {
    let addr = net.next_addr();
    let listener = net.bind(addr);
    let connections = listener.host().connections();
    let behavior = Arc::new(behavior);
    let server = EchoServer {
        name: name.into(),
        behavior: behavior.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(listener),
    );
    Running {
        addr,
        behavior,
        connections,
    }
}
