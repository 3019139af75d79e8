//! The examples of Istio's documentation load with their documented meaning.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{HeaderMap, Method};
use mesh_core::{
    AbortStatus, AuthzAction, Labels, LbPolicy, MeshConfig, MtlsMode, RetryOn, SanKind, TlsMode,
    Workload,
    istio::{Loaded, Source, load},
    route::{Action, Forward, HashSource, PathRewrite, RequestHead, RouteTable},
};

const SERVICES: &str = include_str!("fixtures/bookinfo-services.yaml");
const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

fn load_with_services(name: &str, text: &str) -> Loaded {
    let sources = [
        Source {
            name: "bookinfo-services.yaml",
            text: SERVICES,
        },
        Source { name, text },
    ];
    match load(&sources) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

fn table<'a>(config: &'a MeshConfig, target: &str) -> &'a RouteTable {
    config
        .listener(target)
        .unwrap_or_else(|| panic!("no listener {target}: {:?}", config.listeners().keys()))
}

fn forward_of(
    config: &MeshConfig,
    target: &str,
    authority: &str,
    path: &str,
    headers: &HeaderMap,
) -> Forward {
    let head = RequestHead {
        method: &Method::GET,
        authority,
        path_and_query: path,
        headers,
        source: None,
    };
    let m = table(config, target).find(&head).expect("a route matches");
    match &m.route.action {
        Action::Forward(f) => (**f).clone(),
        other => panic!("not a forward: {other:?}"),
    }
}

fn only_cluster(f: &Forward) -> String {
    let cs = f.clusters.clusters();
    assert_eq!(cs.len(), 1, "{cs:?}");
    cs[0].name.to_string()
}

#[test]
fn services_become_clusters_and_listeners() {
    let l = load_with_services("empty.yaml", "");
    let c = &l.config;
    for name in [
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
    ] {
        assert!(c.cluster(name).is_some(), "{name}");
    }
    assert_eq!(
        c.cluster(&format!("outbound|9080||{REVIEWS}"))
            .unwrap()
            .endpoints
            .len(),
        3
    );
    let v2 = c.cluster(&format!("outbound|9080|v2|{REVIEWS}")).unwrap();
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(v2.endpoints[0].address.to_string(), "10.0.0.2:9080");
    // The default route goes to the whole service, with Istio's default retries.
    let f = forward_of(
        c,
        &format!("{REVIEWS}:9080"),
        "reviews:9080",
        "/",
        &HeaderMap::new(),
    );
    assert_eq!(only_cluster(&f), format!("outbound|9080||{REVIEWS}"));
    let retry = f.retry.expect("istio's default retry policy");
    assert_eq!(retry.max_retries, 2);
    assert!(
        retry
            .retry_on
            .contains(RetryOn::CONNECT_FAILURE | RetryOn::RETRIABLE_STATUS_CODES)
    );
    assert_eq!(&*retry.retriable_status_codes, &[503]);
    // Istio's short host forms reach the same virtual host.
    for authority in [
        "reviews",
        "reviews.default",
        "reviews.default.svc:9080",
        REVIEWS,
    ] {
        let head = RequestHead {
            method: &Method::GET,
            authority,
            path_and_query: "/",
            headers: &HeaderMap::new(),
            source: None,
        };
        assert!(
            table(c, &format!("{REVIEWS}:9080")).find(&head).is_some(),
            "{authority}"
        );
    }
    // Equal input, equal version.
    assert_eq!(
        c.version(),
        load_with_services("empty.yaml", "").config.version()
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn canary_splits_90_10_across_subsets() {
    let l = load_with_services("canary.yaml", include_str!("fixtures/canary.yaml"));
    let f = forward_of(
        &l.config,
        &format!("{REVIEWS}:9080"),
        "reviews",
        "/",
        &HeaderMap::new(),
    );
    let got: Vec<(String, u32)> = f
        .clusters
        .clusters()
        .iter()
        .map(|c| (c.name.to_string(), c.weight))
        .collect();
    assert_eq!(
        got,
        vec![
            (format!("outbound|9080|v1|{REVIEWS}"), 90),
            (format!("outbound|9080|v2|{REVIEWS}"), 10),
        ]
    );
}

#[test]
fn header_routing_sends_jason_to_v2_and_others_to_v1() {
    let l = load_with_services(
        "header-routing.yaml",
        include_str!("fixtures/header-routing.yaml"),
    );
    let target = format!("{REVIEWS}:9080");
    let mut jason = HeaderMap::new();
    jason.insert("end-user", "jason".parse().unwrap());
    let f = forward_of(&l.config, &target, "reviews:9080", "/reviews/1", &jason);
    assert_eq!(only_cluster(&f), format!("outbound|9080|v2|{REVIEWS}"));
    let f = forward_of(
        &l.config,
        &target,
        "reviews:9080",
        "/reviews/1",
        &HeaderMap::new(),
    );
    assert_eq!(only_cluster(&f), format!("outbound|9080|v1|{REVIEWS}"));
    let mut other = HeaderMap::new();
    other.insert("end-user", "mary".parse().unwrap());
    let f = forward_of(&l.config, &target, "reviews:9080", "/reviews/1", &other);
    assert_eq!(only_cluster(&f), format!("outbound|9080|v1|{REVIEWS}"));
}

#[test]
fn uri_prefix_routing_with_rewrite() {
    let l = load_with_services("uri-prefix.yaml", include_str!("fixtures/uri-prefix.yaml"));
    let target = format!("{REVIEWS}:9080");
    let h = HeaderMap::new();
    for path in ["/wpcatalog/x", "/consumercatalog"] {
        let f = forward_of(&l.config, &target, REVIEWS, path, &h);
        assert_eq!(only_cluster(&f), format!("outbound|9080|v2|{REVIEWS}"));
        assert_eq!(
            f.path_rewrite,
            Some(PathRewrite::Prefix("/newcatalog".into()))
        );
    }
    let f = forward_of(&l.config, &target, REVIEWS, "/other", &h);
    assert_eq!(only_cluster(&f), format!("outbound|9080|v1|{REVIEWS}"));
    assert_eq!(f.path_rewrite, None);
    let routes = table(&l.config, &target).virtual_hosts()[0].routes();
    assert_eq!(routes.len(), 3, "two matches (OR) and the catch-all");
    assert_eq!(routes[0].name.as_deref(), Some("reviews-v2-routes"));
}

#[test]
fn retries_and_timeout() {
    let l = load_with_services("retries.yaml", include_str!("fixtures/retries.yaml"));
    let f = forward_of(
        &l.config,
        &format!("{RATINGS}:9080"),
        "ratings",
        "/",
        &HeaderMap::new(),
    );
    assert_eq!(f.timeout, Some(Duration::from_secs(10)));
    let r = f.retry.expect("retries");
    assert_eq!(r.max_retries, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        r.retry_on,
        RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE | RetryOn::RESET
    );
}

#[test]
fn fault_abort_and_delay() {
    let l = load_with_services("faults.yaml", include_str!("fixtures/faults.yaml"));
    let prod = Workload::new("default", Labels::new([("env", "prod")]).unwrap());
    let head = |authority, source| RequestHead {
        method: &Method::GET,
        authority,
        path_and_query: "/",
        headers: Box::leak(Box::new(HeaderMap::new())),
        source,
    };
    let t = table(&l.config, &format!("{RATINGS}:9080"));
    let m = t.find(&head("ratings", None)).unwrap();
    let abort = m.route.fault.as_ref().unwrap().abort.clone().unwrap();
    assert_eq!(abort.status, AbortStatus::Http(404));
    assert_eq!(abort.percentage.ppm(), 300_000);
    let t = table(&l.config, &format!("{REVIEWS}:9080"));
    let m = t.find(&head("reviews", Some(&prod))).unwrap();
    let delay = m.route.fault.as_ref().unwrap().delay.clone().unwrap();
    assert_eq!(delay.duration, Duration::from_secs(3));
    assert_eq!(delay.percentage.ppm(), 50_000);
    // The route is for callers labelled `env: prod` only; the example has no other route.
    let staging = Workload::new("default", Labels::new([("env", "staging")]).unwrap());
    assert!(t.find(&head("reviews", Some(&staging))).is_none());
    assert!(t.find(&head("reviews", None)).is_none());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn destination_rule_policies() {
    let text = include_str!("fixtures/destination-policies.yaml");
    let l = match mesh_core::istio::load_str("destination-policies.yaml", text) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let c = &l.config;
    let cl = |h: &str| {
        c.cluster(&format!("outbound|8000||{h}.default.svc.cluster.local"))
            .unwrap()
            .clone()
    };

    // Consistent hash by cookie: ring hash on the cluster, cookie hash on the route.
    let pp = cl("productpage");
    assert!(matches!(
        pp.lb,
        LbPolicy::RingHash {
            min_ring_size: 1024,
            ..
        }
    ));
    let f = forward_of(
        c,
        "productpage.default.svc.cluster.local:8000",
        "productpage",
        "/",
        &HeaderMap::new(),
    );
    assert_eq!(
        f.hash_policy[0].source,
        HashSource::Cookie {
            name: "user".into(),
            // `ttl: 0s`, passed to Envoy as is: a session cookie is generated when absent.
            ttl: Some(std::time::Duration::ZERO),
            path: None
        }
    );

    // By header, with a ring size, and mutual TLS with files.
    let details = cl("details");
    assert!(matches!(
        details.lb,
        LbPolicy::RingHash {
            min_ring_size: 2048,
            ..
        }
    ));
    let f = forward_of(
        c,
        "details.default.svc.cluster.local:8000",
        "details",
        "/",
        &HeaderMap::new(),
    );
    assert_eq!(
        f.hash_policy[0].source,
        HashSource::Header("x-user".parse().unwrap())
    );
    assert_eq!(details.tls.mode, TlsMode::Mutual);
    assert_eq!(details.tls.sni.as_deref(), Some("details.example.com"));
    assert!(details.tls.client_certificate.is_some() && details.tls.trust_bundle.is_some());
    let kinds: Vec<SanKind> = details.tls.san_matchers.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SanKind::Uri, SanKind::Dns]);

    // Connection pool and outlier detection.
    let hb = cl("httpbin");
    assert_eq!(hb.breaker.max_connections, 100);
    assert_eq!(hb.breaker.max_requests, 1000);
    assert_eq!(hb.breaker.max_pending_requests, 1);
    assert_eq!(hb.breaker.max_retries, 5);
    assert_eq!(hb.max_requests_per_connection, Some(10));
    assert_eq!(hb.connect_timeout, Duration::from_millis(30));
    let od = hb.outlier.clone().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().threshold, 7);
    assert_eq!(od.interval, Duration::from_secs(300));
    assert_eq!(od.base_ejection_time, Duration::from_secs(900));
    assert_eq!(od.max_ejection_percent.ppm(), 1_000_000);
    // Endpoint port override by port name.
    let addrs: Vec<String> = hb.endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addrs, vec!["10.0.2.1:8000", "10.0.2.2:8080"]);
    // No DestinationRule: Istio's defaults (unlimited breakers, round robin).
    // Every connection-pool limit of the example is enforced: nothing to report.
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn peer_authentication_and_authorization() {
    let l = load_with_services("security.yaml", include_str!("fixtures/security.yaml"));
    let server = l.config.server();
    let pa = &server.peer_authentication;
    assert_eq!(pa.len(), 2);
    assert_eq!(pa[0].mode, Some(MtlsMode::Strict));
    assert_eq!(&*pa[0].scope.namespace, "istio-system");
    assert_eq!(&*pa[1].port_modes, &[(8080, MtlsMode::Disable)]);
    assert_eq!(
        pa[1].scope.selector.as_ref().unwrap().get("app"),
        Some("ratings")
    );
    let az = &server.authorization;
    assert_eq!(az.len(), 2);
    assert_eq!(az[0].action, AuthzAction::Allow);
    assert!(!az[0].dry_run);
    let rule = &az[0].rules[0];
    assert_eq!(rule.from[0].ip_blocks.len(), 2);
    assert_eq!(rule.from[0].ip_blocks[1].to_string(), "192.168.1.7/32");
    assert_eq!(&*rule.to[0].ports, &[9080]);
    assert_eq!(rule.when.len(), 1);
    assert_eq!(az[1].action, AuthzAction::Deny);
    assert!(az[1].dry_run);
}

#[test]
fn workload_entries_dns_ports_redirects_rewrites_and_mirrors() {
    let l =
        match mesh_core::istio::load_str("more.yaml", include_str!("fixtures/more-routing.yaml")) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
    let c = &l.config;
    let legacy = "legacy.default.svc.cluster.local";

    // WorkloadEntries: IP and DNS addresses, targetPort and per-name port overrides.
    let http = c.cluster(&format!("outbound|80||{legacy}")).unwrap();
    let addrs: Vec<String> = http
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, vec!["10.1.0.1:8080", "vm-2.example.internal:8080"]);
    assert_eq!(http.endpoints[0].weight.get(), 3);
    assert_eq!(&*http.endpoints[0].locality.zone, "us-east1-b");
    let grpc = c.cluster(&format!("outbound|7070||{legacy}")).unwrap();
    let addrs: Vec<String> = grpc
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, vec!["10.1.0.1:7070", "vm-2.example.internal:7070"]);
    // DNS resolution without endpoints: the host itself.
    let ext = c.cluster("outbound|443||api.example.com").unwrap();
    assert_eq!(ext.endpoints[0].address.to_string(), "api.example.com:443");

    // Port-level settings and subset overrides, group by group.
    assert!(matches!(http.lb, LbPolicy::LeastRequest { .. }));
    assert_eq!(http.breaker.max_requests, 10);
    assert_eq!(grpc.lb, LbPolicy::Random);
    let v2 = c.cluster(&format!("outbound|7070|v2|{legacy}")).unwrap();
    assert_eq!(v2.lb, LbPolicy::Random);
    assert_eq!(v2.breaker.max_requests, 20);
    assert_eq!(v2.endpoints.len(), 1);

    // Port-scoped match: only on the 7070 listener.
    let h = HeaderMap::new();
    let f = forward_of(c, &format!("{legacy}:7070"), "legacy:7070", "/anything", &h);
    assert_eq!(only_cluster(&f), format!("outbound|7070|v2|{legacy}"));
    let t80 = table(c, &format!("{legacy}:80"));
    assert_eq!(t80.virtual_hosts()[0].routes().len(), 4);

    let find = |path: &'static str, method: &'static Method| {
        let head = RequestHead {
            method,
            authority: "legacy",
            path_and_query: path,
            headers: Box::leak(Box::new(HeaderMap::new())),
            source: None,
        };
        t80.find(&head).map(|m| m.route.action.clone())
    };
    match find("/old", &Method::GET) {
        Some(Action::Redirect(r)) => {
            assert_eq!(r.status.as_u16(), 308);
            assert_eq!(r.host.as_deref(), Some("new.example.com"));
            assert_eq!(r.path, Some(PathRewrite::FullPath("/new".into())));
        }
        other => panic!("{other:?}"),
    }
    match find("/healthz", &Method::GET) {
        Some(Action::DirectResponse(d)) => {
            assert_eq!((d.status, d.body.as_deref()), (200, Some("ok")))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        find("/healthz", &Method::POST).is_none(),
        "method must match"
    );
    match find("/v2/books", &Method::GET) {
        Some(Action::Forward(f)) => {
            assert!(
                matches!(&f.path_rewrite, Some(PathRewrite::Regex(re)) if re.pattern() == "^/v[0-9]+/")
            );
            assert_eq!(
                f.mirrors[0].cluster.as_ref(),
                "outbound|443||api.example.com"
            );
            assert_eq!(f.mirrors[0].percentage.ppm(), 125_000);
        }
        other => panic!("{other:?}"),
    }
    match find("/exact", &Method::GET) {
        Some(Action::Forward(f)) => {
            assert_eq!(
                f.path_rewrite,
                Some(PathRewrite::FullPath("/replaced".into()))
            );
            assert!(f.retry.is_none(), "attempts: 0 disables retries");
            let wc = &f.clusters.clusters()[0];
            assert_eq!(wc.request_headers.set[0].0.as_str(), "x-canary");
        }
        other => panic!("{other:?}"),
    }
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// Istio's "Request Routing" task (bookinfo `virtual-service-reviews-test-v2.yaml` and the
/// reviews rule of `destination-rule-all.yaml`): written against Kubernetes Services.
const REVIEWS_BY_USER: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
";

/// The reviews Service of bookinfo's `platform/kube/bookinfo.yaml`.
const REVIEWS_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels:
    app: reviews
    service: reviews
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: reviews
";

fn load_alone(text: &str) -> Loaded {
    match load(&[Source {
        name: "reviews.yaml",
        text,
    }]) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn request_routing_without_a_registry_loads_with_warnings() {
    let loaded = load_alone(REVIEWS_BY_USER);
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains(&format!(
            "host {REVIEWS} has no registry entry (no Kubernetes Service or ServiceEntry) and no destination names its port"
        ))),
        "{warnings:?}"
    );
}

#[test]
fn request_routing_with_the_kubernetes_service_routes_by_user() {
    let loaded = load_alone(&format!("{REVIEWS_SERVICE}---\n{REVIEWS_BY_USER}"));
    let target = format!("{REVIEWS}:9080");
    let mut jason = HeaderMap::new();
    jason.insert("end-user", "jason".parse().unwrap());
    let f = forward_of(&loaded.config, &target, "reviews:9080", "/", &jason);
    assert_eq!(only_cluster(&f), format!("outbound|9080|v2|{REVIEWS}"));
    let f = forward_of(
        &loaded.config,
        &target,
        "reviews:9080",
        "/",
        &HeaderMap::new(),
    );
    assert_eq!(only_cluster(&f), format!("outbound|9080|v1|{REVIEWS}"));
    // Without an EndpointSlice the Service's name is resolved through DNS, with no labels.
    let all = loaded
        .config
        .cluster(&format!("outbound|9080||{REVIEWS}"))
        .unwrap();
    assert_eq!(
        all.endpoints[0].address.to_string(),
        format!("{REVIEWS}:9080")
    );
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("subset `v2` of host") && w.contains("unresolvable")),
        "{warnings:?}"
    );
}

#[test]
fn endpoint_slices_and_endpoints_give_a_service_its_addresses() {
    let slice = "\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  labels:
    kubernetes.io/service-name: reviews
addressType: IPv4
ports:
- name: http
  port: 9081
  protocol: TCP
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
  zone: us-east-1a
- addresses: [10.1.0.2]
  conditions: {ready: false}
";
    let loaded = load_alone(&format!("{REVIEWS_SERVICE}---\n{slice}"));
    let c = loaded
        .config
        .cluster(&format!("outbound|9080||{REVIEWS}"))
        .unwrap();
    let addresses: Vec<String> = c.endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addresses, ["10.1.0.1:9081"]);

    let endpoints = "\
apiVersion: v1
kind: Endpoints
metadata: {name: reviews}
subsets:
- addresses: [{ip: 10.2.0.1}, {ip: 10.2.0.2}]
  ports: [{name: http, port: 9082}]
";
    let loaded = load_alone(&format!("{REVIEWS_SERVICE}---\n{endpoints}"));
    let c = loaded
        .config
        .cluster(&format!("outbound|9080||{REVIEWS}"))
        .unwrap();
    let addresses: Vec<String> = c.endpoints.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addresses, ["10.2.0.1:9082", "10.2.0.2:9082"]);
}

#[test]
fn a_destination_port_resolves_an_unregistered_host_through_dns() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: customers}
spec:
  hosts: [customers.default.svc.cluster.local]
  http:
  - route:
    - destination:
        host: customers.default.svc.cluster.local
        port: {number: 50051}
";
    let loaded = load_alone(vs);
    let c = loaded
        .config
        .cluster("outbound|50051||customers.default.svc.cluster.local")
        .unwrap();
    assert_eq!(
        c.endpoints[0].address.to_string(),
        "customers.default.svc.cluster.local:50051"
    );
    assert!(
        loaded.warnings[0]
            .message
            .contains("resolved through DNS on port 50051"),
        "{:?}",
        loaded.warnings
    );
}
