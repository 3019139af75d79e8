//! The cluster's load-balancing policy: the `lb_policy` enum with its `*_lb_config`, or the
//! typed `load_balancing_policy` list, where the first policy the mesh supports wins (Envoy's
//! and gRPC's rule, so a control plane can list a fallback after a newer policy).
//!
//! gRPC (and istiod for proxyless clients) wraps the endpoint-picking policy in
//! `wrr_locality`, which picks a locality by its weight first; that is the model's
//! `locality_weighted`, so the wrapper sets it.

// Deprecated fields are read on purpose: control planes still send them (istiod's proxyless
// TLS uses the deprecated certificate-provider-instance fields), and a set field must be
// decoded or reported, never skipped.
#![allow(deprecated)]

use envoy_types::pb::{
    envoy::{
        config::cluster::v3::{
            Cluster, LoadBalancingPolicy,
            cluster::{self, LbConfig, ring_hash_lb_config},
        },
        extensions::load_balancing_policies::{
            common::v3::{LocalityLbConfig, locality_lb_config},
            least_request::v3::LeastRequest,
            random::v3::Random,
            ring_hash::v3::{RingHash, ring_hash},
            round_robin::v3::RoundRobin,
            wrr_locality::v3::WrrLocality,
        },
    },
    google::protobuf::Any,
};
use mesh_core::LbPolicy;

use super::super::{Ctx, DecodeError, fields};

/// Envoy's largest ring, and the default maximum.
const MAX_RING_SIZE: u64 = 8_388_608;
/// Envoy's default minimum ring size.
const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's default number of choices for least request.
const DEFAULT_CHOICE_COUNT: u32 = 2;
/// How deep `wrr_locality` wrappers may nest; a bound so hostile input cannot recurse deeply.
const MAX_DEPTH: usize = 4;

/// The policy and whether balancing is locality-weighted.
pub(super) fn policy(ctx: &mut Ctx, c: &Cluster) -> Result<(LbPolicy, bool), DecodeError> {
    let lp = cluster::LbPolicy::try_from(c.lb_policy)
        .map_err(|_| ctx.error("lb_policy", format!("unknown value {}", c.lb_policy)))?;
    if let Some(lbp) = &c.load_balancing_policy {
        if !matches!(
            lp,
            cluster::LbPolicy::RoundRobin | cluster::LbPolicy::LoadBalancingPolicyConfig
        ) {
            ctx.unsupported(
                "lb_policy",
                "ignored: load_balancing_policy takes precedence",
            );
        }
        if let Some(cfg) = &c.lb_config {
            ctx.unsupported(
                lb_config_name(cfg),
                "ignored: load_balancing_policy takes precedence",
            );
        }
        return typed(ctx, "load_balancing_policy", lbp, 0);
    }
    let cfg = c.lb_config.as_ref();
    let policy = match lp {
        cluster::LbPolicy::RoundRobin => {
            if let Some(LbConfig::RoundRobinLbConfig(rr)) = cfg
                && rr.slow_start_config.is_some()
            {
                ctx.unsupported("round_robin_lb_config.slow_start_config", "ignored");
            }
            LbPolicy::RoundRobin
        }
        cluster::LbPolicy::LeastRequest => {
            let lr = match cfg {
                Some(LbConfig::LeastRequestLbConfig(lr)) => Some(lr),
                _ => None,
            };
            const P: &str = "least_request_lb_config";
            if let Some(lr) = lr {
                if lr.active_request_bias.is_some() {
                    ctx.unsupported(format!("{P}.active_request_bias"), "ignored");
                }
                if lr.slow_start_config.is_some() {
                    ctx.unsupported(format!("{P}.slow_start_config"), "ignored");
                }
            }
            least_request(ctx, P, lr.and_then(|lr| lr.choice_count).map(|v| v.value))?
        }
        cluster::LbPolicy::RingHash => {
            const P: &str = "ring_hash_lb_config";
            match cfg {
                Some(LbConfig::RingHashLbConfig(rh)) => {
                    if rh.hash_function == ring_hash_lb_config::HashFunction::MurmurHash2 as i32 {
                        ctx.unsupported(
                            format!("{P}.hash_function"),
                            "MURMUR_HASH_2 ignored, xxHash used",
                        );
                    } else if rh.hash_function != ring_hash_lb_config::HashFunction::XxHash as i32 {
                        return Err(ctx.error(
                            format!("{P}.hash_function"),
                            format!("unknown value {}", rh.hash_function),
                        ));
                    }
                    ring_hash(
                        ctx,
                        P,
                        rh.minimum_ring_size.map(|v| v.value),
                        rh.maximum_ring_size.map(|v| v.value),
                    )?
                }
                _ => LbPolicy::default_ring_hash(),
            }
        }
        cluster::LbPolicy::Random => LbPolicy::Random,
        cluster::LbPolicy::Maglev => {
            ctx.unsupported(
                "lb_policy",
                "MAGLEV treated as RING_HASH with default sizes",
            );
            if let Some(LbConfig::MaglevLbConfig(_)) = cfg {
                ctx.unsupported("maglev_lb_config", "ignored");
            }
            LbPolicy::default_ring_hash()
        }
        cluster::LbPolicy::ClusterProvided => {
            return Err(ctx.error("lb_policy", "CLUSTER_PROVIDED is not supported"));
        }
        cluster::LbPolicy::LoadBalancingPolicyConfig => {
            return Err(ctx.error(
                "load_balancing_policy",
                "required when lb_policy is LOAD_BALANCING_POLICY_CONFIG",
            ));
        }
    };
    if let Some(cfg) = cfg {
        let matches = matches!(
            (lp, cfg),
            (
                cluster::LbPolicy::RoundRobin,
                LbConfig::RoundRobinLbConfig(_)
            ) | (
                cluster::LbPolicy::LeastRequest,
                LbConfig::LeastRequestLbConfig(_)
            ) | (cluster::LbPolicy::RingHash, LbConfig::RingHashLbConfig(_))
                | (cluster::LbPolicy::Maglev, LbConfig::MaglevLbConfig(_))
        );
        if !matches {
            ctx.unsupported(lb_config_name(cfg), "ignored: does not match lb_policy");
        }
    }
    Ok((policy, false))
}

/// The field name of the `lb_config` oneof's variant.
fn lb_config_name(cfg: &LbConfig) -> &'static str {
    match cfg {
        LbConfig::RingHashLbConfig(_) => "ring_hash_lb_config",
        LbConfig::MaglevLbConfig(_) => "maglev_lb_config",
        LbConfig::OriginalDstLbConfig(_) => "original_dst_lb_config",
        LbConfig::LeastRequestLbConfig(_) => "least_request_lb_config",
        LbConfig::RoundRobinLbConfig(_) => "round_robin_lb_config",
    }
}

/// Least request with `choice_count` (default 2; below 2 is an error, as in Envoy).
fn least_request(
    ctx: &Ctx,
    path: &str,
    choice_count: Option<u32>,
) -> Result<LbPolicy, DecodeError> {
    let n = choice_count.unwrap_or(DEFAULT_CHOICE_COUNT);
    LbPolicy::least_request(n).map_err(|_| {
        ctx.error(
            format!("{path}.choice_count"),
            format!("must be at least 2, got {n}"),
        )
    })
}

/// Ring hash with Envoy's defaults; the error names the bound at fault.
fn ring_hash(
    ctx: &Ctx,
    path: &str,
    min: Option<u64>,
    max: Option<u64>,
) -> Result<LbPolicy, DecodeError> {
    let min_field = format!("{path}.minimum_ring_size");
    let max_field = format!("{path}.maximum_ring_size");
    let min = min.unwrap_or(DEFAULT_MIN_RING_SIZE);
    let max = max.unwrap_or(MAX_RING_SIZE);
    if min == 0 {
        return Err(ctx.error(min_field, "must be at least 1"));
    }
    if min > MAX_RING_SIZE {
        return Err(ctx.error(
            min_field,
            format!("must be at most {MAX_RING_SIZE}, got {min}"),
        ));
    }
    if max > MAX_RING_SIZE {
        return Err(ctx.error(
            max_field,
            format!("must be at most {MAX_RING_SIZE}, got {max}"),
        ));
    }
    if min > max {
        return Err(ctx.error(
            min_field,
            format!("{min} is more than maximum_ring_size {max}"),
        ));
    }
    LbPolicy::ring_hash(min, max).map_err(|e| ctx.error(path, e.message()))
}

/// The first supported policy of a typed `LoadBalancingPolicy`.
fn typed(
    ctx: &mut Ctx,
    path: &str,
    lbp: &LoadBalancingPolicy,
    depth: usize,
) -> Result<(LbPolicy, bool), DecodeError> {
    for (i, p) in lbp.policies.iter().enumerate() {
        let ppath = format!("{path}.policies[{i}].typed_extension_config");
        let Some(tec) = &p.typed_extension_config else {
            return Err(ctx.error(ppath, "required"));
        };
        let cpath = format!("{ppath}.typed_config");
        let Some(any) = &tec.typed_config else {
            return Err(ctx.error(cpath, "required"));
        };
        match typed_one(ctx, &cpath, any, depth)? {
            Some(found) => return Ok(found),
            None => ctx.unsupported(
                cpath,
                format!("`{}` skipped for a later policy", any.type_url),
            ),
        }
    }
    Err(ctx.error(
        format!("{path}.policies"),
        "no supported policy (round_robin, least_request, ring_hash, random, wrr_locality)",
    ))
}

/// One typed policy; `None` when its type is not supported.
fn typed_one(
    ctx: &mut Ctx,
    path: &str,
    any: &Any,
    depth: usize,
) -> Result<Option<(LbPolicy, bool)>, DecodeError> {
    let url = any.type_url.as_str();
    let found = if url == <RoundRobin as prost::Name>::type_url() {
        let rr: RoundRobin = fields::unpack(ctx, path, any)?;
        if rr.slow_start_config.is_some() {
            ctx.unsupported(format!("{path}.slow_start_config"), "ignored");
        }
        let lw = locality(ctx, path, rr.locality_lb_config.as_ref());
        (LbPolicy::RoundRobin, lw)
    } else if url == <LeastRequest as prost::Name>::type_url() {
        let lr: LeastRequest = fields::unpack(ctx, path, any)?;
        for (set, field) in [
            (lr.active_request_bias.is_some(), "active_request_bias"),
            (lr.slow_start_config.is_some(), "slow_start_config"),
            (
                lr.enable_full_scan.is_some_and(|b| b.value),
                "enable_full_scan",
            ),
            (lr.selection_method != 0, "selection_method"),
        ] {
            if set {
                ctx.unsupported(format!("{path}.{field}"), "ignored");
            }
        }
        let lw = locality(ctx, path, lr.locality_lb_config.as_ref());
        (
            least_request(ctx, path, lr.choice_count.map(|v| v.value))?,
            lw,
        )
    } else if url == <RingHash as prost::Name>::type_url() {
        let rh: RingHash = fields::unpack(ctx, path, any)?;
        match ring_hash::HashFunction::try_from(rh.hash_function) {
            Ok(ring_hash::HashFunction::DefaultHash | ring_hash::HashFunction::XxHash) => {}
            Ok(ring_hash::HashFunction::MurmurHash2) => {
                ctx.unsupported(
                    format!("{path}.hash_function"),
                    "MURMUR_HASH_2 ignored, xxHash used",
                );
            }
            Err(_) => {
                return Err(ctx.error(
                    format!("{path}.hash_function"),
                    format!("unknown value {}", rh.hash_function),
                ));
            }
        }
        for (set, field) in [
            (rh.use_hostname_for_hashing, "use_hostname_for_hashing"),
            (rh.hash_balance_factor.is_some(), "hash_balance_factor"),
            (
                rh.consistent_hashing_lb_config.is_some(),
                "consistent_hashing_lb_config",
            ),
        ] {
            if set {
                ctx.unsupported(format!("{path}.{field}"), "ignored");
            }
        }
        let policy = ring_hash(
            ctx,
            path,
            rh.minimum_ring_size.map(|v| v.value),
            rh.maximum_ring_size.map(|v| v.value),
        )?;
        (policy, rh.locality_weighted_lb_config.is_some())
    } else if url == <Random as prost::Name>::type_url() {
        let r: Random = fields::unpack(ctx, path, any)?;
        let lw = locality(ctx, path, r.locality_lb_config.as_ref());
        (LbPolicy::Random, lw)
    } else if url == <WrrLocality as prost::Name>::type_url() {
        if depth >= MAX_DEPTH {
            return Err(ctx.error(path, "wrr_locality nested too deeply"));
        }
        let w: WrrLocality = fields::unpack(ctx, path, any)?;
        let inner_path = format!("{path}.endpoint_picking_policy");
        let Some(inner) = &w.endpoint_picking_policy else {
            return Err(ctx.error(inner_path, "required"));
        };
        let (policy, _) = typed(ctx, &inner_path, inner, depth + 1)?;
        (policy, true)
    } else {
        return Ok(None);
    };
    Ok(Some(found))
}

/// Whether a typed policy's `locality_lb_config` asks for locality weighting.
fn locality(ctx: &mut Ctx, path: &str, cfg: Option<&LocalityLbConfig>) -> bool {
    match cfg.and_then(|c| c.locality_config_specifier.as_ref()) {
        Some(locality_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_)) => true,
        Some(locality_lb_config::LocalityConfigSpecifier::ZoneAwareLbConfig(_)) => {
            ctx.unsupported(
                format!("{path}.locality_lb_config.zone_aware_lb_config"),
                "ignored",
            );
            false
        }
        None => false,
    }
}
