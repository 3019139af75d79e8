//! A typo is an error, as the Kubernetes API server's strict field validation makes it;
//! ignoring it would silently remove the policy it was meant to set.

use super::*;

const MISSPELT_KIND: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualSevice
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
";

#[test]
fn an_unknown_kind_in_an_istio_group_is_an_error() {
    let errors = errors(&format!("{SERVICE}---\n{MISSPELT_KIND}"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("document 3 (VirtualSevice reviews): kind: unknown kind VirtualSevice")
            && errors[0].contains("did you mean VirtualService?"),
        "{errors:?}"
    );
}

#[test]
fn istio_kinds_the_mesh_does_not_apply_and_other_kinds_are_warnings() {
    let text = format!(
        "{SERVICE}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec: {{}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: c}}
"
    );
    let loaded = load_str("mesh.yaml", &text).unwrap();
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0]
            .to_string()
            .contains("kind Gateway is not applied by this mesh"),
        "{:?}",
        loaded.warnings
    );
}

/// Where `needle` is in `text`: `at line N column M`, 1-based.
fn located(text: &str, needle: &str) -> String {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap();
    format!(
        "at line {} column {}",
        i + 1,
        line.find(needle).unwrap() + 1
    )
}

#[test]
fn field_errors_name_the_line_and_column_of_their_key() {
    let text = vs("  - route:
    - destination: {host: reviews, subset: v1}
      weigth: 80
    - destination: {host: reviews, subset: v2, port: {number: nine}}
      weight: 20
    timeout: 10 seconds
");
    let text = text.replace(
        "  subsets:\n",
        "  trafficPolicy: {outlierDetection: {consecutive5xxError: 3}}\n  subsets:\n",
    );
    let errors = errors(&text);
    let expect = [
        ("spec.http[0].route[0].weigth: unknown field", "weigth"),
        (
            "spec.http[0].route[1].destination.port.number:",
            "number: nine",
        ),
        ("spec.http[0].timeout:", "timeout: 10"),
        (
            "spec.trafficPolicy.outlierDetection.consecutive5xxError: unknown field",
            "consecutive5xxError",
        ),
    ];
    for (error, needle) in expect {
        let at = located(&text, needle);
        assert!(
            errors.iter().any(|e| e.contains(error) && e.ends_with(&at)),
            "{error} {at}: {errors:#?}"
        );
    }
}

#[test]
fn an_unknown_field_is_an_error_naming_it_with_the_likely_intent() {
    let text = format!(
        "{SERVICE}  trafficPolicy:
    outlierDetection:
      consecutive5xxError: 3
"
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
            errors[0].contains(
                "spec.trafficPolicy.outlierDetection.consecutive5xxError: unknown field `consecutive5xxError` (did you mean `consecutive5xxErrors`?)"
            ),
            "{errors:?}"
        );
}

#[test]
fn a_misspelt_weight_is_reported_on_its_own_field() {
    let errors = errors(&vs("  - route:
    - destination: {host: reviews, subset: v1}
      weigth: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(
            "spec.http[0].route[0].weigth: unknown field `weigth` (did you mean `weight`?)"
        ),
        "{errors:?}"
    );
}

#[test]
fn lenient_loading_ignores_typos_with_warnings() {
    let text = format!(
        "{SERVICE}  trafficPolicy:
    outlierDetection:
      consecutive5xxError: 3
---
{MISSPELT_KIND}"
    );
    let source = [Source {
        name: "mesh.yaml",
        text: &text,
    }];
    let loaded = load_with(&source, LoadOptions::default().lenient(true)).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.contains(", ignored at line ")),
        "{warnings:?}"
    );
}
