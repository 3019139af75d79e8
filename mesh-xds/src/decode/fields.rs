//! Small helpers shared by the decoders: field paths, well-known types, and reporting fields
//! that are set but not acted on.
//!
//! Decoders destructure each proto message *exhaustively* (no `..`), so a field added to
//! envoy-types fails the build until someone decides whether the mesh acts on it; the fields
//! it does not act on go through [`ignore_fields!`], which reports each one that is set.

use std::time::Duration;

use envoy_types::pb::{envoy::r#type::v3::FractionalPercent, google::protobuf};
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

/// A `google.protobuf.Duration`; negative or malformed durations are errors.
pub(crate) fn duration(
    ctx: &Ctx,
    path: &str,
    d: &protobuf::Duration,
) -> Result<Duration, DecodeError> {
    let secs = u64::try_from(d.seconds).ok();
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000);
    match (secs, nanos) {
        (Some(s), Some(n)) => Ok(Duration::new(s, n)),
        _ => Err(ctx.error(path, "must be a non-negative duration")),
    }
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

/// Decodes an `Any` holding `M`; another type URL or bad bytes are errors at `path`.
pub(crate) fn any<M: prost::Message + prost::Name + Default>(
    ctx: &Ctx,
    path: &str,
    any: &protobuf::Any,
) -> Result<M, DecodeError> {
    let want = M::type_url();
    if any.type_url != want {
        return Err(ctx.error(path, format!("expected `{want}`, found `{}`", any.type_url)));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("malformed {}: {e}", M::NAME)))
}
