//! Request path normalization, as Istio configures Envoy (`pathNormalization`), so that
//! authorization, routing and the application all see one path.
//!
//! Authorization compares strings, applications compare meanings: without normalization a
//! DENY on `/admin` is dodged by `/%61dmin`, `/public/../admin` or `/public\..\admin`, which the
//! application's router or file server then resolves to `/admin` (CVE-2021-31920 and
//! relatives). The server normalizes the path once, judges the normalized path, and forwards
//! that same path to the handler.
//!
//! # Modes
//!
//! [`PathNormalization`] follows Istio's `MeshConfig.pathNormalization`; each mode adds to the
//! previous one, in Envoy's order:
//!
//! - [`None`](PathNormalization::None): the path is judged and forwarded as received.
//! - [`Base`](PathNormalization::Base) (Istio's default), Envoy's `normalize_path`:
//!   - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded,
//!     once (`%2561` stays `%2561`); every other triplet is kept with upper-case hex digits
//!     (`%3f` → `%3F`, RFC 3986 §6.2.2.1);
//!   - a backslash is a slash (`\da` → `/da`), as Envoy's URL canonicalizer treats it;
//!   - dot segments are removed (RFC 3986 §5.2.4), including those spelled `%2e`;
//!     `..` never climbs above the root.
//! - [`MergeSlashes`](PathNormalization::MergeSlashes), Envoy's `merge_slashes`: runs of
//!   slashes become one (`/a//b` → `/a/b`).
//! - [`DecodeAndMergeSlashes`](PathNormalization::DecodeAndMergeSlashes): escaped slashes
//!   (`%2F`, `%5C`, any case) are decoded before everything else (Envoy's
//!   `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`), so `/a%2fb` → `/a/b`.
//!
//! What happens to escaped slashes is Envoy's separate [`EscapedSlashesAction`]; Istio derives
//! it from the mode ([`PathNormalizer::new`]) and it can be set on its own.
//!
//! # Rejections
//!
//! A path is refused ([`PathError`], answered 400 / `INVALID_ARGUMENT` by the server) when:
//!
//! - it contains `%00` (any mode: Istio always rejects it) or a raw NUL;
//! - it has a `%` not followed by two hex digits (every mode but `None`): Envoy's header
//!   validator rejects it too, and such a path has no single meaning (an application may keep
//!   it, drop it or decode half of it);
//! - it contains an escaped slash under [`EscapedSlashesAction::RejectRequest`];
//! - it does not start with `/` after backslashes became slashes (the asterisk-form `*` of
//!   `OPTIONS *` is accepted unchanged).
//!
//! # Scope
//!
//! The input is the path alone: the caller splits off the query (`?...`), which is kept as
//! received (Istio's authorization ignores it; the application sees it unchanged). Other
//! characters are kept as received: the HTTP parser has already refused those a path cannot
//! hold, and what is left is seen alike by policy and application.
//!
//! # Cost
//!
//! A clean path (no `%`, no `\`, no dot segment, no empty segment where slashes merge) is
//! recognized by one scan and returned borrowed; only a path that changes is copied.

use std::borrow::Cow;

/// Istio's `MeshConfig.ProxyPathNormalization.NormalizationType`. Default is
/// [`Base`](Self::Base), Istio's default. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathNormalization {
    /// `NONE`: no normalization (`%00` is still refused).
    None,
    /// `BASE`: RFC 3986 normalization plus backslashes as slashes (Envoy's `normalize_path`).
    #[default]
    Base,
    /// `MERGE_SLASHES`: `BASE`, then runs of slashes merged.
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: escaped slashes decoded, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

/// Envoy's `path_with_escaped_slashes_action`: what a `%2F` or `%5C` (any case) in the path
/// does. Envoy's `UNESCAPE_AND_REDIRECT` is not offered: a server inside the application has
/// no proxy in front of it to follow the redirect to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashesAction {
    /// `KEEP_UNCHANGED`: kept escaped (hex digits upper-cased outside `None`). Default.
    #[default]
    KeepUnchanged,
    /// `REJECT_REQUEST`: the request is refused with 400.
    RejectRequest,
    /// `UNESCAPE_AND_FORWARD`: decoded to `/` and `\` before the rest of normalization.
    UnescapeAndForward,
}

/// A normalization mode and an escaped-slashes action: everything [`normalize`](Self::normalize)
/// needs. Default is Istio's: [`PathNormalization::Base`] and
/// [`EscapedSlashesAction::KeepUnchanged`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathNormalizer {
    mode: PathNormalization,
    escaped_slashes: EscapedSlashesAction,
}

/// Why a path was refused. The server answers every one with 400 / `INVALID_ARGUMENT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    /// Neither `/`-rooted nor `*`.
    #[error("path does not start with `/`")]
    NotRooted,
    /// `%00` or a raw NUL byte.
    #[error("path contains a NUL character")]
    Nul,
    /// A `%` not followed by two hex digits.
    #[error("path contains an invalid percent-encoding")]
    InvalidPercentEncoding,
    /// `%2F` or `%5C` under [`EscapedSlashesAction::RejectRequest`].
    #[error("path contains an escaped slash or backslash")]
    EscapedSlash,
}

// === impl PathNormalizer ===

impl PathNormalizer {
    /// `mode` with the escaped-slashes action Istio configures for it: `UNESCAPE_AND_FORWARD`
    /// for [`DecodeAndMergeSlashes`](PathNormalization::DecodeAndMergeSlashes), else
    /// `KEEP_UNCHANGED`.
    pub const fn new(mode: PathNormalization) -> Self {
        let escaped_slashes = match mode {
            PathNormalization::DecodeAndMergeSlashes => EscapedSlashesAction::UnescapeAndForward,
            _ => EscapedSlashesAction::KeepUnchanged,
        };
        Self {
            mode,
            escaped_slashes,
        }
    }

    /// Sets Envoy's escaped-slashes action on its own (Envoy's HCM field), e.g.
    /// [`RejectRequest`](EscapedSlashesAction::RejectRequest) with [`PathNormalization::Base`].
    pub const fn with_escaped_slashes(mut self, action: EscapedSlashesAction) -> Self {
        self.escaped_slashes = action;
        self
    }

    /// The mode.
    pub const fn mode(&self) -> PathNormalization {
        self.mode
    }

    /// The escaped-slashes action.
    pub const fn escaped_slashes(&self) -> EscapedSlashesAction {
        self.escaped_slashes
    }

    /// The normalized form of `path` (a path without its query), borrowed when nothing
    /// changes, or why it is refused. Normalizing a normalized path changes nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use mesh_core::{PathError, PathNormalization, PathNormalizer};
    ///
    /// let base = PathNormalizer::default();
    /// assert_eq!(base.normalize("/public/../%61dmin")?, "/admin");
    /// assert_eq!(base.normalize("/public\\..\\admin")?, "/admin");
    /// assert_eq!(base.normalize("/admin%00"), Err(PathError::Nul));
    ///
    /// let strict = PathNormalizer::new(PathNormalization::DecodeAndMergeSlashes);
    /// assert_eq!(strict.normalize("/a%2f/b//c")?, "/a/b/c");
    /// # Ok::<(), PathError>(())
    /// ```
    pub fn normalize<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, PathError> {
        if path == "*" {
            return Ok(Cow::Borrowed(path));
        }
        if self.mode == PathNormalization::None {
            return self.escapes_only(path);
        }
        if self.is_clean(path.as_bytes()) {
            return Ok(Cow::Borrowed(path));
        }
        let decoded = self.decode(path.as_bytes())?;
        if decoded.first() != Some(&b'/') {
            return Err(PathError::NotRooted);
        }
        let merge = self.mode != PathNormalization::Base;
        let normalized = remove_dot_segments(&decoded, merge);
        if normalized == path.as_bytes() {
            return Ok(Cow::Borrowed(path));
        }
        // Only ASCII bytes were decoded or inserted, and splitting happened at ASCII `/`, so
        // the UTF-8 of the input survives; the check is cheap and keeps this free of `unsafe`.
        String::from_utf8(normalized)
            .map(Cow::Owned)
            .map_err(|_| PathError::InvalidPercentEncoding)
    }

    /// Whether `path` is already normalized, judged by one scan: rooted, no `%`, `\` or NUL, no
    /// `.`/`..` segment, and no empty segment (but a trailing one) when slashes merge.
    fn is_clean(&self, path: &[u8]) -> bool {
        let merge = self.mode != PathNormalization::Base;
        let Some((b'/', rest)) = path.split_first() else {
            return false;
        };
        if rest.iter().any(|b| matches!(b, b'%' | b'\\' | 0)) {
            return false;
        }
        let mut segments = rest.split(|&b| b == b'/').peekable();
        while let Some(segment) = segments.next() {
            let is_last = segments.peek().is_none();
            let dot = segment == b"." || segment == b"..";
            if dot || (merge && segment.is_empty() && !is_last) {
                return false;
            }
        }
        true
    }

    /// `None` mode: the path as received, but `%00` and escaped slashes get their treatment.
    fn escapes_only<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, PathError> {
        let bytes = path.as_bytes();
        if bytes.contains(&0) {
            return Err(PathError::Nul);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < bytes.len() {
            let escaped = match bytes.get(i..i + 3) {
                Some([b'%', hi, lo]) => hex_pair(*hi, *lo),
                _ => None,
            };
            match escaped {
                Some(0) => return Err(PathError::Nul),
                Some(slash @ (b'/' | b'\\')) => match self.escaped_slashes {
                    EscapedSlashesAction::KeepUnchanged => {}
                    EscapedSlashesAction::RejectRequest => return Err(PathError::EscapedSlash),
                    EscapedSlashesAction::UnescapeAndForward => {
                        let out = out.get_or_insert_with(|| bytes[..i].to_vec());
                        out.push(slash);
                        i += 3;
                        continue;
                    }
                },
                _ => {}
            }
            if let Some(out) = out.as_mut() {
                out.push(bytes[i]);
            }
            i += 1;
        }
        match out {
            None => Ok(Cow::Borrowed(path)),
            Some(out) => String::from_utf8(out)
                .map(Cow::Owned)
                .map_err(|_| PathError::InvalidPercentEncoding),
        }
    }

    /// Decodes what the mode decodes, upper-cases the hex of what it keeps escaped, and turns
    /// backslashes into slashes.
    fn decode(&self, path: &[u8]) -> Result<Vec<u8>, PathError> {
        let mut out = Vec::with_capacity(path.len());
        let mut i = 0;
        while i < path.len() {
            match path[i] {
                0 => return Err(PathError::Nul),
                b'\\' => out.push(b'/'),
                b'%' => {
                    let (hi, lo) = match path.get(i + 1..i + 3) {
                        Some(&[hi, lo]) => (hi, lo),
                        _ => return Err(PathError::InvalidPercentEncoding),
                    };
                    let byte = hex_pair(hi, lo).ok_or(PathError::InvalidPercentEncoding)?;
                    match byte {
                        0 => return Err(PathError::Nul),
                        b'/' | b'\\' => match self.escaped_slashes {
                            EscapedSlashesAction::KeepUnchanged => push_escaped(&mut out, byte),
                            EscapedSlashesAction::RejectRequest => {
                                return Err(PathError::EscapedSlash);
                            }
                            // Backslash or slash, it separates segments from here on.
                            EscapedSlashesAction::UnescapeAndForward => out.push(b'/'),
                        },
                        _ if is_unreserved(byte) => out.push(byte),
                        _ => push_escaped(&mut out, byte),
                    }
                    i += 3;
                    continue;
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        Ok(out)
    }
}

/// RFC 3986 §5.2.4 on a rooted path, segment by segment: `.` goes, `..` drops the previous
/// segment (never past the root; an empty segment counts), and a path ending in a dot segment
/// keeps a trailing slash. With `merge`, empty segments then go too (a trailing slash stays):
/// Envoy merges slashes after `normalize_path`, so `/a//../b` is `/a/b`, not `/b`.
fn remove_dot_segments(path: &[u8], merge: bool) -> Vec<u8> {
    let rest = path.get(1..).unwrap_or_default();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        match segment {
            b"." => trailing_slash = is_last,
            b".." => {
                kept.pop();
                trailing_slash = is_last;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    if merge {
        trailing_slash |= kept.last().is_some_and(|segment| segment.is_empty());
        kept.retain(|segment| !segment.is_empty());
    }
    let mut out = Vec::with_capacity(path.len());
    out.push(b'/');
    for (n, segment) in kept.iter().enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    if trailing_slash && !kept.is_empty() {
        out.push(b'/');
    }
    out
}

/// RFC 3986 §2.3 unreserved characters: always safe to decode.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

/// `%XX` with upper-case hex digits.
fn push_escaped(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(byte >> 4)]);
    out.push(HEX[usize::from(byte & 0x0f)]);
}

#[cfg(test)]
mod tests;
