//! Example microservices and the runnable demo of the proxyless mesh, written the way an
//! application would use it: `.proto` files compiled into tonic clients and servers, every
//! outgoing call through a [`mesh_tower::Mesh`] channel.
//!
//! - [`echo`]: an echo server with knobs (name, version, failure rate and status, latency).
//! - [`bookinfo`]: the product page (axum), reviews and ratings (tonic).
//! - [`demo`]: the one-command demo's scenarios.
//! - [`load`]: the engine of `mesh-load`, a command-line load tool for mesh targets.
//! - [`pki`]: a certificate authority issuing SPIFFE workload certificates as PEM files.

#![forbid(unsafe_code)]

pub mod bookinfo;
pub mod demo;
pub mod echo;
pub mod load;
pub mod pki;

/// The workspace README's Rust snippets, compiled as this crate's doc tests (`cargo test
/// --doc -p mesh-examples`): this crate has every dependency they name and the echo proto they
/// use, so a README that drifts from the API fails the build.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeSnippets;

/// Code generated from `proto/*.proto`.
pub mod proto {
    /// The echo service.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod echo {
        tonic::include_proto!("echo");
    }
    /// Bookinfo's reviews and ratings services.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod bookinfo {
        tonic::include_proto!("bookinfo");
    }
}

/// The trace id of a request's W3C `traceparent`, B3 `x-b3-traceid` or B3 single `b3`
/// header, in that order of preference; `None` when none is well-formed.
pub fn trace_id(headers: &http::HeaderMap) -> Option<String> {
    let hex = |s: &str| s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(id) = header("traceparent").and_then(|v| v.split('-').nth(1))
        && hex(id)
    {
        return Some(id.to_owned());
    }
    if let Some(id) = header("x-b3-traceid")
        && hex(id)
    {
        return Some(id.to_owned());
    }
    header("b3")
        .and_then(|v| v.split('-').next())
        .filter(|id| hex(id))
        .map(str::to_owned)
}

/// The SPIFFE principal of the caller of `request`, when it came over mTLS; else empty.
pub fn caller_principal<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<mesh_tower::Peer>()
        .and_then(mesh_tower::Peer::principal)
        .unwrap_or_default()
        .to_owned()
}
