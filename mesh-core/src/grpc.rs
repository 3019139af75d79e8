//! gRPC status codes and their mapping to and from HTTP status codes.
//!
//! The mesh synthesizes gRPC failures (fault aborts, timeouts, breaker rejections) and judges
//! upstream gRPC responses, so the two mappings live here once:
//! - HTTP → gRPC follows gRPC's `doc/http-grpc-status-mapping.md`, used when an HTTP status is
//!   configured but the caller speaks gRPC.
//! - gRPC → HTTP follows Envoy's `Grpc::Utility::grpcToHttpStatus`, used by outlier detection
//!   so that a gRPC `UNAVAILABLE` counts as a 503 the way it does in Envoy.

use std::{fmt, str::FromStr};

use crate::Error;

/// A gRPC status code (`grpc-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // The variants are the gRPC specification's names.
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const ALL: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

// === impl GrpcCode ===

impl GrpcCode {
    /// The code for a numeric `grpc-status`; `None` outside 0..=16.
    pub fn from_i32(code: i32) -> Option<Self> {
        usize::try_from(code).ok().and_then(|i| ALL.get(i)).copied()
    }

    /// Parses the ASCII digits of a `grpc-status` header value without allocating.
    /// Anything else (empty, non-digits, out of range) is `None`.
    pub fn from_header_bytes(value: &[u8]) -> Option<Self> {
        match value {
            [d] if d.is_ascii_digit() => Self::from_i32(i32::from(d - b'0')),
            [b'1', d] if d.is_ascii_digit() => Self::from_i32(10 + i32::from(d - b'0')),
            _ => None,
        }
    }

    /// The numeric code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The numeric code as the ASCII text of a `grpc-status` header.
    pub fn as_header_str(self) -> &'static str {
        const TEXT: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        TEXT[self as usize]
    }

    /// The specification's upper-case name, e.g. `UNAVAILABLE`.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES[self as usize]
    }

    /// The gRPC code a gRPC client reports for a non-gRPC HTTP response with this status
    /// (gRPC's HTTP-to-gRPC status mapping).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The HTTP status Envoy attributes to this gRPC code (for outlier detection and metrics).
    pub fn to_http_status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Cancelled => 499,
            Self::Unknown => 500,
            Self::InvalidArgument => 400,
            Self::DeadlineExceeded => 504,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::FailedPrecondition => 400,
            Self::Aborted => 409,
            Self::OutOfRange => 400,
            Self::Unimplemented => 501,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::DataLoss => 500,
            Self::Unauthenticated => 401,
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GrpcCode {
    type Err = Error;

    /// Accepts the upper-case name (`UNAVAILABLE`, as Istio's `grpcStatus` uses) or the number.
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Ok(n) = s.parse::<i32>() {
            return Self::from_i32(n)
                .ok_or_else(|| Error::invalid(format!("{n} is not a gRPC status code (0-16)")));
        }
        ALL.iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::invalid(format!("`{s}` is not a gRPC status code name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_digits_round_trip_for_every_code() {
        for code in ALL {
            assert_eq!(
                GrpcCode::from_header_bytes(code.as_header_str().as_bytes()),
                Some(code)
            );
            assert_eq!(code.name().parse::<GrpcCode>().unwrap(), code);
        }
        for bad in [&b""[..], b"17", b"-1", b"1a", b"007", b"x"] {
            assert_eq!(GrpcCode::from_header_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_mapping_follows_the_grpc_spec() {
        assert_eq!(GrpcCode::from_http_status(503), GrpcCode::Unavailable);
        assert_eq!(GrpcCode::from_http_status(404), GrpcCode::Unimplemented);
        assert_eq!(GrpcCode::from_http_status(418), GrpcCode::Unknown);
        assert_eq!(GrpcCode::Unavailable.to_http_status(), 503);
        assert_eq!(GrpcCode::DeadlineExceeded.to_http_status(), 504);
    }
}
