//! String, header, query-parameter and path matchers with Envoy's semantics.
//!
//! - Regexes are RE2-style *full* matches (Envoy's `safe_regex`), compiled once with a size
//!   limit so a hostile pattern cannot exhaust memory.
//! - A header with several values is matched against its values joined by `,` (Envoy's
//!   `getAllOfHeaderAsString`).
//! - A missing header matches only `present: false`, or `present: true` with `invert` — Envoy's
//!   rule; every other matcher fails on a missing header even when inverted, unless
//!   `treat_missing_as_empty` is set.

use std::{borrow::Cow, fmt, hash, sync::Arc};

use http::{HeaderMap, HeaderName};

use crate::Error;

/// Regexes larger than this, compiled, are refused (Envoy also caps program size).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled regular expression that must match the whole input.
#[derive(Clone)]
pub struct Regex {
    pattern: Arc<str>,
    compiled: regex::Regex,
}

/// Envoy's `regex_rewrite`: every match of a pattern inside a value is replaced by a
/// substitution in which `\1`, `\2`… name capture groups.
#[derive(Clone)]
pub struct RegexRewrite {
    pattern: Arc<str>,
    substitution: Arc<str>,
    unanchored: regex::Regex,
    /// The substitution in the regex crate's syntax (`${1}`, literal `$` escaped).
    translated: Arc<str>,
}

/// How a [`StringMatcher`] compares.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// The whole value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value ends with this.
    Suffix(String),
    /// The value contains this.
    Contains(String),
    /// The whole value matches this regex (`ignore_case` does not apply; use `(?i)`).
    Regex(Regex),
}

/// A string comparison, optionally ignoring ASCII case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StringMatcher {
    kind: StringMatch,
    ignore_case: bool,
}

/// What a [`HeaderMatcher`] checks about the header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderMatch {
    /// `true`: the header is present (any value); `false`: the header is absent.
    Present(bool),
    /// The value matches the string matcher.
    String(StringMatcher),
    /// The value parses as a signed integer in `start..end` (end exclusive, like Envoy).
    Range {
        /// Inclusive lower bound.
        start: i64,
        /// Exclusive upper bound.
        end: i64,
    },
}

/// A condition on one request header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderMatcher {
    name: HeaderName,
    kind: HeaderMatch,
    invert: bool,
    treat_missing_as_empty: bool,
}

/// A condition on one query parameter (the first occurrence, like Envoy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueryParamMatcher {
    name: String,
    /// `None`: the parameter must be present, any value.
    value: Option<StringMatcher>,
}

/// How the request path (without the query string) is matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// Matches every path (Envoy's `prefix: "/"`).
    Any,
    /// The path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// The whole path matches this regex.
    Regex(Regex),
}

/// A path condition; case-sensitive by default, as in Envoy (`ignore_case` does not apply to
/// regexes, also as in Envoy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathMatcher {
    kind: PathMatch,
    ignore_case: bool,
}

// === impl Regex ===

impl Regex {
    /// Compiles `pattern` as a full-match regex.
    pub fn new(pattern: &str) -> Result<Self, Error> {
        let compiled = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| Error::invalid(format!("invalid regex `{pattern}`: {e}")))?;
        Ok(Self {
            pattern: pattern.into(),
            compiled,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.pattern).finish()
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Regex {}

impl hash::Hash for Regex {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
    }
}

// === impl RegexRewrite ===

impl RegexRewrite {
    /// Compiles the pattern (unanchored) and translates the substitution once.
    pub fn new(pattern: &str, substitution: &str) -> Result<Self, Error> {
        let unanchored = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| Error::invalid(format!("invalid regex `{pattern}`: {e}")))?;
        let mut translated = String::with_capacity(substitution.len());
        let mut chars = substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().copied()) {
                ('\\', Some(d)) if d.is_ascii_digit() => {
                    translated.push_str("${");
                    translated.push(d);
                    translated.push('}');
                    chars.next();
                }
                ('$', _) => translated.push_str("$$"),
                _ => translated.push(c),
            }
        }
        Ok(Self {
            pattern: pattern.into(),
            substitution: substitution.into(),
            unanchored,
            translated: translated.into(),
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The substitution as written.
    pub fn substitution(&self) -> &str {
        &self.substitution
    }

    /// `value` with every match replaced.
    pub fn apply<'a>(&self, value: &'a str) -> Cow<'a, str> {
        self.unanchored.replace_all(value, &*self.translated)
    }
}

impl fmt::Debug for RegexRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegexRewrite")
            .field("pattern", &self.pattern)
            .field("substitution", &self.substitution)
            .finish()
    }
}

impl PartialEq for RegexRewrite {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.substitution == other.substitution
    }
}

impl Eq for RegexRewrite {}

impl hash::Hash for RegexRewrite {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
        self.substitution.hash(state);
    }
}

// === impl StringMatcher ===

impl StringMatcher {
    /// A matcher; `ignore_case` compares ASCII case-insensitively (not for regexes).
    pub fn new(kind: StringMatch, ignore_case: bool) -> Self {
        Self { kind, ignore_case }
    }

    /// Exact, case-sensitive.
    pub fn exact(value: impl Into<String>) -> Self {
        Self::new(StringMatch::Exact(value.into()), false)
    }

    /// Prefix, case-sensitive.
    pub fn prefix(value: impl Into<String>) -> Self {
        Self::new(StringMatch::Prefix(value.into()), false)
    }

    /// How it compares.
    pub fn kind(&self) -> &StringMatch {
        &self.kind
    }

    /// Whether ASCII case is ignored.
    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let ic = self.ignore_case;
        match &self.kind {
            StringMatch::Exact(s) => eq(value, s, ic),
            StringMatch::Prefix(s) => {
                value.len() >= s.len() && eq_bytes(&value.as_bytes()[..s.len()], s.as_bytes(), ic)
            }
            StringMatch::Suffix(s) => {
                value.len() >= s.len()
                    && eq_bytes(&value.as_bytes()[value.len() - s.len()..], s.as_bytes(), ic)
            }
            StringMatch::Contains(s) => {
                if ic {
                    value
                        .as_bytes()
                        .windows(s.len().max(1))
                        .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
                        || s.is_empty()
                } else {
                    value.contains(s.as_str())
                }
            }
            StringMatch::Regex(re) => re.is_match(value),
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    eq_bytes(a.as_bytes(), b.as_bytes(), ignore_case)
}

fn eq_bytes(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    /// A header condition. A range with `start >= end` is an error.
    pub fn new(name: HeaderName, kind: HeaderMatch, invert: bool) -> Result<Self, Error> {
        if let HeaderMatch::Range { start, end } = kind
            && start >= end
        {
            return Err(Error::invalid(format!(
                "range start {start} must be below end {end}"
            )));
        }
        Ok(Self {
            name,
            kind,
            invert,
            treat_missing_as_empty: false,
        })
    }

    /// Treat a missing header as an empty value instead of Envoy's default missing-header rule.
    /// Default is `false`.
    pub fn with_treat_missing_as_empty(mut self, yes: bool) -> Self {
        self.treat_missing_as_empty = yes;
        self
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// What is checked.
    pub fn kind(&self) -> &HeaderMatch {
        &self.kind
    }

    /// Whether the result is inverted.
    pub fn invert(&self) -> bool {
        self.invert
    }

    /// Whether a missing header is treated as an empty value.
    pub fn treat_missing_as_empty(&self) -> bool {
        self.treat_missing_as_empty
    }

    /// Whether the request's headers satisfy this condition.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let value: Option<Cow<'_, str>> = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(one), None) => Some(Cow::Borrowed(one.to_str().unwrap_or(""))),
            (Some(_), Some(_)) => Some(Cow::Owned(
                headers
                    .get_all(&self.name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(","),
            )),
        };
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => Cow::Borrowed(""),
            None => {
                return match self.kind {
                    HeaderMatch::Present(present) => present == self.invert,
                    _ => false,
                };
            }
        };
        self.kind.matches_value(&value) != self.invert
    }
}

// === impl HeaderMatch ===

impl HeaderMatch {
    /// Whether a header that is present with `value` satisfies this check (before any
    /// inversion). A range match needs a signed integer value.
    pub fn matches_value(&self, value: &str) -> bool {
        match self {
            Self::Present(present) => *present,
            Self::String(m) => m.matches(value),
            Self::Range { start, end } => {
                value.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
            }
        }
    }
}

// === impl QueryParamMatcher ===

impl QueryParamMatcher {
    /// A query-parameter condition; `value: None` means "present with any value".
    pub fn new(name: impl Into<String>, value: Option<StringMatcher>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value condition; `None` means "present with any value".
    pub fn value(&self) -> Option<&StringMatcher> {
        self.value.as_ref()
    }

    /// Whether the query string (without `?`) satisfies the condition. The first occurrence of
    /// the parameter decides; values are compared as sent (not percent-decoded), as Envoy does.
    pub fn matches(&self, query: &str) -> bool {
        let found = query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| *k == self.name);
        match (found, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((_, v)), Some(m)) => m.matches(v),
        }
    }
}

// === impl PathMatcher ===

impl Default for PathMatcher {
    /// Any path.
    fn default() -> Self {
        Self::any()
    }
}

impl PathMatcher {
    /// A path condition.
    pub fn new(kind: PathMatch, ignore_case: bool) -> Self {
        Self { kind, ignore_case }
    }

    /// Matches every path.
    pub fn any() -> Self {
        Self::new(PathMatch::Any, false)
    }

    /// How the path is compared.
    pub fn kind(&self) -> &PathMatch {
        &self.kind
    }

    /// Whether case is ignored.
    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// Whether `path` (without the query string) matches.
    pub fn matches(&self, path: &str) -> bool {
        let ic = self.ignore_case;
        match &self.kind {
            PathMatch::Any => true,
            PathMatch::Exact(p) => eq(path, p, ic),
            PathMatch::Prefix(p) => {
                path.len() >= p.len() && eq_bytes(&path.as_bytes()[..p.len()], p.as_bytes(), ic)
            }
            // Envoy ignores `case_sensitive` for regexes: write `(?i)` in the pattern instead.
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn header(kind: HeaderMatch, invert: bool) -> HeaderMatcher {
        HeaderMatcher::new(HeaderName::from_static("x-user"), kind, invert).unwrap()
    }

    #[test]
    fn string_matchers_compare_as_envoy_does() {
        let m = |k, ic| StringMatcher::new(k, ic);
        assert!(m(StringMatch::Exact("Jason".into()), false).matches("Jason"));
        assert!(!m(StringMatch::Exact("Jason".into()), false).matches("jason"));
        assert!(m(StringMatch::Exact("Jason".into()), true).matches("jASON"));
        assert!(m(StringMatch::Prefix("/api".into()), false).matches("/api/v1"));
        assert!(!m(StringMatch::Prefix("/api".into()), false).matches("/ap"));
        assert!(m(StringMatch::Suffix(".svc".into()), true).matches("a.SVC"));
        assert!(m(StringMatch::Contains("ell".into()), true).matches("HELLO"));
        assert!(m(StringMatch::Contains("".into()), true).matches(""));
        let re = Regex::new("v[0-9]+").unwrap();
        assert!(m(StringMatch::Regex(re.clone()), false).matches("v12"));
        assert!(
            !m(StringMatch::Regex(re), false).matches("xv12"),
            "regex is a full match"
        );
    }

    #[test]
    fn a_hostile_regex_is_refused() {
        assert!(Regex::new("(").is_err());
        assert!(Regex::new("a{1000}{1000}").is_err());
    }

    #[test]
    fn missing_headers_follow_envoys_rule() {
        let empty = headers(&[]);
        assert!(header(HeaderMatch::Present(false), false).matches(&empty));
        assert!(!header(HeaderMatch::Present(true), false).matches(&empty));
        assert!(header(HeaderMatch::Present(true), true).matches(&empty));
        // An inverted string matcher does not match a missing header...
        let exact = HeaderMatch::String(StringMatcher::exact("a"));
        assert!(!header(exact.clone(), true).matches(&empty));
        // ...unless the header is treated as empty.
        assert!(
            header(exact, true)
                .with_treat_missing_as_empty(true)
                .matches(&empty)
        );
    }

    #[test]
    fn multi_valued_headers_are_joined_with_commas() {
        let h = headers(&[("x-user", "a"), ("x-user", "b")]);
        assert!(header(HeaderMatch::String(StringMatcher::exact("a,b")), false).matches(&h));
        assert!(header(HeaderMatch::String(StringMatcher::exact("a")), true).matches(&h));
    }

    #[test]
    fn ranges_are_half_open_and_validated() {
        let r = header(HeaderMatch::Range { start: 10, end: 20 }, false);
        assert!(r.matches(&headers(&[("x-user", "10")])));
        assert!(!r.matches(&headers(&[("x-user", "20")])));
        assert!(!r.matches(&headers(&[("x-user", "ten")])));
        assert!(
            HeaderMatcher::new(
                HeaderName::from_static("a"),
                HeaderMatch::Range { start: 2, end: 2 },
                false
            )
            .is_err()
        );
    }

    #[test]
    fn query_parameters_match_the_first_occurrence() {
        let m = QueryParamMatcher::new("debug", Some(StringMatcher::exact("1")));
        assert!(m.matches("a=b&debug=1&debug=2"));
        assert!(!m.matches("debug=2&debug=1"));
        assert!(QueryParamMatcher::new("flag", None).matches("flag"));
        assert!(!QueryParamMatcher::new("flag", None).matches("flagx=1"));
    }

    #[test]
    fn paths_match_with_optional_case_folding() {
        let p = PathMatcher::new(PathMatch::Prefix("/Reviews".into()), true);
        assert!(p.matches("/reviews/1"));
        assert!(!PathMatcher::new(PathMatch::Exact("/a".into()), false).matches("/A"));
        let re = PathMatcher::new(PathMatch::Regex(Regex::new("/r/[a-z]+").unwrap()), true);
        assert!(
            !re.matches("/R/ABC"),
            "case folding does not apply to regexes"
        );
        assert!(re.matches("/r/abc"));
    }

    #[test]
    fn regex_rewrite_translates_envoy_groups() {
        let rw = RegexRewrite::new("^/service/([^/]+)(/.*)$", "\\2/instance/\\1").unwrap();
        assert_eq!(rw.apply("/service/foo/v1/api"), "/v1/api/instance/foo");
        let literal_dollar = RegexRewrite::new("a", "$x").unwrap();
        assert_eq!(literal_dollar.apply("bab"), "b$xb");
    }
}
