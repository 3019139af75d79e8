//! A path-tracking cursor over a YAML value that reports every problem with its location.
//!
//! Istio resources are walked field by field rather than deserialized into structs so that a
//! single pass can report *every* wrong field (not only the first, as serde would) with its
//! exact path, and so that a field nobody read is reported as unsupported instead of being
//! silently dropped: an [`Obj`] remembers which keys were read and warns about the rest when
//! it is dropped.

use std::{cell::RefCell, sync::Arc, time::Duration};

use yaml_serde::{Mapping, Value};

use super::{Diagnostic, duration, positions::PositionIndex};

/// Where the current document came from, stamped on every diagnostic.
#[derive(Clone, Debug)]
pub(super) struct Ctx {
    pub(super) file: Arc<str>,
    pub(super) document: usize,
    pub(super) resource: Option<String>,
    /// Where each field of the document is, for the line and column of its diagnostics.
    pub(super) positions: Option<Arc<PositionIndex>>,
}

/// The collected diagnostics of a load.
#[derive(Debug, Default)]
pub(super) struct Diags {
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    /// Unknown fields and kinds are warnings rather than errors ([`super::LoadOptions`]).
    pub(super) lenient: bool,
}

/// A cheap handle to report diagnostics for one document.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cx<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) diags: &'a RefCell<Diags>,
}

/// A YAML mapping being read, with its path.
#[derive(Debug)]
pub(super) struct Obj<'a> {
    map: &'a Mapping,
    path: String,
    used: Vec<&'a str>,
    /// Every key was read (by [`Obj::entries`]).
    all_used: bool,
    /// Unknown fields are errors rather than warnings (security policies: ignoring a misspelt
    /// condition would widen what a rule allows).
    strict: bool,
    cx: Cx<'a>,
}

/// Any YAML value being read, with its path.
#[derive(Clone, Debug)]
pub(super) struct Node<'a> {
    pub(super) value: &'a Value,
    pub(super) path: String,
    pub(super) cx: Cx<'a>,
}

// === impl Cx ===

impl<'a> Cx<'a> {
    fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.ctx.file.to_string(),
            document: self.ctx.document,
            resource: self.ctx.resource.clone(),
            path: path.to_string(),
            message: message.into(),
            position: self.ctx.positions.as_ref().and_then(|p| p.find(path)),
        }
    }

    /// Reports an error at `path` whose position in the file is known.
    pub(super) fn error_at(&self, path: &str, message: impl Into<String>, at: (usize, usize)) {
        let mut d = self.diagnostic(path, message);
        d.position = Some(at);
        self.diags.borrow_mut().errors.push(d);
    }

    /// Reports an error at `path`.
    pub(super) fn error(&self, path: &str, message: impl Into<String>) {
        let d = self.diagnostic(path, message);
        self.diags.borrow_mut().errors.push(d);
    }

    /// Reports a warning at `path`.
    pub(super) fn warn(&self, path: &str, message: impl Into<String>) {
        let d = self.diagnostic(path, message);
        self.diags.borrow_mut().warnings.push(d);
    }

    /// Reports an unknown field or kind: an error, or a warning when loading leniently.
    pub(super) fn unknown(&self, path: &str, message: impl Into<String>) {
        let message = message.into();
        if self.diags.borrow().lenient {
            self.warn(path, format!("{message}, ignored"));
        } else {
            self.error(
                path,
                format!("{message} (a typo? load leniently to ignore it with a warning)"),
            );
        }
    }

    /// How many errors were reported so far (to tell whether a resource was clean).
    pub(super) fn error_count(&self) -> usize {
        self.diags.borrow().errors.len()
    }
}

/// Joins a path and a key.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Looks through YAML tags (`!foo value`), which Istio does not use.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

// === impl Node ===

impl<'a> Node<'a> {
    pub(super) fn new(value: &'a Value, path: String, cx: Cx<'a>) -> Self {
        Self {
            value: untag(value),
            path,
            cx,
        }
    }

    pub(super) fn error(&self, message: impl Into<String>) {
        self.cx.error(&self.path, message);
    }

    fn wrong(&self, expected: &str) {
        self.error(format!(
            "expected {expected}, found {}",
            type_name(self.value)
        ));
    }

    /// The mapping, or an error.
    pub(super) fn obj(&self) -> Option<Obj<'a>> {
        match self.value {
            Value::Mapping(map) => Some(Obj {
                map,
                path: self.path.clone(),
                used: Vec::new(),
                all_used: false,
                strict: false,
                cx: self.cx,
            }),
            _ => {
                self.wrong("a mapping");
                None
            }
        }
    }

    /// The string, or an error.
    pub(super) fn str(&self) -> Option<&'a str> {
        match self.value {
            Value::String(s) => Some(s),
            _ => {
                self.wrong("a string");
                None
            }
        }
    }

    /// A non-negative integer of at most `max`, or an error.
    pub(super) fn uint(&self, max: u64) -> Option<u64> {
        match self.value {
            Value::Number(n) => match n.as_u64() {
                Some(v) if v <= max => Some(v),
                Some(v) => {
                    self.error(format!("{v} is out of range (at most {max})"));
                    None
                }
                None => {
                    self.error(format!("{n} is not a non-negative integer"));
                    None
                }
            },
            _ => {
                self.wrong("a non-negative integer");
                None
            }
        }
    }

    /// A number, or an error.
    pub(super) fn f64(&self) -> Option<f64> {
        match self.value {
            Value::Number(n) => n.as_f64(),
            _ => {
                self.wrong("a number");
                None
            }
        }
    }

    /// A boolean, or an error.
    pub(super) fn bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong("true or false");
                None
            }
        }
    }

    /// A duration string, or an error.
    pub(super) fn duration(&self) -> Option<Duration> {
        let s = self.str()?;
        match duration::parse(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(e);
                None
            }
        }
    }

    /// The items of a list, or an error.
    pub(super) fn list(&self) -> Vec<Node<'a>> {
        match self.value {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Node::new(v, format!("{}[{i}]", self.path), self.cx))
                .collect(),
            _ => {
                self.wrong("a list");
                Vec::new()
            }
        }
    }

    /// A list of strings; wrong items are reported and skipped.
    pub(super) fn str_list(&self) -> Vec<(String, &'a str)> {
        self.list()
            .into_iter()
            .filter_map(|n| n.str().map(|s| (n.path.clone(), s)))
            .collect()
    }

    /// A mapping of strings to strings (labels, headers); wrong entries are reported and
    /// skipped.
    pub(super) fn str_map(&self) -> Vec<(&'a str, &'a str)> {
        let Some(mut obj) = self.obj() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, n) in obj.entries() {
            if let Some(v) = n.str() {
                out.push((k, v));
            }
        }
        out
    }
}

// === impl Obj ===

impl<'a> Obj<'a> {
    /// Unknown fields of this mapping are errors instead of warnings.
    pub(super) fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    pub(super) fn cx(&self) -> Cx<'a> {
        self.cx
    }

    /// The path of a field.
    pub(super) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Reports an error on a field.
    pub(super) fn error(&self, key: &str, message: impl Into<String>) {
        self.cx.error(&self.at(key), message);
    }

    /// Reports an error on the mapping itself.
    pub(super) fn error_here(&self, message: impl Into<String>) {
        self.cx.error(&self.path, message);
    }

    /// Reports a warning on a field.
    pub(super) fn warn(&self, key: &str, message: impl Into<String>) {
        self.cx.warn(&self.at(key), message);
    }

    /// Reads a field; `null` is absent. Marks it as read.
    pub(super) fn node(&mut self, key: &'static str) -> Option<Node<'a>> {
        self.used.push(key);
        let v = untag(self.map.get(key)?);
        if v.is_null() {
            return None;
        }
        Some(Node::new(v, self.at(key), self.cx))
    }

    /// Whether the field is present (not null). Does not mark it as read.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !untag(v).is_null())
    }

    /// Marks a field as known but not supported: a warning if present.
    pub(super) fn unsupported(&mut self, key: &'static str) {
        if self.node(key).is_some() {
            self.warn(key, "field is not supported, ignored");
        }
    }

    /// Marks a field as read without looking at it.
    pub(super) fn skip(&mut self, key: &'static str) {
        self.used.push(key);
    }

    pub(super) fn obj(&mut self, key: &'static str) -> Option<Obj<'a>> {
        self.node(key)?.obj()
    }

    pub(super) fn str(&mut self, key: &'static str) -> Option<&'a str> {
        self.node(key)?.str()
    }

    /// A string that must be present.
    pub(super) fn req_str(&mut self, key: &'static str) -> Option<&'a str> {
        if !self.has(key) {
            self.used.push(key);
            self.error(key, "required field is missing");
            return None;
        }
        self.str(key)
    }

    pub(super) fn u32(&mut self, key: &'static str) -> Option<u32> {
        self.node(key)?
            .uint(u64::from(u32::MAX))
            .and_then(|v| u32::try_from(v).ok())
    }

    pub(super) fn port(&mut self, key: &'static str) -> Option<u16> {
        let n = self.node(key)?;
        let v = n.uint(u64::from(u16::MAX))?;
        if v == 0 {
            n.error("port 0 is not a valid port");
            return None;
        }
        u16::try_from(v).ok()
    }

    pub(super) fn u64(&mut self, key: &'static str) -> Option<u64> {
        self.node(key)?.uint(u64::MAX)
    }

    pub(super) fn bool(&mut self, key: &'static str) -> Option<bool> {
        self.node(key)?.bool()
    }

    pub(super) fn duration(&mut self, key: &'static str) -> Option<Duration> {
        self.node(key)?.duration()
    }

    pub(super) fn list(&mut self, key: &'static str) -> Vec<Node<'a>> {
        self.node(key).map(|n| n.list()).unwrap_or_default()
    }

    pub(super) fn str_list(&mut self, key: &'static str) -> Vec<(String, &'a str)> {
        self.node(key).map(|n| n.str_list()).unwrap_or_default()
    }

    pub(super) fn str_map(&mut self, key: &'static str) -> Vec<(&'a str, &'a str)> {
        self.node(key).map(|n| n.str_map()).unwrap_or_default()
    }

    /// Takes every field as read, without looking at any (a document that is not ours).
    pub(super) fn ignore_rest(&mut self) {
        self.all_used = true;
    }

    /// Every entry as (key, value); entries whose key is not a string are reported. Marks the
    /// whole mapping as read.
    pub(super) fn entries(&mut self) -> Vec<(&'a str, Node<'a>)> {
        let mut out = Vec::new();
        self.all_used = true;
        for (k, v) in self.map {
            match untag(k) {
                Value::String(k) => {
                    out.push((k.as_str(), Node::new(v, self.at(k), self.cx)));
                }
                other => {
                    self.cx.error(
                        &self.path,
                        format!("keys must be strings, found {}", type_name(other)),
                    );
                }
            }
        }
        out
    }

    /// An enum field: one of `allowed` (case-sensitive, as Istio's proto enums).
    pub(super) fn enumeration(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let n = self.node(key)?;
        let s = n.str()?;
        match allowed.iter().find(|a| **a == s) {
            Some(a) => Some(*a),
            None => {
                n.error(format!("`{s}` is not one of {}", allowed.join(", ")));
                None
            }
        }
    }
}

impl Drop for Obj<'_> {
    /// Reports every field nobody read: unsupported fields are never silently dropped.
    fn drop(&mut self) {
        if self.all_used {
            return;
        }
        for k in self.map.keys() {
            let name = match untag(k) {
                Value::String(s) => s.as_str(),
                // Non-string keys were reported by `entries` or are reported here.
                _ => "<non-string key>",
            };
            if self.used.contains(&name) {
                continue;
            }
            let path = join(&self.path, name);
            let hint = closest(name, &self.used)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            if self.strict {
                self.cx.error(
                    &path,
                    format!("unknown or unsupported field in a security policy{hint}: rejected, since ignoring it could widen access"),
                );
            } else {
                self.cx
                    .unknown(&path, format!("unknown field `{name}`{hint}"));
            }
        }
    }
}

/// The known field closest to a misspelt one, if it is close enough to be the likely intent:
/// at most two single-character edits (or one for short names).
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = if name.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (field names are ASCII), with adjacent transpositions
/// counted as one edit (`weigth` is one edit from `weight`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // Field names are short; a long input is not a typo of one.
    if a.len().abs_diff(b.len()) > 2 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Whether `name` is a likely misspelling of `known`.
pub(super) fn is_typo_of(name: &str, known: &str) -> bool {
    closest(name, &[known]).is_some()
}
