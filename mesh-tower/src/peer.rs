//! Who is on the other end of an incoming request.
//!
//! The server side of the mesh puts one [`Peer`] in every request's extensions: the TLS acceptor
//! fills in the verified identity, the connection gives the address. Authorization, metrics
//! (`source_principal`) and handlers read it from there; nothing re-parses certificates per
//! request.

use std::{net::SocketAddr, sync::Arc};

/// The caller of an incoming request, as the connection established it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The remote address of the connection; `None` when the transport has none (in-memory).
    pub address: Option<SocketAddr>,
    /// The local address the connection was accepted on (an xDS listener's filter chain is
    /// chosen by it); `None` when unknown.
    pub local_address: Option<SocketAddr>,
    /// The verified identity of an mTLS peer; `None` for plaintext peers.
    pub identity: Option<PeerIdentity>,
}

/// The identity an mTLS peer proved with its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID from the certificate's first `spiffe://` URI SAN, without `spiffe://`
    /// (`cluster.local/ns/default/sa/reviews`): Istio's *principal*, for handlers.
    pub principal: Option<Arc<str>>,
    /// Every `spiffe://` URI SAN of the certificate, without `spiffe://`, in certificate
    /// order (`principal` is the first). Authorization considers all of them, as Envoy's
    /// principal matchers match any SAN: a DENY must not be dodged by putting an innocent SAN
    /// first.
    pub principals: Arc<[Arc<str>]>,
    /// The certificate's DNS SANs.
    pub dns_names: Arc<[Arc<str>]>,
}

impl Peer {
    /// The peer of a request, from its extensions: a tonic server on a
    /// [`MeshListener`](crate::tls::MeshListener) puts a `Peer` there, an axum server
    /// (`into_make_service_with_connect_info::<Peer>()`) a `ConnectInfo<Peer>`. Layers that
    /// serve both look here.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<&Peer> {
        extensions.get::<Peer>().or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<Peer>>()
                .map(|info| &info.0)
        })
    }

    /// The principal, when the peer proved one.
    pub fn principal(&self) -> Option<&str> {
        self.identity.as_ref()?.principal.as_deref()
    }
}
