//! xDS-enabled servers end to end (gRFCs A36, A29, A41): a scripted ADS server sends the
//! inbound Listener istiod builds for a proxyless server; a tonic server whose mesh is driven
//! by the xDS client serves real mTLS (rcgen certificates) and enforces the listener's RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mesh-tower/tests/mtls/certs.rs"]
mod certs;
mod support;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{TransportSocket, transport_socket},
            listener::v3::{Filter, FilterChain, Listener, filter},
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
    google::protobuf::{Any, BoolValue},
};
use mesh_tower::{
    Mesh, Workload,
    mesh_core::{Labels, MeshConfig},
    tls::{CertificateFiles, MeshListener},
};
use mesh_xds::{
    bootstrap::{Bootstrap, ChannelCreds, XdsServer},
    client::XdsClient,
};
use support::{
    ads::{AdsServer, Snapshot},
    echo::{EchoClient, HOST, TARGET, echo_service, request},
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
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&Router::default()))),
        ..Default::default()
    };
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
        http_filters: vec![deny, allow, router],
        ..Default::default()
    };
    pack(&Listener {
        name: name.into(),
        filter_chains: vec![FilterChain {
            name: "inbound-mtls".into(),
            filters: vec![Filter {
                name: "inbound-hcmmtls".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            transport_socket: Some(mtls()),
            ..Default::default()
        }],
        ..Default::default()
    })
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

/// A client mesh calling the echo service at `addr`, with ISTIO_MUTUAL as `identity` or in
/// plaintext without one.
fn client(addr: SocketAddr, identity: Option<CertificateFiles>) -> EchoClient<mesh_tower::Channel> {
    let tls = if identity.is_some() {
        format!(
            "  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [\"{}\"]}}\n",
            certs::spiffe("ratings")
        )
    } else {
        String::new()
    };
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
  - address: {}
    ports: {{grpc: {}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {HOST}
{tls}",
        addr.ip(),
        addr.port()
    );
    let mesh = Mesh::new(support::echo::config(&yaml));
    if let Some(identity) = identity {
        mesh.set_workload_identity(identity).unwrap();
    }
    EchoClient::new(mesh.channel(TARGET))
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

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
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

    // Not serving until the listener arrives: nothing reaches the handler.
    assert_eq!(code(say(&mut reviews).await), Code::Unavailable);

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
