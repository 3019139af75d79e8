//! Istio / protobuf duration strings (`2s`, `100ms`, `1.5s`, `1h30m`).
//!
//! Istio's CRDs accept Go's `time.ParseDuration` syntax, a superset of the protobuf JSON form
//! (`1.5s`): a sequence of decimal numbers, each with a unit (`h`, `m`, `s`, `ms`, `us`, `µs`,
//! `ns`). Negative durations and garbage are rejected; arithmetic is checked so no input can
//! overflow.

use std::time::Duration;

/// Parses a duration, or says why it is not one.
pub(super) fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (e.g. `2s`, `100ms`, `1.5s`, `1m`, `1h`)");
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 30 {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(bad)?;
        // Fractional digits beyond nanosecond precision are dropped, as Go does.
        let mut place = scale;
        for d in frac.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos = nanos
                .checked_add(u128::from(d - b'0') * place)
                .ok_or_else(bad)?;
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    // `total % 1e9` is below 1e9, so it fits in a u32.
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_istio_and_protobuf_forms() {
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage_and_negatives() {
        for s in [
            "",
            "-1s",
            "2",
            "s",
            "1x",
            "1.2.3s",
            "abc",
            "1s-",
            ".s",
            "99999999999999999999999999h",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
