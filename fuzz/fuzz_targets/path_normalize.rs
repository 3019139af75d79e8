//! Arbitrary bytes as a request path, under every normalization mode and escaped-slashes
//! action: normalizing never panics, a normalized path is rooted, has no dot segment, no
//! backslash, no `%00` and no escape of an unreserved character, and normalizing it again
//! changes nothing.
//!
//! Seeds: `fuzz/seeds/path_normalize` (`cargo +nightly fuzz run path_normalize
//! corpus/path_normalize seeds/path_normalize`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::{EscapedSlashesAction, PathNormalization, PathNormalizer};

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

const ACTIONS: [EscapedSlashesAction; 3] = [
    EscapedSlashesAction::KeepUnchanged,
    EscapedSlashesAction::RejectRequest,
    EscapedSlashesAction::UnescapeAndForward,
];

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for mode in MODES {
        for action in ACTIONS {
            let normalizer = PathNormalizer::new(mode).with_escaped_slashes(action);
            let Ok(once) = normalizer.normalize(path) else {
                continue;
            };
            let twice = normalizer.normalize(&once);
            assert_eq!(twice.as_deref(), Ok(&*once), "not idempotent: {path:?}");
            assert!(!once.contains("%00"), "{path:?} -> {once:?}");
            if mode == PathNormalization::None || once == "*" {
                continue;
            }
            assert!(once.starts_with('/'), "{path:?} -> {once:?}");
            assert!(!once.contains('\\'), "{path:?} -> {once:?}");
            for segment in once.split('/') {
                assert!(segment != "." && segment != "..", "{path:?} -> {once:?}");
            }
            if mode != PathNormalization::Base {
                assert!(!once.contains("//"), "{path:?} -> {once:?}");
            }
            let bytes = once.as_bytes();
            for (i, _) in once.match_indices('%') {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                let Some(byte) = byte else {
                    panic!("broken escape kept: {path:?} -> {once:?}");
                };
                let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
                assert!(!unreserved, "unreserved escape kept: {path:?} -> {once:?}");
            }
        }
    }
});
