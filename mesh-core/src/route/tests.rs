use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

use super::*;
use crate::{
    matcher::{HeaderMatch, PathMatch},
    test_rng::SplitMix64,
};

fn forward(cluster: &str) -> Action {
    Action::Forward(Arc::new(Forward::to(WeightedClusters::single(cluster))))
}

fn prefix_route(prefix: &str, cluster: &str) -> Route {
    Route::new(
        RouteMatcher {
            path: PathMatcher::new(PathMatch::Prefix(prefix.into()), false),
            ..RouteMatcher::default()
        },
        forward(cluster),
    )
}

fn header_route(name: &'static str, value: &str, cluster: &str) -> Route {
    Route::new(
        RouteMatcher {
            headers: Arc::from([HeaderMatcher::new(
                HeaderName::from_static(name),
                HeaderMatch::String(StringMatcher::exact(value)),
                false,
            )
            .unwrap()]),
            ..RouteMatcher::default()
        },
        forward(cluster),
    )
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    let domains = domains.iter().map(|d| Domain::parse(d).unwrap()).collect();
    VirtualHost::new(name, domains, routes).unwrap()
}

fn cluster_of(m: Option<RouteMatch<'_>>) -> Option<&str> {
    match &m?.route.action {
        Action::Forward(f) => Some(&f.clusters.clusters()[0].name),
        _ => None,
    }
}

struct Req {
    method: Method,
    authority: String,
    path: String,
    headers: HeaderMap,
}

impl Req {
    fn new(authority: &str, path: &str) -> Self {
        Self {
            method: Method::POST,
            authority: authority.into(),
            path: path.into(),
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            authority: &self.authority,
            path_and_query: &self.path,
            headers: &self.headers,
            source: None,
        }
    }
}

#[test]
fn the_most_specific_domain_wins() {
    let table = RouteTable::new(
        "outbound",
        vec![
            vhost("any", &["*"], vec![prefix_route("/", "any")]),
            vhost("prefix", &["reviews.*"], vec![prefix_route("/", "prefix")]),
            vhost(
                "short-suffix",
                &["*.local"],
                vec![prefix_route("/", "short-suffix")],
            ),
            vhost(
                "long-suffix",
                &["*.svc.cluster.local"],
                vec![prefix_route("/", "long-suffix")],
            ),
            vhost(
                "exact",
                &["reviews.default.svc.cluster.local"],
                vec![prefix_route("/", "exact")],
            ),
        ],
    )
    .unwrap();
    let find = |authority: &str| {
        cluster_of(table.find(&Req::new(authority, "/").head())).map(str::to_owned)
    };
    assert_eq!(
        find("reviews.default.svc.cluster.local").as_deref(),
        Some("exact")
    );
    assert_eq!(
        find("REVIEWS.default.svc.cluster.local:9080").as_deref(),
        Some("exact"),
        "case and port"
    );
    assert_eq!(
        find("ratings.default.svc.cluster.local").as_deref(),
        Some("long-suffix")
    );
    assert_eq!(
        find("ratings.example.local").as_deref(),
        Some("short-suffix")
    );
    assert_eq!(find("reviews.other").as_deref(), Some("prefix"));
    assert_eq!(find("example.com").as_deref(), Some("any"));
    // A wildcard stands for at least one character.
    assert_eq!(find(".svc.cluster.local").as_deref(), Some("short-suffix"));
}

#[test]
fn a_port_specific_domain_beats_the_portless_one() {
    let table = RouteTable::new(
        "outbound",
        vec![
            vhost("bare", &["reviews"], vec![prefix_route("/", "bare")]),
            vhost(
                "with-port",
                &["reviews:9080"],
                vec![prefix_route("/", "with-port")],
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        cluster_of(table.find(&Req::new("reviews:9080", "/").head())),
        Some("with-port")
    );
    assert_eq!(
        cluster_of(table.find(&Req::new("reviews:9081", "/").head())),
        Some("bare")
    );
    assert_eq!(
        cluster_of(table.find(&Req::new("[::1]:80", "/").head())),
        None
    );
}

#[test]
fn no_host_or_no_route_finds_nothing() {
    let table = RouteTable::new(
        "t",
        vec![vhost("r", &["reviews"], vec![prefix_route("/api", "api")])],
    )
    .unwrap();
    assert!(table.find(&Req::new("ratings", "/api").head()).is_none());
    assert!(table.find(&Req::new("reviews", "/other").head()).is_none());
}

#[test]
fn first_match_wins_and_headers_steer_beta_users() {
    let table = RouteTable::new(
        "t",
        vec![vhost(
            "reviews",
            &["reviews"],
            vec![
                header_route("x-beta-user", "true", "v2"),
                prefix_route("/reviews.Reviews/", "v1"),
                prefix_route("/", "fallback"),
            ],
        )],
    )
    .unwrap();
    let beta = Req::new("reviews", "/reviews.Reviews/Get").header("x-beta-user", "true");
    assert_eq!(cluster_of(table.find(&beta.head())), Some("v2"));
    let normal = Req::new("reviews", "/reviews.Reviews/Get");
    let m = table.find(&normal.head()).unwrap();
    assert_eq!(cluster_of(Some(m)), Some("v1"));
    assert_eq!(m.route_index, 1);
    assert_eq!(
        cluster_of(table.find(&Req::new("reviews", "/health").head())),
        Some("fallback")
    );
}

#[test]
fn query_method_authority_and_grpc_conditions_all_apply() {
    let matcher = RouteMatcher {
        query: Arc::from([QueryParamMatcher::new(
            "debug",
            Some(StringMatcher::exact("1")),
        )]),
        method: Some(StringMatcher::exact("GET")),
        authority: Some(StringMatcher::prefix("reviews")),
        ..RouteMatcher::default()
    };
    let table = RouteTable::new(
        "t",
        vec![vhost(
            "v",
            &["*"],
            vec![Route::new(matcher, forward("debug"))],
        )],
    )
    .unwrap();
    let mut req = Req::new("reviews:9080", "/x?debug=1");
    req.method = Method::GET;
    assert_eq!(cluster_of(table.find(&req.head())), Some("debug"));
    req.path = "/x?debug=0".into();
    assert!(table.find(&req.head()).is_none());
    req.path = "/x?debug=1".into();
    req.method = Method::POST;
    assert!(table.find(&req.head()).is_none());

    let grpc = RouteMatcher {
        grpc_only: true,
        ..RouteMatcher::default()
    };
    let table = RouteTable::new(
        "t",
        vec![vhost("v", &["*"], vec![Route::new(grpc, forward("grpc"))])],
    )
    .unwrap();
    let plain = Req::new("a", "/").header("content-type", "application/json");
    assert!(table.find(&plain.head()).is_none());
    let proto = Req::new("a", "/").header("content-type", "application/grpc+proto");
    assert_eq!(cluster_of(table.find(&proto.head())), Some("grpc"));
    let lookalike = Req::new("a", "/").header("content-type", "application/grpcx");
    assert!(table.find(&lookalike.head()).is_none());
}

#[test]
fn domains_are_validated() {
    assert!(Domain::parse("a*b").is_err());
    assert!(Domain::parse("**").is_err());
    assert!(Domain::parse("").is_err());
    assert!(VirtualHost::new("v", vec![], vec![]).is_err());
    let dup = RouteTable::new(
        "t",
        vec![vhost("a", &["x"], vec![]), vhost("b", &["X"], vec![])],
    );
    assert!(
        dup.is_err(),
        "domains are case-insensitive, so X duplicates x"
    );
}

#[test]
fn weights_are_validated() {
    assert!(WeightedClusters::new(vec![]).is_err());
    assert!(WeightedClusters::new(vec![WeightedCluster::new("a", 0)]).is_err());
    assert!(
        WeightedClusters::new(vec![
            WeightedCluster::new("a", u32::MAX),
            WeightedCluster::new("b", 1)
        ])
        .is_err()
    );
    assert!(DirectResponse::new(99, None).is_err());
    assert!(RedirectStatus::new(200).is_err());
}

#[test]
fn a_ninety_ten_split_holds_over_100k_draws() {
    let split = WeightedClusters::new(vec![
        WeightedCluster::new("v1", 90),
        WeightedCluster::new("v2", 10),
        WeightedCluster::new("v3", 0),
    ])
    .unwrap();
    let mut rng = SplitMix64::new(42);
    let n = 100_000;
    let mut counts = [0u32; 3];
    for _ in 0..n {
        let picked = split.pick(rng.next());
        counts[split.clusters().iter().position(|c| c == picked).unwrap()] += 1;
    }
    assert!(
        (f64::from(counts[0]) / f64::from(n) - 0.90).abs() < 0.01,
        "{counts:?}"
    );
    assert!(
        (f64::from(counts[1]) / f64::from(n) - 0.10).abs() < 0.01,
        "{counts:?}"
    );
    assert_eq!(counts[2], 0, "a zero-weight destination is never picked");
}

#[test]
fn header_mutations_remove_then_set_then_add() {
    let m = HeaderMutations {
        set: Arc::from([(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("set"),
        )]),
        add: Arc::from([(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("added"),
        )]),
        remove: Arc::from([
            HeaderName::from_static("x-gone"),
            HeaderName::from_static("x-a"),
        ]),
    };
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("old"));
    h.insert("x-gone", HeaderValue::from_static("bye"));
    m.apply(&mut h);
    assert!(h.get("x-gone").is_none());
    let values: Vec<_> = h.get_all("x-a").iter().collect();
    assert_eq!(values, ["set", "added"]);
}

proptest! {
    /// Every destination's share over many draws stays within ±1 % of its weight.
    #[test]
    fn weighted_pick_follows_weights(weights in prop::collection::vec(0u32..1000, 1..6), seed: u64) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let split = WeightedClusters::new(
            weights.iter().enumerate().map(|(i, w)| WeightedCluster::new(i.to_string(), *w)).collect(),
        ).unwrap();
        let mut rng = SplitMix64::new(seed);
        let n = 100_000u32;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..n {
            let picked = split.pick(rng.next());
            counts[picked.name.parse::<usize>().unwrap()] += 1;
        }
        for (w, c) in weights.iter().zip(&counts) {
            let expected = f64::from(*w) / f64::from(split.total());
            let observed = f64::from(*c) / f64::from(n);
            prop_assert!((expected - observed).abs() < 0.01, "weight {w}: {observed} vs {expected}");
            if *w == 0 { prop_assert_eq!(*c, 0); }
        }
    }

    /// The lookup returns the first route, in order, whose prefix matches — never a later one.
    #[test]
    fn first_match_wins(prefixes in prop::collection::vec("/[ab]{0,3}", 1..8), path in "/[ab]{0,5}") {
        let routes = prefixes.iter().enumerate().map(|(i, p)| prefix_route(p, &i.to_string())).collect();
        let table = RouteTable::new("t", vec![vhost("v", &["*"], routes)]).unwrap();
        let expected = prefixes.iter().position(|p| path.starts_with(p.as_str()));
        let found = table.find(&Req::new("host", &path).head()).map(|m| m.route_index);
        prop_assert_eq!(found, expected);
    }

    /// An exact domain always beats any wildcard that also matches, and the longest suffix beats
    /// a shorter one.
    #[test]
    fn domain_specificity(labels in prop::collection::vec("[a-c]{1,3}", 2..5)) {
        let host = labels.join(".");
        let suffix_short = format!("*.{}", labels[labels.len() - 1]);
        let suffix_long = format!("*.{}", labels[1..].join("."));
        let mut vhosts = vec![vhost("any", &["*"], vec![prefix_route("/", "any")])];
        vhosts.push(vhost("short", &[&suffix_short], vec![prefix_route("/", "short")]));
        if suffix_long != suffix_short {
            vhosts.push(vhost("long", &[&suffix_long], vec![prefix_route("/", "long")]));
        }
        let with_exact = {
            let mut v = vhosts.clone();
            v.push(vhost("exact", &[&host], vec![prefix_route("/", "exact")]));
            RouteTable::new("t", v).unwrap()
        };
        let without_exact = RouteTable::new("t", vhosts).unwrap();
        prop_assert_eq!(with_exact.virtual_host(&host).unwrap().name(), "exact");
        let expected = if suffix_long != suffix_short { "long" } else { "short" };
        prop_assert_eq!(without_exact.virtual_host(&host).unwrap().name(), expected);
    }
}

fn path_route(kind: u8, pattern: &str, ignore_case: bool) -> Route {
    let kind = match kind % 4 {
        0 => PathMatch::Prefix(pattern.into()),
        1 => PathMatch::Exact(pattern.into()),
        2 => PathMatch::Regex(crate::matcher::Regex::new(&format!("{pattern}.*")).unwrap()),
        _ => PathMatch::Any,
    };
    Route::new(
        RouteMatcher {
            path: PathMatcher::new(kind, ignore_case),
            ..RouteMatcher::default()
        },
        forward("c"),
    )
}

#[test]
fn a_route_per_method_is_found_without_trying_the_others_first() {
    // A gRPC-style table: exact methods, service prefixes, and a catch-all last.
    let mut routes: Vec<Route> = (0..300u16)
        .map(|i| path_route((i % 2) as u8, &format!("/svc{}/M{i}", i / 3), false))
        .collect();
    routes.push(path_route(0, "/", false));
    let table = RouteTable::new("t", vec![vhost("v", &["*"], routes.clone())]).unwrap();
    for (path, expected) in [
        ("/svc10/M30", Some(30)),
        ("/svc10/M31?x=1", Some(31)),
        ("/svc10/M31extra", Some(300)),
        ("/svc10/M30extra", Some(30)),
        ("/svc99/M299", Some(299)),
        ("/nothing", Some(300)),
    ] {
        let found = table
            .find(&Req::new("host", path).head())
            .map(|m| m.route_index);
        assert_eq!(found, expected, "{path}");
    }
}

proptest! {
    /// The indexed lookup finds what a scan of every route in order finds, whatever the mix of
    /// exact, prefix, regex and any-path routes, with and without ignored case.
    #[test]
    fn the_path_index_agrees_with_a_scan(
        specs in prop::collection::vec((0u8..4, "/[aB/]{0,4}", any::<bool>()), 1..12),
        path in "/[abAB/]{0,6}(\\?[a/]{0,2})?",
    ) {
        let routes: Vec<Route> = specs.iter().map(|(k, p, ic)| path_route(*k, p, *ic)).collect();
        let table = RouteTable::new("t", vec![vhost("v", &["*"], routes.clone())]).unwrap();
        let req = Req::new("host", &path);
        let head = req.head();
        let (p, q) = path.split_once('?').unwrap_or((&path, ""));
        let expected = routes.iter().position(|r| r.matcher.matches(&head, p, q));
        let found = table.find(&head).map(|m| m.route_index);
        prop_assert_eq!(found, expected);
    }
}
