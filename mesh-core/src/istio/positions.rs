//! Where each field is in the file: line and column of every key and list item, by the field
//! path diagnostics use (`spec.http[0].route[1].weight`).
//!
//! The YAML parser's values carry no positions, so the source is scanned once more, cheaply,
//! for the shapes Kubernetes manifests use: block mappings and sequences (including a
//! sequence at its key's indentation), flow mappings and sequences (`{host: a, port: 1}`),
//! comments, quoted keys and block scalars. A shape the scanner does not follow (complex keys,
//! anchors merged into mappings, a multi-line plain scalar that looks like a key) ends the
//! index of that document early or leaves paths out: a diagnostic then has no position rather
//! than a wrong one.

use std::collections::HashMap;

use super::cursor::join;

/// Line and column (1-based) of each path of one document.
#[derive(Debug, Default)]
pub(super) struct PositionIndex {
    at: HashMap<String, (usize, usize)>,
}

/// One open block collection.
#[derive(Debug)]
struct Frame {
    indent: usize,
    path: String,
    /// The next item's index for a sequence; `None` for a mapping.
    next_item: Option<usize>,
}

/// Scans `text` (a whole source) into one index per document, in the parser's document order.
pub(super) fn index(text: &str) -> Vec<PositionIndex> {
    let mut scanner = Scanner::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        i = scanner.line(&lines, i);
    }
    scanner.finish()
}

// === impl PositionIndex ===

impl PositionIndex {
    /// The position of `path`, else of its nearest ancestor that has one.
    pub(super) fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(at) = self.at.get(path) {
                return Some(*at);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

#[derive(Debug, Default)]
struct Scanner {
    done: Vec<PositionIndex>,
    current: PositionIndex,
    /// The current document has content (or was opened by `---`).
    open: bool,
    frames: Vec<Frame>,
    /// A key whose value starts on a later line: (indent, path).
    pending: Option<(usize, String)>,
    /// The current document's structure is not followed any further.
    lost: bool,
}

// === impl Scanner ===

impl Scanner {
    fn finish(mut self) -> Vec<PositionIndex> {
        if self.open {
            self.done.push(std::mem::take(&mut self.current));
        }
        self.done
    }

    fn new_document(&mut self) {
        if self.open {
            self.done.push(std::mem::take(&mut self.current));
        }
        self.open = true;
        self.frames.clear();
        self.pending = None;
        self.lost = false;
    }

    /// Reads line `i`; returns the index of the next line to read.
    fn line(&mut self, lines: &[&str], i: usize) -> usize {
        let raw = lines[i];
        let line_no = i + 1;
        if raw.starts_with("---") && raw[3..].chars().next().is_none_or(char::is_whitespace) {
            self.new_document();
            return i + 1;
        }
        if raw.starts_with("...") && raw[3..].trim().is_empty() {
            // End of document: the next content opens a new one.
            if self.open {
                self.done.push(std::mem::take(&mut self.current));
            }
            self.open = false;
            self.frames.clear();
            self.pending = None;
            return i + 1;
        }
        let content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        if content.is_empty() || content.starts_with('#') || raw.starts_with('%') {
            return i + 1;
        }
        if !self.open {
            self.new_document();
        }
        if self.lost || content.starts_with('\t') {
            self.lost = true;
            return i + 1;
        }
        self.node(lines, i, line_no, indent, content)
    }

    /// A block node starting at column `indent` (0-based) of line `i`.
    fn node(
        &mut self,
        lines: &[&str],
        i: usize,
        line_no: usize,
        indent: usize,
        content: &str,
    ) -> usize {
        if content == "-" || content.starts_with("- ") {
            let Some(item) = self.sequence_item(indent) else {
                self.lost = true;
                return i + 1;
            };
            self.current.at.insert(item.clone(), (line_no, indent + 1));
            let rest = content[1..].trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.pending = Some((indent, item));
                return i + 1;
            }
            let column = indent + (content.len() - rest.len());
            if rest.starts_with("- ") || rest == "-" {
                self.lost = true; // A sequence in a sequence on one line: rare, not followed.
                return i + 1;
            }
            if let Some(key_end) = key_end(rest) {
                // A mapping inside the item, at the column after the dash.
                self.frames.push(Frame {
                    indent: column,
                    path: item,
                    next_item: None,
                });
                return self.key(lines, i, line_no, column, rest, key_end);
            }
            return self.value(lines, i, column, rest, item, indent);
        }
        if let Some(key_end) = key_end(content) {
            if !self.mapping_at(indent) {
                self.lost = true;
                return i + 1;
            }
            return self.key(lines, i, line_no, indent, content, key_end);
        }
        // A scalar or flow collection on its own line: a pending key's value.
        if let Some((_, path)) = self.pending.take() {
            return self.value(lines, i, indent, content, path, indent);
        }
        i + 1
    }

    /// Opens or continues the sequence whose item starts at `indent`; returns the item's path.
    fn sequence_item(&mut self, indent: usize) -> Option<String> {
        if let Some((key_indent, path)) = self.pending.take() {
            if indent >= key_indent {
                self.frames.push(Frame {
                    indent,
                    path,
                    next_item: Some(0),
                });
            } else {
                return None;
            }
        } else {
            while self
                .frames
                .last()
                .is_some_and(|f| f.indent > indent || (f.indent == indent && f.next_item.is_none()))
            {
                self.frames.pop();
            }
        }
        let frame = self.frames.last_mut().filter(|f| f.indent == indent)?;
        let n = frame.next_item.as_mut()?;
        let path = format!("{}[{n}]", frame.path);
        *n += 1;
        Some(path)
    }

    /// Makes the mapping at `indent` current: a pending key's value, the root, or an open one.
    fn mapping_at(&mut self, indent: usize) -> bool {
        if let Some((key_indent, path)) = self.pending.take()
            && indent > key_indent
        {
            self.frames.push(Frame {
                indent,
                path,
                next_item: None,
            });
            return true;
        }
        while self
            .frames
            .last()
            .is_some_and(|f| f.indent > indent || (f.indent == indent && f.next_item.is_some()))
        {
            self.frames.pop();
        }
        if self.frames.is_empty() {
            self.frames.push(Frame {
                indent,
                path: String::new(),
                next_item: None,
            });
        }
        self.frames
            .last()
            .is_some_and(|f| f.indent == indent && f.next_item.is_none())
    }

    /// A `key: value` whose key starts at `column` (0-based) and ends at `key_end` in `text`.
    fn key(
        &mut self,
        lines: &[&str],
        i: usize,
        line_no: usize,
        column: usize,
        text: &str,
        key_end: usize,
    ) -> usize {
        let Some(key) = unquote(&text[..key_end]) else {
            self.lost = true;
            return i + 1;
        };
        let parent = self.frames.last().map(|f| f.path.as_str()).unwrap_or("");
        let path = join(parent, &key);
        self.current.at.insert(path.clone(), (line_no, column + 1));
        let after = &text[key_end + 1..];
        let value = after.trim_start_matches(' ');
        let value_column = column + key_end + 1 + (after.len() - value.len());
        if value.is_empty() || value.starts_with('#') {
            self.pending = Some((column, path));
            return i + 1;
        }
        self.value(lines, i, value_column, value, path, column)
    }

    /// A value starting at `column` of line `i`, of the node at `path` whose key or dash is at
    /// `owner_indent`.
    fn value(
        &mut self,
        lines: &[&str],
        i: usize,
        column: usize,
        value: &str,
        path: String,
        owner_indent: usize,
    ) -> usize {
        if value.starts_with('{') || value.starts_with('[') {
            let mut flow = Flow {
                lines,
                line: i,
                column,
                index: &mut self.current,
            };
            return match flow.collection(&path) {
                Some(()) => flow.line + 1,
                None => {
                    self.lost = true;
                    flow.line + 1
                }
            };
        }
        if value.starts_with('|') || value.starts_with('>') {
            // A block scalar: its lines are text, indented more than its owner.
            let mut next = i + 1;
            while next < lines.len() {
                let l = lines[next];
                let body = l.trim_start_matches(' ');
                if !body.is_empty() && l.len() - body.len() <= owner_indent {
                    break;
                }
                next += 1;
            }
            return next;
        }
        if value.starts_with('&') || value.starts_with('*') || value.starts_with('!') {
            // Anchors, aliases and tags: the value's shape is not followed.
            if !value.contains(' ') {
                self.pending = Some((owner_indent, path));
            }
        }
        i + 1
    }
}

/// The byte offset of the `:` ending a block mapping key at the start of `text`, if the line
/// is `key: value` or `key:`.
fn key_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if matches!(
        first,
        b'{' | b'[' | b'?' | b'&' | b'*' | b'!' | b'|' | b'>' | b'#'
    ) {
        return None;
    }
    let mut i = 0;
    if first == b'"' || first == b'\'' {
        i = closing_quote(text, 0)? + 1;
        let rest = text[i..].trim_start_matches(' ');
        let colon = i + (text.len() - i - rest.len());
        return (rest.starts_with(':') && followed_by_space(text, colon)).then_some(colon);
    }
    while i < bytes.len() {
        match bytes[i] {
            b':' if followed_by_space(text, i) => return Some(i),
            b'#' if i > 0 && bytes[i - 1] == b' ' => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

fn followed_by_space(text: &str, i: usize) -> bool {
    text.as_bytes().get(i + 1).is_none_or(|b| *b == b' ')
}

/// The offset of the quote closing the one at `start`.
fn closing_quote(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 1,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            b if b == quote => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A key as written: plain (trailing spaces dropped) or quoted without escapes.
fn unquote(key: &str) -> Option<String> {
    let key = key.trim_end_matches(' ');
    match key.as_bytes().first() {
        Some(b'"') | Some(b'\'') => {
            let inner = key.get(1..key.len().checked_sub(1)?)?;
            (!inner.contains('\\') && !inner.contains("''")).then(|| inner.to_string())
        }
        Some(_) => Some(key.to_string()),
        None => None,
    }
}

/// A flow collection being scanned, possibly over several lines.
struct Flow<'a, 'i> {
    lines: &'a [&'a str],
    line: usize,
    /// Byte offset in the current line.
    column: usize,
    index: &'i mut PositionIndex,
}

// === impl Flow ===

impl Flow<'_, '_> {
    fn peek(&mut self) -> Option<u8> {
        loop {
            let line = self.lines.get(self.line)?.as_bytes();
            match line.get(self.column) {
                Some(b' ') => self.column += 1,
                Some(b'#') if self.column == 0 || line[self.column - 1] == b' ' => {
                    self.column = line.len();
                }
                Some(b) => return Some(*b),
                None => {
                    self.line += 1;
                    self.column = 0;
                }
            }
        }
    }

    fn here(&self) -> (usize, usize) {
        let line = self.lines.get(self.line).copied().unwrap_or("");
        let chars = line
            .get(..self.column)
            .map_or(self.column, |s| s.chars().count());
        (self.line + 1, chars + 1)
    }

    /// A `{...}` or `[...]` at the cursor, for `path`.
    fn collection(&mut self, path: &str) -> Option<()> {
        match self.peek()? {
            b'{' => {
                self.column += 1;
                loop {
                    let before = (self.line, self.column);
                    match self.peek()? {
                        b'}' => {
                            self.column += 1;
                            return Some(());
                        }
                        b',' => self.column += 1,
                        _ => {
                            let at = self.here();
                            let key = self.scalar()?;
                            let key_path = join(path, &key);
                            self.index.at.insert(key_path.clone(), at);
                            if self.peek()? == b':' {
                                self.column += 1;
                                self.item(&key_path)?;
                            }
                        }
                    }
                    self.progressed(before)?;
                }
            }
            b'[' => {
                self.column += 1;
                let mut n = 0usize;
                loop {
                    let before = (self.line, self.column);
                    match self.peek()? {
                        b']' => {
                            self.column += 1;
                            return Some(());
                        }
                        b',' => self.column += 1,
                        _ => {
                            let item = format!("{path}[{n}]");
                            n += 1;
                            let at = self.here();
                            self.index.at.insert(item.clone(), at);
                            self.item(&item)?;
                        }
                    }
                    self.progressed(before)?;
                }
            }
            _ => None,
        }
    }

    /// `Some` when the cursor moved since `before`: a shape the scanner does not follow must
    /// end it, not loop.
    fn progressed(&self, before: (usize, usize)) -> Option<()> {
        (before != (self.line, self.column)).then_some(())
    }

    /// A value: a nested collection or a scalar.
    fn item(&mut self, path: &str) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' => self.collection(path),
            b',' | b'}' | b']' => Some(()),
            _ => self.scalar().map(drop),
        }
    }

    /// A scalar in flow context; the cursor ends after it.
    fn scalar(&mut self) -> Option<String> {
        self.peek()?;
        let line = *self.lines.get(self.line)?;
        let bytes = line.as_bytes();
        let start = self.column;
        if matches!(bytes[start], b'"' | b'\'') {
            let end = closing_quote(line, start)?;
            self.column = end + 1;
            return unquote(&line[start..=end]);
        }
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b',' | b'{' | b'}' | b'[' | b']' => break,
                b':' if bytes
                    .get(end + 1)
                    .is_none_or(|b| matches!(b, b' ' | b',' | b'}' | b']')) =>
                {
                    break;
                }
                _ => end += 1,
            }
        }
        self.column = end;
        Some(line[start..end].trim_end_matches(' ').to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, document: usize, path: &str) -> Option<(usize, usize)> {
        index(text).get(document)?.at.get(path).copied()
    }

    const VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts:
  - reviews   # a comment
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination:
        host: reviews
        subset: v2
      weigth: 80
    - {destination: {host: reviews, subset: v1}, weight: 20}
    description: |
      text: that is not a key
        - nor an item
    timeout: 3s
---
kind: DestinationRule
\"spec\":
  trafficPolicy: {outlierDetection: {consecutive5xxError: 3,
    interval: 10s}}
";

    #[test]
    fn every_key_and_item_of_block_and_flow_styles_is_located() {
        assert_eq!(at(VS, 0, "kind"), Some((2, 1)));
        assert_eq!(at(VS, 0, "metadata.namespace"), Some((3, 27)));
        assert_eq!(at(VS, 0, "spec.hosts[0]"), Some((6, 3)));
        assert_eq!(at(VS, 0, "spec.http[0]"), Some((8, 3)));
        assert_eq!(
            at(VS, 0, "spec.http[0].match[0].headers.end-user.exact"),
            Some((10, 20))
        );
        assert_eq!(
            at(VS, 0, "spec.http[0].route[0].destination.subset"),
            Some((14, 9))
        );
        assert_eq!(at(VS, 0, "spec.http[0].route[0].weigth"), Some((15, 7)));
        assert_eq!(
            at(VS, 0, "spec.http[0].route[1].destination.subset"),
            Some((16, 37))
        );
        assert_eq!(at(VS, 0, "spec.http[0].route[1].weight"), Some((16, 50)));
        assert_eq!(at(VS, 0, "spec.http[0].description.text"), None);
        assert_eq!(at(VS, 0, "spec.http[0].timeout"), Some((20, 5)));
        assert_eq!(
            at(
                VS,
                1,
                "spec.trafficPolicy.outlierDetection.consecutive5xxError"
            ),
            Some((24, 38))
        );
        assert_eq!(
            at(VS, 1, "spec.trafficPolicy.outlierDetection.interval"),
            Some((25, 5))
        );
    }

    #[test]
    fn a_missing_field_is_located_at_its_nearest_ancestor() {
        let docs = index(VS);
        assert_eq!(
            docs[0].find("spec.http[0].route[0].destination.port"),
            Some((12, 7))
        );
        assert_eq!(docs[0].find("nowhere"), None);
    }

    #[test]
    fn documents_are_counted_as_the_parser_counts_them() {
        assert_eq!(index("a: 1\n---\nb: 2\n").len(), 2);
        assert_eq!(index("---\na: 1\n").len(), 1);
        assert_eq!(index("# only a comment\n---\na: 1\n---\n").len(), 2);
        assert_eq!(at("---\n---\nb: 2\n", 1, "b"), Some((3, 1)));
    }
}
