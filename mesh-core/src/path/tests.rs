use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

const NONE: PathNormalizer = PathNormalizer::new(PathNormalization::None);
const BASE: PathNormalizer = PathNormalizer::new(PathNormalization::Base);
const MERGE: PathNormalizer = PathNormalizer::new(PathNormalization::MergeSlashes);
const DECODE: PathNormalizer = PathNormalizer::new(PathNormalization::DecodeAndMergeSlashes);

fn check(normalizer: PathNormalizer, table: &[(&str, Result<&str, PathError>)]) {
    for &(input, want) in table {
        let got = normalizer.normalize(input);
        assert_eq!(
            got.as_deref().map_err(|e| *e),
            want,
            "{:?} normalizing {input:?}",
            normalizer.mode()
        );
    }
}

#[test]
fn default_is_istio_base_keeping_escaped_slashes() {
    assert_eq!(PathNormalizer::default(), BASE);
    assert_eq!(BASE.escaped_slashes(), EscapedSlashesAction::KeepUnchanged);
    assert_eq!(
        DECODE.escaped_slashes(),
        EscapedSlashesAction::UnescapeAndForward
    );
}

#[test]
fn base_follows_rfc_3986_and_envoy_normalize_path() {
    check(
        BASE,
        &[
            // Already normalized.
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("/a//b", Ok("/a//b")),
            ("/a.b/.c/..d/...", Ok("/a.b/.c/..d/...")),
            ("*", Ok("*")),
            // Istio's documented examples.
            ("/a/../b", Ok("/b")),
            ("\\da", Ok("/da")),
            ("/some\\data", Ok("/some/data")),
            ("/public/./data/abc/../xyz", Ok("/public/data/xyz")),
            ("/some%2fdata/%61%62%63", Ok("/some%2Fdata/abc")),
            // Dot segments (RFC 3986 §5.2.4), never above the root.
            ("/./admin", Ok("/admin")),
            ("/public/../admin", Ok("/admin")),
            ("/../../admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/..", Ok("/")),
            ("/..", Ok("/")),
            ("/.", Ok("/")),
            ("/a//../b", Ok("/a/b")),
            ("//.", Ok("//")),
            // Backslashes separate segments.
            ("/public\\..\\admin", Ok("/admin")),
            ("/a\\\\b", Ok("/a//b")),
            // Unreserved characters decoded once, the rest kept with upper-case hex.
            ("/%61dmin", Ok("/admin")),
            ("/files/%73ecret.txt", Ok("/files/secret.txt")),
            ("/%41%5a%30%39%2d%2e%5f%7e", Ok("/AZ09-._~")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E./admin", Ok("/admin")),
            ("/public/%2e/admin", Ok("/public/admin")),
            ("/a%3fb%20c%25", Ok("/a%3Fb%20c%25")),
            ("/%2561dmin", Ok("/%2561dmin")),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
            ("/a%2Fb", Ok("/a%2Fb")),
            ("/a%5cb", Ok("/a%5Cb")),
            ("/..%2fadmin", Ok("/..%2Fadmin")),
            // Other characters as received.
            ("/caf\u{e9}/\"{}\"", Ok("/caf\u{e9}/\"{}\"")),
            ("/caf\u{e9}/./x", Ok("/caf\u{e9}/x")),
            // Refused.
            ("/admin%00", Err(PathError::Nul)),
            ("/admin\0", Err(PathError::Nul)),
            ("/a%", Err(PathError::InvalidPercentEncoding)),
            ("/a%6", Err(PathError::InvalidPercentEncoding)),
            ("/a%zz", Err(PathError::InvalidPercentEncoding)),
            ("/a%\u{e9}", Err(PathError::InvalidPercentEncoding)),
            ("admin", Err(PathError::NotRooted)),
            ("", Err(PathError::NotRooted)),
            ("%2fadmin", Err(PathError::NotRooted)),
        ],
    );
}

#[test]
fn merge_slashes_merges_after_base() {
    check(
        MERGE,
        &[
            ("/some//data///abc", Ok("/some/data/abc")),
            ("/a//b/", Ok("/a/b/")),
            ("/a/b//", Ok("/a/b/")),
            ("//", Ok("/")),
            ("///admin", Ok("/admin")),
            ("/a\\\\b", Ok("/a/b")),
            // Envoy merges after removing dot segments.
            ("/a//../b", Ok("/a/b")),
            ("/a%2F%2Fb", Ok("/a%2F%2Fb")),
            ("/a/b/", Ok("/a/b/")),
            ("/%61dmin//", Ok("/admin/")),
        ],
    );
}

#[test]
fn decode_and_merge_slashes_decodes_escaped_slashes_first() {
    check(
        DECODE,
        &[
            ("/a%2fb", Ok("/a/b")),
            ("/a%2F/b", Ok("/a/b")),
            ("/a%5cb", Ok("/a/b")),
            ("/public%2f..%2fadmin", Ok("/admin")),
            ("/public%5C..%5Cadmin", Ok("/admin")),
            ("/some%2fdata/%61%62%63", Ok("/some/data/abc")),
            ("/%252f", Ok("/%252f")),
            ("/a%00", Err(PathError::Nul)),
        ],
    );
}

#[test]
fn escaped_slashes_can_be_refused() {
    let reject = BASE.with_escaped_slashes(EscapedSlashesAction::RejectRequest);
    check(
        reject,
        &[
            ("/a%2fb", Err(PathError::EscapedSlash)),
            ("/a%5Cb", Err(PathError::EscapedSlash)),
            ("/a%252fb", Ok("/a%252fb")),
            ("/a/b", Ok("/a/b")),
        ],
    );
    let none = NONE.with_escaped_slashes(EscapedSlashesAction::RejectRequest);
    assert_eq!(none.normalize("/a%2Fb"), Err(PathError::EscapedSlash));
}

#[test]
fn none_forwards_as_received_but_refuses_nul() {
    check(
        NONE,
        &[
            ("/public/../%61dmin", Ok("/public/../%61dmin")),
            ("/a\\b//c/%2f", Ok("/a\\b//c/%2f")),
            ("/a%zz", Ok("/a%zz")),
            ("/admin%00", Err(PathError::Nul)),
        ],
    );
    let unescape = NONE.with_escaped_slashes(EscapedSlashesAction::UnescapeAndForward);
    assert_eq!(unescape.normalize("/a%2fb%5Cc/%61").unwrap(), "/a/b\\c/%61");
}

#[test]
fn clean_paths_are_borrowed() {
    for normalizer in [NONE, BASE, MERGE, DECODE] {
        for path in ["/", "/echo.Echo/Say", "/a/b/", "/a.b/..c", "*"] {
            assert!(
                matches!(normalizer.normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }
    // Not clean on the first scan, but unchanged after normalization.
    assert!(matches!(BASE.normalize("/a%2Fb"), Ok(Cow::Borrowed(_))));
}

/// Path bytes an attacker would mix: separators, dots, escapes (valid or not), letters.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5C".to_owned()),
        Just("%25".to_owned()),
        Just("%00".to_owned()),
        Just("%".to_owned()),
        Just("\u{e9}".to_owned()),
        "%[0-9a-fA-F]{2}",
        "[a-z~_-]{1,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// A reference model, spelled out as differently as possible from the implementation:
/// decode per RFC 3986 §2.3, then RFC 3986 §5.2.4's input/output buffer algorithm on strings.
fn reference(normalizer: PathNormalizer, path: &str) -> Result<String, PathError> {
    let mut decoded = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\0' => return Err(PathError::Nul),
            '\\' => decoded.push('/'),
            '%' => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = (hex.len() == 2)
                    .then(|| u8::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .filter(|_| hex.chars().all(|c| c.is_ascii_hexdigit()))
                    .ok_or(PathError::InvalidPercentEncoding)?;
                match byte {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => match normalizer.escaped_slashes() {
                        EscapedSlashesAction::KeepUnchanged => {
                            decoded.push_str(&format!("%{byte:02X}"))
                        }
                        EscapedSlashesAction::RejectRequest => {
                            return Err(PathError::EscapedSlash);
                        }
                        EscapedSlashesAction::UnescapeAndForward => decoded.push('/'),
                    },
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        decoded.push(char::from(b))
                    }
                    b => decoded.push_str(&format!("%{b:02X}")),
                }
            }
            c => decoded.push(c),
        }
    }
    // RFC 3986 §5.2.4, literally.
    let mut input = decoded.as_str();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("/./") {
            input = &input[input.len() - rest.len() - 1..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            let cut = output.rfind('/').unwrap_or(0);
            output.truncate(cut);
        } else {
            let next = input[1..].find('/').map_or(input.len(), |i| i + 1);
            output.push_str(&input[..next]);
            input = &input[next..];
        }
    }
    if normalizer.mode() != PathNormalization::Base {
        while output.contains("//") {
            output = output.replace("//", "/");
        }
    }
    Ok(output)
}

proptest! {
    #[test]
    fn normalization_matches_the_reference_model_and_is_idempotent(path in path_strategy()) {
        for normalizer in [BASE, MERGE, DECODE, BASE.with_escaped_slashes(EscapedSlashesAction::RejectRequest)] {
            let got = normalizer.normalize(&path).map(Cow::into_owned);
            prop_assert_eq!(&got, &reference(normalizer, &path), "{:?}", normalizer);
            let Ok(once) = got else { continue };
            let twice = normalizer.normalize(&once);
            prop_assert_eq!(twice.as_deref(), Ok(once.as_str()), "idempotent");
            prop_assert!(once.starts_with('/'));
            for bad in ["/../", "/./", "\\", "%00"] {
                prop_assert!(!once.contains(bad), "{} in {}", bad, once);
            }
            prop_assert!(!once.ends_with("/..") && !once.ends_with("/."), "{}", once);
            // No escape left that decodes to an unreserved character, none in lower case.
            for (i, _) in once.match_indices('%') {
                let hex = &once[i + 1..i + 3];
                prop_assert_eq!(hex.to_ascii_uppercase(), hex);
                let byte = u8::from_str_radix(hex, 16).unwrap();
                prop_assert!(!(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)), "{}", once);
            }
            if normalizer.mode() != PathNormalization::Base {
                prop_assert!(!once.contains("//"), "{}", once);
            }
        }
    }
}
