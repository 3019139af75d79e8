use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (*k, *v))).unwrap()
}

fn sidecar(namespace: &str, name: &str, selector: Option<&[(&str, &str)]>) -> Sidecar {
    Sidecar {
        name: name.into(),
        namespace: namespace.into(),
        selector: selector.map(labels),
        egress: None,
        mode: None,
        egress_proxy: None,
    }
}

fn import(entry: &str) -> HostImport {
    HostImport::parse(entry).unwrap()
}

#[test]
fn a_matching_selector_wins_over_the_namespace_default_which_wins_over_the_root() {
    let sidecars = [
        sidecar("istio-system", "root", None),
        sidecar("prod", "default", None),
        sidecar("prod", "web-only", Some(&[("app", "web")])),
        sidecar("prod", "batch-only", Some(&[("app", "batch")])),
        // A selector in the root namespace never applies to other namespaces.
        sidecar("istio-system", "root-web", Some(&[("app", "web")])),
    ];
    let pick = |ns: &str, l: &[(&str, &str)]| {
        select(&sidecars, &Workload::new(ns, labels(l)), "istio-system").map(|s| s.id())
    };
    assert_eq!(
        pick("prod", &[("app", "web"), ("v", "1")]).as_deref(),
        Some("prod/web-only")
    );
    assert_eq!(
        pick("prod", &[("app", "api")]).as_deref(),
        Some("prod/default")
    );
    assert_eq!(
        pick("dev", &[("app", "web")]).as_deref(),
        Some("istio-system/root")
    );
    assert_eq!(
        select(
            &sidecars[1..4],
            &Workload::new("dev", Labels::default()),
            "istio-system"
        ),
        None
    );
    // Several selectors match: the first by name, every time.
    let two = [
        sidecar("prod", "b", Some(&[("app", "web")])),
        sidecar("prod", "a", Some(&[("app", "web")])),
    ];
    let web = Workload::new("prod", labels(&[("app", "web")]));
    assert_eq!(
        select(&two, &web, "istio-system")
            .map(|s| s.id())
            .as_deref(),
        Some("prod/a")
    );
}

#[test]
fn host_imports_follow_istios_namespace_and_wildcard_rules() {
    let own = "prod";
    assert!(import("./*").imports("prod", "a.prod.svc.cluster.local", own));
    assert!(!import("./*").imports("dev", "a.dev.svc.cluster.local", own));
    assert!(import("*/*").imports("dev", "anything", own));
    assert!(!import("~/*").imports("prod", "a.prod.svc.cluster.local", own));
    let named = import("istio-system/*.istio-system.svc.cluster.local");
    assert!(named.imports("istio-system", "istiod.istio-system.svc.cluster.local", own));
    assert!(!named.imports("prod", "istiod.istio-system.svc.cluster.local", own));
    let wildcard = import("*/*.example.com");
    assert!(wildcard.imports("x", "api.example.com", own));
    assert!(wildcard.imports("x", "a.b.EXAMPLE.com", own));
    assert!(
        !wildcard.imports("x", "example.com", own),
        "the wildcard needs a label"
    );
    assert!(!wildcard.imports("x", "api.example.org", own));
    let exact = import("*/api.example.com");
    assert!(exact.imports("x", "api.example.com", own));
    assert!(!exact.imports("x", "v2.api.example.com", own));
}

#[test]
fn malformed_host_entries_are_refused_with_the_expected_form() {
    for bad in [
        "api.example.com",
        "/x",
        "ns/",
        "ns/a/b",
        "ns/a.*.com",
        "ns/*x.com",
    ] {
        assert!(HostImport::parse(bad).is_err(), "{bad}");
    }
    let e = HostImport::parse("reviews").unwrap_err();
    assert!(e.contains("namespace/dnsName"), "{e}");
}

#[test]
fn a_virtual_service_is_imported_when_its_namespace_and_a_host_match() {
    let routed = RoutedBy {
        name: "reviews".into(),
        namespace: "prod".into(),
        hosts: Arc::from([Arc::from("reviews.prod.svc.cluster.local")]),
        export_to: ExportTo::All,
        default_routes: Arc::new(RouteTable::new("9080", vec![]).unwrap()),
        routes: Arc::new(RouteTable::new("9080", vec![]).unwrap()),
    };
    let with = |entries: &[&str], port: Option<u16>| Sidecar {
        egress: Some(Arc::from([EgressListener {
            port,
            hosts: entries.iter().map(|e| import(e)).collect(),
        }])),
        ..sidecar("prod", "default", None)
    };
    assert!(with(&["./*"], None).imports_virtual_service(&routed, 9080, "prod"));
    assert!(
        with(&["*/reviews.prod.svc.cluster.local"], None)
            .imports_virtual_service(&routed, 9080, "prod")
    );
    assert!(!with(&["dev/*"], None).imports_virtual_service(&routed, 9080, "prod"));
    // A port-bound egress listener imports for its port only.
    assert!(with(&["./*"], Some(9080)).imports_virtual_service(&routed, 9080, "prod"));
    assert!(!with(&["./*"], Some(8080)).imports_virtual_service(&routed, 9080, "prod"));
}

#[test]
fn an_egress_proxy_makes_unknown_hosts_refused() {
    let mut s = sidecar("prod", "default", None);
    assert_eq!(s.mode(), OutboundMode::AllowAny, "Istio's default");
    s.mode = Some(OutboundMode::AllowAny);
    s.egress_proxy = Some("egress.istio-system.svc.cluster.local".into());
    assert_eq!(s.mode(), OutboundMode::RegistryOnly);
}
