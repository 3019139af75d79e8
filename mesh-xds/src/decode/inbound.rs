//! `Listener` → [`InboundListener`]: the server's view of an LDS resource (gRFC A36), as
//! istiod generates it for proxyless servers (`pilot/pkg/networking/grpcgen/lds.go`).
//!
//! # Shape
//!
//! A socket listener named `xds.istio.io/grpc/lds/inbound/<ip>:<port>` with one filter chain
//! and no `filter_chain_match`, `inbound-mtls` or `inbound-plaintext`, holding one
//! `HttpConnectionManager` whose inline `RouteConfiguration` routes everything to a
//! non-forwarding action and whose HTTP filters are RBAC (DENY, then ALLOW) and the router.
//! istiod never sends two chains: PERMISSIVE becomes the plaintext chain (gRPC cannot tell an
//! mTLS client from a plaintext one by filter chain), or the mTLS chain when the workload is
//! labelled `security.istio.io/tlsMode: istio` (its clients then use mTLS).
//!
//! Other control planes may send several chains with matches, and a `default_filter_chain`:
//! every chain is decoded, and each connection gets its chain as A36 says
//! ([`InboundListener::select`]); matches that make a chain unusable for a proxyless server
//! are reported.

//! # What is rejected (NACKed)
//!
//! - An `api_listener`, `listener_filters` or `use_original_dst` (A36).
//! - Any invalid chain, used or not (A36); two chain matches equal once normalized (which chain
//!   a connection gets would be ambiguous); no chain usable and no `default_filter_chain`.
//! - A transport socket other than a `DownstreamTlsContext` that requires a client
//!   certificate with a certificate and a validation context (A29): the mesh serves mTLS or
//!   plaintext, and never serves plaintext or one-way TLS where the chain asks for mTLS. The
//!   `CommonTlsContext` goes through the cluster's decoder (SDS, inline secrets, conflicting
//!   sources are errors there), and must name the mesh's workload identity for both the
//!   certificate and the trust bundle: provider instance `default`, as istiod sends. Another
//!   source, or SAN matchers on client certificates (which the server does not check; RBAC
//!   principals do), is an error rather than a silently different server.
//! - RDS instead of an inline route configuration, and routes whose action is not
//!   `non_forwarding_action`.
//! - HTTP filters other than RBAC and the router (unless optional), a router that is not last,
//!   RBAC with CEL conditions, matchers on `:scheme` or `grpc-*` headers, custom or
//!   `uri_template` matchers (A41).
//!
//! RBAC with action LOG is ignored, as A41 says. Audit logging (A59) runs Envoy's
//! `StdoutAuditLog`; any other logger is NACKed unless optional. Everything set and not acted
//! on is reported.

use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{CidrRange, transport_socket},
            listener::v3::{
                Filter, FilterChain, Listener, filter, filter_chain_match::ConnectionSourceType,
            },
            rbac::v3::{self as pbrbac, permission::Rule, principal::Identifier},
            route::v3::{route::Action as PbRouteAction, route_match::PathSpecifier},
        },
        extensions::{
            filters::{
                http::{rbac::v3::Rbac as RbacFilterConfig, router::v3::Router},
                network::http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                    http_filter::ConfigType,
                },
            },
            rbac::audit_loggers::stream::v3::StdoutAuditLog,
            transport_sockets::tls::v3::DownstreamTlsContext,
        },
        r#type::matcher::v3::{PathMatcher as PbPathMatcher, path_matcher},
    },
    google::protobuf::Any,
};
use ipnet::IpNet;
use mesh_core::{
    AuditCondition, CertificateSource, FilterChainMatch, InboundChain, InboundListener, MtlsMode,
    Permission, Principal, Rbac, RbacAction, RbacFilter, RbacHeader, RbacPolicy, SourceType,
    matcher::{PathMatch, PathMatcher, StringMatch, StringMatcher},
};
use prost::Name;

use super::{
    Ctx, DecodeError, Decoded,
    cluster::{CommonTls, decode_common_tls_context},
    fields::{at, idx, unpack},
    route::matcher::{header_kind, string_matcher},
};

#[cfg(test)]
mod tests;

/// The prefix of istiod's inbound listener names for proxyless servers.
pub const INBOUND_LISTENER_PREFIX: &str = "xds.istio.io/grpc/lds/inbound/";

/// What the server does with route conditions: every route's action is non-forwarding, so which
/// one matches changes nothing the mesh acts on.
const SERVED_BY_EVERY_ROUTE: &str =
    "not matched: every request is served (all routes are non-forwarding)";

/// The certificate-provider instance that is the workload identity: istiod names it for both
/// the certificate and the trust bundle, and the xDS client takes the server's identity from it
/// when the mesh has none.
pub const WORKLOAD_INSTANCE: &str = "default";

/// Whether `source` is the bootstrap's workload-identity instance (certificate name aside: a
/// `file_watcher` instance holds one certificate and one bundle).
fn is_workload_identity(source: &CertificateSource) -> bool {
    matches!(source, CertificateSource::Provider { instance, .. } if instance == WORKLOAD_INSTANCE)
}

fn describe(source: &CertificateSource) -> String {
    match source {
        CertificateSource::Provider { instance, .. } => {
            format!("certificate provider instance `{instance}`")
        }
        CertificateSource::Files { certificate, .. } => format!("file `{certificate}`"),
    }
}

/// The type URL of the HTTP connection manager, the one network filter a chain may hold.
fn hcm_url() -> String {
    HttpConnectionManager::type_url()
}

/// Decodes an inbound `Listener` for a server; see the [module docs](self) for what is
/// accepted.
pub fn decode_inbound_listener(l: &Listener) -> Result<Decoded<InboundListener>, DecodeError> {
    let mut ctx = Ctx::new("Listener", l.name.clone());
    if l.api_listener.is_some() {
        return Err(ctx.error(
            "api_listener",
            "a server's listener is a socket listener, not an api_listener",
        ));
    }
    if !l.listener_filters.is_empty() {
        return Err(ctx.error("listener_filters", "listener filters are not supported"));
    }
    if l.use_original_dst.is_some_and(|b| b.value) {
        return Err(ctx.error("use_original_dst", "not supported"));
    }
    let mut chains = Vec::with_capacity(l.filter_chains.len());
    for (i, chain) in l.filter_chains.iter().enumerate() {
        let path = idx("", "filter_chains", i);
        let matcher = filter_chain_match(&mut ctx, &at(&path, "filter_chain_match"), chain)?;
        chains.push((matcher, filter_chain(&mut ctx, &path, chain)?));
    }
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|chain| filter_chain(&mut ctx, "default_filter_chain", chain))
        .transpose()?;
    if chains.is_empty() && default_chain.is_none() {
        return Err(ctx.error("filter_chains", "no filter chain"));
    }
    let value = InboundListener::new(l.name.clone(), chains, default_chain)
        .map_err(|e| ctx.error("filter_chains", e.message()))?;
    Ok(ctx.done(value))
}

/// A chain's match, with the fields a proxyless server can never match reported (A36).
fn filter_chain_match(
    ctx: &mut Ctx,
    path: &str,
    chain: &FilterChain,
) -> Result<FilterChainMatch, DecodeError> {
    let Some(m) = &chain.filter_chain_match else {
        return Ok(FilterChainMatch::default());
    };
    let never = |ctx: &mut Ctx, field: &str, why: &str| {
        ctx.unsupported(
            at(path, field),
            format!("chain `{}` never matches: {why}", chain.name),
        );
    };
    let destination_port = m.destination_port.map(|p| p.value);
    if destination_port.is_some() {
        never(ctx, "destination_port", "it needs use_original_dst");
    }
    if !m.server_names.is_empty() {
        never(
            ctx,
            "server_names",
            "it needs a TLS inspector listener filter",
        );
    }
    if !m.application_protocols.is_empty() {
        never(
            ctx,
            "application_protocols",
            "it needs a TLS inspector listener filter",
        );
    }
    if !matches!(m.transport_protocol.as_str(), "" | "raw_buffer") {
        never(
            ctx,
            "transport_protocol",
            "without listener filters every connection is `raw_buffer`, as in gRPC",
        );
    }
    let source_type = match ConnectionSourceType::try_from(m.source_type) {
        Ok(ConnectionSourceType::Any) => SourceType::Any,
        Ok(ConnectionSourceType::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
        Ok(ConnectionSourceType::External) => SourceType::External,
        Err(_) => return Err(ctx.error(at(path, "source_type"), "unknown source type")),
    };
    let ranges = |ctx: &Ctx, field: &str, list: &[CidrRange]| {
        list.iter()
            .enumerate()
            .map(|(i, c)| match_cidr(ctx, &idx(path, field, i), c))
            .collect::<Result<Arc<[IpNet]>, _>>()
    };
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges: ranges(ctx, "prefix_ranges", &m.prefix_ranges)?,
        server_names: m
            .server_names
            .iter()
            .map(|s| Arc::from(s.as_str()))
            .collect(),
        transport_protocol: m.transport_protocol.as_str().into(),
        application_protocols: m
            .application_protocols
            .iter()
            .map(|s| Arc::from(s.as_str()))
            .collect(),
        source_type,
        source_prefix_ranges: ranges(ctx, "source_prefix_ranges", &m.source_prefix_ranges)?,
        source_ports: m.source_ports.iter().copied().collect(),
    })
}

/// A filter chain match's CIDR as A36 normalizes it: an absent `prefix_len` is 0, a longer one
/// than the family allows is the family's length, and the low bits are ignored.
fn match_cidr(ctx: &Ctx, path: &str, c: &CidrRange) -> Result<IpNet, DecodeError> {
    let address: std::net::IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| ctx.error(at(path, "address_prefix"), "not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let len = c.prefix_len.map_or(0, |l| l.value).min(max);
    let len = u8::try_from(len).map_err(|_| ctx.error(at(path, "prefix_len"), "too long"))?;
    IpNet::new(address, len)
        .map(|n| n.trunc())
        .map_err(|_| ctx.error(at(path, "prefix_len"), "too long for the address"))
}

/// One chain: its transport and its connection manager's RBAC filters.
fn filter_chain(
    ctx: &mut Ctx,
    path: &str,
    chain: &FilterChain,
) -> Result<InboundChain, DecodeError> {
    let mtls = transport(ctx, &at(path, "transport_socket"), chain)?;
    let [
        Filter {
            name: _,
            config_type,
        },
    ] = chain.filters.as_slice()
    else {
        return Err(ctx.error(
            at(path, "filters"),
            "exactly one filter, the HTTP connection manager, is required",
        ));
    };
    let hcm_path = at(&idx(path, "filters", 0), "typed_config");
    let Some(filter::ConfigType::TypedConfig(any)) = config_type else {
        return Err(ctx.error(&hcm_path, "required field is missing"));
    };
    if any.type_url != hcm_url() {
        return Err(ctx.error(
            &hcm_path,
            format!("`{}` is not an HTTP connection manager", any.type_url),
        ));
    }
    let hcm: HttpConnectionManager = unpack(ctx, &hcm_path, any)?;
    let rbac = connection_manager(ctx, &hcm_path, &hcm)?;
    Ok(InboundChain {
        name: chain.name.as_str().into(),
        mtls,
        rbac: rbac.into(),
    })
}

/// The chain's transport: plaintext, or mTLS requiring a client certificate.
fn transport(ctx: &mut Ctx, path: &str, chain: &FilterChain) -> Result<MtlsMode, DecodeError> {
    let Some(socket) = &chain.transport_socket else {
        return Ok(MtlsMode::Disable);
    };
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return Err(ctx.error(at(path, "typed_config"), "required field is missing"));
    };
    let cfg = at(path, "typed_config");
    if any.type_url != DownstreamTlsContext::type_url() {
        return Err(ctx.error(
            &cfg,
            format!("transport socket `{}` is not supported", any.type_url),
        ));
    }
    let tls: DownstreamTlsContext = unpack(ctx, &cfg, any)?;
    if !tls.require_client_certificate.is_some_and(|b| b.value) {
        return Err(ctx.error(
            at(&cfg, "require_client_certificate"),
            "TLS without a client certificate is not supported: the mesh serves mTLS or plaintext",
        ));
    }
    let common_path = at(&cfg, "common_tls_context");
    let Some(common) = &tls.common_tls_context else {
        return Err(ctx.error(&common_path, "required field is missing"));
    };
    // The same decoder as the cluster's: SDS, inline secrets, conflicting sources and custom
    // handshakers are refused the same way on both sides.
    let CommonTls {
        certificate,
        trust,
        san_matchers,
        validation_path,
    } = decode_common_tls_context(ctx, &common_path, common)?;
    // The server presents the mesh's workload identity and verifies clients with its trust
    // bundle: the context must name exactly those, the bootstrap's `default` instance.
    let Some(certificate) = certificate else {
        return Err(ctx.error(
            &common_path,
            "a certificate provider instance is required (SDS and inline certificates are not supported)",
        ));
    };
    if !is_workload_identity(&certificate) {
        return Err(ctx.error(
            &common_path,
            format!(
                "the server presents the workload identity (certificate provider instance `{WORKLOAD_INSTANCE}`), not {}",
                describe(&certificate)
            ),
        ));
    }
    let Some(trust) = trust else {
        return Err(ctx.error(
            validation_path,
            "required: a server requiring client certificates must verify them",
        ));
    };
    if !is_workload_identity(&trust) {
        return Err(ctx.error(
            validation_path,
            format!(
                "the server verifies clients with the workload identity's trust bundle (certificate provider instance `{WORKLOAD_INSTANCE}`), not {}",
                describe(&trust)
            ),
        ));
    }
    if !san_matchers.is_empty() {
        // Refused rather than ignored: ignoring it would accept clients the policy excludes.
        // Authorization by client identity is RBAC's job.
        return Err(ctx.error(
            at(&validation_path, "match_subject_alt_names"),
            "not supported on a server: client subject_alt_names are checked by RBAC principals",
        ));
    }
    if tls.require_sni.is_some_and(|b| b.value) {
        ctx.unsupported(at(&cfg, "require_sni"), "ignored");
    }
    Ok(MtlsMode::Strict)
}

/// The connection manager: an inline, non-forwarding route configuration and the RBAC
/// filters, router last.
fn connection_manager(
    ctx: &mut Ctx,
    path: &str,
    hcm: &HttpConnectionManager,
) -> Result<Vec<RbacFilter>, DecodeError> {
    let rest = HttpConnectionManager {
        http_filters: Vec::new(),
        route_specifier: None,
        stat_prefix: String::new(),
        ..hcm.clone()
    };
    if rest != HttpConnectionManager::default() {
        ctx.unsupported(
            path,
            "connection manager settings other than routes and filters ignored",
        );
    }
    match &hcm.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let rc_path = at(path, "route_config");
            for (v, vh) in rc.virtual_hosts.iter().enumerate() {
                let vh_path = idx(&rc_path, "virtual_hosts", v);
                if vh.domains != ["*"] {
                    ctx.unsupported(at(&vh_path, "domains"), SERVED_BY_EVERY_ROUTE);
                }
                for (r, route) in vh.routes.iter().enumerate() {
                    let route_path = idx(&vh_path, "routes", r);
                    if !matches!(route.action, Some(PbRouteAction::NonForwardingAction(_))) {
                        return Err(ctx.error(
                            at(&route_path, "action"),
                            "a server's routes must be non_forwarding_action",
                        ));
                    }
                    let matches_everything = route.r#match.as_ref().is_some_and(|m| {
                        m.path_specifier == Some(PathSpecifier::Prefix("/".into()))
                            && m.headers.is_empty()
                            && m.query_parameters.is_empty()
                    });
                    if !matches_everything {
                        ctx.unsupported(at(&route_path, "match"), SERVED_BY_EVERY_ROUTE);
                    }
                }
            }
        }
        Some(RouteSpecifier::Rds(_)) => {
            return Err(ctx.error(at(path, "rds"), "a server's routes must be inline"));
        }
        _ => return Err(ctx.error(path, "route_config is required")),
    }
    http_filters(ctx, path, &hcm.http_filters)
}

fn http_filters(
    ctx: &mut Ctx,
    base: &str,
    filters: &[HttpFilter],
) -> Result<Vec<RbacFilter>, DecodeError> {
    let mut rbac = Vec::new();
    let mut router = false;
    for (i, f) in filters.iter().enumerate() {
        let path = idx(base, "http_filters", i);
        if router {
            return Err(ctx.error(&path, "the router filter must be the last filter"));
        }
        let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(ctx.error(
                at(&path, "typed_config"),
                "required field is missing (filter config discovery is not supported)",
            ));
        };
        let cfg = at(&path, "typed_config");
        if any.type_url == Router::type_url() {
            router = true;
        } else if any.type_url == RbacFilterConfig::type_url() {
            if f.disabled {
                ctx.unsupported(&path, "disabled filter skipped");
                continue;
            }
            rbac.push(rbac_filter(ctx, &cfg, &f.name, any)?);
        } else if f.is_optional {
            ctx.unsupported(&path, format!("optional filter `{}` skipped", any.type_url));
        } else {
            return Err(ctx.error(
                &cfg,
                format!(
                    "filter type `{}` is not supported on a server",
                    any.type_url
                ),
            ));
        }
    }
    if !router {
        return Err(ctx.error(
            at(base, "http_filters"),
            "the router filter (envoy.extensions.filters.http.router.v3.Router) must be last",
        ));
    }
    Ok(rbac)
}

fn rbac_filter(
    ctx: &mut Ctx,
    path: &str,
    name: &str,
    any: &Any,
) -> Result<RbacFilter, DecodeError> {
    let config: RbacFilterConfig = unpack(ctx, path, any)?;
    if config.matcher.is_some() || config.shadow_matcher.is_some() {
        return Err(ctx.error(path, "matcher and shadow_matcher are not supported"));
    }
    let rules = config
        .rules
        .as_ref()
        .map(|r| rbac(ctx, &at(path, "rules"), r))
        .transpose()?
        .flatten();
    let shadow_rules = config
        .shadow_rules
        .as_ref()
        .map(|r| rbac(ctx, &at(path, "shadow_rules"), r))
        .transpose()?
        .flatten();
    Ok(RbacFilter {
        name: name.into(),
        rules,
        shadow_rules,
    })
}

/// `None` for action LOG, which A41 ignores.
fn rbac(ctx: &mut Ctx, path: &str, r: &pbrbac::Rbac) -> Result<Option<Rbac>, DecodeError> {
    let action = match pbrbac::rbac::Action::try_from(r.action) {
        Ok(pbrbac::rbac::Action::Allow) => RbacAction::Allow,
        Ok(pbrbac::rbac::Action::Deny) => RbacAction::Deny,
        Ok(pbrbac::rbac::Action::Log) => {
            ctx.unsupported(at(path, "action"), "LOG ignored, as gRPC does");
            return Ok(None);
        }
        Err(_) => return Err(ctx.error(at(path, "action"), "unknown action")),
    };
    let audit = r
        .audit_logging_options
        .as_ref()
        .map(|o| audit_logging(ctx, &at(path, "audit_logging_options"), o))
        .transpose()?
        .unwrap_or_default();
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let Some(p) = r.policies.get(name) else {
            continue;
        };
        let p_path = format!("{path}.policies[{name}]");
        if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
            return Err(ctx.error(&p_path, "CEL conditions are not supported"));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(i, x)| permission(ctx, &idx(&p_path, "permissions", i), x))
            .collect::<Result<Vec<_>, _>>()?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(i, x)| principal(ctx, &idx(&p_path, "principals", i), x))
            .collect::<Result<Vec<_>, _>>()?;
        policies.push(RbacPolicy {
            name: name.as_str().into(),
            permissions: permissions.into(),
            principals: principals.into(),
        });
    }
    Ok(Some(Rbac {
        action,
        policies: policies.into(),
        audit,
    }))
}

/// Audit logging (gRFC A59): the condition, when some logger is one the mesh runs (Envoy's
/// `StdoutAuditLog`, written as a JSON event through `tracing`, see the server stack). An
/// unknown logger is an error unless `is_optional`, then skipped and reported.
fn audit_logging(
    ctx: &mut Ctx,
    path: &str,
    options: &pbrbac::rbac::AuditLoggingOptions,
) -> Result<AuditCondition, DecodeError> {
    use pbrbac::rbac::audit_logging_options::AuditCondition as Pb;
    let condition = match Pb::try_from(options.audit_condition) {
        Ok(Pb::None) => AuditCondition::None,
        Ok(Pb::OnDeny) => AuditCondition::OnDeny,
        Ok(Pb::OnAllow) => AuditCondition::OnAllow,
        Ok(Pb::OnDenyAndAllow) => AuditCondition::OnDenyAndAllow,
        Err(_) => return Err(ctx.error(at(path, "audit_condition"), "unknown audit condition")),
    };
    let mut stdout = false;
    for (i, logger) in options.logger_configs.iter().enumerate() {
        let logger_path = idx(path, "logger_configs", i);
        let type_url = logger
            .audit_logger
            .as_ref()
            .and_then(|l| l.typed_config.as_ref())
            .map(|any| any.type_url.as_str());
        match type_url {
            Some(url) if url == StdoutAuditLog::type_url() => stdout = true,
            other => {
                let what = other.map_or_else(
                    || "an audit logger without typed_config".to_string(),
                    |url| format!("audit logger `{url}`"),
                );
                if logger.is_optional {
                    ctx.unsupported(&logger_path, format!("optional {what} skipped"));
                } else {
                    return Err(ctx.error(
                        at(&logger_path, "audit_logger"),
                        format!("{what} is not supported (only StdoutAuditLog)"),
                    ));
                }
            }
        }
    }
    // A condition without a logger logs nothing, as A59 says.
    Ok(if stdout {
        condition
    } else {
        AuditCondition::None
    })
}

#[allow(deprecated)] // `metadata` is still sent by control planes.
fn permission(
    ctx: &mut Ctx,
    path: &str,
    p: &pbrbac::Permission,
) -> Result<Permission, DecodeError> {
    let Some(rule) = &p.rule else {
        return Err(ctx.error(path, "rule is required"));
    };
    let set = |ctx: &mut Ctx, field: &str, rules: &[pbrbac::Permission]| {
        let base = at(path, field);
        rules
            .iter()
            .enumerate()
            .map(|(i, x)| permission(ctx, &idx(&base, "rules", i), x))
            .collect::<Result<Vec<_>, _>>()
            .map(Arc::from)
    };
    Ok(match rule {
        Rule::AndRules(s) => Permission::And(set(ctx, "and_rules", &s.rules)?),
        Rule::OrRules(s) => Permission::Or(set(ctx, "or_rules", &s.rules)?),
        Rule::Any(true) => Permission::Any,
        Rule::Any(false) => return Err(ctx.error(at(path, "any"), "must be true")),
        Rule::NotRule(inner) => {
            Permission::Not(Arc::new(permission(ctx, &at(path, "not_rule"), inner)?))
        }
        Rule::Header(h) => Permission::Header(header(ctx, &at(path, "header"), h)?),
        Rule::UrlPath(m) => Permission::UrlPath(url_path(ctx, &at(path, "url_path"), m)?),
        Rule::DestinationIp(c) => {
            Permission::DestinationIp(cidr(ctx, &at(path, "destination_ip"), c)?)
        }
        Rule::DestinationPort(port) => Permission::DestinationPort {
            start: *port,
            end: port.saturating_add(1),
        },
        Rule::DestinationPortRange(r) => {
            let (Ok(start), Ok(end)) = (u32::try_from(r.start), u32::try_from(r.end)) else {
                return Err(ctx.error(at(path, "destination_port_range"), "negative port"));
            };
            Permission::DestinationPort { start, end }
        }
        Rule::Metadata(_) => Permission::Metadata,
        Rule::RequestedServerName(m) => {
            Permission::RequestedServerName(string(ctx, &at(path, "requested_server_name"), m)?)
        }
        Rule::Matcher(_) | Rule::UriTemplate(_) | Rule::SourcedMetadata(_) => {
            return Err(ctx.error(path, "this permission rule is not supported"));
        }
    })
}

#[allow(deprecated)] // `source_ip` and `metadata` are still sent by control planes.
fn principal(ctx: &mut Ctx, path: &str, p: &pbrbac::Principal) -> Result<Principal, DecodeError> {
    let Some(id) = &p.identifier else {
        return Err(ctx.error(path, "identifier is required"));
    };
    let set = |ctx: &mut Ctx, field: &str, ids: &[pbrbac::Principal]| {
        let base = at(path, field);
        ids.iter()
            .enumerate()
            .map(|(i, x)| principal(ctx, &idx(&base, "ids", i), x))
            .collect::<Result<Vec<_>, _>>()
            .map(Arc::from)
    };
    Ok(match id {
        Identifier::AndIds(s) => Principal::And(set(ctx, "and_ids", &s.ids)?),
        Identifier::OrIds(s) => Principal::Or(set(ctx, "or_ids", &s.ids)?),
        Identifier::Any(true) => Principal::Any,
        Identifier::Any(false) => return Err(ctx.error(at(path, "any"), "must be true")),
        Identifier::NotId(inner) => {
            Principal::Not(Arc::new(principal(ctx, &at(path, "not_id"), inner)?))
        }
        Identifier::Authenticated(a) => Principal::Authenticated(
            a.principal_name
                .as_ref()
                .map(|m| string(ctx, &at(path, "authenticated.principal_name"), m))
                .transpose()?,
        ),
        Identifier::SourceIp(c) => Principal::RemoteIp(cidr(ctx, &at(path, "source_ip"), c)?),
        Identifier::DirectRemoteIp(c) => {
            Principal::RemoteIp(cidr(ctx, &at(path, "direct_remote_ip"), c)?)
        }
        Identifier::RemoteIp(c) => Principal::RemoteIp(cidr(ctx, &at(path, "remote_ip"), c)?),
        Identifier::Header(h) => Principal::Header(header(ctx, &at(path, "header"), h)?),
        Identifier::UrlPath(m) => Principal::UrlPath(url_path(ctx, &at(path, "url_path"), m)?),
        Identifier::Metadata(_) => Principal::Metadata,
        Identifier::FilterState(_) | Identifier::SourcedMetadata(_) | Identifier::Custom(_) => {
            return Err(ctx.error(path, "this principal identifier is not supported"));
        }
    })
}

fn header(
    ctx: &mut Ctx,
    path: &str,
    h: &envoy_types::pb::envoy::config::route::v3::HeaderMatcher,
) -> Result<RbacHeader, DecodeError> {
    let Some(kind) = header_kind(ctx, path, h)? else {
        return Err(ctx.error(path, "custom string matchers are not supported"));
    };
    RbacHeader::new(
        &h.name,
        kind,
        h.invert_match,
        h.treat_missing_header_as_empty,
    )
    .map_err(|e| ctx.error(path, e.message()))
}

fn string(
    ctx: &mut Ctx,
    path: &str,
    m: &envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher,
) -> Result<StringMatcher, DecodeError> {
    string_matcher(ctx, path, m)?
        .ok_or_else(|| ctx.error(path, "custom string matchers are not supported"))
}

/// A path matcher: the string matcher applied to the path without query.
fn url_path(ctx: &mut Ctx, path: &str, m: &PbPathMatcher) -> Result<PathMatcher, DecodeError> {
    let Some(path_matcher::Rule::Path(sm)) = &m.rule else {
        return Err(ctx.error(at(path, "path"), "required field is missing"));
    };
    let s = string(ctx, &at(path, "path"), sm)?;
    let ignore_case = s.ignore_case();
    let kind = match s.kind().clone() {
        StringMatch::Exact(p) => PathMatch::Exact(p),
        StringMatch::Prefix(p) => PathMatch::Prefix(p),
        StringMatch::Regex(r) => PathMatch::Regex(r),
        // Suffix and contains have no PathMatch form: as full-match regexes they mean the same.
        StringMatch::Suffix(p) => PathMatch::Regex(full_regex(
            ctx,
            path,
            &format!(".*{}", regex_escape(&p)),
            ignore_case,
        )?),
        StringMatch::Contains(p) => PathMatch::Regex(full_regex(
            ctx,
            path,
            &format!(".*{}.*", regex_escape(&p)),
            ignore_case,
        )?),
    };
    Ok(PathMatcher::new(kind, ignore_case))
}

fn full_regex(
    ctx: &Ctx,
    path: &str,
    pattern: &str,
    ignore_case: bool,
) -> Result<mesh_core::matcher::Regex, DecodeError> {
    let pattern = if ignore_case {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    };
    mesh_core::matcher::Regex::new(&pattern).map_err(|e| ctx.error(path, e.message()))
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn cidr(ctx: &Ctx, path: &str, c: &CidrRange) -> Result<IpNet, DecodeError> {
    let address: std::net::IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| ctx.error(at(path, "address_prefix"), "not an IP address"))?;
    let len = c
        .prefix_len
        .map_or(if address.is_ipv4() { 32 } else { 128 }, |l| l.value);
    let len = u8::try_from(len).map_err(|_| ctx.error(at(path, "prefix_len"), "too long"))?;
    IpNet::new(address, len)
        .map(|n| n.trunc())
        .map_err(|_| ctx.error(at(path, "prefix_len"), "too long for the address"))
}
