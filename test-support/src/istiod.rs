//! istiod's proxyless-gRPC xDS, rebuilt from istio's source rather than from this repository's
//! encoder, so the client is checked against what istiod sends and not against itself.
//!
//! Sources (istio/istio, master of 2026-08):
//! - `pilot/pkg/networking/grpcgen/lds.go`: the outbound API listener (`host:port`, HCM with the
//!   fault and router filters, RDS named by the cluster key) and the inbound listener
//!   (`xds.istio.io/grpc/lds/inbound/<addr>`, chain `inbound-mtls`, filter `inbound-hcmmtls`,
//!   RBAC DENY then ALLOW then router, an inline `inbound` route with a non-forwarding action,
//!   `DownstreamTlsContext` requiring client certificates).
//! - `grpcgen/cds.go`: EDS clusters named `outbound|port|subset|host` with `alt_stat_name`
//!   `<name>;` and the service name equal to the cluster name; ISTIO_MUTUAL as an
//!   `UpstreamTlsContext`; consistent hash as `RING_HASH` with a 1024 minimum ring
//!   (`core/cluster_traffic_policy.go` `ApplyRingHashLoadBalancer`).
//! - `grpcgen/grpcgen.go` `buildCommonTLSContext`: before istio 1.29 only the deprecated
//!   provider-instance fields; from 1.29 (#58257) the current fields beside the deprecated ones.
//! - `core/route/route.go`: routes with `timeout: 0s`, `max_stream_duration` 0s/0s, a decorator,
//!   the fault as `typed_per_filter_config["envoy.filters.http.fault"]` with percentages in
//!   millionths; `core/route/retry/retry.go`: the default retry policy.
//! - Persistent sessions (`PILOT_ENABLE_PERSISTENT_SESSION_FILTER` with a service labelled
//!   `istio.io/persistent-session` or `istio.io/persistent-session-header`):
//!   `util.BuildStatefulSessionFilter` prepended to the listener's filters (lds.go), and the
//!   cluster's `override_host_status` of `SupportsDrainingEndpoints` (cds.go).
//! - `core/route/route.go` `consistentHashToHashPolicy`: `httpCookie` as a cookie hash policy.
//! - `pilot/pkg/xds/discovery.go`: versions `RFC3339/<counter>`, nonces `<version><uuid>`.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{
                Address, AggregatedConfigSource, ConfigSource, HealthStatus, HealthStatusSet,
                Locality, SocketAddress, TransportSocket, TypedExtensionConfig, address,
                config_source, socket_address, transport_socket,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{ApiListener, Filter, FilterChain, Listener, filter},
            rbac::v3::{self as pbrbac, Permission, Policy, Principal, permission, principal},
            route::v3::{
                self as rpb, Decorator, NonForwardingAction, RetryPolicy,
                retry_policy::{self, RetryHostPredicate},
                route_action::{ClusterSpecifier, HashPolicy, MaxStreamDuration, hash_policy},
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        extensions::{
            filters::{
                http::{
                    fault::v3::{FaultAbort, HttpFault, fault_abort::ErrorType},
                    rbac::v3::Rbac,
                    router::v3::Router,
                    stateful_session::v3::StatefulSession,
                },
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, Rds,
                    http_connection_manager::RouteSpecifier, http_filter::ConfigType,
                },
            },
            http::stateful_session::{
                cookie::v3::CookieBasedSessionState, header::v3::HeaderBasedSessionState,
            },
            retry::host::previous_hosts::v3::PreviousHostsPredicate,
            transport_sockets::tls::v3::{
                CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
                DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
            },
        },
        r#type::{
            http::v3::Cookie,
            matcher::v3::{PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern},
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value, UInt64Value},
};
use prost::{Message, Name};

use crate::ads::AdsServer;

/// The time of istiod's pushes in these tests (`time.Now().Format(time.RFC3339)`).
pub const PUSH_TIME: &str = "2026-12-07T20:00:00Z";

/// istiod's push version: the push time and a counter (`discovery.go` `NextVersion`).
pub fn push_version(counter: u64) -> String {
    format!("{PUSH_TIME}/{counter}")
}

/// istiod's nonce: the push version followed by a random UUID (`discovery.go` `nonce`).
pub fn nonce(version: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let random = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(SEQUENCE.fetch_add(1, Ordering::Relaxed) ^ salt);
        h.finish()
    };
    let (hi, lo) = (random(1), random(2));
    // A version-4 UUID: version nibble 4, variant bits 10.
    let hi = (hi & !0xF000) | 0x4000;
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{version}{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// Makes `server` answer like istiod: headers only with the first response, istiod's nonces.
pub fn behave_like_istiod(server: &AdsServer) {
    server
        .state
        .withhold_headers_until_first_response
        .store(true, Ordering::SeqCst);
    *server.state.nonce_format.lock().unwrap() = Some(nonce);
}

pub fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// `model.BuildSubsetKey(outbound, subset, host, port)`.
pub fn cluster_name(subset: &str, host: &str, port: u16) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn zero() -> PbDuration {
    PbDuration {
        seconds: 0,
        nanos: 0,
    }
}

/// `xdsfilters.Fault`: the fault filter with an empty config, overridden per route.
fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.fault".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&HttpFault::default()))),
        ..Default::default()
    }
}

fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&Router::default()))),
        ..Default::default()
    }
}

/// `buildOutboundListeners`: the API listener `host:port` of a service without a VIP.
pub fn outbound_listener(host: &str, port: u16) -> (String, Any) {
    api_listener(host, port, vec![fault_filter(), router_filter()])
}

/// The same listener for a service with a persistent-session label: lds.go prepends
/// `util.BuildStatefulSessionFilter(sv)` to the supported filters.
pub fn outbound_listener_with_session(
    host: &str,
    port: u16,
    session: &PersistentSession,
) -> (String, Any) {
    api_listener(
        host,
        port,
        vec![
            stateful_session_filter(session),
            fault_filter(),
            router_filter(),
        ],
    )
}

fn api_listener(host: &str, port: u16, http_filters: Vec<HttpFilter>) -> (String, Any) {
    let name = format!("{host}:{port}");
    let hcm = HttpConnectionManager {
        http_filters,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: cluster_name("", host, port),
        })),
        ..Default::default()
    };
    let listener = Listener {
        name: name.clone(),
        address: Some(socket("0.0.0.0", port)),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    };
    (name, pack(&listener))
}

/// A service's persistent-session label, as `util.MaybeBuildStatefulSessionFilterConfig`
/// reads it.
#[derive(Clone, Debug)]
pub enum PersistentSession {
    /// `istio.io/persistent-session: <name>[:<path>]`.
    Cookie(String),
    /// `istio.io/persistent-session-header: <name>`.
    Header(String),
}

/// `util.BuildStatefulSessionFilter`: a cookie session with the label's name and path (`/`
/// when the label has none) and no ttl (a session cookie), or a header session.
pub fn stateful_session_filter(session: &PersistentSession) -> HttpFilter {
    let state = match session {
        PersistentSession::Cookie(label) => {
            let (name, path) = label.split_once(':').unwrap_or((label, "/"));
            TypedExtensionConfig {
                name: "envoy.http.stateful_session.cookie".into(),
                typed_config: Some(pack(&CookieBasedSessionState {
                    cookie: Some(Cookie {
                        name: name.into(),
                        path: path.into(),
                        ..Default::default()
                    }),
                })),
            }
        }
        PersistentSession::Header(name) => TypedExtensionConfig {
            name: "envoy.http.stateful_session.header".into(),
            typed_config: Some(pack(&HeaderBasedSessionState { name: name.clone() })),
        },
    };
    HttpFilter {
        name: "envoy.filters.http.stateful_session".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&StatefulSession {
            session_state: Some(state),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// cds.go for a service that `SupportsDrainingEndpoints` (it has a persistent-session label):
/// sessions stay on healthy, draining, unknown and degraded endpoints.
pub fn with_session_override_host_status(cluster: Any) -> Any {
    let mut c = Cluster::decode(cluster.value.as_slice()).unwrap();
    c.common_lb_config
        .get_or_insert_with(Default::default)
        .override_host_status = Some(HealthStatusSet {
        statuses: vec![
            HealthStatus::Healthy.into(),
            HealthStatus::Draining.into(),
            HealthStatus::Unknown.into(),
            HealthStatus::Degraded.into(),
        ],
    });
    pack(&c)
}

/// `consistentHashToHashPolicy` for `httpCookie: {name, path, ttl}`.
pub fn cookie_hash_policy(name: &str, path: &str, ttl: Option<PbDuration>) -> HashPolicy {
    HashPolicy {
        policy_specifier: Some(hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: name.into(),
            ttl,
            path: path.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Where a route sends requests.
#[derive(Clone, Debug)]
pub enum Destination {
    /// One cluster.
    Cluster(String),
    /// Weighted clusters (istio leaves `total_weight` unset; weights sum to 100).
    Weighted(Vec<(String, u32)>),
}

/// An HTTP route of a VirtualService as `translateRoute` emits it.
#[derive(Clone, Debug)]
pub struct HttpRoute {
    /// An exact path to match; `None` matches every path (prefix `/`).
    pub path: Option<String>,
    pub destination: Destination,
    /// `fault.abort` with a gRPC status and a percentage.
    pub abort: Option<(u32, f64)>,
    /// Hash on this request header (the DestinationRule's `consistentHash.httpHeaderName`).
    pub hash_header: Option<String>,
}

/// `retry.DefaultPolicy()` (or `DefaultConsistentHashPolicy()` when the route hashes): two
/// retries on `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`,
/// five host-selection attempts, and — without a hash policy — the previous-hosts predicate.
pub fn default_retry_policy(hashing: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(UInt32Value { value: 2 }),
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: if hashing {
            Vec::new()
        } else {
            vec![RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".into(),
                config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                    pack(&PreviousHostsPredicate::default()),
                )),
            }]
        },
        ..Default::default()
    }
}

fn route(host: &str, port: u16, r: &HttpRoute) -> rpb::Route {
    let cluster_specifier = match &r.destination {
        Destination::Cluster(c) => ClusterSpecifier::Cluster(c.clone()),
        Destination::Weighted(ws) => ClusterSpecifier::WeightedClusters(rpb::WeightedCluster {
            clusters: ws
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: Some(UInt32Value { value: *weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let hash_policy = r
        .hash_header
        .iter()
        .map(|h| HashPolicy {
            policy_specifier: Some(hash_policy::PolicySpecifier::Header(hash_policy::Header {
                header_name: h.clone(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let action = rpb::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(zero()),
        max_stream_duration: Some(MaxStreamDuration {
            max_stream_duration: Some(zero()),
            grpc_timeout_header_max: Some(zero()),
            ..Default::default()
        }),
        retry_policy: Some(default_retry_policy(r.hash_header.is_some())),
        hash_policy,
        ..Default::default()
    };
    let mut typed_per_filter_config = HashMap::new();
    if let Some((grpc_status, percent)) = r.abort {
        let fault = HttpFault {
            abort: Some(FaultAbort {
                error_type: Some(ErrorType::GrpcStatus(grpc_status)),
                // `translatePercentToFractionalPercent`: millionths.
                percentage: Some(FractionalPercent {
                    numerator: (percent * 10_000.0).round() as u32,
                    denominator: DenominatorType::Million.into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        typed_per_filter_config.insert("envoy.filters.http.fault".to_string(), pack(&fault));
    }
    let path_specifier = match &r.path {
        Some(p) => PathSpecifier::Path(p.clone()),
        None => PathSpecifier::Prefix("/".into()),
    };
    rpb::Route {
        r#match: Some(rpb::RouteMatch {
            path_specifier: Some(path_specifier),
            ..Default::default()
        }),
        action: Some(rpb::route::Action::Route(action)),
        decorator: Some(Decorator {
            operation: format!("{host}:{port}/*"),
            ..Default::default()
        }),
        typed_per_filter_config,
        ..Default::default()
    }
}

/// `BuildHTTPRoutes`: the RouteConfiguration named by the cluster key, one virtual host for
/// the service (its domains filtered to the host and `host:port`).
pub fn route_configuration(host: &str, port: u16, routes: &[HttpRoute]) -> (String, Any) {
    let name = cluster_name("", host, port);
    let rc = rpb::RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![rpb::VirtualHost {
            name: format!("{host}:{port}"),
            domains: vec![host.into(), format!("{host}:{port}")],
            routes: routes.iter().map(|r| route(host, port, r)).collect(),
            include_request_attempt_count: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    (name, pack(&rc))
}

/// Which istiod wrote a TLS context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsShape {
    /// istio ≤ 1.28: only the deprecated `CertificateProviderInstance` fields.
    Istio1_28,
    /// istio ≥ 1.29: the current `CertificateProviderPluginInstance` fields beside the
    /// deprecated ones.
    Istio1_29,
}

/// `buildCommonTLSContext(sans)`.
#[allow(deprecated)]
pub fn common_tls_context(shape: TlsShape, sans: &[&str]) -> CommonTlsContext {
    let deprecated = |certificate: &str| common_tls_context::CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: certificate.into(),
    };
    let current = |certificate: &str| CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: certificate.into(),
    };
    let san_match = sans
        .iter()
        .map(|s| StringMatcher {
            match_pattern: Some(MatchPattern::Exact((*s).into())),
            ignore_case: false,
        })
        .collect();
    let both = shape == TlsShape::Istio1_29;
    CommonTlsContext {
        tls_certificate_provider_instance: both.then(|| current("default")),
        tls_certificate_certificate_provider_instance: Some(deprecated("default")),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    validation_context_certificate_provider_instance: Some(deprecated("ROOTCA")),
                    default_validation_context: Some(CertificateValidationContext {
                        match_subject_alt_names: san_match,
                        ca_certificate_provider_instance: both.then(|| current("ROOTCA")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn tls_socket(any: Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
    }
}

/// How a DestinationRule configures a cluster.
#[derive(Clone, Debug, Default)]
pub struct TrafficPolicy {
    /// ISTIO_MUTUAL, with the service accounts of the service as SANs.
    pub istio_mutual: Option<(TlsShape, Vec<String>)>,
    /// `consistentHash` (ring hash with envoy's default 1024 minimum ring).
    pub ring_hash: bool,
}

/// `clusterBuilder.edsCluster` plus `applyTrafficPolicy`.
pub fn cluster(name: &str, policy: &TrafficPolicy) -> Any {
    let mut c = Cluster {
        name: name.into(),
        alt_stat_name: format!("{name};"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds.into(),
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        ..Default::default()
    };
    if let Some((shape, sans)) = &policy.istio_mutual {
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        c.transport_socket = Some(tls_socket(pack(&UpstreamTlsContext {
            common_tls_context: Some(common_tls_context(*shape, &sans)),
            ..Default::default()
        })));
    }
    if policy.ring_hash {
        c.lb_policy = cluster::LbPolicy::RingHash.into();
        c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
            cluster::RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: 1024 }),
                ..Default::default()
            },
        ));
    }
    pack(&c)
}

/// The endpoints of cluster `name`, healthy, in the proxy's (empty) locality.
pub fn cluster_load_assignment(name: &str, addrs: &[SocketAddr]) -> Any {
    let healthy: Vec<_> = addrs.iter().map(|a| (*a, HealthStatus::Healthy)).collect();
    cluster_load_assignment_with_health(name, &healthy)
}

/// The endpoints of cluster `name` with their health (istiod sends draining endpoints of
/// services that support them, for sessions).
pub fn cluster_load_assignment_with_health(
    name: &str,
    endpoints: &[(SocketAddr, HealthStatus)],
) -> Any {
    let lb_endpoints: Vec<LbEndpoint> = endpoints
        .iter()
        .map(|(a, health)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(&a.ip().to_string(), a.port())),
                ..Default::default()
            })),
            health_status: (*health).into(),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        })
        .collect();
    let weight = u32::try_from(lb_endpoints.len()).unwrap();
    pack(&ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality::default()),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: weight }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// An AuthorizationPolicy rule as `authzmodel.Generate(forTCP=false, useAuthenticated=true)`
/// emits it: `from.source.principals` and, optionally, `to.operation.paths` (exact).
#[derive(Clone, Debug)]
pub struct AuthzRule {
    pub principals: Vec<String>,
    /// `None`: any request.
    pub paths: Option<Vec<String>>,
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// `and_ids[or_ids[authenticated{principal_name}...]]`; a rule without sources is
/// `and_ids[any]` (`generatePrincipal` ands what it has, `principalAny()` when nothing).
fn principals(spiffe: &[String]) -> Principal {
    if spiffe.is_empty() {
        let any = Principal {
            identifier: Some(principal::Identifier::Any(true)),
        };
        return Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set {
                ids: vec![any],
            })),
        };
    }
    let authenticated = spiffe
        .iter()
        .map(|s| Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(exact(s)),
                },
            )),
        })
        .collect();
    let or = Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: authenticated,
        })),
    };
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![or],
        })),
    }
}

/// `and_rules[or_rules[url_path...]]`, or `and_rules[any]` without paths
/// (`generatePermission` ands what it has, `permissionAny()` when nothing).
fn permission(paths: &Option<Vec<String>>) -> Permission {
    let Some(paths) = paths else {
        let any = Permission {
            rule: Some(permission::Rule::Any(true)),
        };
        return Permission {
            rule: Some(permission::Rule::AndRules(permission::Set {
                rules: vec![any],
            })),
        };
    };
    let urls = paths
        .iter()
        .map(|p| Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(exact(p))),
            })),
        })
        .collect();
    let or = Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules: urls })),
    };
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set {
            rules: vec![or],
        })),
    }
}

/// `buildRBAC`: policies named `<namespace>-<name>-<rule index>` (grpcgen's own
/// `fmt.Sprintf("%s-%s-%d", ..)`, not the Envoy builder's `ns[..]-policy[..]-rule[..]`), here
/// for policies `deny` and `allow` in `default`.
fn rbac_filter(
    name: &str,
    action: pbrbac::rbac::Action,
    policy: &str,
    rules: &[AuthzRule],
) -> Option<HttpFilter> {
    if rules.is_empty() {
        return None;
    }
    let policies = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("default-{policy}-{i}"),
                Policy {
                    permissions: vec![permission(&r.paths)],
                    principals: vec![principals(&r.principals)],
                    ..Default::default()
                },
            )
        })
        .collect();
    Some(HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(pack(&Rbac {
            rules: Some(pbrbac::Rbac {
                action: action.into(),
                policies,
                ..Default::default()
            }),
            ..Default::default()
        }))),
        ..Default::default()
    })
}

/// The workload's PeerAuthentication mode for the port, and whether its pod carries
/// `security.istio.io/tlsMode: istio` (`buildInboundFilterChains` reads both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAuthn {
    Strict,
    Permissive { tls_mode_label: bool },
    Disable,
}

/// `buildInboundListeners` under STRICT mTLS with a DENY and an ALLOW AuthorizationPolicy.
pub fn inbound_listener(
    addr: SocketAddr,
    shape: TlsShape,
    deny: &[AuthzRule],
    allow: &[AuthzRule],
) -> (String, Any) {
    inbound_listener_in(addr, shape, PeerAuthn::Strict, deny, allow)
}

/// `buildInboundListeners` in `mode`: one chain, never a `filter_chain_match`. PERMISSIVE is
/// the mTLS chain on a pod labelled for Istio mTLS (its clients use mTLS, "gRPC doesn't
/// support permissive"), otherwise the plaintext chain ("gRPC's filter chain match is super
/// limited").
pub fn inbound_listener_in(
    addr: SocketAddr,
    shape: TlsShape,
    mode: PeerAuthn,
    deny: &[AuthzRule],
    allow: &[AuthzRule],
) -> (String, Any) {
    let mtls = match mode {
        PeerAuthn::Strict
        | PeerAuthn::Permissive {
            tls_mode_label: true,
        } => true,
        PeerAuthn::Permissive {
            tls_mode_label: false,
        }
        | PeerAuthn::Disable => false,
    };
    let suffix = if mtls { "mtls" } else { "plaintext" };
    let name = format!("xds.istio.io/grpc/lds/inbound/{addr}");
    let mut filters = Vec::new();
    filters.extend(rbac_filter(
        "envoy.filters.http.rbac.DENY",
        pbrbac::rbac::Action::Deny,
        "deny",
        deny,
    ));
    filters.extend(rbac_filter(
        "envoy.filters.http.rbac",
        pbrbac::rbac::Action::Allow,
        "allow",
        allow,
    ));
    filters.push(router_filter());
    let routes = rpb::RouteConfiguration {
        name: "inbound".into(),
        virtual_hosts: vec![rpb::VirtualHost {
            domains: vec!["*".into()],
            routes: vec![rpb::Route {
                r#match: Some(rpb::RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(rpb::route::Action::NonForwardingAction(
                    NonForwardingAction::default(),
                )),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        http_filters: filters,
        ..Default::default()
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common_tls_context(shape, &[])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let listener = Listener {
        name: name.clone(),
        address: Some(socket(&addr.ip().to_string(), addr.port())),
        filter_chains: vec![FilterChain {
            name: format!("inbound-{suffix}"),
            filters: vec![Filter {
                name: format!("inbound-hcm{suffix}"),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            transport_socket: mtls.then(|| tls_socket(pack(&tls))),
            ..Default::default()
        }],
        ..Default::default()
    };
    (name, pack(&listener))
}
