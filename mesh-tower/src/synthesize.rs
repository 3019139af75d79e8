//! Responses the mesh answers itself: gRPC-correct for gRPC callers, plain HTTP otherwise.
//!
//! A gRPC caller always gets HTTP 200 with `grpc-status` in the headers of a body-less response
//! (gRPC's *trailers-only* form, which hyper sends as one HEADERS frame with END_STREAM), so a
//! tonic client reports the intended status, not a transport error. An HTTP caller gets the HTTP
//! status and a `text/plain` body with the same message. Either way the response carries the
//! [`ResponseFlags`] that explain it (Envoy's response flags), for metrics and logs.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use mesh_core::GrpcCode;

mod flags;

pub use self::flags::ResponseFlags;
use crate::body::ResponseBody;

/// A failure to answer with; built once where it is decided.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) grpc: GrpcCode,
    pub(crate) http: StatusCode,
    pub(crate) message: String,
    /// `None` for answers Envoy gives no flag (an RBAC denial).
    pub(crate) flags: Option<ResponseFlags>,
}

// === impl Failure ===

impl Failure {
    pub(crate) fn new(
        grpc: GrpcCode,
        http: StatusCode,
        flags: ResponseFlags,
        message: impl Into<String>,
    ) -> Self {
        Self {
            grpc,
            http,
            message: message.into(),
            flags: Some(flags),
        }
    }

    /// An answer Envoy gives no response flag (an RBAC denial: `response_flags="-"`).
    pub(crate) fn unflagged(grpc: GrpcCode, http: StatusCode, message: impl Into<String>) -> Self {
        Self {
            grpc,
            http,
            message: message.into(),
            flags: None,
        }
    }

    /// The response for a gRPC (`is_grpc`) or HTTP caller.
    pub(crate) fn into_response(self, is_grpc: bool) -> Response<ResponseBody> {
        tracing::debug!(
            flags = self.flags.map_or("-", ResponseFlags::short_code),
            grpc_status = %self.grpc,
            http_status = self.http.as_u16(),
            detail = %self.message,
            "answered by the mesh"
        );
        let mut response = if is_grpc {
            grpc_status_response(self.grpc, &self.message)
        } else {
            let mut r = Response::new(ResponseBody::full(self.message));
            *r.status_mut() = self.http;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        if let Some(flags) = self.flags {
            response.extensions_mut().insert(flags);
        }
        response
    }
}

/// A trailers-only gRPC response with `code` and `message` (percent-encoded as gRPC requires).
pub(crate) fn grpc_status_response(code: GrpcCode, message: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    insert_grpc_status(h, code, message);
    r
}

/// Trailers that end a gRPC response with `code` and `message`.
pub(crate) fn grpc_status_trailers(code: GrpcCode, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    insert_grpc_status(&mut trailers, code, message);
    trailers
}

fn insert_grpc_status(headers: &mut HeaderMap, code: GrpcCode, message: &str) {
    headers.insert(
        crate::names::GRPC_STATUS,
        HeaderValue::from_static(code.as_header_str()),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(crate::names::GRPC_MESSAGE, v);
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, become `%XX`.
fn percent_encode(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http_body::Body;

    use super::*;

    #[test]
    fn grpc_callers_get_a_trailers_only_status() {
        let f = Failure::new(
            GrpcCode::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UpstreamOverflow,
            "over 100% — full",
        );
        let r = f.clone().into_response(true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "over 100%25 %E2%80%94 full");
        assert!(r.body().is_end_stream());
        assert_eq!(
            r.extensions().get::<ResponseFlags>(),
            Some(&ResponseFlags::UpstreamOverflow)
        );
        let h = f.into_response(false);
        assert_eq!(h.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(h.headers().get("grpc-status").is_none());
    }
}
