//! Stickiness read from the request before the balancer picks, and written on the response
//! after: the cookie a `consistentHash.httpCookie` with a `ttl` generates (Envoy's hash policy
//! cookie), and stateful sessions (Envoy's `stateful_session` filter, gRFC A55).
//!
//! A session pin bypasses the balancer when the named endpoint is in the cluster and its
//! health is in the cluster's `override_host_status` (an outlier-ejected endpoint counts as
//! unhealthy). Retries of a pinned request go to the same endpoint, as A55 says; a request the
//! endpoint provably did not process is still resent elsewhere, and that answer carries the new
//! session value. Values go only on responses that came from an endpoint: an answer the mesh
//! synthesized (breaker, connect failure) names no endpoint that served the request.

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response};
use mesh_core::{
    EndpointAddress, HealthStatus, LbPolicy,
    lb::{
        GeneratedCookie, RequestView, SessionRequest, request_hash, request_hash_generating,
        session_request, session_response,
    },
    route::SessionAffinity,
};

use super::UpstreamAddress;
use crate::{cluster::ClusterEntry, decision::RouteDecision, rng, synthesize::ResponseFlags};

/// What a request asked for, kept to write the response.
#[derive(Debug, Default)]
pub(super) struct Affinity {
    session: Option<(Arc<SessionAffinity>, SessionRequest)>,
    generated: Vec<GeneratedCookie>,
}

/// Where a session sends a request.
#[derive(Debug)]
pub(super) enum Pin {
    /// Nowhere in particular: the balancer picks.
    Balance,
    /// The endpoint at this index of the cluster.
    Endpoint(usize),
    /// A strict session whose endpoint cannot take the request: answer `UNAVAILABLE`.
    Refused(SocketAddr),
}

// === impl Affinity ===

impl Affinity {
    /// Reads the request's hash (generating cookies where a ring-hash cluster's policy says
    /// so) and session.
    pub(super) fn read<B>(decision: &RouteDecision, req: &Request<B>) -> (Self, Option<u64>) {
        let mut affinity = Self::default();
        let forward = &decision.forward;
        let hash = if forward.hash_policy.is_empty() {
            None
        } else {
            let view = RequestView {
                headers: req.headers(),
                path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                source_ip: decision.source_ip,
            };
            // Envoy computes (and so generates) the hash only for a hashing balancer.
            if matches!(decision.cluster.policy.lb, LbPolicy::RingHash { .. }) {
                request_hash_generating(
                    &forward.hash_policy,
                    &view,
                    rng::draw(),
                    &mut affinity.generated,
                )
            } else {
                request_hash(&forward.hash_policy, &view)
            }
        };
        if let Some(session) = &forward.session {
            let read = session_request(session, req.headers(), req.uri().path());
            if let SessionRequest::Unpinned { malformed: true } = read {
                tracing::debug!(
                    "session value is not base64 of an ip:port; the request is balanced"
                );
            }
            affinity.session = Some((session.clone(), read));
        }
        (affinity, hash)
    }

    /// Whether the response needs nothing from this request.
    pub(super) fn is_inert(&self) -> bool {
        self.session.is_none() && self.generated.is_empty()
    }

    /// Where the session sends the request in `cluster`.
    pub(super) fn pin(&self, cluster: &ClusterEntry) -> Pin {
        let Some((session, read)) = &self.session else {
            return Pin::Balance;
        };
        let Some(host) = read.host() else {
            return Pin::Balance;
        };
        let address = EndpointAddress::Socket(host);
        let ejected = cluster.state.is_ejected(&address);
        let usable = cluster
            .policy
            .endpoints
            .iter()
            .enumerate()
            .find(|(_, e)| e.address == address)
            .filter(|(_, e)| {
                let health = if ejected {
                    HealthStatus::Unhealthy
                } else {
                    e.health
                };
                cluster.policy.override_host_status.contains(health)
            })
            .map(|(i, _)| i)
            .filter(|&i| i < cluster.connections.len());
        match usable {
            Some(i) => Pin::Endpoint(i),
            None if session.strict => Pin::Refused(host),
            None => Pin::Balance,
        }
    }

    /// Adds the generated cookies and the session value to a response an endpoint served.
    pub(super) fn write<B>(&self, response: &mut Response<B>) {
        if response.extensions().get::<ResponseFlags>().is_some() {
            return;
        }
        let served = match response.extensions().get::<UpstreamAddress>() {
            Some(UpstreamAddress(EndpointAddress::Socket(addr))) => Some(*addr),
            _ => None,
        };
        let headers = response.headers_mut();
        for cookie in &self.generated {
            match http::HeaderValue::try_from(cookie.set_cookie()) {
                Ok(v) => {
                    headers.append(http::header::SET_COOKIE, v);
                }
                Err(_) => {
                    tracing::debug!(cookie = %cookie.name, "generated cookie is not a valid header value")
                }
            }
        }
        if let (Some((session, read)), Some(served)) = (&self.session, served)
            && let Some((name, value)) = session_response(session, *read, served)
        {
            if name == http::header::SET_COOKIE {
                headers.append(name, value);
            } else {
                headers.insert(name, value);
            }
        }
    }
}
