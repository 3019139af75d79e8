//! The HTTP filter chain of an `HttpConnectionManager` (and the one connection-manager setting
//! routes inherit), and fault injection configs
//! (`envoy.extensions.filters.http.fault.v3.HTTPFault`) at the filter and per-route levels.
//!
//! The chain decides what per-route configs mean: a fault config under
//! `typed_per_filter_config` only acts when a fault filter of that name is in the chain, as in
//! Envoy. The most specific fault config wins: weighted cluster, then route, then virtual host,
//! then route configuration, then the filter's own top-level config.
//!
//! istiod's stateful-session filter (`envoy.filters.http.stateful_session`, prepended with
//! `PILOT_ENABLE_PERSISTENT_SESSION_FILTER` to services labelled for cookie or header sessions,
//! or, in istiod's Envoy shape, an empty filter overridden per virtual host or route by a
//! `StatefulSessionPerRoute`) pins a session to an endpoint as Envoy and gRFC A55 do: see
//! `mesh_core::lb::session_request`. The most specific config wins: route, then virtual
//! host, then route configuration, then the filter's own.
//!
//! A fault whose conditions the mesh cannot evaluate (`headers`, `downstream_nodes`,
//! `upstream_cluster`, header-controlled delays or aborts) is *dropped*, not widened: injecting
//! fewer faults than asked is the safe side of that mistake. Each drop is reported.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::route::v3::FilterConfig,
        extensions::{
            filters::{
                common::fault::v3::{FaultDelay as PbDelay, fault_delay::FaultDelaySecifier},
                http::{
                    fault::v3::{FaultAbort as PbAbort, HttpFault, fault_abort::ErrorType},
                    rbac::v3::Rbac,
                    router::v3::Router,
                    stateful_session::v3::{
                        StatefulSession, StatefulSessionPerRoute,
                        stateful_session_per_route::Override as SessionOverride,
                    },
                },
                network::http_connection_manager::v3::{HttpFilter, http_filter::ConfigType},
            },
            http::stateful_session::{
                cookie::v3::CookieBasedSessionState, header::v3::HeaderBasedSessionState,
            },
        },
        r#type::v3::FractionalPercent,
    },
    google::protobuf::Any,
};
use http::HeaderName;
use mesh_core::{
    AbortStatus, FaultAbort, FaultDelay, FaultPolicy, GrpcCode, HeaderFaultShare,
    route::{SessionAffinity, SessionState},
};
use prost::Name;

use super::{
    Ctx, DecodeError,
    fields::{at, duration, fraction, idx, ignore_fields, unpack},
};

/// The standard name of the fault filter, used by istiod and as the per-route config key.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// What the HTTP filter chain of a listener means for its routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpFilters {
    /// The fault filter; `None` when the chain has none, and then per-route fault configs have
    /// no effect (they are reported). Default is `None`.
    pub fault: Option<FaultFilter>,
    /// The name of the RBAC filter, if the chain has one. Client-side RBAC is not enforced (the
    /// server side is where the mesh authorizes); its presence is reported. Default is `None`.
    pub rbac: Option<String>,
    /// The stateful session filter; `None` when the chain has none, and then per-route session
    /// configs have no effect (they are reported). Default is `None`.
    pub session: Option<SessionFilter>,
    /// Every filter's name, in chain order, for the config dump.
    pub names: Vec<String>,
    /// The connection manager's `common_http_protocol_options.max_stream_duration`: the
    /// timeout of routes that set no `max_stream_duration` of their own, replacing their
    /// `timeout` as gRPC's xDS client does. Not a filter, but the routes need it alongside the
    /// filters. Default is `None`.
    pub max_stream_duration: Option<Duration>,
}

/// The fault filter of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultFilter {
    /// Its name in the chain: the key of its `typed_per_filter_config` entries.
    pub name: String,
    /// Its top-level policy, the default of routes without an override; `None` injects nothing
    /// (an empty config, or a filter `disabled` until a route enables it).
    pub default: Option<Arc<FaultPolicy>>,
}

/// The stateful session filter of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFilter {
    /// Its name in the chain: the key of its `typed_per_filter_config` entries.
    pub name: String,
    /// The session of routes without an override; `None` pins nothing (istiod's empty filter,
    /// or one `disabled` until a route enables it).
    pub default: Option<Arc<SessionAffinity>>,
}

/// A session config found at one level: `None` disables sessions there, `Some` replaces the
/// less specific one.
pub(crate) type SessionConfig = Option<Arc<SessionAffinity>>;

/// A fault config found at one level: `None` disables faults there (a `FilterConfig` with
/// `disabled: true`), `Some` replaces the less specific policy.
pub(crate) type FaultOverride = Option<Arc<FaultPolicy>>;

// === impl HttpFilters ===

impl HttpFilters {
    /// A chain with a fault filter named [`FAULT_FILTER`] whose top-level policy is `default`,
    /// followed by the router.
    pub fn with_fault(default: Option<FaultPolicy>) -> Self {
        Self {
            fault: Some(FaultFilter {
                name: FAULT_FILTER.to_string(),
                default: default
                    .filter(|p| *p != FaultPolicy::default())
                    .map(Arc::new),
            }),
            rbac: None,
            session: None,
            names: vec![
                FAULT_FILTER.to_string(),
                "envoy.filters.http.router".to_string(),
            ],
            max_stream_duration: None,
        }
    }
}

/// Decodes an HCM's `http_filters` at `base` (the path of the list's owner).
pub(crate) fn http_filters(
    ctx: &mut Ctx,
    base: &str,
    filters: &[HttpFilter],
) -> Result<HttpFilters, DecodeError> {
    let mut out = HttpFilters::default();
    let mut router_at = None;
    for (i, f) in filters.iter().enumerate() {
        let path = idx(base, "http_filters", i);
        let HttpFilter {
            name,
            is_optional,
            disabled,
            config_type,
        } = f;
        out.names.push(name.clone());
        let typed = match config_type {
            Some(ConfigType::TypedConfig(a)) => a,
            Some(ConfigType::ConfigDiscovery(_)) if *is_optional => {
                ctx.unsupported(at(&path, "config_discovery"), "optional filter skipped");
                continue;
            }
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(ctx.error(
                    at(&path, "config_discovery"),
                    "filter config discovery is not supported",
                ));
            }
            None => {
                return Err(ctx.error(at(&path, "typed_config"), "required field is missing"));
            }
        };
        let cfg = at(&path, "typed_config");
        if router_at.is_some() {
            return Err(ctx.error(&path, "the router filter must be the last filter"));
        }
        if typed.type_url == HttpFault::type_url() {
            if out.fault.is_some() {
                ctx.unsupported(&path, "ignored: a second fault filter");
                continue;
            }
            let policy = http_fault(ctx, &cfg, &unpack(ctx, &cfg, typed)?)?;
            out.fault = Some(FaultFilter {
                name: name.clone(),
                default: if *disabled { None } else { policy.flatten() },
            });
        } else if typed.type_url == Router::type_url() {
            let router: Router = unpack(ctx, &cfg, typed)?;
            if router != Router::default() {
                ctx.unsupported(&cfg, "ignored");
            }
            router_at = Some(i);
        } else if typed.type_url == Rbac::type_url() {
            ctx.unsupported(&path, "ignored: RBAC is not enforced on the client side");
            out.rbac = Some(name.clone());
        } else if typed.type_url == StatefulSession::type_url() {
            if out.session.is_some() {
                ctx.unsupported(&path, "ignored: a second stateful session filter");
                continue;
            }
            let session = stateful_session(ctx, &cfg, &unpack(ctx, &cfg, typed)?)?;
            out.session = Some(SessionFilter {
                name: name.clone(),
                default: if *disabled {
                    None
                } else {
                    session.map(Arc::new)
                },
            });
        } else if *is_optional {
            ctx.unsupported(
                &path,
                format!("optional filter `{}` skipped", typed.type_url),
            );
        } else {
            return Err(ctx.error(
                &cfg,
                format!("filter type `{}` is not supported", typed.type_url),
            ));
        }
    }
    if router_at.is_none() {
        return Err(ctx.error(
            at(base, "http_filters"),
            "the router filter (envoy.extensions.filters.http.router.v3.Router) must be last",
        ));
    }
    Ok(out)
}

/// A `StatefulSession` config; `None` when it has no session state (Envoy: the filter then
/// does nothing). An unknown or malformed session state is an error, as in Envoy.
fn stateful_session(
    ctx: &mut Ctx,
    path: &str,
    session: &StatefulSession,
) -> Result<Option<SessionAffinity>, DecodeError> {
    let StatefulSession {
        session_state,
        strict,
        stat_prefix,
        status_on_strict_destination_not_found,
    } = session;
    ignore_fields!(ctx, path; stat_prefix);
    if !matches!(status_on_strict_destination_not_found, 0 | 503) {
        ctx.unsupported(
            at(path, "status_on_strict_destination_not_found"),
            "ignored: a strict session whose endpoint is gone is answered 503 (gRPC UNAVAILABLE)",
        );
    }
    let spath = at(path, "session_state");
    let Some(state) = session_state else {
        return Ok(None);
    };
    let tpath = at(&spath, "typed_config");
    let Some(typed) = &state.typed_config else {
        return Err(ctx.error(tpath, "required field is missing"));
    };
    let state = if typed.type_url == CookieBasedSessionState::type_url() {
        let cookie: CookieBasedSessionState = unpack(ctx, &tpath, typed)?;
        let Some(c) = cookie.cookie.filter(|c| !c.name.is_empty()) else {
            return Err(ctx.error(at(&tpath, "cookie.name"), "required field is missing"));
        };
        let cpath = at(&tpath, "cookie");
        if !c.attributes.is_empty() {
            ctx.unsupported(at(&cpath, "attributes"), "ignored: not set on the cookie");
        }
        let ttl = match &c.ttl {
            Some(d) => duration(ctx, &at(&cpath, "ttl"), d)?,
            None => Duration::ZERO,
        };
        SessionState::Cookie {
            name: c.name,
            // Envoy's and A55's default: the whole site.
            path: if c.path.is_empty() {
                "/".into()
            } else {
                c.path
            },
            ttl,
        }
    } else if typed.type_url == HeaderBasedSessionState::type_url() {
        let header: HeaderBasedSessionState = unpack(ctx, &tpath, typed)?;
        if header.name.is_empty() {
            return Err(ctx.error(at(&tpath, "name"), "required field is missing"));
        }
        SessionState::Header(HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            ctx.error(
                at(&tpath, "name"),
                format!("`{}` is not a valid header name", header.name),
            )
        })?)
    } else {
        return Err(ctx.error(
            tpath,
            format!("session state type `{}` is not supported", typed.type_url),
        ));
    };
    Ok(Some(SessionAffinity {
        state,
        strict: *strict,
    }))
}

/// The session override at one level (`base` is the owner of `typed_per_filter_config`);
/// `None` when this level has none.
pub(crate) fn session_override(
    ctx: &mut Ctx,
    base: &str,
    configs: &HashMap<String, Any>,
    filters: &HttpFilters,
) -> Result<Option<SessionConfig>, DecodeError> {
    let Some(filter) = &filters.session else {
        return Ok(None);
    };
    let Some(value) = configs.get(&filter.name) else {
        return Ok(None);
    };
    let path = format!("{}[{}]", at(base, "typed_per_filter_config"), filter.name);
    let (per_route, path) = if value.type_url == FilterConfig::type_url() {
        let FilterConfig {
            config, disabled, ..
        } = unpack(ctx, &path, value)?;
        if disabled {
            return Ok(Some(None));
        }
        let inner = at(&path, "config");
        match config {
            Some(c) => (unpack::<StatefulSessionPerRoute>(ctx, &inner, &c)?, inner),
            None => return Err(ctx.error(inner, "required field is missing")),
        }
    } else {
        (unpack::<StatefulSessionPerRoute>(ctx, &path, value)?, path)
    };
    match per_route.r#override {
        Some(SessionOverride::Disabled(true)) => Ok(Some(None)),
        Some(SessionOverride::Disabled(false)) | None => Ok(None),
        Some(SessionOverride::StatefulSession(s)) => Ok(Some(
            stateful_session(ctx, &at(&path, "stateful_session"), &s)?.map(Arc::new),
        )),
    }
}

/// The fault override at one level (`base` is the owner of `typed_per_filter_config`);
/// `None` when this level has none. Other entries are reported as ignored.
pub(crate) fn fault_override(
    ctx: &mut Ctx,
    base: &str,
    configs: &HashMap<String, Any>,
    filters: &HttpFilters,
) -> Result<Option<FaultOverride>, DecodeError> {
    let mut keys: Vec<&String> = configs.keys().collect();
    keys.sort();
    let mut found = None;
    for key in keys {
        let Some(value) = configs.get(key) else {
            continue;
        };
        let path = format!("{}[{key}]", at(base, "typed_per_filter_config"));
        match &filters.fault {
            Some(f) if f.name == *key => found = Some(per_route_fault(ctx, &path, value)?),
            None if key == FAULT_FILTER => {
                ctx.unsupported(path, "ignored: the listener has no fault filter");
            }
            // Read by `session_override`.
            _ if filters.session.as_ref().is_some_and(|s| s.name == *key) => {}
            _ if filters.rbac.as_deref() == Some(key.as_str()) => {
                ctx.unsupported(path, "ignored: RBAC is not enforced on the client side");
            }
            _ => ctx.unsupported(path, "ignored"),
        }
    }
    Ok(found)
}

/// A per-route fault config: an `HTTPFault`, or a `FilterConfig` wrapping one (or disabling
/// the filter for this scope).
fn per_route_fault(ctx: &mut Ctx, path: &str, value: &Any) -> Result<FaultOverride, DecodeError> {
    if value.type_url == FilterConfig::type_url() {
        let FilterConfig {
            config,
            is_optional: _,
            disabled,
        } = unpack(ctx, path, value)?;
        if disabled {
            return Ok(None);
        }
        let inner = at(path, "config");
        return match config {
            Some(c) => Ok(http_fault(ctx, &inner, &unpack(ctx, &inner, &c)?)?.flatten()),
            None => Err(ctx.error(inner, "required field is missing")),
        };
    }
    Ok(http_fault(ctx, path, &unpack(ctx, path, value)?)?.flatten())
}

/// An `HTTPFault`: `Some(None)` when it injects nothing, `None` when it was dropped because
/// its conditions cannot be evaluated.
pub(crate) fn http_fault(
    ctx: &mut Ctx,
    path: &str,
    f: &HttpFault,
) -> Result<Option<Option<Arc<FaultPolicy>>>, DecodeError> {
    let HttpFault {
        delay,
        abort,
        upstream_cluster,
        headers,
        downstream_nodes,
        max_active_faults,
        response_rate_limit,
        delay_percent_runtime,
        abort_percent_runtime,
        delay_duration_runtime,
        abort_http_status_runtime,
        max_active_faults_runtime,
        response_rate_limit_percent_runtime,
        abort_grpc_status_runtime,
        disable_downstream_cluster_stats,
        filter_metadata,
    } = f;
    ignore_fields!(ctx, path;
        response_rate_limit, delay_percent_runtime, abort_percent_runtime,
        delay_duration_runtime, abort_http_status_runtime, max_active_faults_runtime,
        response_rate_limit_percent_runtime, abort_grpc_status_runtime,
        disable_downstream_cluster_stats, filter_metadata,
    );
    let mut conditional = false;
    for (field, set) in [
        ("upstream_cluster", !upstream_cluster.is_empty()),
        ("headers", !headers.is_empty()),
        ("downstream_nodes", !downstream_nodes.is_empty()),
    ] {
        if set {
            ctx.unsupported(
                at(path, field),
                "fault dropped: its condition cannot be evaluated",
            );
            conditional = true;
        }
    }
    let mut policy = FaultPolicy {
        max_active_faults: max_active_faults.map(|m| m.value),
        ..FaultPolicy::default()
    };
    if let Some(d) = delay {
        fault_delay(ctx, &at(path, "delay"), d, &mut policy)?;
    }
    if let Some(a) = abort {
        fault_abort(ctx, &at(path, "abort"), a, &mut policy)?;
    }
    if conditional {
        return Ok(None);
    }
    let injects = policy.delay.is_some() || policy.abort.is_some() || policy.reads_headers();
    Ok(Some(injects.then(|| Arc::new(policy))))
}

/// A fault's percentage; Envoy reads an unset one as 0/100: the fault never fires.
fn fault_percentage(
    ctx: &Ctx,
    path: &str,
    percentage: Option<&FractionalPercent>,
) -> Result<mesh_core::Percentage, DecodeError> {
    percentage.map_or(Ok(mesh_core::Percentage::ZERO), |p| {
        fraction(ctx, &at(path, "percentage"), p)
    })
}

/// A header-controlled fault's share: the configured fraction, kept as numerator and
/// denominator because the caller's percentage header is read over that denominator.
fn header_share(
    ctx: &Ctx,
    path: &str,
    percentage: Option<&FractionalPercent>,
) -> Result<HeaderFaultShare, DecodeError> {
    // Validated (denominator known) first, so the error names the field.
    fault_percentage(ctx, path, percentage)?;
    let (numerator, denominator) = percentage.map_or((0, 100), |p| {
        let denominator = match p.denominator {
            1 => 10_000,
            2 => 1_000_000,
            _ => 100,
        };
        (p.numerator, denominator)
    });
    HeaderFaultShare::new(numerator, denominator)
        .map_err(|e| ctx.error(at(path, "percentage"), e.message()))
}

fn fault_delay(
    ctx: &mut Ctx,
    path: &str,
    d: &PbDelay,
    policy: &mut FaultPolicy,
) -> Result<(), DecodeError> {
    let PbDelay {
        percentage,
        fault_delay_secifier,
    } = d;
    match fault_delay_secifier {
        Some(FaultDelaySecifier::FixedDelay(fd)) => {
            policy.delay = Some(FaultDelay {
                duration: duration(ctx, &at(path, "fixed_delay"), fd)?,
                percentage: fault_percentage(ctx, path, percentage.as_ref())?,
            });
        }
        Some(FaultDelaySecifier::HeaderDelay(_)) => {
            policy.header_delay = Some(header_share(ctx, path, percentage.as_ref())?);
        }
        None => return Err(ctx.error(path, "fixed_delay or header_delay is required")),
    }
    Ok(())
}

fn fault_abort(
    ctx: &mut Ctx,
    path: &str,
    a: &PbAbort,
    policy: &mut FaultPolicy,
) -> Result<(), DecodeError> {
    let PbAbort {
        percentage,
        response_body,
        error_type,
    } = a;
    ignore_fields!(ctx, path; response_body);
    let status = match error_type {
        Some(ErrorType::HttpStatus(s)) => u16::try_from(*s)
            .map_err(|_| {
                ctx.error(
                    at(path, "http_status"),
                    format!("{s} is not an HTTP status"),
                )
            })
            .and_then(|s| {
                AbortStatus::http(s).map_err(|e| ctx.error(at(path, "http_status"), e.message()))
            })?,
        Some(ErrorType::GrpcStatus(s)) => i32::try_from(*s)
            .ok()
            .and_then(GrpcCode::from_i32)
            .map(AbortStatus::Grpc)
            .ok_or_else(|| {
                ctx.error(at(path, "grpc_status"), format!("{s} is not a gRPC status"))
            })?,
        Some(ErrorType::HeaderAbort(_)) => {
            policy.header_abort = Some(header_share(ctx, path, percentage.as_ref())?);
            return Ok(());
        }
        None => {
            return Err(ctx.error(path, "http_status, grpc_status or header_abort is required"));
        }
    };
    let percentage = fault_percentage(ctx, path, percentage.as_ref())?;
    policy.abort = Some(FaultAbort { status, percentage });
    Ok(())
}

#[cfg(test)]
mod tests;
