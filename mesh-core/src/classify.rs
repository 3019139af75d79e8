//! The one failure classifier: what happened to an attempt, judged once and read by retry,
//! outlier detection, circuit breaking and metrics alike.
//!
//! The data plane turns what it saw (a response head, trailers, a transport error, a timer)
//! into an [`Outcome`]; every policy asks the outcome questions instead of re-inspecting the
//! response, so "is this a failure" has exactly one answer in the process.

use crate::GrpcCode;

/// What happened to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered. For gRPC, `grpc_status` is the status from the trailers-only
    /// response or the trailers (`None` while unknown or for non-gRPC responses).
    Response {
        /// The HTTP status.
        http_status: u16,
        /// The gRPC status, when the response is gRPC and it has been seen.
        grpc_status: Option<GrpcCode>,
    },
    /// No connection could be made (refused, unreachable, TLS handshake failed).
    ConnectFailure,
    /// The stream or connection was reset before a complete response.
    Reset,
    /// The server refused the stream (HTTP/2 `REFUSED_STREAM`): it never processed it, so a
    /// retry is always safe.
    RefusedStream,
    /// The per-try timeout fired before the response.
    Timeout,
}

/// Where a failure originated, for Envoy's split of external and local-origin errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The upstream answered with an error.
    External,
    /// The failure happened locally: connecting, a reset, a timeout.
    Local,
}

// === impl Outcome ===

impl Outcome {
    /// A gRPC response with `status` (HTTP 200).
    pub fn grpc(status: GrpcCode) -> Self {
        Self::Response {
            http_status: 200,
            grpc_status: Some(status),
        }
    }

    /// A plain HTTP response.
    pub fn http(status: u16) -> Self {
        Self::Response {
            http_status: status,
            grpc_status: None,
        }
    }

    /// The HTTP status this outcome counts as, the way Envoy attributes it: the gRPC status
    /// mapped to HTTP for a gRPC response, 503 for a connect failure / reset / refused stream,
    /// and 504 for a timeout.
    pub fn effective_http_status(self) -> u16 {
        match self {
            Self::Response {
                http_status: 200,
                grpc_status: Some(code),
            } => code.to_http_status(),
            Self::Response { http_status, .. } => http_status,
            Self::ConnectFailure | Self::Reset | Self::RefusedStream => 503,
            Self::Timeout => 504,
        }
    }

    /// Whether the attempt succeeded: a non-5xx HTTP response whose gRPC status, if any, is
    /// not a server-side failure. A 4xx or a gRPC `NOT_FOUND` is the caller's problem, not the
    /// upstream's, so it is a success for health purposes (Envoy and Linkerd agree).
    pub fn is_success(self) -> bool {
        !self.is_5xx()
    }

    /// Envoy's "5xx" class: any effective status ≥ 500, or no response at all.
    pub fn is_5xx(self) -> bool {
        self.effective_http_status() >= 500
    }

    /// Envoy's "gateway error" class: effective 502, 503 or 504, or no response at all.
    pub fn is_gateway_error(self) -> bool {
        matches!(self.effective_http_status(), 502..=504)
    }

    /// Whether the attempt failed locally (connect failure, reset, refused stream, timeout).
    pub fn origin(self) -> Origin {
        match self {
            Self::Response { .. } => Origin::External,
            _ => Origin::Local,
        }
    }

    /// The gRPC status when the outcome is a gRPC response.
    pub fn grpc_status(self) -> Option<GrpcCode> {
        match self {
            Self::Response { grpc_status, .. } => grpc_status,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_failures_count_by_their_http_mapping() {
        assert!(Outcome::grpc(GrpcCode::Unavailable).is_gateway_error());
        assert!(Outcome::grpc(GrpcCode::Internal).is_5xx());
        assert!(!Outcome::grpc(GrpcCode::Internal).is_gateway_error());
        assert!(Outcome::grpc(GrpcCode::NotFound).is_success());
        assert!(Outcome::grpc(GrpcCode::Ok).is_success());
    }

    #[test]
    fn transport_failures_are_local_gateway_errors() {
        for o in [
            Outcome::ConnectFailure,
            Outcome::Reset,
            Outcome::RefusedStream,
            Outcome::Timeout,
        ] {
            assert!(o.is_5xx() && o.is_gateway_error(), "{o:?}");
            assert_eq!(o.origin(), Origin::Local);
        }
        assert_eq!(Outcome::http(500).origin(), Origin::External);
        assert!(!Outcome::http(500).is_gateway_error());
        assert!(Outcome::http(404).is_success());
    }
}
