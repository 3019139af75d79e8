//! Inbound listener decoding, against the shapes istiod's `grpcgen` builds
//! (`buildInboundListeners`, `buildInboundFilterChain`, `buildCommonTLSContext`, `buildRBAC`).

#![allow(deprecated)] // istiod fills the deprecated provider-instance fields.

use std::collections::HashMap;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                Address, CidrRange, SocketAddress, TransportSocket, socket_address,
                transport_socket,
            },
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter},
            rbac::v3::{
                self as pbrbac, Permission as PbPermission, Policy, Principal as PbPrincipal,
                permission, principal,
            },
            route::v3::{
                self as rpb, HeaderMatcher, NonForwardingAction, RouteAction, header_matcher,
                route_match::PathSpecifier,
            },
        },
        extensions::{
            filters::{
                http::{rbac::v3::Rbac as RbacFilterConfig, router::v3::Router},
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
            PathMatcher as PbPathMatcher, StringMatcher as PbStringMatcher, path_matcher,
            string_matcher::MatchPattern,
        },
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};
use mesh_core::{
    AuthzReason, AuthzRequest, MtlsMode, Permission, Principal, RbacAction, authorize_rbac,
};
use prost::{Message, Name};

use super::decode_inbound_listener;

const NAME: &str = "xds.istio.io/grpc/lds/inbound/10.0.0.5:9080";

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn exact(s: &str) -> PbStringMatcher {
    PbStringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// istiod's `from.source.principals` shape: and_ids[or_ids[authenticated]].
fn principal_of(spiffe: &str) -> PbPrincipal {
    let authenticated = PbPrincipal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(exact(spiffe)),
            },
        )),
    };
    PbPrincipal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![PbPrincipal {
                identifier: Some(principal::Identifier::OrIds(principal::Set {
                    ids: vec![authenticated],
                })),
            }],
        })),
    }
}

/// istiod's `to.operation.paths` shape: and_rules[or_rules[url_path]].
fn path_is(path: &str) -> PbPermission {
    let url = PbPermission {
        rule: Some(permission::Rule::UrlPath(PbPathMatcher {
            rule: Some(path_matcher::Rule::Path(exact(path))),
        })),
    };
    PbPermission {
        rule: Some(permission::Rule::AndRules(permission::Set {
            rules: vec![PbPermission {
                rule: Some(permission::Rule::OrRules(permission::Set {
                    rules: vec![url],
                })),
            }],
        })),
    }
}

fn any_permission() -> PbPermission {
    PbPermission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn rbac_filter(
    name: &str,
    action: pbrbac::rbac::Action,
    policies: Vec<(&str, Policy)>,
) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(pack(&RbacFilterConfig {
            rules: Some(pbrbac::Rbac {
                action: action.into(),
                policies: policies
                    .into_iter()
                    .map(|(n, p)| (n.to_string(), p))
                    .collect::<HashMap<_, _>>(),
                ..Default::default()
            }),
            ..Default::default()
        }))),
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

fn non_forwarding_routes() -> rpb::RouteConfiguration {
    rpb::RouteConfiguration {
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
    }
}

fn hcm(filters: Vec<HttpFilter>) -> HttpConnectionManager {
    HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(non_forwarding_routes())),
        http_filters: filters,
        ..Default::default()
    }
}

/// istiod's `buildCommonTLSContext(nil)` inside a `DownstreamTlsContext` requiring a client
/// certificate, both the current and the deprecated provider fields filled.
fn mtls_socket(require_client_certificate: bool) -> TransportSocket {
    let provider = |certificate_name: &str| CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: certificate_name.into(),
    };
    let deprecated = |certificate_name: &str| common_tls_context::CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: certificate_name.into(),
    };
    let common = CommonTlsContext {
        tls_certificate_provider_instance: Some(provider("default")),
        tls_certificate_certificate_provider_instance: Some(deprecated("default")),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    validation_context_certificate_provider_instance: Some(deprecated("ROOTCA")),
                    default_validation_context: Some(CertificateValidationContext {
                        ca_certificate_provider_instance: Some(provider("ROOTCA")),
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
                require_client_certificate: Some(BoolValue {
                    value: require_client_certificate,
                }),
                ..Default::default()
            },
        ))),
    }
}

fn chain(suffix: &str, tls: Option<TransportSocket>, filters: Vec<HttpFilter>) -> FilterChain {
    FilterChain {
        name: format!("inbound-{suffix}"),
        filters: vec![Filter {
            name: format!("inbound-hcm{suffix}"),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm(filters)))),
        }],
        transport_socket: tls,
        ..Default::default()
    }
}

fn listener(chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: NAME.into(),
        address: Some(Address {
            address: Some(
                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                    SocketAddress {
                        address: "10.0.0.5".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(9080)),
                        ..Default::default()
                    },
                ),
            ),
        }),
        filter_chains: chains,
        ..Default::default()
    }
}

/// DENY productpage on Delete, then ALLOW reviews and productpage, then the router.
fn istio_filters() -> Vec<HttpFilter> {
    vec![
        rbac_filter(
            "envoy.filters.http.rbac-deny",
            pbrbac::rbac::Action::Deny,
            vec![(
                "default-no-delete-0",
                Policy {
                    permissions: vec![path_is("/ratings.Ratings/Delete")],
                    principals: vec![principal_of(
                        "spiffe://cluster.local/ns/default/sa/productpage",
                    )],
                    ..Default::default()
                },
            )],
        ),
        rbac_filter(
            "envoy.filters.http.rbac",
            pbrbac::rbac::Action::Allow,
            vec![(
                "default-callers-0",
                Policy {
                    permissions: vec![any_permission()],
                    principals: vec![
                        principal_of("spiffe://cluster.local/ns/default/sa/reviews"),
                        principal_of("spiffe://cluster.local/ns/default/sa/productpage"),
                    ],
                    ..Default::default()
                },
            )],
        ),
        router(),
    ]
}

fn judge(
    l: &mesh_core::InboundListener,
    principal: Option<&str>,
    path: &str,
) -> mesh_core::AuthzDecision {
    let headers = http::HeaderMap::new();
    let principals: Vec<std::sync::Arc<str>> = principal.into_iter().map(Into::into).collect();
    authorize_rbac(
        &only(l).rbac,
        &AuthzRequest {
            principals: &principals,
            trust_domains: &mesh_core::TrustDomains::default(),
            source_namespace: None,
            source_ip: Some([10, 0, 0, 9].into()),
            destination_port: 9080,
            host: "ratings:9080",
            method: "POST",
            path,
            headers: &headers,
        },
    )
}

#[test]
fn istiods_mtls_listener_with_a_deny_and_an_allow_filter() {
    let decoded = decode_inbound_listener(&listener(vec![chain(
        "mtls",
        Some(mtls_socket(true)),
        istio_filters(),
    )]))
    .unwrap();
    assert!(decoded.unsupported.is_empty(), "{:?}", decoded.unsupported);
    let l = decoded.value;
    assert_eq!(&*l.name, NAME);
    assert_eq!(only(&l).mtls, MtlsMode::Strict);
    assert_eq!(only(&l).rbac.len(), 2);
    assert_eq!(
        only(&l).rbac[0].rules.as_ref().unwrap().action,
        RbacAction::Deny
    );
    assert_eq!(
        only(&l).rbac[1].rules.as_ref().unwrap().action,
        RbacAction::Allow
    );
    let productpage = "cluster.local/ns/default/sa/productpage";
    assert_eq!(
        judge(&l, Some(productpage), "/ratings.Ratings/Delete").reason,
        AuthzReason::Denied("default-no-delete-0".into())
    );
    assert!(judge(&l, Some(productpage), "/ratings.Ratings/Get").allowed);
    assert!(
        judge(
            &l,
            Some("cluster.local/ns/default/sa/reviews"),
            "/ratings.Ratings/Delete"
        )
        .allowed
    );
    assert!(
        !judge(
            &l,
            Some("cluster.local/ns/other/sa/x"),
            "/ratings.Ratings/Get"
        )
        .allowed
    );
    assert!(!judge(&l, None, "/ratings.Ratings/Get").allowed);
}

#[test]
fn a_plaintext_chain_without_policies() {
    let l = decode_inbound_listener(&listener(vec![chain("plaintext", None, vec![router()])]))
        .unwrap()
        .value;
    assert_eq!(only(&l).mtls, MtlsMode::Disable);
    assert!(only(&l).rbac.is_empty());

    // Route conditions are reported: every request is served by the non-forwarding routes.
    let mut narrow = hcm(vec![router()]);
    if let Some(RouteSpecifier::RouteConfig(rc)) = &mut narrow.route_specifier {
        rc.virtual_hosts[0].domains = vec!["ratings".into()];
    }
    let mut c = chain("plaintext", None, vec![]);
    c.filters[0].config_type = Some(filter::ConfigType::TypedConfig(pack(&narrow)));
    let decoded = decode_inbound_listener(&listener(vec![c])).unwrap();
    let fields: Vec<&str> = decoded
        .unsupported
        .iter()
        .map(|u| u.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].domains"]
    );
}

#[test]
fn the_default_filter_chain_serves_when_there_is_no_other() {
    let mut l = listener(vec![]);
    l.default_filter_chain = Some(chain("mtls", Some(mtls_socket(true)), vec![router()]));
    assert_eq!(
        only(&decode_inbound_listener(&l).unwrap().value).mtls,
        MtlsMode::Strict
    );
    l.default_filter_chain = None;
    assert!(decode_inbound_listener(&l).is_err(), "no chain at all");
}

fn matching(mut c: FilterChain, m: FilterChainMatch) -> FilterChain {
    c.filter_chain_match = Some(m);
    c
}

fn cidr(prefix: &str, len: Option<u32>) -> CidrRange {
    CidrRange {
        address_prefix: prefix.into(),
        prefix_len: len.map(|value| UInt32Value { value }),
    }
}

/// Envoy's PERMISSIVE shape (a `tls` chain beside a `raw_buffer` one, told apart by a TLS
/// inspector), as another control plane might send it: gRPC has no TLS inspector, so the
/// `tls` chain never matches and every connection gets the plaintext chain.
#[test]
fn envoy_style_permissive_chains_serve_plaintext_as_grpc_does() {
    let l = listener(vec![
        matching(
            chain("mtls", Some(mtls_socket(true)), vec![router()]),
            FilterChainMatch {
                transport_protocol: "tls".into(),
                ..Default::default()
            },
        ),
        matching(
            chain("plaintext", None, vec![router()]),
            FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            },
        ),
    ]);
    let decoded = decode_inbound_listener(&l).unwrap();
    let fields: Vec<&str> = decoded
        .unsupported
        .iter()
        .map(|u| u.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["filter_chains[0].filter_chain_match.transport_protocol"]
    );
    let chosen = decoded
        .value
        .select(
            "10.0.0.1:9080".parse().unwrap(),
            "10.0.0.2:4000".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(
        (&*chosen.name, chosen.mtls),
        ("inbound-plaintext", MtlsMode::Disable)
    );
}

#[test]
fn chains_are_chosen_by_source_prefix_with_a_default_chain() {
    let mut l = listener(vec![matching(
        chain("plaintext", None, vec![router()]),
        FilterChainMatch {
            // No prefix_len is /0 in a filter chain match (A36); the low bits are ignored.
            source_prefix_ranges: vec![cidr("10.1.2.3", Some(16)), cidr("192.168.0.0", None)],
            ..Default::default()
        },
    )]);
    l.default_filter_chain = Some(chain("mtls", Some(mtls_socket(true)), vec![router()]));
    let decoded = decode_inbound_listener(&l).unwrap().value;
    let mode = |remote: &str| {
        decoded
            .select("10.0.0.1:9080".parse().unwrap(), remote.parse().unwrap())
            .map(|c| c.mtls)
    };
    assert_eq!(mode("10.1.200.1:5000"), Some(MtlsMode::Disable));
    assert_eq!(
        mode("172.16.0.1:5000"),
        Some(MtlsMode::Disable),
        "/0 is every IPv4 peer"
    );
    assert_eq!(
        mode("[2001:db8::1]:5000"),
        Some(MtlsMode::Strict),
        "the default chain"
    );

    let mut bad = l.clone();
    bad.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
        source_type: 7,
        ..Default::default()
    });
    assert!(error_of(&bad).contains("source_type"));
    bad.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
        prefix_ranges: vec![cidr("not-an-ip", Some(8))],
        ..Default::default()
    });
    assert!(error_of(&bad).contains("prefix_ranges[0].address_prefix"));
}

/// The chain every connection gets.
fn only(l: &mesh_core::InboundListener) -> &mesh_core::InboundChain {
    l.chain_for_every_connection()
        .expect("one chain for every connection")
}

fn error_of(l: &Listener) -> String {
    let e = decode_inbound_listener(l).unwrap_err();
    format!("{}: {}", e.field, e.message)
}

#[test]
fn security_weakening_or_unsupported_shapes_are_nacked() {
    // TLS that does not require a client certificate is never served as mTLS or plaintext.
    let e = error_of(&listener(vec![chain(
        "tls",
        Some(mtls_socket(false)),
        vec![router()],
    )]));
    assert!(e.contains("require_client_certificate"), "{e}");

    // Two chains for the same connections: which one applies would be a guess (A36).
    let two = listener(vec![
        chain("mtls", Some(mtls_socket(true)), vec![router()]),
        chain("plaintext", None, vec![router()]),
    ]);
    assert!(error_of(&two).contains("ambiguous"));
    // An invalid chain is NACKed even when it could never match.
    let mut unusable = chain("tls", Some(mtls_socket(false)), vec![router()]);
    unusable.filter_chain_match = Some(FilterChainMatch {
        destination_port: Some(UInt32Value { value: 9080 }),
        ..Default::default()
    });
    let e = error_of(&listener(vec![
        chain("plaintext", None, vec![router()]),
        unusable,
    ]));
    assert!(e.starts_with("filter_chains[1]"), "{e}");

    // The router must be last, and present.
    let e = error_of(&listener(vec![chain("plaintext", None, vec![])]));
    assert!(e.contains("router"), "{e}");
    let mut late = istio_filters();
    late.rotate_right(1);
    assert!(error_of(&listener(vec![chain("plaintext", None, late)])).contains("last"));

    // A41: grpc- and :scheme header matchers, and CEL conditions, are NACKed.
    for name in [":scheme", "grpc-timeout"] {
        let header = PbPermission {
            rule: Some(permission::Rule::Header(HeaderMatcher {
                name: name.into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(
                    true,
                )),
                ..Default::default()
            })),
        };
        let f = rbac_filter(
            "rbac",
            pbrbac::rbac::Action::Deny,
            vec![(
                "p",
                Policy {
                    permissions: vec![header],
                    principals: vec![],
                    ..Default::default()
                },
            )],
        );
        let e = error_of(&listener(vec![chain("plaintext", None, vec![f, router()])]));
        assert!(e.contains(name), "{e}");
    }

    // A forwarding route on a server.
    let mut forwarding = hcm(vec![router()]);
    if let Some(RouteSpecifier::RouteConfig(rc)) = &mut forwarding.route_specifier {
        rc.virtual_hosts[0].routes[0].action =
            Some(rpb::route::Action::Route(RouteAction::default()));
    }
    let mut c = chain("plaintext", None, vec![]);
    c.filters[0].config_type = Some(filter::ConfigType::TypedConfig(pack(&forwarding)));
    assert!(error_of(&listener(vec![c])).contains("non_forwarding_action"));

    // A client (API) listener is not a server's.
    let mut api = listener(vec![]);
    api.api_listener = Some(Default::default());
    assert!(error_of(&api).contains("api_listener"));
}

#[test]
fn log_action_is_ignored_and_ip_principals_decode() {
    let ip = PbPrincipal {
        identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
            address_prefix: "10.0.0.0".into(),
            prefix_len: Some(UInt32Value { value: 8 }),
        })),
    };
    let filters = vec![
        rbac_filter(
            "log",
            pbrbac::rbac::Action::Log,
            vec![(
                "p",
                Policy {
                    permissions: vec![any_permission()],
                    principals: vec![ip.clone()],
                    ..Default::default()
                },
            )],
        ),
        rbac_filter(
            "allow",
            pbrbac::rbac::Action::Allow,
            vec![(
                "p",
                Policy {
                    permissions: vec![any_permission()],
                    principals: vec![ip],
                    ..Default::default()
                },
            )],
        ),
        router(),
    ];
    let decoded =
        decode_inbound_listener(&listener(vec![chain("plaintext", None, filters)])).unwrap();
    assert!(
        only(&decoded.value).rbac[0].rules.is_none(),
        "LOG enforces nothing"
    );
    assert!(
        decoded
            .unsupported
            .iter()
            .any(|u| u.field.ends_with("rules.action"))
    );
    let policy = &only(&decoded.value).rbac[1]
        .rules
        .as_ref()
        .unwrap()
        .policies[0];
    assert_eq!(policy.permissions[0], Permission::Any);
    assert_eq!(
        policy.principals[0],
        Principal::RemoteIp("10.0.0.0/8".parse().unwrap())
    );
    assert!(
        judge(&decoded.value, None, "/x").allowed,
        "10.0.0.9 is in 10.0.0.0/8"
    );
}

/// The listener's `CommonTlsContext` goes through the cluster's decoder, and asks for exactly
/// what the server presents: the workload identity (provider instance `default`) and its trust
/// bundle, with no SAN check the server could not make.
#[test]
fn the_server_tls_context_is_decoded_like_the_clusters_and_names_the_workload_identity() {
    let with_common = |edit: &dyn Fn(&mut CommonTlsContext)| {
        let mut socket = mtls_socket(true);
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut socket.config_type else {
            unreachable!()
        };
        let mut tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
        edit(tls.common_tls_context.as_mut().unwrap());
        *any = pack(&tls);
        listener(vec![chain("mtls", Some(socket), vec![router()])])
    };
    // SDS beside the provider: the cluster decoder refuses it.
    let e = error_of(&with_common(&|c| {
        c.tls_certificate_sds_secret_configs = vec![Default::default()];
    }));
    assert!(e.contains("tls_certificate_sds_secret_configs"), "{e}");
    // Two certificate sources that differ.
    let e = error_of(&with_common(&|c| {
        c.tls_certificate_provider_instance = Some(CertificateProviderPluginInstance {
            instance_name: "other".into(),
            certificate_name: "default".into(),
        });
    }));
    assert!(e.contains("more than one certificate source"), "{e}");
    // A provider instance other than the workload identity's.
    #[allow(deprecated)]
    let e = error_of(&with_common(&|c| {
        c.tls_certificate_provider_instance = None;
        c.tls_certificate_certificate_provider_instance =
            Some(common_tls_context::CertificateProviderInstance {
                instance_name: "other".into(),
                certificate_name: "default".into(),
            });
    }));
    assert!(e.contains("workload identity"), "{e}");
    // A SAN check on client certificates the server does not make.
    let e = error_of(&with_common(&|c| {
        if let Some(common_tls_context::ValidationContextType::CombinedValidationContext(comb)) =
            &mut c.validation_context_type
        {
            comb.default_validation_context
                .as_mut()
                .unwrap()
                .match_subject_alt_names = vec![exact("spiffe://cluster.local/ns/a/sa/b")];
        }
    }));
    assert!(e.contains("subject_alt_names"), "{e}");
    // No trust source at all.
    let e = error_of(&with_common(&|c| c.validation_context_type = None));
    assert!(e.contains("validation_context"), "{e}");
}

/// An ALLOW-everything RBAC filter with `audit_logging_options` of `condition` and `loggers`
/// (type URL, is_optional).
fn audited(condition: i32, loggers: &[(&str, bool)]) -> HttpFilter {
    use envoy_types::pb::{
        envoy::config::{
            core::v3::TypedExtensionConfig,
            rbac::v3::rbac::{AuditLoggingOptions, audit_logging_options::AuditLoggerConfig},
        },
        google::protobuf::Any,
    };
    let logger_configs = loggers
        .iter()
        .map(|(url, optional)| AuditLoggerConfig {
            audit_logger: Some(TypedExtensionConfig {
                name: "logger".into(),
                typed_config: Some(Any {
                    type_url: (*url).into(),
                    value: Vec::new(),
                }),
            }),
            is_optional: *optional,
        })
        .collect();
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(ConfigType::TypedConfig(pack(&RbacFilterConfig {
            rules: Some(pbrbac::Rbac {
                action: pbrbac::rbac::Action::Allow.into(),
                audit_logging_options: Some(AuditLoggingOptions {
                    audit_condition: condition,
                    logger_configs,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// gRFC A59: the stdout logger runs; an unknown logger is NACKed unless optional, then skipped
/// and reported; a condition without a logger the mesh runs logs nothing.
#[test]
fn audit_logging_options_decode_as_a59_says() {
    use mesh_core::AuditCondition;
    const STDOUT: &str =
        "type.googleapis.com/envoy.extensions.rbac.audit_loggers.stream.v3.StdoutAuditLog";
    const CUSTOM: &str = "type.googleapis.com/example.CustomAuditLogger";
    let decode = |f: HttpFilter| {
        decode_inbound_listener(&listener(vec![chain("plaintext", None, vec![f, router()])]))
    };
    let condition = |f: HttpFilter| {
        let d = decode(f).unwrap();
        let audit = only(&d.value).rbac[0].rules.as_ref().unwrap().audit;
        let reported: Vec<String> = d.unsupported.iter().map(|u| u.field.clone()).collect();
        (audit, reported)
    };
    assert_eq!(
        condition(audited(3, &[(STDOUT, false)])),
        (AuditCondition::OnDenyAndAllow, vec![])
    );
    assert_eq!(
        condition(audited(1, &[(STDOUT, false)])).0,
        AuditCondition::OnDeny
    );
    assert_eq!(
        condition(audited(2, &[])).0,
        AuditCondition::None,
        "no logger"
    );
    let (audit, reported) = condition(audited(2, &[(CUSTOM, true), (STDOUT, false)]));
    assert_eq!(audit, AuditCondition::OnAllow);
    assert_eq!(
        reported,
        [
            "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.audit_logging_options.logger_configs[0]"
        ]
    );
    let e = decode(audited(2, &[(CUSTOM, false)])).unwrap_err();
    assert!(e.message.contains("CustomAuditLogger"), "{}", e.message);
    assert!(
        decode(audited(9, &[(STDOUT, false)])).is_err(),
        "unknown condition"
    );
}
