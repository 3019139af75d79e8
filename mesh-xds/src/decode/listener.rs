//! `Listener` → [`DecodedListener`]: the client's view of an LDS resource.
//!
//! A proxyless client only understands *API listeners* — istiod generates one per
//! `host:port` target, holding an `HttpConnectionManager` — so socket listeners with filter
//! chains (what Envoy sidecars receive) are rejected. The connection manager either names a
//! `RouteConfiguration` to fetch over ADS (`rds`) or carries one inline (`route_config`); its
//! HTTP filter chain is decoded into [`HttpFilters`], which the routes need to interpret
//! their per-filter configs.

use std::time::Duration;

use envoy_types::pb::envoy::{
    config::{
        core::v3::{ConfigSource, HttpProtocolOptions, config_source::ConfigSourceSpecifier},
        listener::v3::{ApiListener, Listener},
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    },
};
use mesh_core::RouteTable;

use super::{
    Ctx, DecodeError, Decoded, HttpFilters,
    fields::{at, duration, ignore_fields, nonzero, unpack},
    filter,
    route::route_configuration,
};

#[cfg(test)]
mod tests;

/// A decoded API listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedListener {
    /// Where the routes come from.
    pub routes: ListenerRoutes,
    /// The HTTP filter chain; pass it to
    /// [`decode_route_configuration`](super::route::decode_route_configuration) for RDS.
    pub filters: HttpFilters,
}

/// The routes of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerRoutes {
    /// Fetch this `RouteConfiguration` over ADS.
    Rds {
        /// Its name.
        route_config_name: String,
    },
    /// The routes, given inline.
    Inline(RouteTable),
}

const HCM: &str = "api_listener.api_listener";

/// Decodes a `Listener`; only an `api_listener` holding an `HttpConnectionManager` is accepted.
#[allow(deprecated)] // `deprecated_v1`, `reuse_port`, ... are reported when set.
pub fn decode_listener(l: &Listener) -> Result<Decoded<DecodedListener>, DecodeError> {
    let mut ctx = Ctx::new("Listener", l.name.clone());
    let Listener {
        name: _,
        address,
        additional_addresses,
        stat_prefix,
        stats_matcher,
        filter_chains,
        fcds_config,
        filter_chain_matcher,
        use_original_dst,
        default_filter_chain,
        per_connection_buffer_limit_bytes,
        per_connection_buffer_high_watermark_timeout,
        metadata,
        deprecated_v1,
        drain_type,
        listener_filters,
        listener_filters_timeout,
        continue_on_listener_filters_timeout,
        transparent,
        freebind,
        socket_options,
        tcp_fast_open_queue_length,
        traffic_direction,
        udp_listener_config,
        api_listener,
        connection_balance_config,
        reuse_port,
        enable_reuse_port,
        access_log,
        tcp_backlog_size,
        max_connections_to_accept_per_socket_event,
        bind_to_port,
        enable_mptcp,
        ignore_global_conn_limit,
        bypass_overload_manager,
        tcp_keepalive,
        listener_specifier,
    } = l;
    let Some(ApiListener { api_listener }) = api_listener else {
        return Err(ctx.error(
            "api_listener",
            "only api_listener is supported by the client",
        ));
    };
    ignore_fields!(ctx, "";
        address, additional_addresses, stat_prefix, stats_matcher, filter_chains, fcds_config,
        filter_chain_matcher, use_original_dst, default_filter_chain,
        per_connection_buffer_limit_bytes, per_connection_buffer_high_watermark_timeout,
        metadata, deprecated_v1, drain_type, listener_filters, listener_filters_timeout,
        continue_on_listener_filters_timeout, transparent, freebind, socket_options,
        tcp_fast_open_queue_length, traffic_direction, udp_listener_config,
        connection_balance_config, reuse_port, enable_reuse_port, access_log,
        tcp_backlog_size, max_connections_to_accept_per_socket_event, bind_to_port,
        enable_mptcp, ignore_global_conn_limit, bypass_overload_manager, tcp_keepalive,
        listener_specifier,
    );
    let Some(hcm_any) = api_listener else {
        return Err(ctx.error(HCM, "required field is missing"));
    };
    let hcm: HttpConnectionManager = unpack(&ctx, HCM, hcm_any)?;
    let value = connection_manager(&mut ctx, &hcm)?;
    Ok(ctx.done(value))
}

#[allow(deprecated)]
fn connection_manager(
    ctx: &mut Ctx,
    hcm: &HttpConnectionManager,
) -> Result<DecodedListener, DecodeError> {
    let HttpConnectionManager {
        codec_type,
        stat_prefix: _, // Metrics use Istio's names, not Envoy stat prefixes.
        http_filters,
        add_user_agent,
        tracing,
        common_http_protocol_options,
        http1_safe_max_connection_duration,
        http_protocol_options,
        http2_protocol_options,
        http3_protocol_options,
        server_name,
        server_header_transformation,
        scheme_header_transformation,
        max_request_headers_kb,
        stream_idle_timeout,
        stream_flush_timeout,
        request_timeout,
        request_headers_timeout,
        drain_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        access_log_options,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        internal_address_config,
        skip_xff_append,
        via,
        generate_request_id,
        preserve_external_request_id,
        always_set_request_id_in_response,
        forward_client_cert_details,
        set_current_client_cert_details,
        forward_client_cert_matcher,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        upgrade_configs,
        normalize_path,
        merge_slashes,
        path_with_escaped_slashes_action,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        route_specifier,
        strip_port_mode,
    } = hcm;
    ignore_fields!(ctx, HCM;
        codec_type, add_user_agent, tracing,
        http1_safe_max_connection_duration, http_protocol_options, http2_protocol_options,
        http3_protocol_options, server_name, server_header_transformation,
        scheme_header_transformation, max_request_headers_kb, stream_idle_timeout,
        stream_flush_timeout, request_timeout, request_headers_timeout, drain_timeout,
        drain_timeout_jitter, delayed_close_timeout, access_log, access_log_flush_interval,
        flush_access_log_on_new_request, access_log_options, use_remote_address,
        xff_num_trusted_hops, original_ip_detection_extensions,
        early_header_mutation_extensions, internal_address_config, skip_xff_append, via,
        generate_request_id, preserve_external_request_id, always_set_request_id_in_response,
        forward_client_cert_details, set_current_client_cert_details,
        forward_client_cert_matcher, proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6, upgrade_configs, normalize_path,
        merge_slashes, path_with_escaped_slashes_action, request_id_extension,
        local_reply_config, strip_matching_host_port, stream_error_on_invalid_http_message,
        path_normalization_options, strip_trailing_host_dot, proxy_status_config,
        typed_header_validation_config, append_x_forwarded_port, append_local_overload,
        add_proxy_protocol_connection_state, forward_proto_config, strip_port_mode,
    );
    let mut filters = filter::http_filters(ctx, HCM, http_filters)?;
    if let Some(opts) = common_http_protocol_options {
        filters.max_stream_duration = protocol_options(ctx, opts)?;
    }
    let routes = match route_specifier {
        Some(RouteSpecifier::Rds(Rds {
            config_source,
            route_config_name,
        })) => {
            let path = at(HCM, "rds");
            if route_config_name.is_empty() {
                return Err(ctx.error(at(&path, "route_config_name"), "required field is missing"));
            }
            config_source_check(ctx, &at(&path, "config_source"), config_source.as_ref());
            ListenerRoutes::Rds {
                route_config_name: route_config_name.clone(),
            }
        }
        Some(RouteSpecifier::RouteConfig(rc)) => ListenerRoutes::Inline(route_configuration(
            ctx,
            &at(HCM, "route_config"),
            rc,
            &filters,
        )?),
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(ctx.error(at(HCM, "scoped_routes"), "not supported"));
        }
        None => return Err(ctx.error(HCM, "one of rds or route_config is required")),
    };
    Ok(DecodedListener { routes, filters })
}

/// `common_http_protocol_options`: only `max_stream_duration` is read, the bound of routes
/// without their own (Envoy's and gRPC's rule).
fn protocol_options(
    ctx: &mut Ctx,
    opts: &HttpProtocolOptions,
) -> Result<Option<Duration>, DecodeError> {
    let path = at(HCM, "common_http_protocol_options");
    let HttpProtocolOptions {
        idle_timeout,
        max_connection_duration,
        max_connection_duration_jitter,
        max_headers_count,
        max_response_headers_kb,
        max_stream_duration,
        headers_with_underscores_action,
        max_requests_per_connection,
    } = opts;
    ignore_fields!(ctx, &path;
        idle_timeout, max_connection_duration, max_connection_duration_jitter,
        max_headers_count, max_response_headers_kb, headers_with_underscores_action,
        max_requests_per_connection,
    );
    match max_stream_duration {
        Some(d) => Ok(nonzero(duration(
            ctx,
            &at(&path, "max_stream_duration"),
            d,
        )?)),
        None => Ok(None),
    }
}

/// RDS must come over the same ADS stream (`ads` or `self`); anything else is reported and
/// ADS is used anyway, since that is the only stream the client has.
fn config_source_check(ctx: &mut Ctx, path: &str, cs: Option<&ConfigSource>) {
    match cs.and_then(|c| c.config_source_specifier.as_ref()) {
        Some(ConfigSourceSpecifier::Ads(_)) | Some(ConfigSourceSpecifier::Self_(_)) => {}
        Some(_) => ctx.unsupported(path, "fetched over ADS instead"),
        None => ctx.unsupported(path, "missing: fetched over ADS"),
    }
}
