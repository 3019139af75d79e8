//! The request hash for consistent hashing, computed from a route's hash policies exactly as
//! Envoy computes it, so sessions stick to the same endpoint as they would behind a sidecar.
//!
//! Each [`HashPolicy`] may produce a value:
//! - `Header`: xxh64 of the header's value; with several values, Envoy sorts them and chains
//!   xxh64 with each hash as the next seed.
//! - `Cookie`: xxh64 of the first cookie of that name in the `cookie` header(s). When it is
//!   absent and a `ttl` is set, [`request_hash_generating`] generates one, as Envoy does: a
//!   value of 16 hex digits, hashed like a received cookie (so the next request carrying it
//!   lands on the same endpoint), returned for the response's `Set-Cookie`. [`request_hash`]
//!   never generates: an absent cookie produces nothing.
//! - `SourceIp`: xxh64 of the caller's IP as text without port (`10.0.0.1`, `::1`).
//! - `QueryParameter`: xxh64 of the first value of that parameter, as written (not
//!   percent-decoded, as Envoy); a parameter without `=` has the empty value.
//!
//! Policies combine in order: `hash = hash.rotate_left(1) ^ next` (the rotation keeps two
//! identical policies from cancelling out). After a `terminal` policy, the walk stops if a hash
//! exists by then — Envoy checks the accumulated hash, not only the terminal policy's own, and
//! so do we. `None` means no policy produced a value: the caller then picks with a random hash
//! (Envoy's behaviour), which is no stickiness at all.

use std::{net::IpAddr, time::Duration};

use http::{HeaderMap, header::COOKIE};
use xxhash_rust::xxh64::xxh64;

use crate::route::{HashPolicy, HashSource};

/// The parts of a request that hash policies read, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The path with its query string, e.g. `/cart?user=42`.
    pub path_and_query: &'a str,
    /// The downstream caller's IP, when known.
    pub source_ip: Option<IpAddr>,
}

/// A cookie generated for a cookie hash policy the request did not satisfy; the request was
/// hashed on it and the response must set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCookie {
    /// Cookie name.
    pub name: String,
    /// Its value: 16 lowercase hex digits.
    pub value: String,
    /// Its path; `None` sets none.
    pub path: Option<String>,
    /// Its lifetime; under a second is a session cookie.
    pub ttl: Duration,
}

// === impl GeneratedCookie ===

impl GeneratedCookie {
    /// The `Set-Cookie` value, in Envoy's format.
    pub fn set_cookie(&self) -> String {
        super::session::set_cookie(&self.name, &self.value, self.path.as_deref(), self.ttl)
    }
}

/// The request's hash under `policies`, or `None` when none of them produced a value.
pub fn request_hash(policies: &[HashPolicy], request: &RequestView<'_>) -> Option<u64> {
    hash_policies(policies, request, None)
}

/// The request's hash under `policies`, generating the cookie of each cookie policy with a
/// `ttl` whose cookie the request lacks (Envoy's `RouteAction.HashPolicy.Cookie`): its value is
/// `fresh` as 16 hex digits, the request is hashed on it, and it is pushed to `generated` for
/// the response. Envoy derives the value from the downstream connection's addresses; a
/// proxyless mesh has no downstream connection, so the caller passes a random draw.
pub fn request_hash_generating(
    policies: &[HashPolicy],
    request: &RequestView<'_>,
    fresh: u64,
    generated: &mut Vec<GeneratedCookie>,
) -> Option<u64> {
    hash_policies(policies, request, Some((fresh, generated)))
}

fn hash_policies(
    policies: &[HashPolicy],
    request: &RequestView<'_>,
    mut generate: Option<(u64, &mut Vec<GeneratedCookie>)>,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for policy in policies {
        let own = policy_hash(&policy.source, request).or_else(|| {
            let (fresh, generated) = generate.as_mut()?;
            let cookie = generated_cookie(&policy.source, *fresh)?;
            let hash = xxh64(cookie.value.as_bytes(), 0);
            generated.push(cookie);
            Some(hash)
        });
        if let Some(next) = own {
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ next);
        }
        if policy.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

/// The cookie a cookie policy with a `ttl` generates when its cookie is absent.
fn generated_cookie(source: &HashSource, fresh: u64) -> Option<GeneratedCookie> {
    match source {
        HashSource::Cookie {
            name,
            ttl: Some(ttl),
            path,
        } => Some(GeneratedCookie {
            name: name.clone(),
            value: format!("{fresh:016x}"),
            path: path.clone(),
            ttl: *ttl,
        }),
        _ => None,
    }
}

/// One policy's value.
fn policy_hash(source: &HashSource, request: &RequestView<'_>) -> Option<u64> {
    match source {
        HashSource::Header(name) => {
            let mut values: Vec<&[u8]> = request
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if values.is_empty() {
                return None;
            }
            values.sort_unstable();
            Some(values.iter().fold(0, |seed, v| xxh64(v, seed)))
        }
        HashSource::Cookie { name, .. } => {
            cookie_value(request.headers, name).map(|v| xxh64(v.as_bytes(), 0))
        }
        HashSource::SourceIp => request
            .source_ip
            .map(|ip| xxh64(ip.to_string().as_bytes(), 0)),
        HashSource::QueryParameter(name) => {
            query_value(request.path_and_query, name).map(|v| xxh64(v.as_bytes(), 0))
        }
    }
}

/// The first value of cookie `name` across the `cookie` headers (`a=1; b=2`). Values in
/// double quotes are unquoted, as Envoy's cookie parser does.
pub(super) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// The first value of query parameter `name`, undecoded; `""` for a bare `name`.
fn query_value<'p>(path_and_query: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path_and_query.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k == name).then_some(v),
            None => (pair == name).then_some(""),
        })
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn policy(source: HashSource, terminal: bool) -> HashPolicy {
        HashPolicy { source, terminal }
    }

    fn header(name: &'static str) -> HashSource {
        HashSource::Header(HeaderName::from_static(name))
    }

    fn cookie(name: &str) -> HashSource {
        HashSource::Cookie {
            name: name.into(),
            ttl: None,
            path: None,
        }
    }

    fn view<'a>(headers: &'a HeaderMap, pq: &'a str, ip: Option<IpAddr>) -> RequestView<'a> {
        RequestView {
            headers,
            path_and_query: pq,
            source_ip: ip,
        }
    }

    fn x(s: &str) -> u64 {
        xxh64(s.as_bytes(), 0)
    }

    #[test]
    fn each_source_hashes_its_value_with_xxh64_seed_zero() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; session=\"abc\"; x=1"),
        );
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let r = view(&h, "/cart?lang=en&user=42&flag", Some(ip));
        let one = |s| request_hash(&[policy(s, false)], &r);
        assert_eq!(one(header("x-user")), Some(x("alice")));
        assert_eq!(one(cookie("session")), Some(x("abc")));
        assert_eq!(one(HashSource::SourceIp), Some(x("10.1.2.3")));
        assert_eq!(
            one(HashSource::QueryParameter("user".into())),
            Some(x("42"))
        );
        assert_eq!(one(HashSource::QueryParameter("flag".into())), Some(x("")));
        assert_eq!(one(HashSource::QueryParameter("nope".into())), None);
        assert_eq!(one(cookie("nope")), None);
        assert_eq!(one(header("x-missing")), None);
    }

    #[test]
    fn repeated_header_values_are_sorted_then_chained() {
        let mut a = HeaderMap::new();
        a.append("x-k", HeaderValue::from_static("b"));
        a.append("x-k", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.append("x-k", HeaderValue::from_static("a"));
        b.append("x-k", HeaderValue::from_static("b"));
        let p = [policy(header("x-k"), false)];
        let ha = request_hash(&p, &view(&a, "/", None));
        assert_eq!(ha, request_hash(&p, &view(&b, "/", None)));
        assert_eq!(ha, Some(xxh64(b"b", xxh64(b"a", 0))));
    }

    #[test]
    fn policies_combine_by_rotate_and_xor_and_a_terminal_one_stops_the_walk() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        let r = view(&h, "/", None);
        // Two identical policies do not cancel out.
        let twice = [policy(header("x-a"), false), policy(header("x-a"), false)];
        assert_eq!(
            request_hash(&twice, &r),
            Some(x("1").rotate_left(1) ^ x("1"))
        );
        // A terminal policy that produced a value stops the walk...
        let terminal = [policy(header("x-a"), true), policy(header("x-b"), false)];
        assert_eq!(request_hash(&terminal, &r), Some(x("1")));
        // ...one that produced nothing does not, unless an earlier policy did (Envoy checks
        // the accumulated hash).
        let missing_first = [policy(header("x-none"), true), policy(header("x-b"), false)];
        assert_eq!(request_hash(&missing_first, &r), Some(x("2")));
        let earlier = [
            policy(header("x-a"), false),
            policy(header("x-none"), true),
            policy(header("x-b"), false),
        ];
        assert_eq!(request_hash(&earlier, &r), Some(x("1")));
        // Nothing produced: the caller hashes randomly.
        assert_eq!(request_hash(&[policy(header("x-none"), false)], &r), None);
        assert_eq!(request_hash(&[], &r), None);
    }

    #[test]
    fn an_absent_cookie_with_a_ttl_is_generated_and_hashed_like_a_received_one() {
        let with_ttl = |ttl| HashSource::Cookie {
            name: "user".into(),
            ttl,
            path: Some("/cart".into()),
        };
        let p = [policy(with_ttl(Some(Duration::from_secs(60))), false)];
        let empty = HeaderMap::new();
        let mut generated = Vec::new();
        let hash = request_hash_generating(&p, &view(&empty, "/", None), 0xab, &mut generated);
        assert_eq!(generated.len(), 1);
        assert_eq!(generated[0].value, "00000000000000ab");
        assert_eq!(
            generated[0].set_cookie(),
            "user=\"00000000000000ab\"; Max-Age=60; Path=/cart; HttpOnly"
        );
        // The next request, carrying the cookie, hashes the same.
        let mut back = HeaderMap::new();
        back.insert(
            COOKIE,
            HeaderValue::from_static("user=\"00000000000000ab\""),
        );
        assert_eq!(hash, request_hash(&p, &view(&back, "/", None)));
        assert_eq!(hash, Some(x("00000000000000ab")));
        // A present cookie, or no ttl, generates nothing; plain `request_hash` never does.
        let mut none = Vec::new();
        request_hash_generating(&p, &view(&back, "/", None), 1, &mut none);
        let no_ttl = [policy(with_ttl(None), false)];
        assert_eq!(
            request_hash_generating(&no_ttl, &view(&empty, "/", None), 1, &mut none),
            None
        );
        assert!(none.is_empty());
        assert_eq!(request_hash(&p, &view(&empty, "/", None)), None);
        // A zero ttl is a session cookie.
        let session = [policy(with_ttl(Some(Duration::ZERO)), false)];
        request_hash_generating(&session, &view(&empty, "/", None), 1, &mut none);
        assert_eq!(
            none[0].set_cookie(),
            "user=\"0000000000000001\"; Path=/cart; HttpOnly"
        );
    }
}
