//! Bounds on the work one source can cause: its size, its flow-collection nesting and how far
//! its aliases expand.
//!
//! The YAML parser is quadratic in the depth of flow collections (`[[[[…`: every token looks
//! at every open level; 39 KiB of unclosed `[` took 5.4 s, 195 KiB 137 s), and aliases expand
//! without bound into the value tree (92 KiB became 4 million values and 626 MiB; every request
//! then paid for them in authorization). A configuration file is edited by people and reloaded
//! while the process serves, so a broken or hostile edit must be refused quickly:
//!
//! - [`MAX_SOURCE_BYTES`] is checked before anything else;
//! - [`check_flow_nesting`] is a linear pre-scan that refuses flow collections nested deeper
//!   than [`MAX_FLOW_DEPTH`] before the parser sees the text. It follows YAML's lexical rules
//!   for comments, quoted scalars and block scalars closely enough that brackets in them are not
//!   counted (brackets a quoted scalar leaves open are), and where it has to guess it errs
//!   towards counting an opening bracket: a wrong
//!   guess can refuse an odd but valid file (with a clear message), never let a deep one
//!   through. The parser itself refuses nesting deeper than 128 anyway, so the bound only
//!   moves that refusal before the quadratic work;
//! - [`BudgetedValue`] builds the value tree while counting its nodes and stops at a budget
//!   proportional to the text: without aliases a node needs at least one byte of text, so only
//!   alias expansion can exceed it.

use std::{cell::Cell, fmt};

use serde::de::{self, DeserializeSeed, Visitor};
use yaml_serde::{Mapping, Value, value::Tag, value::TaggedValue};

/// Sources larger than this are refused before parsing. A Kubernetes ConfigMap holds at most
/// 1 MiB and etcd refuses objects over 1.5 MiB, so real configuration is far below it.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;

/// Flow collections (`[…]`, `{…}`) nested deeper than this are refused before parsing.
/// Istio resources nest flow collections two or three levels deep.
pub(super) const MAX_FLOW_DEPTH: usize = 64;

/// Values a source may hold beyond one per byte of its text (the slack covers empty values,
/// which need no text of their own).
const NODE_BUDGET_SLACK: usize = 4096;

/// The number of values a source of `len` bytes may expand to.
pub(super) fn node_budget(len: usize) -> usize {
    len.saturating_add(NODE_BUDGET_SLACK)
}

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`], naming the line.
pub(super) fn check_flow_nesting(text: &str) -> Result<(), (usize, String)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0usize;
    // Where a token may start: a quote there opens a quoted scalar, `|`/`>` a block scalar.
    let mut token_start = true;
    let mut line_start = true;
    // Indentation of the current line, and of the line that opened a block scalar.
    let mut indent = 0usize;
    let mut block_parent: Option<usize> = None;
    while i < bytes.len() {
        if line_start {
            let spaces = bytes[i..].iter().take_while(|b| **b == b' ').count();
            let rest = &bytes[i + spaces..];
            let blank = rest.first().is_none_or(|b| matches!(b, b'\n' | b'\r'));
            if let Some(parent) = block_parent {
                if blank || spaces > parent {
                    // Block scalar content: literal text, skipped with its line break.
                    i += spaces + rest.iter().take_while(|b| **b != b'\n').count() + 1;
                    line += 1;
                    continue;
                }
                block_parent = None;
            }
            indent = spaces;
            i += spaces;
            line_start = false;
            token_start = true;
            continue;
        }
        let b = bytes[i];
        match b {
            b'\n' => {
                line += 1;
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n') => {
                i += bytes[i..].iter().take_while(|b| **b != b'\n').count();
                continue;
            }
            b'\'' | b'"' if token_start => {
                // A quoted scalar. Its own brackets are balanced against each other (a regex
                // `[a-z]` counts nothing); opening brackets left open count as nesting, in case
                // this was not a quote at all; closing ones never close anything outside it.
                let mut open_inside = 0usize;
                i += 1;
                while i < bytes.len() {
                    let c = bytes[i];
                    i += 1;
                    match c {
                        b'\n' => line += 1,
                        b'\\' if b == b'"' => i += 1,
                        b'\'' if b == b'\'' && bytes.get(i) == Some(&b'\'') => i += 1,
                        c if c == b => break,
                        b'[' | b'{' => {
                            open_inside += 1;
                            if depth + open_inside > MAX_FLOW_DEPTH {
                                return Err(too_deep(line));
                            }
                        }
                        b']' | b'}' => open_inside = open_inside.saturating_sub(1),
                        _ => {}
                    }
                }
                depth += open_inside;
                token_start = false;
                continue;
            }
            b'|' | b'>' if token_start && depth == 0 => {
                // A block scalar: its content is the following lines indented more than the
                // node that holds it. The first column after `- ` indicators is at least
                // that node's indentation, so no line outside the scalar is skipped.
                let line_begin = bytes[..i]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                let mut col = indent;
                while bytes.get(line_begin + col) == Some(&b'-')
                    && bytes.get(line_begin + col + 1) == Some(&b' ')
                {
                    col += 2;
                    col += bytes[line_begin + col..]
                        .iter()
                        .take_while(|b| **b == b' ')
                        .count();
                }
                block_parent = Some(col);
                i += bytes[i..].iter().take_while(|b| **b != b'\n').count();
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(too_deep(line));
                }
                token_start = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                token_start = false;
            }
            b',' => token_start = true,
            b':' | b'-' | b'?' => {
                // An indicator when followed by a space (or, in flow, directly by a value).
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                token_start =
                    matches!(next, b' ' | b'\t' | b'\n' | b'\r') || (b == b':' && depth > 0);
            }
            b'&' | b'!' if token_start => {
                // An anchor or a tag: the node itself starts after it.
                i += bytes[i..]
                    .iter()
                    .take_while(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                    .count();
                continue;
            }
            _ => token_start = false,
        }
        i += 1;
    }
    Ok(())
}

fn too_deep(line: usize) -> (usize, String) {
    (
        line,
        format!(
            "line {line}: flow collections (`[` or `{{`) nested deeper than {MAX_FLOW_DEPTH}, refused before parsing"
        ),
    )
}

/// Builds a [`Value`] like `Value::deserialize`, but fails once more than the budget of
/// values has been built, so an alias-expanding document is refused early.
#[derive(Clone, Copy)]
pub(super) struct BudgetedValue<'b> {
    pub(super) nodes_left: &'b Cell<usize>,
    pub(super) budget: usize,
}

// === impl BudgetedValue ===

impl BudgetedValue<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.nodes_left.get().checked_sub(1) {
            Some(left) => {
                self.nodes_left.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "aliases expand to more than {} values (the bound for this file's size), refused",
                self.budget
            ))),
        }
    }
}

impl fmt::Debug for BudgetedValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetedValue")
            .field("nodes_left", &self.nodes_left.get())
            .finish()
    }
}

impl<'de> DeserializeSeed<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BudgetedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    yaml_serde::to_string(&key).unwrap_or_default().trim_end()
                )));
            }
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess as _;
        self.take()?;
        let (tag, contents) = data.variant::<String>()?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_flow_collections_only() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        assert!(check_flow_nesting(&deep).is_err());
        let ok = "[".repeat(MAX_FLOW_DEPTH);
        assert!(check_flow_nesting(&ok).is_ok());
        for text in [
            format!("# {deep}\n"),
            format!("a: x # {deep}\n"),
            format!("a: |\n  {deep}\n  {deep}\nb: 1\n"),
            format!("- k: >-\n    {deep}\n"),
            "a: \"^/v[0-9]+/[a-z]{2}$\"\n".repeat(MAX_FLOW_DEPTH * 2),
            "a: '[x]]]]'\n".repeat(MAX_FLOW_DEPTH * 2),
        ] {
            assert!(check_flow_nesting(&text).is_ok(), "{text}");
        }
        for text in [format!("a: \"{deep}\"\n"), format!("a: &x '{deep}'\n")] {
            assert!(check_flow_nesting(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn closing_brackets_in_quotes_do_not_hide_nesting() {
        let text = "[ \"]\", ".repeat(MAX_FLOW_DEPTH + 1);
        assert!(check_flow_nesting(&text).is_err());
        let text = "[ &a \"]\", ".repeat(MAX_FLOW_DEPTH + 1);
        assert!(check_flow_nesting(&text).is_err());
        let text = "[ 'it''s ]', ".repeat(MAX_FLOW_DEPTH + 1);
        assert!(check_flow_nesting(&text).is_err());
    }

    #[test]
    fn lines_after_a_block_scalar_are_scanned() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        // `other` is at the indentation of the mapping holding `key`: the scalar has ended.
        let text = format!("- key: |\n    text\n  other: {deep}\n");
        assert!(check_flow_nesting(&text).is_err());
        let text = format!("key: |\n  text\nother: {deep}\n");
        assert!(check_flow_nesting(&text).is_err());
    }
}
