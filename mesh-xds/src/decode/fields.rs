//! Small helpers shared by the decoders: field paths, well-known types, and reporting fields
//! that are set but not acted on.
//!
//! Decoders destructure each proto message *exhaustively* (no `..`), so a field added to
//! envoy-types fails the build until someone decides whether the mesh acts on it; the fields
//! it does not act on go through [`ignore_fields!`], which reports each one that is set.

use std::time::Duration;

use envoy_types::pb::{
    envoy::r#type::v3::{FractionalPercent, Percent},
    google::protobuf,
};
use mesh_core::Percentage;

use super::{Ctx, DecodeError};

/// Reports every listed field (a binding of the same name) that differs from its proto default
/// as unsupported, with the note `ignored`.
macro_rules! ignore_fields {
    ($ctx:expr, $base:expr; $($field:ident),* $(,)?) => {
        $(
            if $crate::decode::fields::is_set($field) {
                $ctx.unsupported($crate::decode::fields::at($base, stringify!($field)), "ignored");
            }
        )*
    };
}

pub(crate) use ignore_fields;

/// Whether a proto3 value differs from its default (an unset message, 0, empty).
pub(crate) fn is_set<T: Default + PartialEq>(value: &T) -> bool {
    *value != T::default()
}

/// `base.field`, or `field` at the top.
pub(crate) fn at(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}

/// `base.field[i]`.
pub(crate) fn idx(base: &str, field: &str, i: usize) -> String {
    format!("{}[{i}]", at(base, field))
}

/// `Some(d)` unless `d` is zero: Envoy's "0 disables".
pub(crate) fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// A `FractionalPercent` (denominator HUNDRED, TEN_THOUSAND or MILLION); above 100 % is capped.
pub(crate) fn fraction(
    ctx: &Ctx,
    path: &str,
    f: &FractionalPercent,
) -> Result<Percentage, DecodeError> {
    let denominator = match f.denominator {
        0 => 100,
        1 => 10_000,
        2 => 1_000_000,
        other => return Err(ctx.error(at(path, "denominator"), format!("unknown value {other}"))),
    };
    Percentage::from_fraction(f.numerator, denominator).map_err(|e| ctx.error(path, e.message()))
}

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
