//! Request bodies the server stack meters while keeping their type.

use std::sync::{Arc, atomic::AtomicU64};

use bytes::Bytes;
use http_body::Body;

use super::CountingBody;

/// A request body type the server stack can meter (count the bytes of) while keeping its type:
/// tonic's and axum's bodies, which both erase an inner body.
pub trait MeteredRequestBody: Body<Data = Bytes> + Sized + Send + 'static {
    /// This body, counting the bytes of its data frames into `count`.
    fn metered(self, count: Arc<AtomicU64>) -> Self;
}

// === impl MeteredRequestBody ===

impl MeteredRequestBody for tonic::body::Body {
    fn metered(self, count: Arc<AtomicU64>) -> Self {
        tonic::body::Body::new(CountingBody::new(self, count))
    }
}

impl MeteredRequestBody for axum::body::Body {
    fn metered(self, count: Arc<AtomicU64>) -> Self {
        axum::body::Body::new(CountingBody::new(self, count))
    }
}
