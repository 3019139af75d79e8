//! `mesh-xds check`: offline validation of Istio YAML, and the explanation of what one
//! described request would get.
//!
//! Validation is the Istio loader's (every error and warning with file, document, resource
//! and field path), plus what the configuration loses on its way through xDS (see
//! [`crate::encode`]), reported as warnings. The explanation uses the data plane's own pure
//! route lookup ([`mesh_core::RouteTable::find`]), so it cannot disagree with what a client
//! does.

use std::{fmt::Write as _, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use mesh_core::{
    Cluster, EjectionCap, FaultPolicy, LbPolicy, MeshConfig, RetryPolicy, TlsMode,
    istio::{self, Source},
    route::{Action, RequestHead},
    sidecar::{OutboundMode, OutboundScope},
};

/// What checking the files found.
#[derive(Debug)]
pub struct Report {
    /// The configuration, when there were no errors.
    pub config: Option<MeshConfig>,
    /// Errors, each with file, document, resource and field path.
    pub errors: Vec<String>,
    /// Warnings, each with its location.
    pub warnings: Vec<String>,
}

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The description does not parse.
    #[error(
        "cannot read the request `{request}`: {why} (expected e.g. `GET http://reviews.default.svc.cluster.local:9080/path -H x-user:jason`)"
    )]
    Syntax {
        /// The description.
        request: String,
        /// What is wrong.
        why: String,
    },
    /// No listener serves the target.
    #[error("no listener for `{target}`; known targets: {known}")]
    NoListener {
        /// `host:port`.
        target: String,
        /// Every target, comma-separated.
        known: String,
    },
    /// The workload's Sidecar refuses the target (`REGISTRY_ONLY`).
    #[error("{0}")]
    Refused(String),
    /// A listener serves the target but no route matches.
    #[error("listener `{target}`: no virtual host or route matches the request")]
    NoRoute {
        /// `host:port`.
        target: String,
    },
}

/// Loads `files` (name, text) as one configuration.
pub fn check(files: &[(String, String)]) -> Report {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source { name, text })
        .collect();
    match istio::load(&sources) {
        Ok(loaded) => {
            let mut warnings: Vec<String> =
                loaded.warnings.iter().map(ToString::to_string).collect();
            warnings.extend(lost_over_xds(&loaded.config));
            Report {
                config: Some(loaded.config),
                errors: Vec::new(),
                warnings,
            }
        }
        Err(e) => Report {
            config: None,
            errors: e.errors().iter().map(ToString::to_string).collect(),
            warnings: e.warnings().iter().map(ToString::to_string).collect(),
        },
    }
}

/// What the configuration loses when served over xDS.
fn lost_over_xds(config: &MeshConfig) -> Vec<String> {
    let canonical = crate::encode::canonical(config);
    let mut out = Vec::new();
    for (name, c) in config.clusters() {
        let Some(sent) = canonical.cluster(name) else {
            continue;
        };
        if sent.lb != c.lb {
            out.push(format!(
                "cluster {name}: load balancer {:?} is sent over xDS as {:?} (Envoy has no equivalent)",
                c.lb, sent.lb
            ));
        }
        let strict = c
            .outlier
            .as_ref()
            .is_some_and(|od| od.ejection_cap == EjectionCap::Strict);
        if strict {
            out.push(format!(
                "cluster {name}: the strict ejection cap is not sent over xDS (Envoy ejects at least one host)"
            ));
        } else if sent.outlier != c.outlier {
            out.push(format!(
                "cluster {name}: outlier detection percentages are rounded to whole percents over xDS"
            ));
        }
    }
    // Server policy reaches proxyless servers as their inbound listeners.
    out.extend(
        config
            .server()
            .authorization
            .iter()
            .filter_map(crate::encode::not_enforced),
    );
    out
}

/// Explains a request described as `METHOD URL [-H name:value]...` against `config`.
pub fn explain(config: &MeshConfig, request: &str) -> Result<String, ExplainError> {
    let syntax = |why: &str| ExplainError::Syntax {
        request: request.to_string(),
        why: why.to_string(),
    };
    let mut parts = request.split(" -H ");
    let mut head = parts.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(url), None) = (head.next(), head.next(), head.next()) else {
        return Err(syntax("the request needs a method and a URL"));
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| syntax("bad method"))?;
    let uri: http::Uri = url.parse().map_err(|_| syntax("bad URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| syntax("the URL needs a host"))?
        .clone();
    let port = authority
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let target = format!("{}:{port}", authority.host());
    let mut headers = HeaderMap::new();
    for h in parts {
        let (name, value) = h
            .trim()
            .split_once(':')
            .ok_or_else(|| syntax("a header is `name:value`"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| syntax("bad header name"))?,
            HeaderValue::from_str(value.trim()).map_err(|_| syntax("bad header value"))?,
        );
    }
    let mut out = String::new();
    if let Some(scope) = config.outbound() {
        outbound(&mut out, scope);
    }
    // Looked up as the data plane does, short names through the workload's DNS search list.
    let namespace = config.outbound().map_or("default", |o| &*o.namespace);
    let Some(table) = config.listener_in(&target, namespace) else {
        return match config.outbound() {
            Some(scope) if scope.mode == OutboundMode::AllowAny => {
                let _ = writeln!(out, "request:      {method} {url}");
                let _ = writeln!(
                    out,
                    "action:       pass through to {target} by DNS (ALLOW_ANY): no route, retry, timeout or cluster policy"
                );
                Ok(out)
            }
            Some(scope) => {
                let why = if scope.hidden_listener(&target).is_some() {
                    format!(
                        "is not imported by its egress hosts or not exported to namespace `{}`",
                        scope.namespace
                    )
                } else {
                    "is not in the mesh registry".to_string()
                };
                let by = scope.sidecar.as_deref().unwrap_or("the mesh");
                Err(ExplainError::Refused(format!(
                    "{out}target `{target}` {why}: refused by outboundTrafficPolicy REGISTRY_ONLY of Sidecar {by} (UNAVAILABLE / HTTP 502)"
                )))
            }
            None => Err(ExplainError::NoListener {
                target: target.clone(),
                known: config
                    .listeners()
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let head = RequestHead {
        method: &method,
        authority: authority.as_str(),
        path_and_query,
        headers: &headers,
        source: None,
    };
    let found = table.find(&head).ok_or_else(|| ExplainError::NoRoute {
        target: target.clone(),
    })?;
    let route = found.route;
    let _ = writeln!(out, "request:      {method} {url}");
    let _ = writeln!(out, "listener:     {target}");
    let domains: Vec<String> = found
        .virtual_host
        .domains()
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        out,
        "virtual host: {} (domains {})",
        found.virtual_host.name(),
        domains.join(", ")
    );
    let _ = writeln!(
        out,
        "route:        #{}{} (path {:?})",
        found.route_index,
        route
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default(),
        route.matcher.path.kind()
    );
    let _ = writeln!(out, "fault:        {}", fault(route.fault.as_deref()));
    match &route.action {
        Action::Redirect(r) => {
            let _ = writeln!(out, "action:       redirect {} {r:?}", r.status.as_u16());
        }
        Action::DirectResponse(d) => {
            let _ = writeln!(
                out,
                "action:       direct response {} {}",
                d.status,
                d.body.as_deref().unwrap_or("")
            );
        }
        Action::Forward(f) => {
            let _ = writeln!(out, "action:       forward");
            let total = f.clusters.total();
            for wc in f.clusters.clusters() {
                let share = f64::from(wc.weight) * 100.0 / f64::from(total.max(1));
                let _ = writeln!(
                    out,
                    "  cluster {} weight {} ({share:.1} %){}",
                    wc.name,
                    wc.weight,
                    wc.fault
                        .as_deref()
                        .map(|f| format!(", fault {}", fault(Some(f))))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(
                out,
                "timeout:      {}",
                f.timeout.map_or("none".to_string(), |t| format!("{t:?}"))
            );
            if let Some(max) = f.grpc_timeout_max {
                let _ = writeln!(out, "grpc-timeout: capped at {max:?}");
            }
            let _ = writeln!(out, "retries:      {}", retries(f.retry.as_deref()));
            if let Some(rw) = &f.path_rewrite {
                let _ = writeln!(out, "rewrite:      {rw:?}");
            }
            for m in f.mirrors.iter() {
                let _ = writeln!(out, "mirror:       {} ({})", m.cluster, m.percentage);
            }
            if !f.hash_policy.is_empty() {
                let _ = writeln!(out, "hash policy:  {:?}", f.hash_policy);
            }
            if let Some(session) = &f.session {
                let _ = writeln!(out, "session:      {:?}", session.state);
            }
            for wc in f.clusters.clusters() {
                match config.cluster(&wc.name) {
                    Some(c) => {
                        cluster(&mut out, c);
                        destination_rule(&mut out, config, &wc.name);
                        grpc_view(&mut out, c);
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "cluster:      {} is not visible to this workload: 503 NC",
                            wc.name
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The DestinationRule the workload's namespace gets for the host of `cluster`, where the
/// configuration was narrowed for a workload.
fn destination_rule(out: &mut String, config: &MeshConfig, cluster: &str) {
    let Some(scope) = config.outbound() else {
        return;
    };
    let Some(host) = cluster.rsplit('|').next() else {
        return;
    };
    if let Some((_, rule)) = scope.rules.iter().find(|(h, _)| &**h == host) {
        let _ = writeln!(
            out,
            "  DestinationRule for namespace {}: {}",
            scope.namespace,
            rule.as_deref().unwrap_or("none applies")
        );
    }
}

/// The Sidecar applied to the workload, its mode and what it narrows.
fn outbound(out: &mut String, scope: &OutboundScope) {
    let _ = writeln!(
        out,
        "sidecar:      {} (outboundTrafficPolicy {})",
        scope
            .sidecar
            .as_deref()
            .unwrap_or("none: every service is visible"),
        scope.mode
    );
    if !scope.hidden.is_empty() {
        let hidden: Vec<&str> = scope.hidden.iter().map(|h| &**h).collect();
        let _ = writeln!(out, "not visible:  {}", hidden.join(", "));
    }
    for (target, vs) in scope.routed.iter() {
        let _ = writeln!(
            out,
            "routed by:    {target}: VirtualService {} (of several for the host, as istiod picks for namespace {})",
            vs.as_deref().unwrap_or("none (default route)"),
            scope.namespace
        );
    }
    for (target, vs) in scope.unrouted.iter() {
        let _ = writeln!(
            out,
            "default route: {target} (VirtualService {vs} is not imported or not exported here)"
        );
    }
    if !scope.hidden_clusters.is_empty() {
        let hidden: Vec<&str> = scope.hidden_clusters.iter().map(|h| &**h).collect();
        let _ = writeln!(out, "no cluster (NC): {}", hidden.join(", "));
    }
    for (cluster, rule) in scope.unshaped.iter() {
        let _ = writeln!(
            out,
            "without rule: {cluster} (DestinationRule {rule} does not apply to namespace {})",
            scope.namespace
        );
    }
}

fn fault(f: Option<&FaultPolicy>) -> String {
    let Some(f) = f else {
        return "none".into();
    };
    let mut parts = Vec::new();
    if let Some(d) = &f.delay {
        parts.push(format!("delay {:?} for {}", d.duration, d.percentage));
    }
    if let Some(a) = &f.abort {
        parts.push(format!(
            "abort {} for {} (gRPC {}, HTTP {})",
            match a.status {
                mesh_core::AbortStatus::Http(s) => format!("HTTP {s}"),
                mesh_core::AbortStatus::Grpc(c) => format!("gRPC {}", c.name()),
            },
            a.percentage,
            a.status.grpc_code().name(),
            a.status.http_status()
        ));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

fn retries(r: Option<&RetryPolicy>) -> String {
    let Some(r) = r else {
        return "none".into();
    };
    let mut s = format!("{} on [{}]", r.max_retries, r.retry_on);
    if !r.retriable_status_codes.is_empty() {
        let _ = write!(s, " status {:?}", r.retriable_status_codes);
    }
    if let Some(t) = r.per_try_timeout {
        let _ = write!(s, ", per try {t:?}");
    }
    let _ = write!(s, ", backoff {:?}..{:?}", r.backoff.base(), r.backoff.max());
    if let Some(h) = r.hedge {
        let _ = write!(
            s,
            ", hedging {} initial (+{} chance){}",
            h.initial_requests,
            h.additional_request_chance,
            if h.hedge_on_per_try_timeout {
                ", on per-try timeout"
            } else {
                ""
            }
        );
    }
    s
}

/// What istiod would send a proxyless gRPC client for `c` (what `mesh-xds serve` sends by
/// default), and what it would drop.
fn grpc_view(out: &mut String, c: &Cluster) {
    let view = crate::encode::istiod_view(c);
    let _ = writeln!(out, "  sent to a gRPC client (as istiod sends it):");
    for line in &view.sent {
        let _ = writeln!(out, "    {line}");
    }
    if view.dropped.is_empty() {
        let _ = writeln!(out, "  dropped for a gRPC client: nothing");
    } else {
        let _ = writeln!(
            out,
            "  dropped for a gRPC client (sent only with `serve --mesh-extensions`):"
        );
        for line in &view.dropped {
            let _ = writeln!(out, "    {line}");
        }
    }
}

fn cluster(out: &mut String, c: &Arc<Cluster>) {
    let lb = match &c.lb {
        LbPolicy::RoundRobin => "round robin".to_string(),
        LbPolicy::Random => "random".to_string(),
        LbPolicy::LeastRequest { choice_count } => format!("least request of {choice_count}"),
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => format!("ring hash ({min_ring_size}..{max_ring_size})"),
        LbPolicy::PeakEwma { decay } => format!("peak EWMA (decay {decay:?})"),
    };
    let b = &c.breaker;
    let _ = writeln!(out, "cluster {}:", c.name);
    let _ = writeln!(
        out,
        "  lb: {lb}{}, panic below {}",
        if c.locality_weighted {
            ", locality-weighted"
        } else {
            ""
        },
        c.panic_threshold
    );
    let _ = writeln!(
        out,
        "  breaker: max connections {}, pending {}, requests {}, retries {}{}",
        b.max_connections,
        b.max_pending_requests,
        b.max_requests,
        b.max_retries,
        b.retry_budget
            .map(|rb| format!(
                ", budget {} (min {})",
                rb.budget_percent, rb.min_retry_concurrency
            ))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  connections: {} requests each, idle timeout {}, tcp keepalive {}",
        c.max_requests_per_connection
            .map_or("unlimited".into(), |n| n.to_string()),
        c.idle_timeout.map_or("none".into(), |t| format!("{t:?}")),
        c.tcp_keepalive.map_or("off".into(), |k| {
            let or_system = |d: Option<std::time::Duration>| {
                d.map_or("system default".into(), |d| format!("{d:?}"))
            };
            format!(
                "time {}, interval {}, probes {}",
                or_system(k.time),
                or_system(k.interval),
                k.probes.map_or("system default".into(), |n| n.to_string())
            )
        }),
    );
    match &c.outlier {
        None => {
            let _ = writeln!(out, "  outlier detection: none");
        }
        Some(od) => {
            let _ = writeln!(
                out,
                "  outlier detection: consecutive 5xx {}, gateway {}, interval {:?}, base ejection {:?}, max ejection {} ({}): at most {} of {} endpoints ejected at once",
                od.consecutive_5xx
                    .map_or("off".into(), |r| r.threshold.to_string()),
                od.consecutive_gateway_failure
                    .map_or("off".into(), |r| r.threshold.to_string()),
                od.interval,
                od.base_ejection_time,
                od.max_ejection_percent,
                match od.ejection_cap {
                    EjectionCap::AtLeastOne => "Envoy's rule: at least one",
                    EjectionCap::Strict => "strict: never the last",
                },
                od.max_ejected_hosts(c.endpoints.len()),
                c.endpoints.len(),
            );
        }
    }
    let tls = match c.tls.mode {
        TlsMode::Disable => "plaintext",
        TlsMode::Simple => "TLS",
        TlsMode::Mutual => "mTLS (configured certificates)",
        TlsMode::IstioMutual => "mTLS (mesh identity)",
    };
    let _ = writeln!(
        out,
        "  tls: {tls}; connect timeout {:?}; endpoints: {}",
        c.connect_timeout,
        c.endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}
