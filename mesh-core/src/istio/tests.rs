//! Error reporting of the Istio loader, and the guarantee that no input panics.

use proptest::prelude::*;

use super::*;

mod export_to;
mod failover;
mod hostile_input;
mod precedence;
mod sidecar;
mod typos;

const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - number: 9080
    name: http
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
  - address: 10.0.0.2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
";

fn errors(text: &str) -> Vec<String> {
    match load_str("mesh.yaml", text) {
        Ok(l) => panic!("expected errors, loaded with warnings {:?}", l.warnings),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn vs(http: &str) -> String {
    format!(
        "{SERVICE}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
{http}"
    )
}

/// Istio: "a destination will receive weight/(sum of all weights) requests".
#[test]
fn weights_are_relative() {
    let text = vs("  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 20
");
    let loaded = load_str("mesh.yaml", &text).unwrap();
    let table = loaded
        .config
        .listener("reviews.default.svc.cluster.local:9080")
        .unwrap();
    let crate::route::Action::Forward(fwd) = &table.virtual_hosts()[0].routes()[0].action else {
        panic!("not a forward");
    };
    let split: Vec<(String, u32)> = fwd
        .clusters
        .clusters()
        .iter()
        .map(|c| (c.name.to_string(), c.weight))
        .collect();
    assert_eq!(
        split,
        [
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                90
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local".to_string(),
                20
            ),
        ]
    );
    assert_eq!(fwd.clusters.total(), 110);
    // A single destination takes everything, whatever its weight.
    load_str(
        "mesh.yaml",
        &vs("  - route:
    - destination: {host: reviews, subset: v1}
      weight: 30
"),
    )
    .unwrap();
}

#[test]
fn zero_and_negative_weights_are_errors() {
    let e = errors(&vs("  - route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
"));
    assert_eq!(
        e,
        [
            "mesh.yaml: document 3 (VirtualService reviews): spec.http[0].route: weights sum to 0: no destination can take traffic at line 36 column 5"
        ]
    );
    let e = errors(&vs("  - route:
    - destination: {host: reviews, subset: v1}
      weight: -10
    - destination: {host: reviews, subset: v2}
      weight: 110
"));
    assert_eq!(
        e,
        [
            "mesh.yaml: document 3 (VirtualService reviews): spec.http[0].route[0].weight: -10 is not a non-negative integer at line 38 column 7"
        ]
    );
}

#[test]
fn bad_duration_is_an_error_with_its_path() {
    let text = vs("  - route:
    - destination: {host: reviews}
    timeout: 10 seconds
");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "mesh.yaml: document 3 (VirtualService reviews): spec.http[0].timeout: `10 seconds` is not a duration"
        ),
        "{e:?}"
    );
}

#[test]
fn unknown_subset_is_an_error() {
    let text = vs("  - route:
    - destination: {host: reviews, subset: v9}
");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("spec.http[0].route[0].destination.subset: unknown subset `v9`"),
        "{e:?}"
    );
}

#[test]
fn an_unregistered_host_without_a_port_is_skipped_with_a_warning() {
    let text = vs("  - route:
    - destination: {host: nowhere}
  - route:
    - destination: {host: reviews, subset: v1}
");
    let l = load_str("mesh.yaml", &text).unwrap();
    assert_eq!(
        l.warnings[0].to_string(),
        "mesh.yaml: document 3 (VirtualService reviews): host nowhere.default.svc.cluster.local has no registry entry (no Kubernetes Service or ServiceEntry) and no destination names its port: its routes are skipped until one defines it"
    );
    let table = l
        .config
        .listener("reviews.default.svc.cluster.local:9080")
        .unwrap();
    assert_eq!(table.virtual_hosts()[0].routes().len(), 1);
}

#[test]
fn insecure_skip_verify_is_rejected() {
    let text = format!(
        "{SERVICE}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: other
  namespace: prod
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
      insecureSkipVerify: true
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mutual
spec:
  host: other.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
"
    );
    let e = errors(&text);
    assert!(
        e.iter().any(|e| e.contains(
            "document 3 (DestinationRule other): spec.trafficPolicy.tls.insecureSkipVerify: insecureSkipVerify is rejected"
        )),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.contains("spec.trafficPolicy.tls: mode MUTUAL requires clientCertificate")),
        "{e:?}"
    );
}

#[test]
fn unknown_fields_are_warnings_with_their_path_when_lenient() {
    let text = vs("  - route:
    - destination: {host: reviews}
    corsPolicy: {allowOrigins: [{exact: x}]}
    colour: blue
");
    let source = [Source {
        name: "mesh.yaml",
        text: &text,
    }];
    let l = load_with(&source, LoadOptions::default().lenient(true)).unwrap();
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.contains(&"mesh.yaml: document 3 (VirtualService reviews): spec.http[0].colour: unknown field `colour`, ignored at line 39 column 5".to_string()),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("spec.http[0].corsPolicy: field is not supported")),
        "{w:?}"
    );
}

#[test]
fn a_kubernetes_service_beside_a_service_entry_for_its_host_is_ignored_with_a_warning() {
    let text = format!(
        "{SERVICE}---
apiVersion: v1
kind: Service
metadata: {{name: reviews}}
spec: {{ports: [{{port: 9080}}]}}
"
    );
    let l = load_str("mesh.yaml", &text).unwrap();
    assert_eq!(
        l.warnings[0].to_string(),
        "mesh.yaml: document 3 (Service reviews): metadata.name: host reviews.default.svc.cluster.local is also defined by ServiceEntry reviews, which takes precedence; ignored at line 31 column 12"
    );
}

#[test]
fn yaml_syntax_error_names_the_document() {
    let text = format!("{SERVICE}---\nkind: VirtualService\nspec: [unclosed\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("mesh.yaml: document 3: invalid YAML:"),
        "{e:?}"
    );
    // The parser knows where: the position is carried on the diagnostic.
    let Err(error) = load_str("mesh.yaml", &text) else {
        panic!("loaded");
    };
    let lines_before = SERVICE.lines().count() + 2;
    let (line, _) = error.errors()[0].position.expect("a position");
    assert!(line > lines_before, "line {line}");
    let Err(error) = load_str("mesh.yaml", &format!("a: b\nc: {}", "[".repeat(100))) else {
        panic!("loaded");
    };
    assert_eq!(error.errors()[0].position, Some((2, 1)));
}

#[test]
fn wrong_api_version_and_duplicates_are_errors() {
    let text = format!(
        "{SERVICE}---
apiVersion: security.istio.io/v1
kind: VirtualService
metadata: {{name: x}}
spec: {{}}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [other]
  ports: [{{number: 80, name: http}}]
"
    );
    let e = errors(&text);
    assert!(e[0].contains("document 3 (VirtualService x): apiVersion: `security.istio.io/v1` is not an apiVersion of VirtualService"), "{e:?}");
    assert!(e[1].contains("document 4 (ServiceEntry reviews): metadata.name: duplicate ServiceEntry `reviews` in namespace `default`"), "{e:?}");
}

#[test]
fn retry_backoff_and_previous_hosts_are_applied_and_remote_localities_reported() {
    let text = vs("  - route:
    - destination: {host: reviews}
    retries:
      attempts: 2
      backoff: 100ms
      retryIgnorePreviousHosts: false
      retryRemoteLocalities: true
");
    let l = load_str("mesh.yaml", &text).unwrap();
    let table = l
        .config
        .listener("reviews.default.svc.cluster.local:9080")
        .unwrap();
    let route = &table.virtual_hosts()[0].routes()[0];
    let crate::Action::Forward(forward) = &route.action else {
        panic!("a forwarding route");
    };
    let retry = forward.retry.as_ref().unwrap();
    // Istio's `backoff` is Envoy's base interval; the max is Envoy's default of 10 × base.
    assert_eq!(
        retry.backoff,
        crate::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1)
        )
        .unwrap()
    );
    assert!(!retry.prefer_other_endpoint);
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("retries.retryRemoteLocalities: is not supported"),
        "{w:?}"
    );
    let bad = vs("  - route:
    - destination: {host: reviews}
    retries: {attempts: 2, backoff: 0s}
");
    assert!(
        errors(&bad)
            .iter()
            .any(|e| e.contains("spec.http[0].retries.backoff")),
        "{:?}",
        errors(&bad)
    );
}

#[test]
fn every_error_of_a_file_is_reported() {
    let text = vs("  - route:
    - destination: {host: reviews, subset: v9}
    timeout: soon
    retries: {attempts: -1, retryOn: sometimes}
    fault: {abort: {httpStatus: 99}}
  - route:
    - destination: {host: reviews}
      weight: 50
    - destination: {host: reviews, port: {number: 1}}
      weight: 50
");
    let e = errors(&text);
    let want = [
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].timeout",
        "spec.http[0].retries.attempts",
        "spec.http[0].retries.retryOn",
        "spec.http[0].fault.abort.httpStatus",
        "spec.http[1].route[1].destination.port.number",
    ];
    for w in want {
        assert!(
            e.iter().any(|e| e.contains(&format!(": {w}: "))),
            "{w} missing from {e:#?}"
        );
    }
    let display = load_str("mesh.yaml", &text).unwrap_err().to_string();
    assert!(
        display.starts_with(&format!("{} errors", e.len())),
        "{display}"
    );
}

#[test]
fn authorization_rejects_what_it_cannot_enforce() {
    let text = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt}
spec:
  action: CUSTOM
  rules:
  - from:
    - source: {requestPrincipals: [\"*\"]}
    when:
    - key: request.auth.claims[group]
      values: [admin]
    - key: source.ip
      valuse: [10.0.0.1]
";
    let e = errors(text);
    for w in [
        "spec.action: CUSTOM",
        "spec.rules[0].from[0].source.requestPrincipals:",
        "spec.rules[0].when[0].key: `request.auth.claims[group]`",
        "spec.rules[0].when[1].valuse: unknown or unsupported field in a security policy",
    ] {
        assert!(e.iter().any(|e| e.contains(w)), "{w} missing from {e:#?}");
    }
}

/// The valid fixtures, mutated by the property test below.
const FIXTURES: [&str; 9] = [
    include_str!("../../tests/fixtures/bookinfo-services.yaml"),
    include_str!("../../tests/fixtures/canary.yaml"),
    include_str!("../../tests/fixtures/header-routing.yaml"),
    include_str!("../../tests/fixtures/uri-prefix.yaml"),
    include_str!("../../tests/fixtures/retries.yaml"),
    include_str!("../../tests/fixtures/faults.yaml"),
    include_str!("../../tests/fixtures/destination-policies.yaml"),
    include_str!("../../tests/fixtures/security.yaml"),
    include_str!("../../tests/fixtures/more-routing.yaml"),
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    SwapLines(usize, usize),
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        match *m {
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % bytes.len());
            }
            Mutation::Insert(i, b) => {
                let at = i % (bytes.len() + 1);
                bytes.insert(at, b);
            }
            Mutation::Replace(i, b) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes[at] = b;
            }
            Mutation::SwapLines(a, b) => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let (a, b) = (a % lines.len(), b % lines.len());
                    lines.swap(a, b);
                }
                bytes = lines.join("\n").into_bytes();
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Bytes that matter to YAML and to the loader's parsers.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b" \n:-[]{}*&!|>'\"#%@`,.0123456789/".to_vec()),
        any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = load_str("fuzz.yaml", &text);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..FIXTURES.len(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let base = FIXTURES.get(which).copied().unwrap_or_default();
        let text = mutate(base, &mutations);
        // With the services, so that routes get resolved as deep as possible.
        let _ = load(&[
            Source { name: "services.yaml", text: FIXTURES[0] },
            Source { name: "fuzz.yaml", text: &text },
        ]);
    }
}

/// Istio's `withoutHeaders: {name: {}}`: the header is absent. `{name: {exact: v}}`: no header
/// with that value, so a request without the header qualifies.
#[test]
fn without_headers_presence_means_absent() {
    let text = vs("  - match:
    - withoutHeaders:
        x-canary: {}
    route: [{destination: {host: reviews, subset: v1}}]
  - match:
    - withoutHeaders:
        x-user: {exact: jason}
    route: [{destination: {host: reviews, subset: v2}}]
");
    let loaded = load_str("mesh.yaml", &text).unwrap();
    let table = loaded
        .config
        .listener("reviews.default.svc.cluster.local:9080")
        .unwrap();
    let routes = table.virtual_hosts()[0].routes();
    let matches = |route: usize, headers: &[(&'static str, &'static str)]| {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        routes[route]
            .matcher
            .headers
            .iter()
            .all(|h| h.matches(&map))
    };
    assert!(matches(0, &[]), "absent header: matches");
    assert!(
        !matches(0, &[("x-canary", "1")]),
        "present header: no match"
    );
    assert!(!matches(0, &[("x-canary", "")]), "present, empty: no match");
    assert!(matches(1, &[]));
    assert!(matches(1, &[("x-user", "bob")]));
    assert!(!matches(1, &[("x-user", "jason")]));
}
