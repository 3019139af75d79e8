//! Request-head normalization: the first step of the server stack, so that authorization, the
//! health-check bypass and the handler judge one and the same request.
//!
//! A policy compares strings while the application interprets them; every difference between
//! the two is a way around the policy (Istio's CVE-2021-31920 family). So, as Envoy does in
//! front of Istio's RBAC filter:
//!
//! - the path is normalized by the policy's [`PathNormalizer`] (Istio's `pathNormalization`,
//!   default `BASE`) and the request URI is **rewritten**, so the handler routes on the path
//!   that was judged; the query is kept as received;
//! - a method with a lower-case letter is refused, as Istio does: `delete` is neither judged
//!   as `DELETE` nor let past a rule on `DELETE`;
//! - the authority is made single: with an authority in the URI (HTTP/1.1 absolute-form, or
//!   HTTP/2's `:authority`) that is the request's host (RFC 9112 §3.2.2, RFC 9113 §8.3.1), and a
//!   differing `Host` header is replaced by it, as Envoy does for absolute URLs, so a handler
//!   reading `Host` sees what host rules judged. Several `Host` headers, or user information in
//!   the authority, have no single meaning and are refused.
//!
//! A refused request gets 400, or a trailers-only `INVALID_ARGUMENT` for gRPC callers.
//!
//! Clean requests (the common case) are only scanned: nothing is copied or rebuilt.

use std::borrow::Cow;

use http::{HeaderValue, Request, Response, StatusCode, header};
use mesh_core::{GrpcCode, PathNormalizer};

use crate::{body::ResponseBody, request_path::normalize_path, synthesize::Failure};

/// Why a request head was refused; the message is the 400's body.
#[derive(Debug)]
pub(crate) struct Refused(Cow<'static, str>);

/// Normalizes `req`'s head in place (path, `Host`), or says why it is refused.
pub(crate) fn normalize<B>(req: &mut Request<B>, paths: &PathNormalizer) -> Result<(), Refused> {
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(Refused("method is not upper case".into()));
    }
    normalize_authority(req)?;
    normalize_path(req, paths).map_err(|message| Refused(message.into()))
}

/// The response to a refused request.
pub(crate) fn refused_response(refused: Refused, is_grpc: bool) -> Response<ResponseBody> {
    Failure::unflagged(
        GrpcCode::InvalidArgument,
        StatusCode::BAD_REQUEST,
        refused.0,
    )
    .into_response(is_grpc)
}

/// One authority per request: the URI's when it has one, else the single `Host` header.
fn normalize_authority<B>(req: &mut Request<B>) -> Result<(), Refused> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused("more than one host header".into()));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Err(Refused("authority has user information".into()));
    }
    let differs = host.is_some_and(|h| {
        !h.as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    });
    if differs {
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| Refused("authority is not a valid host".into()))?;
        req.headers_mut().insert(header::HOST, value);
    }
    Ok(())
}
