//! Protobuf well-known types (durations, percents, `Any`) read with Envoy's conventions.
//!
//! Shared by every resource decoder so that a negative duration or a 101 % threshold is
//! rejected the same way, with the same message, wherever it appears.

use std::time::Duration;

use envoy_types::pb::{envoy::r#type::v3::Percent, google::protobuf};
use mesh_core::Percentage;

use super::{Ctx, DecodeError};

/// A `google.protobuf.Duration` as a [`Duration`]; negative or malformed values are errors.
pub(crate) fn duration(
    ctx: &Ctx,
    field: &str,
    d: &protobuf::Duration,
) -> Result<Duration, DecodeError> {
    let (Ok(secs), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(ctx.error(field, "must not be negative"));
    };
    if nanos >= 1_000_000_000 {
        return Err(ctx.error(field, "nanos must be below one second"));
    }
    Ok(Duration::new(secs, nanos))
}

/// Like [`duration`], but zero is an error too (intervals, ejection times).
pub(crate) fn positive_duration(
    ctx: &Ctx,
    field: &str,
    d: &protobuf::Duration,
) -> Result<Duration, DecodeError> {
    let d = duration(ctx, field, d)?;
    if d.is_zero() {
        return Err(ctx.error(field, "must be positive"));
    }
    Ok(d)
}

/// Envoy's `type.v3.Percent` (a `double` between 0 and 100).
pub(crate) fn percent(ctx: &Ctx, field: &str, p: &Percent) -> Result<Percentage, DecodeError> {
    Percentage::from_percent_f64(p.value).map_err(|e| ctx.error(field, e.message()))
}

/// A whole number of percent, as Envoy's `UInt32Value` percentage fields carry them.
pub(crate) fn whole_percent(ctx: &Ctx, field: &str, v: u32) -> Result<Percentage, DecodeError> {
    Percentage::from_percent(v).map_err(|e| ctx.error(field, e.message()))
}

/// The message packed in `any`, which must carry `M`'s type URL.
pub(crate) fn unpack<M>(ctx: &Ctx, field: &str, any: &protobuf::Any) -> Result<M, DecodeError>
where
    M: prost::Message + prost::Name + Default,
{
    let want = M::type_url();
    if any.type_url != want {
        return Err(ctx.error(field, format!("expected type {want}, got {}", any.type_url)));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| ctx.error(field, format!("malformed {}: {e}", M::full_name())))
}
