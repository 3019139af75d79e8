//! Input built to make the parser slow or the model huge is refused quickly.

use std::time::{Duration, Instant};

use super::*;

/// Loads `text` and returns (errors, elapsed).
fn timed_errors(text: &str) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let result = load_str("mesh.yaml", text);
    let elapsed = start.elapsed();
    match result {
        Ok(_) => panic!("hostile input loaded"),
        Err(e) => (
            e.errors().iter().map(ToString::to_string).collect(),
            elapsed,
        ),
    }
}

#[test]
fn unclosed_flow_collections_are_refused_quickly() {
    for text in [
        "[".repeat(200 * 1024),
        "a: ".to_string() + &"[a, {b: ".repeat(20 * 1024),
        "- ".to_string() + &"[ \"]\", ".repeat(20 * 1024),
    ] {
        let (errors, elapsed) = timed_errors(&text);
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        assert!(
            errors.iter().any(|e| e.contains("nested deeper than")),
            "{errors:?}"
        );
    }
}

#[test]
fn alias_expansion_is_bounded() {
    // 1,000 scalars referred to 4,000 times: 4 million nodes from 20 KiB, within the
    // parser's own repetition limit (100 alias jumps per event).
    let mut text = format!("a: &a [{}]\nb: [", "x, ".repeat(1000));
    text.push_str(&"*a, ".repeat(4000));
    text.push_str("]\n");
    let (errors, elapsed) = timed_errors(&text);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert!(
        errors.iter().any(|e| e.contains("aliases expand")),
        "{errors:?}"
    );
}

#[test]
fn an_oversized_source_is_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(MAX_SOURCE_BYTES));
    let (errors, _) = timed_errors(&text);
    assert!(
        errors.iter().any(|e| e.contains("larger than")),
        "{errors:?}"
    );
}

#[test]
fn brackets_in_comments_block_scalars_and_quotes_are_not_nesting() {
    let deep = "[".repeat(300);
    let regexes: String = (0..100)
        .map(|i| format!("    r{i}: \"^/v[0-9]+/[a-z]{{2}}$\"\n    s{i}: '[x]]'\n"))
        .collect();
    let text = format!(
        "{SERVICE}---
# {deep}
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations:
{regexes}    literal: |
      {deep}
    folded: >-
      {deep}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"
    );
    load_str("mesh.yaml", &text).unwrap();
}

#[test]
fn a_byte_order_mark_loads() {
    let text = format!("\u{feff}{SERVICE}");
    load_str("mesh.yaml", &text).unwrap();
}

#[test]
fn ten_thousand_documents_with_a_trailing_separator_load() {
    let mut text = String::new();
    for i in 0..MAX_DOCUMENTS {
        text.push_str(&format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p{i}}}\nspec: {{}}\n---\n"
            ));
    }
    let loaded = load_str("mesh.yaml", &text).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    text.push_str("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: extra}\nspec: {}\n");
    assert!(
        errors(&text)
            .iter()
            .any(|e| e.contains("more than 10000 documents"))
    );
}
