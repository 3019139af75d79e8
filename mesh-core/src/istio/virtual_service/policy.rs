//! A route's policy: header changes, faults, retries, redirects, direct responses and
//! rewrites.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::default_retry;
use crate::istio::cursor::Obj;
use crate::{
    AbortStatus, Backoff, FaultAbort, FaultDelay, FaultPolicy, GrpcCode, Percentage, RetryOn,
    RetryPolicy,
    matcher::RegexRewrite,
    route::{DirectResponse, HeaderMutations, PathRewrite, Redirect, RedirectStatus},
};

/// A path rewrite before the match kind decides prefix or full-path.
pub(super) enum Rewrite {
    Uri(String),
    Regex(RegexRewrite),
}

/// `{request: {set, add, remove}, response: {...}}`.
pub(super) fn read_headers(mut o: Obj<'_>) -> (HeaderMutations, HeaderMutations) {
    let req = o.obj("request").map(read_mutations).unwrap_or_default();
    let resp = o.obj("response").map(read_mutations).unwrap_or_default();
    (req, resp)
}

fn read_mutations(mut o: Obj<'_>) -> HeaderMutations {
    let cx = o.cx();
    let pairs = |o: &mut Obj<'_>, key: &'static str| -> Vec<(HeaderName, HeaderValue)> {
        let path = o.at(key);
        let mut out = Vec::new();
        for (k, v) in o.str_map(key) {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => out.push((k, v)),
                (Err(_), _) => cx.error(&path, format!("`{k}` is not a valid header name")),
                (_, Err(_)) => cx.error(&path, format!("`{v}` is not a valid header value")),
            }
        }
        out
    };
    let set = pairs(&mut o, "set");
    let add = pairs(&mut o, "add");
    let mut remove = Vec::new();
    for (path, k) in o.str_list("remove") {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(k) => remove.push(k),
            Err(_) => cx.error(&path, format!("`{k}` is not a valid header name")),
        }
    }
    HeaderMutations {
        set: set.into(),
        add: add.into(),
        remove: remove.into(),
    }
}

/// `{value: 12.5}` (Istio's `Percent`).
pub(super) fn read_percentage(mut o: Obj<'_>) -> Option<Percentage> {
    let n = o.node("value")?;
    let v = n.f64()?;
    match Percentage::from_percent_f64(v) {
        Ok(p) => Some(p),
        Err(e) => {
            n.error(e.message());
            None
        }
    }
}

/// A fault's share: `percentage.value`, else the deprecated integer `percent`, else 100 %.
fn fault_percentage(o: &mut Obj<'_>) -> Percentage {
    if let Some(p) = o.obj("percentage") {
        return read_percentage(p).unwrap_or(Percentage::HUNDRED);
    }
    if let Some(n) = o.node("percent")
        && let Some(v) = n.uint(100)
    {
        return Percentage::from_percent(v as u32).unwrap_or(Percentage::HUNDRED);
    }
    Percentage::HUNDRED
}

pub(super) fn read_fault(mut o: Obj<'_>) -> Option<FaultPolicy> {
    let cx = o.cx();
    let errors = cx.error_count();
    let mut fault = FaultPolicy::default();
    if let Some(mut d) = o.obj("delay") {
        let percentage = fault_percentage(&mut d);
        d.unsupported("exponentialDelay");
        match d.duration("fixedDelay") {
            Some(duration) => {
                fault.delay = Some(FaultDelay {
                    duration,
                    percentage,
                })
            }
            None if !d.has("fixedDelay") => d.error("fixedDelay", "required field is missing"),
            None => {}
        }
    }
    if let Some(mut a) = o.obj("abort") {
        let percentage = fault_percentage(&mut a);
        a.unsupported("http2Error");
        let status = if let Some(n) = a.node("httpStatus") {
            n.uint(u64::from(u16::MAX))
                .and_then(|s| match AbortStatus::http(s as u16) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        n.error(e.message());
                        None
                    }
                })
        } else if let Some(n) = a.node("grpcStatus") {
            n.str().and_then(|s| match s.parse::<GrpcCode>() {
                Ok(c) => Some(AbortStatus::Grpc(c)),
                Err(e) => {
                    n.error(e.message());
                    None
                }
            })
        } else {
            a.error_here("httpStatus or grpcStatus is required");
            None
        };
        if let Some(status) = status {
            fault.abort = Some(FaultAbort { status, percentage });
        }
    }
    drop(o);
    (cx.error_count() == errors).then_some(fault)
}

pub(super) fn read_retries(mut o: Obj<'_>) -> Option<RetryPolicy> {
    let attempts = o.u32("attempts").unwrap_or(0);
    let per_try = o.duration("perTryTimeout").filter(|t| !t.is_zero());
    let mut policy = default_retry();
    if let Some(n) = o.node("retryOn")
        && let Some(s) = n.str()
    {
        match RetryOn::parse(s) {
            Ok((on, codes)) => {
                policy.retry_on = on;
                policy.retriable_status_codes = codes.into();
            }
            Err(e) => n.error(e.message()),
        }
    }
    // Istio maps this onto Envoy's `previous_priorities` retry priority, which needs a
    // locality-aware balancer; the mesh balances without localities, so it says so.
    if o.bool("retryRemoteLocalities") == Some(true) {
        o.warn("retryRemoteLocalities", "is not supported, ignored");
    }
    // Istio's `backoff` is Envoy's `retry_back_off.base_interval`; the max is Envoy's default
    // of 10 × base.
    if let Some(n) = o.node("backoff")
        && let Some(base) = n.duration()
    {
        match Backoff::with_base(base) {
            Ok(backoff) => policy.backoff = backoff,
            Err(e) => n.error(e.message()),
        }
    }
    // Istio: `true` keeps Envoy's `previous_hosts` predicate (its default), `false` drops it.
    if let Some(prefer_other) = o.bool("retryIgnorePreviousHosts") {
        policy.prefer_other_endpoint = prefer_other;
    }
    if attempts == 0 {
        return None;
    }
    policy.max_retries = attempts;
    policy.per_try_timeout = per_try;
    Some(policy)
}

pub(super) fn read_redirect(mut o: Obj<'_>) -> Option<Redirect> {
    let cx = o.cx();
    let errors = cx.error_count();
    let path = o.str("uri").map(|u| PathRewrite::FullPath(u.to_string()));
    let host = o.str("authority").map(str::to_string);
    let port = o.port("port");
    let scheme = o.str("scheme").map(str::to_string);
    o.unsupported("derivePort");
    let status = match o.node("redirectCode") {
        Some(n) => n
            .uint(u64::from(u16::MAX))
            .and_then(|c| match RedirectStatus::new(c as u16) {
                Ok(s) => Some(s),
                Err(e) => {
                    n.error(e.message());
                    None
                }
            }),
        None => Some(RedirectStatus::default()),
    };
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    Some(Redirect {
        scheme,
        host,
        port,
        path,
        strip_query: false,
        status: status?,
    })
}

pub(super) fn read_direct(mut o: Obj<'_>) -> Option<DirectResponse> {
    let status_node = o.node("status");
    let mut body = None;
    if let Some(mut b) = o.obj("body") {
        body = b.str("string").map(Arc::from);
        b.unsupported("bytes");
    }
    let Some(n) = status_node else {
        o.error("status", "required field is missing");
        return None;
    };
    let status = n.uint(u64::from(u16::MAX))?;
    match DirectResponse::new(status as u16, body) {
        Ok(d) => Some(d),
        Err(e) => {
            n.error(e.message());
            None
        }
    }
}

/// `rewrite`: the path rewrite and the authority rewrite.
pub(super) fn read_rewrite(mut o: Obj<'_>) -> Option<(Option<Rewrite>, Option<HeaderValue>)> {
    let cx = o.cx();
    let errors = cx.error_count();
    let uri = o.str("uri");
    let authority = o.node("authority").and_then(|n| {
        let s = n.str()?;
        match HeaderValue::from_str(s) {
            Ok(v) => Some(v),
            Err(_) => {
                n.error(format!("`{s}` is not a valid authority"));
                None
            }
        }
    });
    let mut regex = None;
    if let Some(mut r) = o.obj("uriRegexRewrite") {
        let pattern = r.req_str("match");
        let rewrite = r.req_str("rewrite");
        if let (Some(p), Some(s)) = (pattern, rewrite) {
            match RegexRewrite::new(p, s) {
                Ok(re) => regex = Some(re),
                Err(e) => r.error("match", e.message()),
            }
        }
    }
    if uri.is_some() && o.has("uriRegexRewrite") {
        o.error_here("uri and uriRegexRewrite are mutually exclusive");
    }
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    let path = match (uri, regex) {
        (Some(u), _) => Some(Rewrite::Uri(u.to_string())),
        (None, Some(re)) => Some(Rewrite::Regex(re)),
        (None, None) => None,
    };
    Some((path, authority))
}
