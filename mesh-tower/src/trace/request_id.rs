//! `x-request-id`: one id per end-user request, kept unchanged through every hop so logs of
//! all services can be joined on it (Envoy generates it at the edge and forwards it).
//!
//! A missing id is generated as a version-4 UUID from random bits, formatted by hand into a
//! fixed array (no `format!`, one allocation for the header value). The random source is the
//! mesh's fast non-cryptographic generator: a request id is a correlation key, not a secret.

use http::{HeaderMap, HeaderName, HeaderValue, header::Entry};

use crate::rng;

/// The `x-request-id` header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const UUID_LEN: usize = 36;

/// The value of `x-request-id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

// === impl RequestId ===

impl RequestId {
    /// The id the headers carry, when it is not empty.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        present(headers).map(|value| Self(value.clone()))
    }

    /// The id the headers carry, or a new one.
    pub fn from_headers_or_generate(headers: &HeaderMap) -> Self {
        Self::from_headers(headers).unwrap_or_else(Self::generate)
    }

    /// A new random version-4 UUID, e.g. `3f0c1d2e-9a4b-4c5d-8e6f-0a1b2c3d4e5f`.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&rng::draw().to_be_bytes());
        bytes[8..].copy_from_slice(&rng::draw().to_be_bytes());
        Self::from_uuid_bytes(bytes)
    }

    /// Formats 16 random bytes as a version-4, RFC 4122 variant UUID.
    pub(crate) fn from_uuid_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut text = [b'-'; UUID_LEN];
        let mut at = 0;
        for (from, to) in [(0, 4), (4, 6), (6, 8), (8, 10), (10, 16)] {
            let digits = 2 * (to - from);
            super::hex::encode(&bytes[from..to], &mut text[at..at + digits]);
            at += digits + 1;
        }
        // Hex digits and dashes are always a valid header value.
        Self(HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-")))
    }

    /// The header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text, when it is visible ASCII.
    pub fn as_str(&self) -> Option<&str> {
        self.0.to_str().ok()
    }

    /// Sets `x-request-id` on `headers` unless they already carry one (an empty one is
    /// replaced). One lookup of the name, not one to check and one to insert.
    pub fn insert_if_absent(&self, headers: &mut HeaderMap) {
        let value = || super::context::never_indexed(self.0.clone());
        match headers.entry(X_REQUEST_ID) {
            Entry::Occupied(mut present) => {
                if blank(present.get()) {
                    present.insert(value());
                }
            }
            Entry::Vacant(absent) => {
                absent.insert(value());
            }
        }
    }
}

/// A non-empty `x-request-id`.
fn present(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(X_REQUEST_ID).filter(|value| !blank(value))
}

/// An id of nothing but whitespace, which counts as none.
fn blank(value: &HeaderValue) -> bool {
    value.as_bytes().trim_ascii().is_empty()
}
