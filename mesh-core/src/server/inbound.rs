//! The server side as an xDS control plane gives it: one inbound listener per served port
//! (gRFC A36), each with its filter chains: transport security (A29) and RBAC filters (A41).
//!
//! A port the xDS client serves is either *serving* with a listener or *not serving*: the
//! listener has not arrived yet, was removed, or does not exist. A server never guesses a
//! policy for a port that is not serving (see the mesh's server stack for what it answers).
//! A port absent from [`InboundListeners`] is not driven by xDS at all, and follows the local
//! [`ServerPolicy`](super::ServerPolicy).
//!
//! # Filter chain matching
//!
//! Each connection gets the most specific chain whose [`FilterChainMatch`] matches it
//! ([`InboundListener::select`]), stage by stage as Envoy and gRPC (A36) match: destination
//! prefix (longest), transport protocol (`raw_buffer` before unset), source type (exact
//! before `ANY`), source prefix (longest), source port (exact before unset). A stage that
//! leaves no candidate gives the listener's default chain, or none (the connection is closed
//! without a byte sent).
//!
//! A proxyless server has no listener filters and no original destination, so, as A36 says,
//! some fields can only fail: a match with `destination_port`, `server_names`,
//! `application_protocols`, or a `transport_protocol` other than `raw_buffer` never matches a
//! connection. Envoy learns the transport protocol from a TLS inspector; gRPC never does,
//! so a chain for `tls` is never chosen and `raw_buffer` is every connection's protocol.
//!
//! Construction refuses a listener where matching might not give one answer: two matches
//! equal once normalized (each expanded into the Cartesian product of its lists, prefixes
//! truncated to their length), including matches that can never be chosen, as A36 says.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use super::{MtlsMode, rbac::RbacFilter};
use crate::Error;

/// The decoded inbound listener of one port: its filter chains and how connections choose one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundListener {
    /// Its resource name (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`).
    pub name: Arc<str>,
    /// The chains with a match, in listener order.
    chains: Arc<[(FilterChainMatch, Arc<InboundChain>)]>,
    /// The normalized matches of the chains that can be chosen, each naming its chain.
    entries: Arc<[MatchEntry]>,
    /// The chain of connections no match chooses; `None` closes them.
    default_chain: Option<Arc<InboundChain>>,
}

/// One filter chain of an inbound listener: what a connection it matched gets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundChain {
    /// The chain's name (`inbound-mtls`), for logs.
    pub name: Arc<str>,
    /// The transport the chain requires: STRICT for a TLS chain that requires a client
    /// certificate, DISABLE for a plaintext chain.
    pub mtls: MtlsMode,
    /// The chain's RBAC filters, in filter order.
    pub rbac: Arc<[RbacFilter]>,
}

/// Envoy's `FilterChainMatch`: which connections a chain is for. Every field set must match;
/// an empty list or `None` is unset. Prefixes are truncated to their length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FilterChainMatch {
    /// The connection's destination port; a proxyless server never matches it (A36:
    /// gRPC servers do not match on it).
    pub destination_port: Option<u32>,
    /// Ranges the connection's local address must be in.
    pub prefix_ranges: Arc<[IpNet]>,
    /// SNI names; never matched (no TLS inspector).
    pub server_names: Arc<[Arc<str>]>,
    /// `raw_buffer` matches every connection, more specifically than unset; any other value
    /// never matches.
    pub transport_protocol: Arc<str>,
    /// ALPN protocols; never matched (no TLS inspector).
    pub application_protocols: Arc<[Arc<str>]>,
    /// Where the peer is relative to this host.
    pub source_type: SourceType,
    /// Ranges the peer's address must be in.
    pub source_prefix_ranges: Arc<[IpNet]>,
    /// Ports the peer's port must be one of.
    pub source_ports: Arc<[u32]>,
}

/// Envoy's `ConnectionSourceType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceType {
    /// Any peer.
    #[default]
    Any,
    /// A peer on the loopback interface or with this connection's local address.
    SameIpOrLoopback,
    /// Any other peer.
    External,
}

/// One normalized match: one value of each of the match's lists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MatchEntry {
    /// Index into the listener's chains.
    chain: usize,
    destination: Option<IpNet>,
    raw_buffer: bool,
    source_type: SourceType,
    source: Option<IpNet>,
    source_port: Option<u32>,
}

/// Whether an xDS-driven port may serve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InboundState {
    /// The listener has not arrived, was removed or does not exist; the reason is for logs.
    NotServing(Arc<str>),
    /// Serving with this listener.
    Serving(Arc<InboundListener>),
}

/// The xDS server side of the process: the state of each xDS-driven port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InboundListeners {
    ports: BTreeMap<u16, InboundState>,
}

// === impl InboundListener ===

impl InboundListener {
    /// A listener with one chain for every connection (istiod's shape: one chain, no match).
    pub fn single(name: impl Into<Arc<str>>, chain: InboundChain) -> Self {
        let chain = Arc::new(chain);
        Self {
            name: name.into(),
            chains: Arc::from([(FilterChainMatch::default(), chain)]),
            entries: Arc::from([MatchEntry {
                chain: 0,
                destination: None,
                raw_buffer: false,
                source_type: SourceType::Any,
                source: None,
                source_port: None,
            }]),
            default_chain: None,
        }
    }

    /// A listener with `chains` (in listener order) and the chain of connections none
    /// matches. Fails when two matches are equal once normalized (A36
    /// requires a NACK), or when no chain can ever be chosen.
    pub fn new(
        name: impl Into<Arc<str>>,
        chains: Vec<(FilterChainMatch, InboundChain)>,
        default_chain: Option<InboundChain>,
    ) -> Result<Self, Error> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for (index, (m, _)) in chains.iter().enumerate() {
            let usable = m.destination_port.is_none()
                && m.server_names.is_empty()
                && m.application_protocols.is_empty()
                && matches!(&*m.transport_protocol, "" | "raw_buffer");
            let options = |nets: &[IpNet]| -> Vec<Option<IpNet>> {
                if nets.is_empty() {
                    vec![None]
                } else {
                    nets.iter().map(|n| Some(n.trunc())).collect()
                }
            };
            let names = |names: &[Arc<str>]| -> Vec<Option<Arc<str>>> {
                if names.is_empty() {
                    vec![None]
                } else {
                    names.iter().cloned().map(Some).collect()
                }
            };
            let ports: Vec<Option<u32>> = if m.source_ports.is_empty() {
                vec![None]
            } else {
                m.source_ports.iter().copied().map(Some).collect()
            };
            for destination in options(&m.prefix_ranges) {
                for server_name in names(&m.server_names) {
                    for protocol in names(&m.application_protocols) {
                        for source in options(&m.source_prefix_ranges) {
                            for &source_port in &ports {
                                let key = (
                                    m.destination_port,
                                    destination,
                                    server_name.clone(),
                                    m.transport_protocol.clone(),
                                    protocol.clone(),
                                    m.source_type,
                                    source,
                                    source_port,
                                );
                                if !seen.insert(key) {
                                    return Err(Error::invalid(format!(
                                        "filter chain {index} repeats a match of an earlier chain (or of its own): which chain a connection gets would be ambiguous"
                                    )));
                                }
                                if usable {
                                    entries.push(MatchEntry {
                                        chain: index,
                                        destination,
                                        raw_buffer: !m.transport_protocol.is_empty(),
                                        source_type: m.source_type,
                                        source,
                                        source_port,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        if entries.is_empty() && default_chain.is_none() {
            return Err(Error::invalid(
                "no filter chain can match a connection and there is no default filter chain",
            ));
        }
        Ok(Self {
            name: name.into(),
            chains: chains.into_iter().map(|(m, c)| (m, Arc::new(c))).collect(),
            entries: entries.into(),
            default_chain: default_chain.map(Arc::new),
        })
    }

    /// The chain of a connection from `remote` to `local`; `None` when no chain matches and
    /// there is no default chain (the connection must be closed). IPv4-mapped IPv6 addresses
    /// (a dual-stack socket's IPv4 peers) are matched as IPv4.
    pub fn select(&self, local: SocketAddr, remote: SocketAddr) -> Option<&Arc<InboundChain>> {
        let (local_ip, remote_ip) = (local.ip().to_canonical(), remote.ip().to_canonical());
        let source_type = if remote_ip == local_ip || remote_ip.is_loopback() {
            SourceType::SameIpOrLoopback
        } else {
            SourceType::External
        };
        let candidates: Vec<&MatchEntry> = self.entries.iter().collect();
        let candidates = most_specific(candidates, |e| prefix_score(e.destination, local_ip));
        let candidates = most_specific(candidates, |e| Some(u8::from(e.raw_buffer)));
        let candidates = most_specific(candidates, |e| match e.source_type {
            SourceType::Any => Some(0),
            t if t == source_type => Some(1),
            _ => None,
        });
        let candidates = most_specific(candidates, |e| prefix_score(e.source, remote_ip));
        let candidates = most_specific(candidates, |e| match e.source_port {
            None => Some(0),
            Some(port) if port == u32::from(remote.port()) => Some(1),
            Some(_) => None,
        });
        // Construction refused equal matches, so what is left is one chain's.
        match candidates.first() {
            Some(entry) => self.chains.get(entry.chain).map(|(_, chain)| chain),
            None => self.default_chain.as_ref(),
        }
    }

    /// The chain every connection gets whatever its addresses, if there is one: for requests
    /// whose connection addresses are unknown.
    pub fn chain_for_every_connection(&self) -> Option<&Arc<InboundChain>> {
        let catch_all = |e: &MatchEntry| {
            e.destination.is_none()
                && e.source_type == SourceType::Any
                && e.source.is_none()
                && e.source_port.is_none()
        };
        let mut chains = self
            .entries
            .iter()
            .map(|e| e.chain)
            .collect::<HashSet<_>>()
            .into_iter();
        match (chains.next(), chains.next()) {
            (None, _) => self.default_chain.as_ref(),
            (Some(only), None) if self.entries.iter().any(catch_all) => {
                self.chains.get(only).map(|(_, chain)| chain)
            }
            _ => None,
        }
    }

    /// Every chain with its match, in listener order.
    pub fn chains(&self) -> impl Iterator<Item = (&FilterChainMatch, &Arc<InboundChain>)> {
        self.chains.iter().map(|(m, c)| (m, c))
    }

    /// The chain of connections no match chooses.
    pub fn default_chain(&self) -> Option<&Arc<InboundChain>> {
        self.default_chain.as_ref()
    }

    /// The port's mode as one value, for logs: STRICT or DISABLE when every chain says so,
    /// PERMISSIVE when some connections get mTLS and others plaintext.
    pub fn mtls_summary(&self) -> MtlsMode {
        let mut modes = self
            .chains
            .iter()
            .map(|(_, c)| c.mtls)
            .chain(self.default_chain.iter().map(|c| c.mtls));
        let Some(first) = modes.next() else {
            return MtlsMode::Strict;
        };
        if modes.all(|m| m == first) {
            first
        } else {
            MtlsMode::Permissive
        }
    }
}

/// How specifically a prefix matches `ip`: `None` when it does not, unset below `/0` (which
/// still requires the address family).
fn prefix_score(prefix: Option<IpNet>, ip: IpAddr) -> Option<i16> {
    match prefix {
        None => Some(-1),
        Some(net) if net.contains(&ip) => Some(i16::from(net.prefix_len())),
        Some(_) => None,
    }
}

/// The candidates `score` matches with the highest score.
fn most_specific<S: Ord + Copy>(
    candidates: Vec<&MatchEntry>,
    score: impl Fn(&MatchEntry) -> Option<S>,
) -> Vec<&MatchEntry> {
    let scored: Vec<(S, &MatchEntry)> = candidates
        .into_iter()
        .filter_map(|e| score(e).map(|s| (s, e)))
        .collect();
    let Some(best) = scored.iter().map(|(s, _)| *s).max() else {
        return Vec::new();
    };
    scored
        .into_iter()
        .filter(|(s, _)| *s == best)
        .map(|(_, e)| e)
        .collect()
}

// === impl InboundListeners ===

impl InboundListeners {
    /// The state of every xDS-driven port.
    pub fn new(ports: BTreeMap<u16, InboundState>) -> Self {
        Self { ports }
    }

    /// The state of `port`; `None` when xDS does not drive it.
    pub fn get(&self, port: u16) -> Option<&InboundState> {
        self.ports.get(&port)
    }

    /// Every xDS-driven port.
    pub fn ports(&self) -> &BTreeMap<u16, InboundState> {
        &self.ports
    }

    /// Whether xDS drives no port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

#[cfg(test)]
mod tests;
