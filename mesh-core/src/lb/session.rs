//! Stateful session affinity, the pure half: reading the endpoint a request names and writing
//! the value a response carries, exactly as Envoy's `stateful_session` filter and gRFC A55 do,
//! so a cookie or header minted behind a sidecar pins the same endpoint here and back.
//!
//! - The session value is the standard base64 (with padding) of the endpoint's `ip:port`
//!   (`[v6]:port` for IPv6), e.g. `MTI3LjAuMC4xOjgw` for `127.0.0.1:80`. A value that does not
//!   decode to a socket address is ignored: the request is balanced and gets a new value.
//! - A cookie applies only to requests whose path path-matches the cookie's path
//!   (RFC 6265 §5.1.4); outside it the request is neither pinned nor given a cookie.
//! - The response carries a value only when the endpoint that served it is not the one the
//!   request named: a `Set-Cookie` in Envoy's format (see [`set_cookie`]), or the header set to
//!   the new value.
//!
//! Whether the named endpoint may take the request (in the cluster, health allowed by
//! `override_host_status`) is the data plane's question: it knows outlier ejections.

use std::{net::SocketAddr, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, header::SET_COOKIE};

use super::hash::cookie_value;
use crate::route::{SessionAffinity, SessionState};

/// What a request says about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRequest {
    /// The session does not apply to this request (a cookie path that does not match): no pin,
    /// and nothing is added to the response.
    Outside,
    /// No session value, or one that does not name a socket address.
    Unpinned {
        /// Whether a value was present but malformed (worth a log line).
        malformed: bool,
    },
    /// The request names this endpoint.
    Pinned(SocketAddr),
}

// === impl SessionRequest ===

impl SessionRequest {
    /// The endpoint the request names, if any.
    pub fn host(self) -> Option<SocketAddr> {
        match self {
            Self::Pinned(addr) => Some(addr),
            Self::Outside | Self::Unpinned { .. } => None,
        }
    }
}

/// Reads the session of a request with `headers` and `path` (without the query).
pub fn session_request(
    session: &SessionAffinity,
    headers: &HeaderMap,
    path: &str,
) -> SessionRequest {
    let value = match &session.state {
        SessionState::Cookie {
            name, path: scope, ..
        } => {
            if !path_matches(scope, path) {
                return SessionRequest::Outside;
            }
            cookie_value(headers, name)
        }
        SessionState::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
    };
    match value {
        None => SessionRequest::Unpinned { malformed: false },
        Some(v) => decode_host(v).map_or(
            SessionRequest::Unpinned { malformed: true },
            SessionRequest::Pinned,
        ),
    }
}

/// The header a response served by `served` must carry for a request that read as `request`;
/// `None` when the request named `served` already or the session does not apply.
pub fn session_response(
    session: &SessionAffinity,
    request: SessionRequest,
    served: SocketAddr,
) -> Option<(HeaderName, HeaderValue)> {
    match request {
        SessionRequest::Outside => return None,
        SessionRequest::Pinned(addr) if addr == served => return None,
        SessionRequest::Pinned(_) | SessionRequest::Unpinned { .. } => {}
    }
    let value = encode_host(served);
    match &session.state {
        SessionState::Cookie { name, path, ttl } => {
            let cookie = set_cookie(name, &value, Some(path), *ttl);
            HeaderValue::try_from(cookie).ok().map(|v| (SET_COOKIE, v))
        }
        SessionState::Header(name) => HeaderValue::try_from(value).ok().map(|v| (name.clone(), v)),
    }
}

/// A `Set-Cookie` value in Envoy's format (`Http::Utility::makeSetCookieValue`):
/// `name="value"; Max-Age=<whole seconds>; Path=<path>; HttpOnly`. `Max-Age` is left out when
/// `ttl` is under a second (a session cookie), `Path` when there is none.
pub fn set_cookie(name: &str, value: &str, path: Option<&str>, ttl: Duration) -> String {
    let mut cookie = format!("{name}=\"{value}\"");
    if ttl.as_secs() > 0 {
        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        cookie.push_str("; Path=");
        cookie.push_str(path);
    }
    cookie.push_str("; HttpOnly");
    cookie
}

/// RFC 6265 §5.1.4: `cookie_path` path-matches `request_path`.
pub fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    match request_path.strip_prefix(cookie_path) {
        Some(rest) => rest.is_empty() || cookie_path.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The session value of an endpoint: base64 of its `ip:port`.
pub fn encode_host(addr: SocketAddr) -> String {
    base64_encode(addr.to_string().as_bytes())
}

/// The endpoint a session value names, if it is base64 of a socket address.
pub fn decode_host(value: &str) -> Option<SocketAddr> {
    let bytes = base64_decode(value.trim())?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as Envoy's `Base64::encode`.
fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; `None` on any other character or a bad length.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let digits = input.trim_end_matches('=');
    if input.len() - digits.len() > 2 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in digits.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_session(path: &str, ttl: u64) -> SessionAffinity {
        SessionAffinity {
            state: SessionState::Cookie {
                name: "sticky".into(),
                path: path.into(),
                ttl: Duration::from_secs(ttl),
            },
            strict: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_value_is_base64_of_ip_and_port_as_in_envoys_docs() {
        // Envoy's cookie.proto example: sticky-host="MS4yLjMuNDo4MA==" names 1.2.3.4:80.
        let addr: SocketAddr = "1.2.3.4:80".parse().unwrap();
        assert_eq!(encode_host(addr), "MS4yLjMuNDo4MA==");
        assert_eq!(decode_host("MS4yLjMuNDo4MA=="), Some(addr));
        assert_eq!(decode_host("MS4yLjMuNDo4MA"), Some(addr));
        let v6: SocketAddr = "[::1]:50051".parse().unwrap();
        assert_eq!(decode_host(&encode_host(v6)), Some(v6));
        for bad in ["", "!!!!", "MS4yLjMuNA==", "a", "MS4yLjMuNDo4MA==="] {
            assert_eq!(decode_host(bad), None, "{bad}");
        }
        for n in 0..7 {
            let input: Vec<u8> = (0..n).map(|i| i * 37 + 1).collect();
            assert_eq!(base64_decode(&base64_encode(&input)).unwrap(), input);
        }
    }

    #[test]
    fn set_cookie_has_envoys_format() {
        assert_eq!(
            set_cookie("user", "abc", Some("/cart"), Duration::from_secs(60)),
            "user=\"abc\"; Max-Age=60; Path=/cart; HttpOnly"
        );
        assert_eq!(
            set_cookie("user", "abc", None, Duration::from_millis(900)),
            "user=\"abc\"; HttpOnly"
        );
    }

    #[test]
    fn cookie_paths_match_as_rfc_6265_says() {
        assert!(path_matches("/", "/a/b"));
        assert!(path_matches("/Service/Method", "/Service/Method"));
        assert!(path_matches("/Service", "/Service/Method"));
        assert!(path_matches("/Service/", "/Service/Method"));
        assert!(!path_matches("/Service", "/ServiceX/Method"));
        assert!(!path_matches("/Service/Method", "/Service"));
    }

    #[test]
    fn a_request_is_pinned_outside_or_unpinned() {
        let s = cookie_session("/svc", 0);
        let pinned = headers(&[("cookie", "a=1; sticky=\"MS4yLjMuNDo4MA==\"")]);
        let addr: SocketAddr = "1.2.3.4:80".parse().unwrap();
        assert_eq!(
            session_request(&s, &pinned, "/svc/M"),
            SessionRequest::Pinned(addr)
        );
        assert_eq!(
            session_request(&s, &pinned, "/other"),
            SessionRequest::Outside
        );
        assert_eq!(
            session_request(&s, &headers(&[("cookie", "sticky=zz")]), "/svc"),
            SessionRequest::Unpinned { malformed: true }
        );
        assert_eq!(
            session_request(&s, &HeaderMap::new(), "/svc"),
            SessionRequest::Unpinned { malformed: false }
        );
        let h = SessionAffinity {
            state: SessionState::Header(HeaderName::from_static("x-session")),
            strict: false,
        };
        assert_eq!(
            session_request(&h, &headers(&[("x-session", "MS4yLjMuNDo4MA==")]), "/any"),
            SessionRequest::Pinned(addr)
        );
    }

    #[test]
    fn the_response_carries_a_value_only_when_the_endpoint_changed() {
        let s = cookie_session("/", 120);
        let a: SocketAddr = "1.2.3.4:80".parse().unwrap();
        let b: SocketAddr = "1.2.3.5:80".parse().unwrap();
        assert_eq!(session_response(&s, SessionRequest::Pinned(a), a), None);
        assert_eq!(session_response(&s, SessionRequest::Outside, a), None);
        let (name, value) = session_response(&s, SessionRequest::Pinned(b), a).unwrap();
        assert_eq!(name, SET_COOKIE);
        assert_eq!(
            value,
            "sticky=\"MS4yLjMuNDo4MA==\"; Max-Age=120; Path=/; HttpOnly"
        );
        let h = SessionAffinity {
            state: SessionState::Header(HeaderName::from_static("x-session")),
            strict: false,
        };
        let (name, value) =
            session_response(&h, SessionRequest::Unpinned { malformed: false }, a).unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-session", "MS4yLjMuNDo4MA==")
        );
    }
}
