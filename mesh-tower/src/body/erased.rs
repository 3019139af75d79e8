//! The type-erased request body and the error type every body and service of the stack shares,
//! from the endpoint up.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// The error type of bodies and services in the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type-erased request body.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
