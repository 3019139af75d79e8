//! Decoding Envoy's v3 `Cluster` (CDS) into a [`mesh_core::Cluster`].
//!
//! The decoded cluster has no endpoints yet: an EDS cluster names the `ClusterLoadAssignment`
//! to watch ([`EndpointSource::Eds`]), a STATIC or DNS cluster carries its inline
//! `load_assignment` ([`EndpointSource::Inline`]). Whoever assembles the snapshot joins the two.
//!
//! # Defaults
//!
//! Unset fields take Envoy's defaults, not Istio's, because this is Envoy's API: connect timeout
//! 5 s, round robin, breaker thresholds 1024/1024/1024/3, panic threshold 50 %, upstream
//! connection idle timeout 1 h. proto3 scalars cannot be told apart from "unset", so a zero
//! where Envoy treats zero as unset (e.g. `max_requests_per_connection`) means unset here too.
//!
//! # What is rejected rather than reported
//!
//! Anything whose omission would change *which* endpoints are reachable in a way the operator
//! did not ask for (ORIGINAL_DST, CLUSTER_PROVIDED) or weaken upstream TLS verification (see
//! [`tls`](self) internals) is an error, so the resource is NACKed and the last good one kept.
//! Every other field that is set but not acted on is reported as unsupported.

// Deprecated fields are read on purpose: control planes still send them (istiod's proxyless
// TLS uses the deprecated certificate-provider-instance fields), and a set field must be
// decoded or reported, never skipped.
#![allow(deprecated)]

mod lb;
mod tls;

/// Shared with the listener's `DownstreamTlsContext` (inbound listeners, decoded elsewhere).
pub(crate) use self::tls::{CommonTls, decode_common_tls_context};

use std::time::Duration;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            CircuitBreakers as PbBreakers, Cluster, OutlierDetection as PbOutlier,
            UpstreamConnectionOptions,
            cluster::{self, ClusterDiscoveryType, DiscoveryType, common_lb_config},
        },
        core::v3::{self as core, RoutingPriority, config_source},
    },
    extensions::upstreams::http::v3::HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use mesh_core::{
    CircuitBreakers, Cluster as MeshCluster, ConsecutiveRule, EjectionCap, Endpoint,
    EndpointAddress, FailurePercentageRule, HealthStatus, HealthStatusSet, OutlierDetection,
    Percentage, RetryBudget, SuccessRateRule, TcpKeepalive,
};

use super::{Ctx, DecodeError, Decoded, endpoint, fields};

/// Envoy's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy's default idle timeout of upstream HTTP connections.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A decoded CDS cluster and where its endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedCluster {
    /// The cluster policy, with no endpoints.
    pub cluster: MeshCluster,
    /// Where the endpoints come from.
    pub endpoints: EndpointSource,
}

/// Where a cluster's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// An EDS cluster: watch the `ClusterLoadAssignment` of this name
    /// (`eds_cluster_config.service_name`, else the cluster's name).
    Eds {
        /// The EDS resource name.
        service_name: String,
    },
    /// A STATIC, STRICT_DNS or LOGICAL_DNS cluster: endpoints given inline.
    Inline {
        /// The cluster's discovery type.
        kind: InlineKind,
        /// The endpoints of `load_assignment`.
        endpoints: Vec<Endpoint>,
    },
}

/// The discovery type of a cluster whose endpoints are inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InlineKind {
    /// IP addresses only.
    Static,
    /// Every address returned by DNS for every host name is an endpoint.
    StrictDns,
    /// The first address DNS returns for the single host name is the endpoint.
    LogicalDns,
}

/// Decodes a CDS `Cluster`. Errors name the cluster and the field path; every set field the
/// mesh does not act on is in [`Decoded::unsupported`].
pub fn decode_cluster(c: &Cluster) -> Result<Decoded<DecodedCluster>, DecodeError> {
    let mut ctx = Ctx::new("Cluster", c.name.clone());
    if c.name.is_empty() {
        return Err(ctx.error("name", "required"));
    }
    let endpoints = endpoint_source(&mut ctx, c)?;
    let mut mc = MeshCluster::new(c.name.as_str(), Vec::new());
    mc.connect_timeout = match &c.connect_timeout {
        Some(d) => fields::positive_duration(&ctx, "connect_timeout", d)?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    mc.idle_timeout = Some(DEFAULT_IDLE_TIMEOUT);
    let (lb, locality_weighted) = lb::policy(&mut ctx, c)?;
    mc.lb = lb;
    mc.locality_weighted = locality_weighted;
    if let Some(cb) = &c.circuit_breakers {
        mc.breaker = breakers(&mut ctx, cb)?;
    }
    if let Some(od) = &c.outlier_detection {
        mc.outlier = Some(outlier(&mut ctx, od)?);
    }
    if let Some(common) = &c.common_lb_config {
        common_lb(&mut ctx, common, &mut mc)?;
    }
    protocol_options(&mut ctx, c, &mut mc)?;
    if let Some(o) = &c.upstream_connection_options {
        upstream_connection_options(&mut ctx, o, &mut mc);
    }
    mc.tls = tls::transport_socket(&mut ctx, c)?;
    report_ignored(&mut ctx, c);
    Ok(ctx.done(DecodedCluster {
        cluster: mc,
        endpoints,
    }))
}

/// The discovery type and the endpoints (or the EDS name to find them).
fn endpoint_source(ctx: &mut Ctx, c: &Cluster) -> Result<EndpointSource, DecodeError> {
    let kind = match &c.cluster_discovery_type {
        // proto3: an absent `type` is STATIC (0).
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| ctx.error("type", format!("unknown value {t}")))?,
        Some(ClusterDiscoveryType::ClusterType(t)) => {
            return Err(ctx.error(
                "cluster_type",
                format!("custom cluster type `{}` is not supported", t.name),
            ));
        }
    };
    let inline = match kind {
        DiscoveryType::Eds => {
            let service_name = match &c.eds_cluster_config {
                Some(eds) if !eds.service_name.is_empty() => eds.service_name.clone(),
                _ => c.name.clone(),
            };
            let ads = matches!(
                c.eds_cluster_config
                    .as_ref()
                    .and_then(|e| e.eds_config.as_ref())
                    .map(|s| &s.config_source_specifier),
                None | Some(Some(
                    config_source::ConfigSourceSpecifier::Ads(_)
                        | config_source::ConfigSourceSpecifier::Self_(_)
                ))
            );
            if !ads {
                ctx.unsupported(
                    "eds_cluster_config.eds_config",
                    "ignored: endpoints are fetched over the ADS stream",
                );
            }
            if c.load_assignment.is_some() {
                ctx.unsupported(
                    "load_assignment",
                    "ignored: an EDS cluster's endpoints come from EDS",
                );
            }
            return Ok(EndpointSource::Eds { service_name });
        }
        DiscoveryType::OriginalDst => {
            return Err(ctx.error("type", "ORIGINAL_DST is not supported"));
        }
        DiscoveryType::Static => InlineKind::Static,
        DiscoveryType::StrictDns => InlineKind::StrictDns,
        DiscoveryType::LogicalDns => InlineKind::LogicalDns,
    };
    if c.eds_cluster_config.is_some() {
        ctx.unsupported("eds_cluster_config", "ignored: not an EDS cluster");
    }
    let endpoints = match &c.load_assignment {
        Some(cla) => endpoint::endpoints(ctx, "load_assignment.", cla)?,
        None => Vec::new(),
    };
    if inline == InlineKind::Static
        && let Some(i) = endpoints
            .iter()
            .position(|e| matches!(e.address, EndpointAddress::Dns { .. }))
    {
        return Err(ctx.error(
            "load_assignment",
            format!("endpoint {i} has a host name, a STATIC cluster needs IP addresses"),
        ));
    }
    if inline == InlineKind::LogicalDns && endpoints.len() > 1 {
        return Err(ctx.error(
            "load_assignment",
            "a LOGICAL_DNS cluster takes exactly one endpoint",
        ));
    }
    Ok(EndpointSource::Inline {
        kind: inline,
        endpoints,
    })
}

/// The DEFAULT-priority thresholds, Envoy's defaults for what is unset.
fn breakers(ctx: &mut Ctx, cb: &PbBreakers) -> Result<CircuitBreakers, DecodeError> {
    let mut out = CircuitBreakers::default();
    let mut seen_default = false;
    for (i, t) in cb.thresholds.iter().enumerate() {
        let path = format!("circuit_breakers.thresholds[{i}]");
        match RoutingPriority::try_from(t.priority) {
            Ok(RoutingPriority::Default) if !seen_default => seen_default = true,
            Ok(RoutingPriority::Default) => {
                ctx.unsupported(path, "ignored: the first DEFAULT thresholds apply");
                continue;
            }
            Ok(RoutingPriority::High) => {
                ctx.unsupported(path, "ignored: requests are not prioritised");
                continue;
            }
            Err(_) => {
                return Err(ctx.error(
                    format!("{path}.priority"),
                    format!("unknown value {}", t.priority),
                ));
            }
        }
        if let Some(v) = t.max_connections {
            out.max_connections = v.value;
        }
        if let Some(v) = t.max_pending_requests {
            out.max_pending_requests = v.value;
        }
        if let Some(v) = t.max_requests {
            out.max_requests = v.value;
        }
        if let Some(v) = t.max_retries {
            out.max_retries = v.value;
        }
        if let Some(rb) = &t.retry_budget {
            let mut budget = RetryBudget::default();
            if let Some(p) = &rb.budget_percent {
                budget.budget_percent =
                    fields::percent(ctx, &format!("{path}.retry_budget.budget_percent"), p)?;
            }
            if let Some(m) = rb.min_retry_concurrency {
                budget.min_retry_concurrency = m.value;
            }
            if rb.budget_interval.is_some() {
                ctx.unsupported(format!("{path}.retry_budget.budget_interval"), "ignored");
            }
            out.retry_budget = Some(budget);
        }
        if t.track_remaining {
            ctx.unsupported(format!("{path}.track_remaining"), "ignored");
        }
        if t.max_connection_pools.is_some() {
            ctx.unsupported(format!("{path}.max_connection_pools"), "ignored");
        }
    }
    if !cb.per_host_thresholds.is_empty() {
        ctx.unsupported("circuit_breakers.per_host_thresholds", "ignored");
    }
    Ok(out)
}

/// Outlier detection with Envoy's defaults for every unset field.
fn outlier(ctx: &mut Ctx, od: &PbOutlier) -> Result<OutlierDetection, DecodeError> {
    const P: &str = "outlier_detection";
    let pct = |ctx: &Ctx, field: &str, v: Option<UInt32Value>, default: u32| {
        fields::whole_percent(ctx, &format!("{P}.{field}"), v.map_or(default, |v| v.value))
    };
    let val = |v: Option<UInt32Value>, default: u32| v.map_or(default, |v| v.value);
    let time = |ctx: &Ctx, field: &str, v: &Option<PbDuration>, default: Duration| match v {
        Some(d) => fields::positive_duration(ctx, &format!("{P}.{field}"), d),
        None => Ok(default),
    };
    // A consecutive rule is off when its threshold or its enforcement is zero.
    let rule = |threshold: u32, enforcing: Percentage| {
        (threshold > 0 && enforcing > Percentage::ZERO).then_some(ConsecutiveRule {
            threshold,
            enforcing,
        })
    };
    let defaults = OutlierDetection::default();
    let consecutive_5xx = rule(
        val(od.consecutive_5xx, 5),
        pct(
            ctx,
            "enforcing_consecutive_5xx",
            od.enforcing_consecutive_5xx,
            100,
        )?,
    );
    let consecutive_gateway_failure = rule(
        val(od.consecutive_gateway_failure, 5),
        pct(
            ctx,
            "enforcing_consecutive_gateway_failure",
            od.enforcing_consecutive_gateway_failure,
            0,
        )?,
    );
    let local_enforcing = pct(
        ctx,
        "enforcing_consecutive_local_origin_failure",
        od.enforcing_consecutive_local_origin_failure,
        100,
    )?;
    let consecutive_local_origin_failure = if od.split_external_local_origin_errors {
        rule(val(od.consecutive_local_origin_failure, 5), local_enforcing)
    } else {
        for (set, field) in [
            (
                od.consecutive_local_origin_failure.is_some(),
                "consecutive_local_origin_failure",
            ),
            (
                od.enforcing_consecutive_local_origin_failure.is_some(),
                "enforcing_consecutive_local_origin_failure",
            ),
        ] {
            if set {
                ctx.unsupported(
                    format!("{P}.{field}"),
                    "ignored: only applies with split_external_local_origin_errors",
                );
            }
        }
        None
    };
    let sr_enforcing = pct(
        ctx,
        "enforcing_success_rate",
        od.enforcing_success_rate,
        100,
    )?;
    let fp_enforcing = pct(
        ctx,
        "enforcing_failure_percentage",
        od.enforcing_failure_percentage,
        0,
    )?;
    let fp_threshold = pct(
        ctx,
        "failure_percentage_threshold",
        od.failure_percentage_threshold,
        85,
    )?;
    let out = OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_failure,
        consecutive_local_origin_failure,
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        success_rate: (sr_enforcing > Percentage::ZERO).then_some(SuccessRateRule {
            stdev_factor_milli: val(od.success_rate_stdev_factor, 1900),
            minimum_hosts: val(od.success_rate_minimum_hosts, 5),
            request_volume: val(od.success_rate_request_volume, 100),
            enforcing: sr_enforcing,
        }),
        failure_percentage: (fp_enforcing > Percentage::ZERO).then_some(FailurePercentageRule {
            threshold: fp_threshold,
            minimum_hosts: val(od.failure_percentage_minimum_hosts, 5),
            request_volume: val(od.failure_percentage_request_volume, 50),
            enforcing: fp_enforcing,
        }),
        interval: time(ctx, "interval", &od.interval, defaults.interval)?,
        base_ejection_time: time(
            ctx,
            "base_ejection_time",
            &od.base_ejection_time,
            defaults.base_ejection_time,
        )?,
        max_ejection_time: time(
            ctx,
            "max_ejection_time",
            &od.max_ejection_time,
            defaults.max_ejection_time,
        )?,
        max_ejection_percent: pct(ctx, "max_ejection_percent", od.max_ejection_percent, 10)?,
        // Envoy's own rule: xDS has no field for the strict cap.
        ejection_cap: EjectionCap::AtLeastOne,
    };
    for (set, field) in [
        (
            od.enforcing_local_origin_success_rate.is_some(),
            "enforcing_local_origin_success_rate",
        ),
        (
            od.enforcing_failure_percentage_local_origin.is_some(),
            "enforcing_failure_percentage_local_origin",
        ),
        (
            od.max_ejection_time_jitter.is_some(),
            "max_ejection_time_jitter",
        ),
        (
            od.successful_active_health_check_uneject_host.is_some(),
            "successful_active_health_check_uneject_host",
        ),
        (!od.monitors.is_empty(), "monitors"),
        (
            od.always_eject_one_host.is_some_and(|b| b.value),
            "always_eject_one_host",
        ),
        (
            od.detect_degraded_hosts.is_some_and(|b| b.value),
            "detect_degraded_hosts",
        ),
    ] {
        if set {
            ctx.unsupported(format!("{P}.{field}"), "ignored");
        }
    }
    Ok(out)
}

/// Panic threshold, locality weighting and the health a session's endpoint needs.
fn common_lb(
    ctx: &mut Ctx,
    common: &cluster::CommonLbConfig,
    mc: &mut MeshCluster,
) -> Result<(), DecodeError> {
    const P: &str = "common_lb_config";
    if let Some(p) = &common.healthy_panic_threshold {
        mc.panic_threshold = fields::percent(ctx, &format!("{P}.healthy_panic_threshold"), p)?;
    }
    if let Some(set) = &common.override_host_status {
        let mut statuses = HealthStatusSet::EMPTY;
        for (i, &status) in set.statuses.iter().enumerate() {
            let status = match core::HealthStatus::try_from(status) {
                Ok(core::HealthStatus::Unknown) => HealthStatus::Unknown,
                Ok(core::HealthStatus::Healthy) => HealthStatus::Healthy,
                Ok(core::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
                Ok(core::HealthStatus::Draining) => HealthStatus::Draining,
                Ok(core::HealthStatus::Timeout) => HealthStatus::Timeout,
                Ok(core::HealthStatus::Degraded) => HealthStatus::Degraded,
                Err(_) => {
                    return Err(ctx.error(
                        format!("{P}.override_host_status.statuses[{i}]"),
                        format!("unknown value {status}"),
                    ));
                }
            };
            statuses = statuses.with(status);
        }
        mc.override_host_status = statuses;
    }
    match &common.locality_config_specifier {
        None => {}
        Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_)) => {
            mc.locality_weighted = true;
        }
        Some(common_lb_config::LocalityConfigSpecifier::ZoneAwareLbConfig(_)) => {
            ctx.unsupported(format!("{P}.zone_aware_lb_config"), "ignored");
        }
    }
    for (set, field) in [
        (common.update_merge_window.is_some(), "update_merge_window"),
        (
            common.ignore_new_hosts_until_first_hc,
            "ignore_new_hosts_until_first_hc",
        ),
        (
            common.close_connections_on_host_set_change,
            "close_connections_on_host_set_change",
        ),
        (
            common.consistent_hashing_lb_config.is_some(),
            "consistent_hashing_lb_config",
        ),
    ] {
        if set {
            ctx.unsupported(format!("{P}.{field}"), "ignored");
        }
    }
    Ok(())
}

/// `max_requests_per_connection` and `idle_timeout`, from the typed upstream HTTP options or
/// the deprecated top-level fields.
fn protocol_options(ctx: &mut Ctx, c: &Cluster, mc: &mut MeshCluster) -> Result<(), DecodeError> {
    if let Some(v) = c.max_requests_per_connection {
        mc.max_requests_per_connection = (v.value > 0).then_some(v.value);
    }
    if let Some(common) = &c.common_http_protocol_options {
        common_http(ctx, "common_http_protocol_options", common, mc)?;
    }
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    for key in keys {
        let path = format!("typed_extension_protocol_options[{key}]");
        let Some(any) = c.typed_extension_protocol_options.get(key) else {
            continue;
        };
        if key != HTTP_PROTOCOL_OPTIONS {
            ctx.unsupported(path, "ignored");
            continue;
        }
        let opts: HttpProtocolOptions = fields::unpack(ctx, &path, any)?;
        if let Some(common) = &opts.common_http_protocol_options {
            common_http(
                ctx,
                &format!("{path}.common_http_protocol_options"),
                common,
                mc,
            )?;
        }
        for (set, field) in [
            (
                opts.upstream_http_protocol_options.is_some(),
                "upstream_http_protocol_options",
            ),
            (!opts.http_filters.is_empty(), "http_filters"),
            (
                opts.header_validation_config.is_some(),
                "header_validation_config",
            ),
            (opts.outlier_detection.is_some(), "outlier_detection"),
            (
                !opts.request_mirror_policies.is_empty(),
                "request_mirror_policies",
            ),
            (!opts.hash_policy.is_empty(), "hash_policy"),
            (opts.retry_policy.is_some(), "retry_policy"),
            (
                opts.upstream_protocol_options.is_some(),
                "upstream_protocol_options",
            ),
        ] {
            if set {
                ctx.unsupported(format!("{path}.{field}"), "ignored");
            }
        }
    }
    Ok(())
}

/// `upstream_connection_options`: the TCP keepalive of upstream sockets. Envoy's fields are
/// whole seconds; an unset one keeps the system's value.
fn upstream_connection_options(ctx: &mut Ctx, o: &UpstreamConnectionOptions, mc: &mut MeshCluster) {
    const P: &str = "upstream_connection_options";
    let seconds = |v: Option<UInt32Value>| v.map(|v| Duration::from_secs(u64::from(v.value)));
    mc.tcp_keepalive = o.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
        time: seconds(k.keepalive_time),
        interval: seconds(k.keepalive_interval),
        probes: k.keepalive_probes.map(|v| v.value),
    });
    if o.set_local_interface_name_on_upstream_connections {
        ctx.unsupported(
            format!("{P}.set_local_interface_name_on_upstream_connections"),
            "ignored",
        );
    }
    if o.happy_eyeballs_config.is_some() {
        ctx.unsupported(format!("{P}.happy_eyeballs_config"), "ignored");
    }
}

/// Envoy's `core.v3.HttpProtocolOptions` for upstream connections.
fn common_http(
    ctx: &mut Ctx,
    path: &str,
    o: &core::HttpProtocolOptions,
    mc: &mut MeshCluster,
) -> Result<(), DecodeError> {
    if let Some(d) = &o.idle_timeout {
        // Zero disables the idle timeout, as in Envoy.
        let d = fields::duration(ctx, &format!("{path}.idle_timeout"), d)?;
        mc.idle_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(v) = o.max_requests_per_connection {
        mc.max_requests_per_connection = (v.value > 0).then_some(v.value);
    }
    for (set, field) in [
        (
            o.max_connection_duration.is_some(),
            "max_connection_duration",
        ),
        (
            o.max_connection_duration_jitter.is_some(),
            "max_connection_duration_jitter",
        ),
        (o.max_headers_count.is_some(), "max_headers_count"),
        (
            o.max_response_headers_kb.is_some(),
            "max_response_headers_kb",
        ),
        (o.max_stream_duration.is_some(), "max_stream_duration"),
        (
            o.headers_with_underscores_action != 0,
            "headers_with_underscores_action",
        ),
    ] {
        if set {
            ctx.unsupported(format!("{path}.{field}"), "ignored");
        }
    }
    Ok(())
}

/// Reports every remaining set field that the mesh does not act on.
fn report_ignored(ctx: &mut Ctx, c: &Cluster) {
    let fields = [
        (!c.alt_stat_name.is_empty(), "alt_stat_name"),
        (c.stats_matcher.is_some(), "stats_matcher"),
        (
            c.per_connection_buffer_limit_bytes.is_some(),
            "per_connection_buffer_limit_bytes",
        ),
        (
            c.per_connection_buffer_high_watermark_timeout.is_some(),
            "per_connection_buffer_high_watermark_timeout",
        ),
        (!c.health_checks.is_empty(), "health_checks"),
        (
            c.upstream_http_protocol_options.is_some(),
            "upstream_http_protocol_options",
        ),
        (c.http_protocol_options.is_some(), "http_protocol_options"),
        (c.http2_protocol_options.is_some(), "http2_protocol_options"),
        (c.dns_refresh_rate.is_some(), "dns_refresh_rate"),
        (c.dns_jitter.is_some(), "dns_jitter"),
        (
            c.dns_failure_refresh_rate.is_some(),
            "dns_failure_refresh_rate",
        ),
        (c.respect_dns_ttl, "respect_dns_ttl"),
        (c.dns_lookup_family != 0, "dns_lookup_family"),
        (!c.dns_resolvers.is_empty(), "dns_resolvers"),
        (c.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (c.dns_resolution_config.is_some(), "dns_resolution_config"),
        (
            c.typed_dns_resolver_config.is_some(),
            "typed_dns_resolver_config",
        ),
        (c.wait_for_warm_on_init.is_some(), "wait_for_warm_on_init"),
        (c.cleanup_interval.is_some(), "cleanup_interval"),
        (c.upstream_bind_config.is_some(), "upstream_bind_config"),
        (c.lb_subset_config.is_some(), "lb_subset_config"),
        (c.metadata.is_some(), "metadata"),
        (c.protocol_selection != 0, "protocol_selection"),
        (
            c.close_connections_on_host_health_failure,
            "close_connections_on_host_health_failure",
        ),
        (
            c.ignore_health_on_host_removal,
            "ignore_health_on_host_removal",
        ),
        (!c.filters.is_empty(), "filters"),
        (c.lrs_server.is_some(), "lrs_server"),
        (
            !c.lrs_report_endpoint_metrics.is_empty(),
            "lrs_report_endpoint_metrics",
        ),
        (c.track_timeout_budgets, "track_timeout_budgets"),
        (c.upstream_config.is_some(), "upstream_config"),
        (c.track_cluster_stats.is_some(), "track_cluster_stats"),
        (c.preconnect_policy.is_some(), "preconnect_policy"),
        (
            c.connection_pool_per_downstream_connection,
            "connection_pool_per_downstream_connection",
        ),
        (c.queuing_policies.is_some(), "queuing_policies"),
    ];
    for (set, field) in fields {
        if set {
            ctx.unsupported(field, "ignored");
        }
    }
}

#[cfg(test)]
mod tests;
