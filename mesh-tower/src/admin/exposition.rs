//! `/metrics` in the format the scraper asks for: OpenMetrics 1.0.0 when its `Accept` header
//! names `application/openmetrics-text`, the Prometheus text format 0.0.4 otherwise.
//!
//! This is what Prometheus' own client libraries do (`expfmt.Negotiate`): a Prometheus server
//! asks for OpenMetrics first, while promtool, curl, browsers and older scrapers send no
//! `Accept` header or `*/*` and read the older text format. prometheus-client encodes only
//! OpenMetrics, so the text format is derived from its output here. The two formats differ in
//! a few conventions, each handled below:
//!
//! - A counter family is named without `_total` in OpenMetrics (`# TYPE istio_requests
//!   counter`, samples `istio_requests_total`); in the text format the descriptor names the
//!   sample, `istio_requests_total`, or Prometheus and promtool find no help for it.
//! - `info` (samples `<name>_info`) is a gauge in the text format, `unknown` is `untyped`.
//! - `# UNIT` lines, `_created` samples, exemplars and `# EOF` are OpenMetrics only.
//! - OpenMetrics timestamps are seconds, the text format's are integer milliseconds.
//! - `HELP` escapes `\\`, `\n` and `\"` in OpenMetrics but only `\\` and `\n` in the text format.

use std::fmt::Write as _;

/// The exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// The Prometheus text exposition format 0.0.4.
    Text,
}

/// OpenMetrics' media type; any `version` parameter is answered with 1.0.0 (0.0.1, which
/// Prometheus also offers, differs from it in nothing prometheus-client writes).
const OPENMETRICS: &str = "application/openmetrics-text";

// === impl Format ===

impl Format {
    /// The `Content-Type` of a response in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format for a request's `Accept` header values (`None` without the header).
    ///
    /// OpenMetrics when `application/openmetrics-text` is named with a quality above zero and
    /// no lower than the quality the header gives `text/plain` (that of the most specific range
    /// admitting it, as RFC 9110 §12.5.1 says); the text format otherwise,
    /// including for `*/*` alone, for no header and for a header that admits neither (Prometheus'
    /// client libraries answer those with the text format too rather than 406).
    pub(crate) fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Self {
        let mut openmetrics: Option<f32> = None;
        // (specificity, quality) of the most specific range admitting text/plain.
        let mut text: Option<(u8, f32)> = None;
        for range in accept
            .into_iter()
            .flat_map(|value| split_unquoted(value, ','))
        {
            let Some(range) = MediaRange::parse(range) else {
                continue;
            };
            if range.essence.eq_ignore_ascii_case(OPENMETRICS) {
                openmetrics = Some(openmetrics.map_or(range.quality, |q| q.max(range.quality)));
            }
            if let Some(specificity) = range.specificity_for("text", "plain") {
                text = match text {
                    Some((s, q)) if s > specificity => Some((s, q)),
                    Some((s, q)) if s == specificity => Some((s, q.max(range.quality))),
                    _ => Some((specificity, range.quality)),
                };
            }
        }
        match openmetrics {
            Some(q) if q > 0.0 && q >= text.map_or(0.0, |(_, q)| q) => Self::OpenMetrics,
            _ => Self::Text,
        }
    }
}

/// One range of an `Accept` header: `type/subtype` and its quality.
#[derive(Debug)]
struct MediaRange<'a> {
    essence: &'a str,
    quality: f32,
}

// === impl MediaRange ===

impl<'a> MediaRange<'a> {
    /// `type/subtype *(; name=value)`; `None` for an empty or malformed range. A malformed
    /// `q` makes the range unacceptable (quality 0) rather than preferred.
    fn parse(range: &'a str) -> Option<Self> {
        let mut parts = split_unquoted(range, ';').into_iter();
        let essence = parts.next()?.trim();
        if essence.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return None;
        }
        let mut quality = 1.0;
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                quality = value
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            }
        }
        Some(Self { essence, quality })
    }

    /// How specifically this range admits `kind/subtype`: 2 for an exact match, 1 for
    /// `kind/*`, 0 for `*/*`; `None` when it does not admit it.
    fn specificity_for(&self, kind: &str, subtype: &str) -> Option<u8> {
        let (k, s) = self.essence.split_once('/')?;
        let (k, s) = (k.trim(), s.trim());
        if k == "*" && s == "*" {
            Some(0)
        } else if k.eq_ignore_ascii_case(kind) && s == "*" {
            Some(1)
        } else if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) {
            Some(2)
        } else {
            None
        }
    }
}

/// Splits `text` on `separator` outside double-quoted strings (`Accept` parameters may be
/// quoted).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The Prometheus text format 0.0.4 of `openmetrics`, an OpenMetrics text as prometheus-client
/// writes it (descriptors before their family's samples, `HELP` before `TYPE`).
pub(crate) fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    // The family whose samples follow: its OpenMetrics name and type.
    let mut family: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), text) => {
                    flush_help(&mut out, help.take());
                    help = Some((name, text.unwrap_or("")));
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = kind.trim();
                    let (exposed, text_kind) = match kind {
                        "counter" => (format!("{name}_total"), "counter"),
                        "info" => (format!("{name}_info"), "gauge"),
                        "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                        _ => (name.to_owned(), "untyped"),
                    };
                    match help.take() {
                        Some((help_name, text)) if help_name == name => {
                            flush_help(&mut out, Some((&exposed, text)));
                        }
                        other => flush_help(&mut out, other),
                    }
                    let _ = writeln!(out, "# TYPE {exposed} {text_kind}");
                    family = Some((name, kind));
                }
                // `# UNIT`, `# EOF` and other comments have no text-format counterpart (the
                // unit is already the name's suffix).
                _ => {}
            }
            continue;
        }
        flush_help(&mut out, help.take());
        if line.trim().is_empty() {
            continue;
        }
        let Some(sample) = Sample::parse(line) else {
            // Not a sample prometheus-client writes; passed on for the reader to judge.
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if let Some((name, kind)) = family
            && matches!(kind, "counter" | "histogram" | "summary")
            && sample.name.strip_prefix(name) == Some("_created")
        {
            continue;
        }
        out.push_str(sample.series);
        out.push(' ');
        out.push_str(sample.value);
        if let Some(millis) = sample.timestamp.and_then(seconds_to_millis) {
            let _ = write!(out, " {millis}");
        }
        out.push('\n');
    }
    flush_help(&mut out, help);
    out
}

/// Writes `# HELP name text` with the text re-escaped from OpenMetrics to the text format.
fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    let Some((name, text)) = help else {
        return;
    };
    let _ = write!(out, "# HELP {name} ");
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') | None => out.push_str("\\\\"),
                Some('n') => out.push_str("\\n"),
                Some('"') => out.push('"'),
                // Not an OpenMetrics escape: a literal backslash.
                Some(other) => {
                    out.push_str("\\\\");
                    out.push(other);
                }
            },
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

/// The parts of an OpenMetrics sample line the text format keeps.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    /// The name and labels, as written (label escaping is the same in both formats).
    series: &'a str,
    value: &'a str,
    timestamp: Option<&'a str>,
}

// === impl Sample ===

impl<'a> Sample<'a> {
    /// `name[{labels}] value [timestamp] [# exemplar]`.
    fn parse(line: &'a str) -> Option<Self> {
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let series_end = if line[name_end..].starts_with('{') {
            name_end + labels_len(&line[name_end..])?
        } else {
            name_end
        };
        let rest = &line[series_end..];
        // After the labels nothing is quoted: an exemplar starts at the first ` # `.
        let rest = rest.split(" # ").next().unwrap_or(rest);
        let mut tokens = rest.split_ascii_whitespace();
        let value = tokens.next()?;
        let timestamp = tokens.next();
        Some(Self {
            name,
            series: &line[..series_end],
            value,
            timestamp,
        })
    }
}

/// The length of the `{...}` label set `text` starts with, through its closing brace.
fn labels_len(text: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// An OpenMetrics timestamp (seconds, possibly fractional) as the text format's integer
/// milliseconds; `None` when it is not a finite number.
fn seconds_to_millis(seconds: &str) -> Option<i64> {
    let millis = (seconds.parse::<f64>().ok()? * 1000.0).round();
    // `as` saturates; a timestamp beyond ±2⁶³ ms is no timestamp anyway.
    millis.is_finite().then_some(millis as i64)
}

#[cfg(test)]
mod tests;
