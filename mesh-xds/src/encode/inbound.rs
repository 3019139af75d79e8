//! The inbound `Listener` a proxyless gRPC server subscribes to
//! (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`), as istiod builds it
//! (`pilot/pkg/networking/grpcgen/lds.go`, RBAC from `pilot/pkg/security/authz/model`).
//!
//! Unlike the client resources it depends on who asks: the workload is the node's namespace
//! and labels (istio-agent's node metadata `NAMESPACE` and `LABELS`) and the port of the name.
//!
//! - One chain, never a `filter_chain_match`: `inbound-mtls` (a `DownstreamTlsContext`
//!   requiring a client certificate, certificate and trust bundle from provider instance
//!   `default`) when PeerAuthentication says STRICT for the port, or PERMISSIVE on a workload
//!   labelled `security.istio.io/tlsMode: istio` (its clients use mTLS, and gRPC has no
//!   permissive chain); `inbound-plaintext` otherwise.
//! - An inline route configuration `inbound`: `*`, prefix `/` → non-forwarding action.
//! - HTTP filters: RBAC DENY (`envoy.filters.http.rbac.DENY`), RBAC ALLOW
//!   (`envoy.filters.http.rbac`), each only when it has policies, then the router. Policies
//!   are named `<namespace>-<name>-<rule index>`, translated as istio's authz model generates
//!   them with authenticated principals (`and_ids` of one `or_ids` per field, `not_id` for
//!   negations; `and_rules`/`or_rules`/`not_rule` for permissions).
//!
//! What istiod does not send gRPC ([`InboundView::dropped`], [`not_enforced`]): AUDIT
//! policies (grpcgen lists only ALLOW and DENY). Where this differs from istiod, it is narrower: a dry-run policy goes
//! to the filter's `shadow_rules` (istiod's gRPC generator ignores the annotation and enforces
//! it; gRPC ignores shadow rules, this mesh logs them).

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                Address, CidrRange, SocketAddress, TransportSocket, address, socket_address,
                transport_socket,
            },
            listener::v3::{Filter, FilterChain, Listener, filter},
            rbac::v3::{
                self as pbrbac, Permission, Policy, Principal, permission::Rule,
                principal::Identifier,
            },
            route::v3::{
                HeaderMatcher, NonForwardingAction, Route, RouteConfiguration, RouteMatch,
                VirtualHost, header_matcher::HeaderMatchSpecifier, route::Action,
                route_match::PathSpecifier,
            },
        },
        extensions::{
            filters::{
                http::{rbac::v3::Rbac as RbacFilter, router::v3::Router},
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                    http_filter::ConfigType,
                },
            },
            transport_sockets::tls::v3::{
                CommonTlsContext, DownstreamTlsContext, common_tls_context::ValidationContextType,
            },
        },
        r#type::matcher::v3::{
            PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
        },
    },
    google::protobuf::{BoolValue, UInt32Value},
};
use ipnet::IpNet;
use mesh_core::{
    AuthorizationPolicy, AuthzAction, AuthzRule, ConditionKey, DEFAULT_ROOT_NAMESPACE, IstioString,
    Labels, MtlsMode, ServerPolicy, mtls_mode,
};

use super::{
    ROOT_CA_CERTIFICATE, WORKLOAD_CERTIFICATE, WORKLOAD_PROVIDER, any,
    cluster::{TLS_SOCKET, provider_instance},
};
use crate::decode::inbound::INBOUND_LISTENER_PREFIX;

/// istiod's name of the ALLOW filter (`RBACHTTPFilterName`).
pub const RBAC_ALLOW_FILTER: &str = "envoy.filters.http.rbac";
/// istiod's name of the DENY filter (`RBACHTTPFilterNameDeny`).
pub const RBAC_DENY_FILTER: &str = "envoy.filters.http.rbac.DENY";
/// The pod label by which istiod turns PERMISSIVE into mTLS for gRPC.
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The workload an inbound listener is built for.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Its namespace (`default` when the node does not say).
    pub namespace: String,
    /// Its labels.
    pub labels: Labels,
}

/// What the inbound listener of a workload carries, and what it leaves out.
#[derive(Clone, Debug)]
pub struct InboundView {
    /// The listener.
    pub listener: Listener,
    /// The mode of its chain: [`MtlsMode::Strict`] or [`MtlsMode::Disable`].
    pub mode: MtlsMode,
    /// What istiod would not send a gRPC server, one line each.
    pub dropped: Vec<String>,
}

/// Why `policy` is not enforced as written by a proxyless gRPC server, if it is not: AUDIT is
/// not sent (istiod's gRPC generator lists only ALLOW and DENY); a dry-run policy is sent as
/// shadow rules, which gRPC ignores and this mesh logs.
pub fn not_enforced(policy: &AuthorizationPolicy) -> Option<String> {
    let name = format!(
        "AuthorizationPolicy {}/{}",
        policy.scope.namespace, policy.name
    );
    if policy.action == AuthzAction::Audit {
        Some(format!(
            "{name}: AUDIT is not sent to proxyless gRPC servers (istiod sends only ALLOW and DENY)"
        ))
    } else if policy.dry_run {
        Some(format!(
            "{name}: dry-run is sent as RBAC shadow rules; gRPC servers ignore them, this mesh's servers log them"
        ))
    } else {
        None
    }
}

/// `ip:port` of an inbound listener name; `None` for other names.
pub fn inbound_address(name: &str) -> Option<std::net::SocketAddr> {
    name.strip_prefix(INBOUND_LISTENER_PREFIX)?.parse().ok()
}

/// The inbound listener `name` for `workload` under `policy`; `None` when `name` is not an
/// inbound listener name with an `ip:port`.
pub fn encode_inbound(name: &str, policy: &ServerPolicy, workload: &Workload) -> Option<Listener> {
    inbound_view(name, policy, workload).map(|v| v.listener)
}

/// [`encode_inbound`] with the mode and what was dropped.
pub fn inbound_view(name: &str, policy: &ServerPolicy, workload: &Workload) -> Option<InboundView> {
    let addr = inbound_address(name)?;
    let root = DEFAULT_ROOT_NAMESPACE;
    let mut mode = mtls_mode(
        &policy.peer_authentication,
        &workload.namespace,
        &workload.labels,
        addr.port(),
        root,
    );
    if mode == MtlsMode::Permissive {
        mode = if workload.labels.get(TLS_MODE_LABEL) == Some("istio") {
            MtlsMode::Strict
        } else {
            MtlsMode::Disable
        };
    }
    let applying: Vec<&AuthorizationPolicy> = policy
        .authorization
        .iter()
        .filter(|p| {
            p.scope
                .applies_to(&workload.namespace, &workload.labels, root)
        })
        .collect();
    let dropped = applying.iter().filter_map(|p| not_enforced(p)).collect();
    let mut http_filters = Vec::with_capacity(3);
    for (action, filter_name, pb_action) in [
        (
            AuthzAction::Deny,
            RBAC_DENY_FILTER,
            pbrbac::rbac::Action::Deny,
        ),
        (
            AuthzAction::Allow,
            RBAC_ALLOW_FILTER,
            pbrbac::rbac::Action::Allow,
        ),
    ] {
        let of_action = applying.iter().filter(|p| p.action == action);
        let (enforced, dry_run): (Vec<_>, Vec<_>) = of_action.partition(|p| !p.dry_run);
        let rules = rbac(pb_action, &enforced);
        let shadow = rbac(pb_action, &dry_run);
        if rules.is_none() && shadow.is_none() {
            continue;
        }
        http_filters.push(HttpFilter {
            name: filter_name.to_string(),
            config_type: Some(ConfigType::TypedConfig(any(&RbacFilter {
                // Only dry-run policies: no `rules`, so the filter enforces nothing.
                rules,
                shadow_rules: shadow,
                ..RbacFilter::default()
            }))),
            ..HttpFilter::default()
        });
    }
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    });
    let suffix = if mode == MtlsMode::Strict {
        "mtls"
    } else {
        "plaintext"
    };
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(inbound_routes())),
        http_filters,
        ..HttpConnectionManager::default()
    };
    let listener = Listener {
        name: name.to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            name: format!("inbound-{suffix}"),
            filters: vec![Filter {
                name: format!("inbound-hcm{suffix}"),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            transport_socket: (mode == MtlsMode::Strict).then(mtls_socket),
            ..FilterChain::default()
        }],
        ..Listener::default()
    };
    Some(InboundView {
        listener,
        mode,
        dropped,
    })
}

/// `*` → non-forwarding, as istiod inlines it.
fn inbound_routes() -> RouteConfiguration {
    RouteConfiguration {
        name: "inbound".to_string(),
        virtual_hosts: vec![VirtualHost {
            domains: vec!["*".to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..RouteMatch::default()
                }),
                action: Some(Action::NonForwardingAction(NonForwardingAction::default())),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// mTLS requiring a client certificate: the workload identity and the mesh trust bundle.
fn mtls_socket() -> TransportSocket {
    let common = CommonTlsContext {
        tls_certificate_provider_instance: Some(provider_instance(
            WORKLOAD_PROVIDER,
            WORKLOAD_CERTIFICATE,
        )),
        validation_context_type: Some(ValidationContextType::ValidationContext(
            envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext {
                ca_certificate_provider_instance: Some(provider_instance(
                    WORKLOAD_PROVIDER,
                    ROOT_CA_CERTIFICATE,
                )),
                ..Default::default()
            },
        )),
        ..CommonTlsContext::default()
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

/// istiod's `buildRBAC`: one policy per rule, `None` when there is none.
fn rbac(action: pbrbac::rbac::Action, policies: &[&&AuthorizationPolicy]) -> Option<pbrbac::Rbac> {
    let mut out = pbrbac::Rbac {
        action: action as i32,
        ..pbrbac::Rbac::default()
    };
    for p in policies {
        for (i, rule) in p.rules.iter().enumerate() {
            out.policies.insert(
                format!("{}-{}-{i}", p.scope.namespace, p.name),
                policy(rule, action),
            );
        }
    }
    (!out.policies.is_empty()).then_some(out)
}

/// The istio string syntax back as written (`x`, `x*`, `*x`, `*`).
fn written(s: &IstioString) -> String {
    match s {
        IstioString::Exact(v) => v.to_string(),
        IstioString::Prefix(v) => format!("{v}*"),
        IstioString::Suffix(v) => format!("*{v}"),
        IstioString::Any => "*".to_string(),
    }
}

/// One field of a rule: its values OR-ed, then its negations as `not(or)`.
struct Field<T> {
    values: Vec<T>,
    not_values: Vec<T>,
}

fn field<T, S>(values: &[S], not_values: &[S], make: impl Fn(&S) -> T) -> Field<T> {
    Field {
        values: values.iter().map(&make).collect(),
        not_values: not_values.iter().map(&make).collect(),
    }
}

/// `model.New` + `Generate(forTCP=false, useAuthenticated=true)`: one permission per `to`
/// entry (one `any` without), one principal per `from` entry; each an AND over the fields in
/// istio's order, `when` conditions appended to every one.
///
/// A value the model holds but Envoy cannot carry (a port or IP condition that does not
/// parse) matches everything in a DENY and nothing in an ALLOW: never wider access.
fn policy(rule: &AuthzRule, action: pbrbac::rbac::Action) -> Policy {
    let deny = action == pbrbac::rbac::Action::Deny;
    let unparsable_permission = || {
        if deny {
            permission_any()
        } else {
            Permission {
                rule: Some(Rule::NotRule(Box::new(permission_any()))),
            }
        }
    };
    let unparsable_principal = || {
        if deny {
            principal_any()
        } else {
            Principal {
                identifier: Some(Identifier::NotId(Box::new(principal_any()))),
            }
        }
    };
    let mut base_permission: Vec<Field<Permission>> = Vec::new();
    let mut base_principal: Vec<Field<Principal>> = Vec::new();
    for c in rule.when.iter() {
        match &c.key {
            ConditionKey::DestinationPort => {
                base_permission.push(field(&c.values, &c.not_values, |v| match v {
                    IstioString::Exact(p) => p.parse::<u32>().map_or_else(
                        |_| unparsable_permission(),
                        |port| Permission {
                            rule: Some(Rule::DestinationPort(port)),
                        },
                    ),
                    _ => unparsable_permission(),
                }))
            }
            ConditionKey::SourceIp => base_principal.push(field(&c.values, &c.not_values, |v| {
                let text = written(v);
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_or_else(|_| unparsable_principal(), |n| direct_remote_ip(&n))
            })),
            ConditionKey::SourceNamespace => {
                base_principal.push(field(&c.values, &c.not_values, |v| {
                    authenticated(namespace_matcher(&written(v)))
                }))
            }
            ConditionKey::SourcePrincipal => {
                base_principal.push(field(&c.values, &c.not_values, |v| {
                    authenticated(with_prefix(&written(v), "spiffe://"))
                }))
            }
            ConditionKey::RequestHeader(name) => {
                base_principal.push(field(&c.values, &c.not_values, |v| Principal {
                    identifier: Some(Identifier::Header(header_matcher(
                        name.as_str(),
                        &written(v),
                        false,
                    ))),
                }))
            }
        }
    }
    let mut permissions = Vec::new();
    for to in rule.to.iter() {
        let mut fields = vec![
            field(&to.hosts, &to.not_hosts, |v| Permission {
                rule: Some(Rule::Header(header_matcher(
                    ":authority",
                    &written(v),
                    true,
                ))),
            }),
            field(&to.methods, &to.not_methods, |v| Permission {
                rule: Some(Rule::Header(header_matcher(":method", &written(v), false))),
            }),
            field(&to.paths, &to.not_paths, |v| Permission {
                rule: Some(Rule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(with_prefix(&written(v), ""))),
                })),
            }),
            field(&to.ports, &to.not_ports, |p| Permission {
                rule: Some(Rule::DestinationPort(u32::from(*p))),
            }),
        ];
        fields.extend(base_permission.iter().map(clone_field));
        permissions.push(and_permissions(fields));
    }
    if rule.to.is_empty() {
        permissions.push(and_permissions(
            base_permission.iter().map(clone_field).collect(),
        ));
    }
    let mut principals = Vec::new();
    for from in rule.from.iter() {
        let mut fields = vec![
            field(&from.principals, &from.not_principals, |v| {
                authenticated(with_prefix(&written(v), "spiffe://"))
            }),
            field(&from.namespaces, &from.not_namespaces, |v| {
                authenticated(namespace_matcher(&written(v)))
            }),
            field(&from.ip_blocks, &from.not_ip_blocks, direct_remote_ip),
        ];
        fields.extend(base_principal.iter().map(clone_field));
        principals.push(and_principals(fields));
    }
    if rule.from.is_empty() {
        principals.push(and_principals(
            base_principal.iter().map(clone_field).collect(),
        ));
    }
    Policy {
        permissions,
        principals,
        ..Policy::default()
    }
}

fn clone_field<T: Clone>(f: &Field<T>) -> Field<T> {
    Field {
        values: f.values.clone(),
        not_values: f.not_values.clone(),
    }
}

fn and_permissions(fields: Vec<Field<Permission>>) -> Permission {
    let mut and = Vec::new();
    for f in fields {
        if !f.values.is_empty() {
            and.push(Permission {
                rule: Some(Rule::OrRules(pbrbac::permission::Set { rules: f.values })),
            });
        }
        if !f.not_values.is_empty() {
            and.push(Permission {
                rule: Some(Rule::NotRule(Box::new(Permission {
                    rule: Some(Rule::OrRules(pbrbac::permission::Set {
                        rules: f.not_values,
                    })),
                }))),
            });
        }
    }
    if and.is_empty() {
        and.push(permission_any());
    }
    Permission {
        rule: Some(Rule::AndRules(pbrbac::permission::Set { rules: and })),
    }
}

fn and_principals(fields: Vec<Field<Principal>>) -> Principal {
    let mut and = Vec::new();
    for f in fields {
        if !f.values.is_empty() {
            and.push(Principal {
                identifier: Some(Identifier::OrIds(pbrbac::principal::Set { ids: f.values })),
            });
        }
        if !f.not_values.is_empty() {
            and.push(Principal {
                identifier: Some(Identifier::NotId(Box::new(Principal {
                    identifier: Some(Identifier::OrIds(pbrbac::principal::Set {
                        ids: f.not_values,
                    })),
                }))),
            });
        }
    }
    if and.is_empty() {
        and.push(principal_any());
    }
    Principal {
        identifier: Some(Identifier::AndIds(pbrbac::principal::Set { ids: and })),
    }
}

fn permission_any() -> Permission {
    Permission {
        rule: Some(Rule::Any(true)),
    }
}

fn principal_any() -> Principal {
    Principal {
        identifier: Some(Identifier::Any(true)),
    }
}

fn authenticated(m: StringMatcher) -> Principal {
    Principal {
        identifier: Some(Identifier::Authenticated(
            pbrbac::principal::Authenticated {
                principal_name: Some(m),
            },
        )),
    }
}

fn direct_remote_ip(n: &IpNet) -> Principal {
    Principal {
        identifier: Some(Identifier::DirectRemoteIp(CidrRange {
            address_prefix: n.addr().to_string(),
            prefix_len: Some(UInt32Value {
                value: u32::from(n.prefix_len()),
            }),
        })),
    }
}

fn exact(v: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v)),
        ignore_case: false,
    }
}

fn regex(r: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
            regex: r,
            ..RegexMatcher::default()
        })),
        ignore_case: false,
    }
}

/// istio's `StringMatcherWithPrefix`: `*` is `.+` (the prefix ignored), `*x` a suffix (a regex
/// under a prefix), `x*` a prefix, otherwise exact.
fn with_prefix(v: &str, prefix: &str) -> StringMatcher {
    if v == "*" {
        regex(".+".to_string())
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            StringMatcher {
                match_pattern: Some(MatchPattern::Suffix(suffix.to_string())),
                ignore_case: false,
            }
        } else {
            regex(format!("{prefix}.*{}", regex_quote(suffix)))
        }
    } else if let Some(start) = v.strip_suffix('*') {
        StringMatcher {
            match_pattern: Some(MatchPattern::Prefix(format!("{prefix}{start}"))),
            ignore_case: false,
        }
    } else {
        exact(format!("{prefix}{v}"))
    }
}

/// istio's namespace matcher: `.*/ns/<namespace>/.*`, `*` standing for `.*`.
fn namespace_matcher(v: &str) -> StringMatcher {
    let pattern = v.split('*').map(regex_quote).collect::<Vec<_>>().join(".*");
    regex(format!(".*/ns/{pattern}/.*"))
}

/// istio's `HeaderMatcher` (`HostMatcher` with `ignore_case`): `*` present, `*x` suffix, `x*`
/// prefix, otherwise exact.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    let string = |p: MatchPattern| {
        HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        })
    };
    let specifier = if v == "*" {
        HeaderMatchSpecifier::PresentMatch(true)
    } else if let Some(suffix) = v.strip_prefix('*') {
        string(MatchPattern::Suffix(suffix.to_string()))
    } else if let Some(start) = v.strip_suffix('*') {
        string(MatchPattern::Prefix(start.to_string()))
    } else {
        string(MatchPattern::Exact(v.to_string()))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..HeaderMatcher::default()
    }
}

/// Go's `regexp.QuoteMeta`.
fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests;
