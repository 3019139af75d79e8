//! Example microservices and the runnable demo of the proxyless mesh.
//!
//! **Status: skeleton.** The bookinfo-like services, the echo server, the load client and the
//! one-command demo arrive once the data plane and xDS client exist.

#![forbid(unsafe_code)]
