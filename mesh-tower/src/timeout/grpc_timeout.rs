//! The `grpc-timeout` header: at most 8 ASCII digits and a unit (`H M S m u n`).

use std::time::Duration;

use http::HeaderValue;

/// Parses a `grpc-timeout` value; anything malformed is `None` (and so ignored, as gRPC does).
pub(crate) fn parse(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes `d` in the finest unit that fits in 8 digits, rounding down: the upstream's deadline
/// may come a fraction of a unit early, never late.
pub(crate) fn encode(d: Duration) -> HeaderValue {
    const MAX: u64 = 99_999_999;
    // u64 arithmetic throughout: this runs on every request, and u128 division is a library
    // call.
    let (secs, subsec) = (d.as_secs(), u64::from(d.subsec_nanos()));
    let fine = |per_sec: u64, per_unit: u64| {
        secs.checked_mul(per_sec)
            .and_then(|whole| whole.checked_add(subsec / per_unit))
            .filter(|n| *n <= MAX)
    };
    let (n, unit) = if let Some(n) = fine(1_000_000_000, 1) {
        (n, b'n')
    } else if let Some(n) = fine(1_000_000, 1_000) {
        (n, b'u')
    } else if let Some(n) = fine(1_000, 1_000_000) {
        (n, b'm')
    } else if secs <= MAX {
        (secs, b'S')
    } else if secs / 60 <= MAX {
        (secs / 60, b'M')
    } else {
        ((secs / 3600).min(MAX), b'H')
    };
    // Written from the unit backwards into a fixed buffer.
    let mut text = [0u8; 9];
    let mut at = text.len() - 1;
    text[at] = unit;
    let mut n = n;
    loop {
        at -= 1;
        text[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Digits and a unit letter are always a valid header value.
    HeaderValue::from_bytes(&text[at..]).unwrap_or(HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"-1S",
            b"1x",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoding_round_trips_within_one_unit_and_never_lengthens() {
        for d in [
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(10),
            Duration::from_secs(7 * 24 * 3600),
            Duration::from_secs(u64::MAX),
        ] {
            let back = parse(encode(d).as_bytes()).unwrap();
            assert!(back <= d, "{d:?} -> {back:?}");
        }
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::from_secs(10)), "10000000u");
        assert_eq!(encode(Duration::from_secs(1_000_000)), "1000000S");
        assert_eq!(encode(Duration::from_secs(200_000_000)), "3333333M");
        assert_eq!(encode(Duration::from_secs(u64::MAX)), "99999999H");
    }
}
