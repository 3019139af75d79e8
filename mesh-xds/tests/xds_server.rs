//! xDS-enabled servers end to end (gRFCs A36, A29, A41): a scripted ADS server sends the
//! inbound Listener istiod builds for a proxyless server; a tonic server whose mesh is driven
//! by the xDS client serves real mTLS (rcgen certificates) and enforces the listener's RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::CidrRange,
            core::v3::{TransportSocket, transport_socket},
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter},
            rbac::v3::{self as pbrbac, Permission, Policy, Principal, permission, principal},
            route::v3::{self as rpb, NonForwardingAction, route_match::PathSpecifier},
        },
        extensions::{
            filters::{
                http::{rbac::v3::Rbac, router::v3::Router},
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                    http_filter::ConfigType,
                },
            },
            transport_sockets::tls::v3::{
                CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
                DownstreamTlsContext, common_tls_context,
            },
        },
        r#type::matcher::v3::{
            PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
        },
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};
use mesh_test_support as support;
use mesh_test_support::pki as certs;
use mesh_tower::{
    Mesh, Workload,
    mesh_core::{Labels, MeshConfig},
    tls::{CertificateFiles, MeshListener, ServerTls},
};
use mesh_xds::{
    bootstrap::{Bootstrap, ChannelCreds, XdsServer},
    client::XdsClient,
};
use support::{
    ads::{AdsServer, Snapshot},
    echo::{EchoClient, echo_service, istio_mutual_client as client, request},
    eventually,
    resources::{LDS, pack},
};
use tonic::Code;

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// istiod's principal shape: and_ids[or_ids[authenticated{principal_name}]].
fn from(spiffe: &str) -> Principal {
    let wrap = |ids: Vec<Principal>, and: bool| Principal {
        identifier: Some(if and {
            principal::Identifier::AndIds(principal::Set { ids })
        } else {
            principal::Identifier::OrIds(principal::Set { ids })
        }),
    };
    let authenticated = Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(exact(spiffe)),
            },
        )),
    };
    wrap(vec![wrap(vec![authenticated], false)], true)
}

/// istiod's path shape: and_rules[or_rules[url_path]]; `None` is any request.
fn to(path: Option<&str>) -> Permission {
    let Some(path) = path else {
        return Permission {
            rule: Some(permission::Rule::Any(true)),
        };
    };
    let url = Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(exact(path))),
        })),
    };
    let or = Permission {
        rule: Some(permission::Rule::OrRules(permission::Set {
            rules: vec![url],
        })),
    };
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set {
            rules: vec![or],
        })),
    }
}

fn rbac(name: &str, action: pbrbac::rbac::Action, policy: &str, rule: Policy) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(pack(&Rbac {
            rules: Some(pbrbac::Rbac {
                action: action.into(),
                policies: HashMap::from([(policy.to_string(), rule)]),
                ..Default::default()
            }),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// istiod's `buildCommonTLSContext(nil)` in a `DownstreamTlsContext` requiring client certs.
#[allow(deprecated)]
fn mtls() -> TransportSocket {
    let current = |c: &str| CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: c.into(),
    };
    let old = |c: &str| common_tls_context::CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: c.into(),
    };
    let common = CommonTlsContext {
        tls_certificate_provider_instance: Some(current("default")),
        tls_certificate_certificate_provider_instance: Some(old("default")),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    validation_context_certificate_provider_instance: Some(old("ROOTCA")),
                    default_validation_context: Some(CertificateValidationContext {
                        ca_certificate_provider_instance: Some(current("ROOTCA")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            &DownstreamTlsContext {
                common_tls_context: Some(common),
                require_client_certificate: Some(BoolValue { value: true }),
                ..Default::default()
            },
        ))),
    }
}

/// The inbound listener istiod builds under STRICT mTLS with one DENY and one ALLOW policy:
/// DENY productpage on `deny_path` (every path when `None`), ALLOW reviews and productpage.
fn inbound(name: &str, deny_path: Option<&str>) -> Any {
    pack(&Listener {
        name: name.into(),
        filter_chains: vec![chain("mtls", istio_filters(deny_path))],
        ..Default::default()
    })
}

/// A chain named `inbound-<suffix>` with `filters`: mTLS for `mtls`, else plaintext.
fn chain(suffix: &str, filters: Vec<HttpFilter>) -> FilterChain {
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
    FilterChain {
        name: format!("inbound-{suffix}"),
        filters: vec![Filter {
            name: format!("inbound-hcm{suffix}"),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
        }],
        transport_socket: (suffix == "mtls").then(mtls),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&Router::default()))),
        ..Default::default()
    }
}

/// A DENY filter for every caller on `path` (every path when `None`).
fn deny_everyone(path: Option<&str>) -> HttpFilter {
    rbac(
        "envoy.filters.http.rbac-deny",
        pbrbac::rbac::Action::Deny,
        "default-deny-0",
        Policy {
            permissions: vec![to(path)],
            principals: vec![Principal {
                identifier: Some(principal::Identifier::Any(true)),
            }],
            ..Default::default()
        },
    )
}

fn istio_filters(deny_path: Option<&str>) -> Vec<HttpFilter> {
    let deny = rbac(
        "envoy.filters.http.rbac-deny",
        pbrbac::rbac::Action::Deny,
        "default-ratings-deny-0",
        Policy {
            permissions: vec![to(deny_path)],
            principals: vec![from(PRODUCTPAGE)],
            ..Default::default()
        },
    );
    let allow = rbac(
        "envoy.filters.http.rbac",
        pbrbac::rbac::Action::Allow,
        "default-ratings-allow-0",
        Policy {
            permissions: vec![to(None)],
            principals: vec![from(REVIEWS), from(PRODUCTPAGE)],
            ..Default::default()
        },
    );
    vec![deny, allow, router()]
}

fn bootstrap(ads: SocketAddr) -> Bootstrap {
    let mut b = Bootstrap::insecure(ads.to_string(), "ratings-node");
    b.xds_servers = vec![XdsServer {
        server_uri: ads.to_string(),
        channel_creds: ChannelCreds::Insecure,
        server_features: vec!["xds_v3".into()],
    }];
    b.server_listener_resource_name_template = Some("xds.istio.io/grpc/lds/inbound/%s".into());
    b
}

async fn say(client: &mut EchoClient<mesh_tower::Channel>) -> Result<(), tonic::Status> {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(15), client.say(req))
        .await
        .expect("rpc hung")
        .map(drop)
}

async fn shout(client: &mut EchoClient<mesh_tower::Channel>) -> Result<(), tonic::Status> {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(15), client.shout(req))
        .await
        .expect("rpc hung")
        .map(drop)
}

fn code(result: Result<(), tonic::Status>) -> Code {
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_server_follows_its_inbound_listener_strict_mtls_and_rbac() {
    let (ca, dir) = (certs::Ca::new("mesh"), certs::Dir::new());
    let identity = |sa: &str| dir.identity(sa, &ca.workload(sa), &ca);

    // The server: its mesh is driven by the xDS client, which serves its port.
    let ads = AdsServer::start().await;
    let mesh = Mesh::new(MeshConfig::empty());
    mesh.set_workload_identity(identity("ratings")).unwrap();
    let xds = XdsClient::start(bootstrap(ads.addr), mesh.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    xds.serve(addr).unwrap();
    let labels = Labels::new([("app", "ratings")]).unwrap();
    let tls = mesh
        .server_tls("default", labels.clone(), addr.port())
        .unwrap();
    let listener = MeshListener::new(tcp, tls).unwrap();
    let layer = mesh.server_layer(
        Workload::new("default", "ratings.default.svc.cluster.local", addr.port())
            .with_labels(labels),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(echo_service("ratings", Default::default()))
            .serve_with_incoming(listener),
    );

    let mut reviews = client(addr, Some(identity("reviews")));
    let mut productpage = client(addr, Some(identity("productpage")));
    let mut plaintext = client(addr, None);

    // Not serving until the listener arrives: nothing reaches the handler. Asked by a client
    // of its own: the refused connection leaves that client's endpoint in reconnect backoff,
    // which would fail `reviews`' first call after the listener arrives, depending on timing.
    let mut early = client(addr, Some(identity("reviews")));
    assert_eq!(code(say(&mut early).await), Code::Unavailable);

    let name = format!("xds.istio.io/grpc/lds/inbound/{addr}");
    ads.set_snapshot(Snapshot::new("1").with(LDS, &name, inbound(&name, Some("/echo.Echo/Shout"))));
    eventually("the inbound listener is served", || {
        matches!(
            mesh.config().inbound().get(addr.port()),
            Some(mesh_tower::mesh_core::InboundState::Serving(_))
        )
    })
    .await;

    assert_eq!(code(say(&mut reviews).await), Code::Ok);
    assert_eq!(code(shout(&mut reviews).await), Code::Ok);
    assert_eq!(code(say(&mut productpage).await), Code::Ok);
    assert_eq!(
        code(shout(&mut productpage).await),
        Code::PermissionDenied,
        "the DENY policy comes first"
    );
    // STRICT: a plaintext caller never gets an answer from the handler.
    let plain = say(&mut plaintext).await;
    assert!(plain.is_err(), "plaintext under STRICT: {plain:?}");

    // A policy change mid-traffic applies to the next request on the same connection.
    ads.set_snapshot(Snapshot::new("2").with(LDS, &name, inbound(&name, None)));
    let first = mesh.config().inbound().get(addr.port()).cloned();
    eventually("version 2 applied", || {
        mesh.config().inbound().get(addr.port()) != first.as_ref()
    })
    .await;
    assert_eq!(code(say(&mut productpage).await), Code::PermissionDenied);
    assert_eq!(code(say(&mut reviews).await), Code::Ok);

    // The listener is removed: the port stops serving.
    ads.set_snapshot(Snapshot::new("3"));
    eventually("not serving", || {
        matches!(
            mesh.config().inbound().get(addr.port()),
            Some(mesh_tower::mesh_core::InboundState::NotServing(_))
        )
    })
    .await;
    assert_eq!(code(say(&mut reviews).await), Code::Unavailable);
}

/// An xDS-driven echo server on 127.0.0.1 with the `ratings` identity: its mesh, address and
/// the TLS acceptor (for its counters).
async fn xds_server(
    ads: &AdsServer,
    identity: CertificateFiles,
    behavior: std::sync::Arc<support::echo::Behavior>,
    drain_grace: Duration,
) -> (Mesh, SocketAddr, ServerTls) {
    let mesh = Mesh::new(MeshConfig::empty());
    mesh.set_workload_identity(identity).unwrap();
    let xds = XdsClient::start(bootstrap(ads.addr), mesh.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    xds.serve(addr).unwrap();
    // The client lives as long as the test's runtime: the server follows it.
    std::mem::forget(xds);
    let tls = mesh
        .server_tls("default", Labels::default(), addr.port())
        .unwrap()
        .with_drain_grace(drain_grace);
    let listener = MeshListener::new(tcp, tls.clone()).unwrap();
    let layer = mesh.server_layer(Workload::new(
        "default",
        "ratings.default.svc.cluster.local",
        addr.port(),
    ));
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(echo_service("ratings", behavior))
            .serve_with_incoming(listener),
    );
    (mesh, addr, tls)
}

/// A plaintext gRPC client whose connections to `server` leave from `source` (a loopback
/// address other than 127.0.0.1 lets a filter chain tell it apart).
fn plaintext_from(source: &str, server: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    let channel = tonic::transport::Endpoint::from_static("http://ratings.test")
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(source)?;
            let stream = socket.connect(server).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }));
    EchoClient::new(channel)
}

async fn call<T>(client: &mut EchoClient<T>, shout: bool) -> Code
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    let reply = if shout {
        tokio::time::timeout(Duration::from_secs(15), client.shout(req)).await
    } else {
        tokio::time::timeout(Duration::from_secs(15), client.say(req)).await
    };
    code(reply.expect("rpc hung").map(drop))
}

fn serving(
    mesh: &Mesh,
    port: u16,
) -> Option<std::sync::Arc<mesh_tower::mesh_core::InboundListener>> {
    match mesh.config().inbound().get(port) {
        Some(mesh_tower::mesh_core::InboundState::Serving(l)) => Some(l.clone()),
        _ => None,
    }
}

/// Two chains on one port (A36): peers from 127.0.0.2 get a plaintext chain that denies
/// `Shout`; everyone else the default, STRICT chain. Then a listener update that changes
/// only the plaintext chain drains only its connections: the request in flight on it finishes,
/// the connection is closed after the drain grace and the client reconnects, while the mTLS
/// connection (its chain unchanged) stays open.
#[tokio::test]
async fn connections_get_their_filter_chain_and_only_changed_chains_are_drained() {
    let (ca, dir) = (certs::Ca::new("mesh"), certs::Dir::new());
    let identity = |sa: &str| dir.identity(sa, &ca.workload(sa), &ca);
    let ads = AdsServer::start().await;
    let hold = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let behavior = std::sync::Arc::new(support::echo::Behavior {
        hold: Some(hold.clone()),
        ..Default::default()
    });
    let grace = Duration::from_millis(800);
    let (mesh, addr, tls) = xds_server(&ads, identity("ratings"), behavior.clone(), grace).await;

    let name = format!("xds.istio.io/grpc/lds/inbound/{addr}");
    let listener = |plaintext_deny: Option<&str>, version: &str| {
        let mut plaintext = chain("plaintext", vec![deny_everyone(plaintext_deny), router()]);
        plaintext.filter_chain_match = Some(FilterChainMatch {
            source_prefix_ranges: vec![CidrRange {
                address_prefix: "127.0.0.2".into(),
                prefix_len: Some(UInt32Value { value: 32 }),
            }],
            ..Default::default()
        });
        Snapshot::new(version).with(
            LDS,
            &name,
            pack(&Listener {
                name: name.clone(),
                filter_chains: vec![plaintext],
                default_filter_chain: Some(chain("mtls", vec![router()])),
                ..Default::default()
            }),
        )
    };
    ads.set_snapshot(listener(Some("/echo.Echo/Shout"), "1"));
    eventually("serving", || serving(&mesh, addr.port()).is_some()).await;

    let mut reviews = client(addr, Some(identity("reviews")));
    let mut plaintext_local = client(addr, None);
    let mut plaintext_other = plaintext_from("127.0.0.2", addr);

    hold.add_permits(1);
    assert_eq!(
        call(&mut reviews, false).await,
        Code::Ok,
        "mTLS on the default chain"
    );
    assert!(
        call(&mut plaintext_local, false).await != Code::Ok,
        "plaintext from 127.0.0.1 gets the STRICT chain"
    );
    hold.add_permits(1);
    assert_eq!(
        call(&mut plaintext_other, false).await,
        Code::Ok,
        "127.0.0.2's chain"
    );
    assert_eq!(
        call(&mut plaintext_other, true).await,
        Code::PermissionDenied,
        "127.0.0.2's chain's RBAC"
    );
    let stats = tls.stats();
    assert_eq!((stats.mtls(), stats.plaintext()), (1, 1));

    // A call in flight on the plaintext connection while its chain changes.
    let mut in_flight_client = plaintext_other.clone();
    let in_flight = tokio::spawn(async move { call(&mut in_flight_client, false).await });
    eventually("the call is in flight", || {
        behavior.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let before = serving(&mesh, addr.port());
    ads.set_snapshot(listener(None, "2"));
    eventually("version 2 applied", || {
        serving(&mesh, addr.port()) != before
    })
    .await;
    // New requests get the new chain at once; the one in flight finishes.
    assert_eq!(
        call(&mut plaintext_other, false).await,
        Code::PermissionDenied
    );
    hold.add_permits(1);
    assert_eq!(
        in_flight.await.unwrap(),
        Code::Ok,
        "in flight across the drain"
    );

    // After the grace the plaintext connection is closed and the client connects again.
    tokio::time::sleep(grace).await;
    let mut reconnected = false;
    for _ in 0..50 {
        let _ = call(&mut plaintext_other, false).await;
        if tls.stats().plaintext() == 2 {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reconnected, "the drained connection was not closed");
    // The mTLS connection's chain did not change: it is still the one connection.
    hold.add_permits(1);
    assert_eq!(call(&mut reviews, false).await, Code::Ok);
    assert_eq!(
        tls.stats().mtls(),
        1,
        "an unchanged chain keeps its connection"
    );
}

/// istiod sends one chain and never a match: PERMISSIVE is the plaintext chain (so an mTLS
/// client is refused, as by gRPC), or the mTLS chain when the pod is labelled for Istio mTLS;
/// DISABLE is plaintext. A mode change drains the connections of the old chain.
#[tokio::test]
async fn istiods_permissive_and_disable_listeners() {
    use support::istiod::{PeerAuthn, TlsShape, inbound_listener_in};
    let (ca, dir) = (certs::Ca::new("mesh"), certs::Dir::new());
    let identity = |sa: &str| dir.identity(sa, &ca.workload(sa), &ca);
    let ads = AdsServer::start().await;
    let behavior = std::sync::Arc::new(support::echo::Behavior::default());
    let (mesh, addr, _tls) = xds_server(
        &ads,
        identity("ratings"),
        behavior,
        Duration::from_millis(100),
    )
    .await;
    let push = |mode, version: &str| {
        let (name, listener) = inbound_listener_in(addr, TlsShape::Istio1_29, mode, &[], &[]);
        ads.set_snapshot(Snapshot::new(version).with(LDS, &name, listener));
    };
    let mut reviews = client(addr, Some(identity("reviews")));
    let mut plaintext = client(addr, None);

    for (version, mode, mtls_ok, plaintext_ok) in [
        (
            "1",
            PeerAuthn::Permissive {
                tls_mode_label: false,
            },
            false,
            true,
        ),
        (
            "2",
            PeerAuthn::Permissive {
                tls_mode_label: true,
            },
            true,
            false,
        ),
        ("3", PeerAuthn::Disable, false, true),
        ("4", PeerAuthn::Strict, true, false),
    ] {
        let before = serving(&mesh, addr.port());
        push(mode, version);
        eventually("the listener is applied", || {
            serving(&mesh, addr.port()).is_some() && serving(&mesh, addr.port()) != before
        })
        .await;
        // Connections of the previous chain are drained; the next call may meet one closing.
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push((
                call(&mut reviews, false).await,
                call(&mut plaintext, false).await,
            ));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let (mtls_code, plaintext_code) = codes[codes.len() - 1];
        assert_eq!(
            mtls_code == Code::Ok,
            mtls_ok,
            "{mode:?}: mTLS client got {codes:?}"
        );
        assert_eq!(
            plaintext_code == Code::Ok,
            plaintext_ok,
            "{mode:?}: plaintext client got {codes:?}"
        );
    }
}
