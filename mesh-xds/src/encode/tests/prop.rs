//! Random configurations round-trip: `decode(encode(c)) == canonical(c)`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use mesh_core::{
    AbortStatus, Backoff, CircuitBreakers, Endpoint, EndpointAddress, FaultAbort, FaultDelay,
    FaultPolicy, GrpcCode, HealthStatus, HedgePolicy, Locality, OutlierDetection, RetryOn,
    RetryPolicy, TcpKeepalive,
    matcher::{HeaderMatch, HeaderMatcher, PathMatch, PathMatcher, StringMatcher},
    route::{
        Domain, Forward, HashPolicy, HashSource, HeaderMutations, Mirror, Route, RouteMatcher,
        VirtualHost, WeightedCluster, WeightedClusters,
    },
};
use proptest::prelude::{any, *};

use super::*;

fn percentage() -> impl Strategy<Value = Percentage> {
    (0u32..=1_000_000).prop_map(|p| Percentage::from_ppm(p).unwrap())
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        any::<u32>(),
        1u16..,
        1u32..100,
        0u32..3,
        0usize..3,
        0usize..6,
    )
        .prop_map(|(ip, port, weight, priority, zone, health)| Endpoint {
            address: EndpointAddress::Socket(SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
            weight: NonZeroU32::new(weight).unwrap(),
            locality: Locality {
                region: "r".into(),
                zone: ["", "a", "b"][zone].into(),
                sub_zone: "".into(),
            },
            priority,
            health: [
                HealthStatus::Unknown,
                HealthStatus::Healthy,
                HealthStatus::Unhealthy,
                HealthStatus::Draining,
                HealthStatus::Timeout,
                HealthStatus::Degraded,
            ][health],
            labels: mesh_core::Labels::default(),
        })
}

fn cluster(name: String) -> impl Strategy<Value = Cluster> {
    let lb = prop_oneof![
        Just(LbPolicy::RoundRobin),
        Just(LbPolicy::Random),
        (2u32..6).prop_map(|n| LbPolicy::LeastRequest { choice_count: n }),
        (1u64..5000, 5000u64..8_388_608).prop_map(|(a, b)| LbPolicy::RingHash {
            min_ring_size: a,
            max_ring_size: b
        }),
    ];
    let outlier = proptest::option::of((1u32..20, 1u64..60, 0u32..=100, any::<bool>()).prop_map(
        |(n, secs, pct, gw)| {
            let mut od = OutlierDetection {
                interval: Duration::from_secs(secs),
                max_ejection_percent: Percentage::from_percent(pct).unwrap(),
                ..OutlierDetection::default()
            };
            if let Some(r) = &mut od.consecutive_5xx {
                r.threshold = n;
            }
            if gw {
                od.consecutive_gateway_failure = od.consecutive_5xx;
            }
            od
        },
    ));
    (
        lb,
        any::<[u32; 4]>(),
        outlier,
        percentage(),
        any::<bool>(),
        1u64..30_000,
        proptest::option::of(1u32..1000),
        proptest::option::of(1u64..7200),
        proptest::option::of((
            proptest::option::of(1u64..7200),
            proptest::option::of(1u64..600),
            proptest::option::of(1u32..20),
        )),
        proptest::collection::vec(endpoint(), 0..6),
    )
        .prop_map(
            move |(lb, b, outlier, panic, lw, connect_ms, mrpc, idle, keepalive, endpoints)| {
                let mut c = Cluster::new(name.as_str(), endpoints);
                c.lb = lb;
                c.breaker = CircuitBreakers {
                    max_connections: b[0],
                    max_pending_requests: b[1],
                    max_requests: b[2],
                    max_retries: b[3],
                    retry_budget: None,
                };
                c.outlier = outlier;
                c.panic_threshold = panic;
                c.locality_weighted = lw;
                c.connect_timeout = Duration::from_millis(connect_ms);
                c.max_requests_per_connection = mrpc;
                c.idle_timeout = idle.map(Duration::from_secs);
                c.tcp_keepalive = keepalive.map(|(time, interval, probes)| TcpKeepalive {
                    time: time.map(Duration::from_secs),
                    interval: interval.map(Duration::from_secs),
                    probes,
                });
                c
            },
        )
}

fn matcher() -> impl Strategy<Value = RouteMatcher> {
    let path = prop_oneof![
        Just(PathMatcher::any()),
        ("/[a-z]{1,8}", any::<bool>())
            .prop_map(|(p, ic)| PathMatcher::new(PathMatch::Exact(p), ic)),
        ("/[a-z]{1,8}/", any::<bool>())
            .prop_map(|(p, ic)| PathMatcher::new(PathMatch::Prefix(p), ic)),
    ];
    let header = prop_oneof![
        ("[a-z]{1,6}", any::<bool>())
            .prop_map(|(v, inv)| (HeaderMatch::String(StringMatcher::exact(v)), inv)),
        any::<bool>().prop_map(|p| (HeaderMatch::Present(p), false)),
        (-100i64..0, 1i64..100).prop_map(|(s, e)| (HeaderMatch::Range { start: s, end: e }, false)),
    ];
    (path, proptest::collection::vec(header, 0..3), any::<bool>()).prop_map(|(path, hs, grpc)| {
        RouteMatcher {
            path,
            headers: hs
                .into_iter()
                .map(|(k, inv)| {
                    HeaderMatcher::new(HeaderName::from_static("x-user"), k, inv).unwrap()
                })
                .collect(),
            grpc_only: grpc,
            ..RouteMatcher::default()
        }
    })
}

fn fault() -> impl Strategy<Value = Option<Arc<FaultPolicy>>> {
    proptest::option::of(
        (
            proptest::option::of((1u64..5000, percentage())),
            proptest::option::of((0usize..2, 200u16..600, 1i32..17, percentage())),
        )
            .prop_map(|(delay, abort)| {
                Arc::new(FaultPolicy {
                    delay: delay.map(|(ms, p)| FaultDelay {
                        duration: Duration::from_millis(ms),
                        percentage: p,
                    }),
                    abort: abort.map(|(kind, http, grpc, p)| FaultAbort {
                        status: if kind == 0 {
                            AbortStatus::Http(http)
                        } else {
                            AbortStatus::Grpc(GrpcCode::from_i32(grpc).unwrap())
                        },
                        percentage: p,
                    }),
                    max_active_faults: None,
                    ..FaultPolicy::default()
                })
            }),
    )
}

fn retry() -> impl Strategy<Value = Option<Arc<RetryPolicy>>> {
    proptest::option::of(
        (
            0u32..5,
            0u32..(1 << 13),
            proptest::option::of(1u64..5000),
            1u64..100,
            any::<bool>(),
            proptest::option::of((1u32..3, percentage(), any::<bool>())),
            proptest::collection::vec(500u16..600, 0..3),
        )
            .prop_map(|(n, bits, per_try, base, prefer, hedge, codes)| {
                let names: Vec<&str> = super::super::route::RETRY_ON_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| *n)
                    .collect();
                let (on, _) = RetryOn::parse(&names.join(",")).unwrap();
                let mut r = RetryPolicy::new(n, on);
                r.per_try_timeout = per_try.map(Duration::from_millis);
                r.backoff = Backoff::with_base(Duration::from_millis(base)).unwrap();
                r.prefer_other_endpoint = prefer;
                r.retriable_status_codes = codes.into();
                r.hedge = hedge.map(|(i, p, t)| HedgePolicy {
                    initial_requests: i,
                    additional_request_chance: p,
                    hedge_on_per_try_timeout: t,
                });
                Arc::new(r)
            }),
    )
}

fn route(clusters: Vec<String>) -> impl Strategy<Value = Route> {
    let n = clusters.len();
    (
        matcher(),
        proptest::collection::vec((0..n, 0u32..100, fault()), 1..4),
        proptest::option::of(1u64..60_000),
        proptest::option::of(1u64..60_000),
        retry(),
        fault(),
        proptest::option::of((0..n, percentage())),
        any::<bool>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(
            move |(matcher, wcs, timeout, grpc_max, retry, fault, mirror, hash, name)| {
                let mut wcs: Vec<WeightedCluster> = wcs
                    .into_iter()
                    .map(|(i, w, f)| {
                        let mut wc = WeightedCluster::new(clusters[i].as_str(), w);
                        wc.fault = f;
                        wc
                    })
                    .collect();
                wcs[0].weight += 1;
                wcs[0].request_headers = HeaderMutations {
                    set: Arc::from([(
                        HeaderName::from_static("x-set"),
                        HeaderValue::from_static("1"),
                    )]),
                    add: Arc::from([]),
                    remove: Arc::from([HeaderName::from_static("x-gone")]),
                };
                let mut f = Forward::to(WeightedClusters::new(wcs).unwrap());
                f.timeout = timeout.map(Duration::from_millis);
                f.grpc_timeout_max = grpc_max.map(Duration::from_millis);
                f.retry = retry;
                f.mirrors = mirror
                    .map(|(i, p)| {
                        Arc::from([Mirror {
                            cluster: clusters[i].as_str().into(),
                            percentage: p,
                        }])
                    })
                    .unwrap_or_else(|| Arc::from([]));
                if hash {
                    f.hash_policy = Arc::from([HashPolicy {
                        source: HashSource::Header(HeaderName::from_static("x-user")),
                        terminal: true,
                    }]);
                }
                let mut r = Route::new(matcher, Action::Forward(Arc::new(f)));
                r.fault = fault;
                r.name = name.map(|n| Arc::from(n.as_str()));
                r.response_headers.add = Arc::from([(
                    HeaderName::from_static("x-added"),
                    HeaderValue::from_static("a"),
                )]);
                r
            },
        )
}

fn config() -> impl Strategy<Value = MeshConfig> {
    (1usize..4).prop_flat_map(|n| {
        let names: Vec<String> = (0..n).map(|i| format!("outbound|9080|v{i}|svc")).collect();
        let clusters: Vec<_> = names.iter().map(|name| cluster(name.clone())).collect();
        (clusters, proptest::collection::vec(route(names), 1..4)).prop_map(|(clusters, routes)| {
            let vh = VirtualHost::new(
                "svc:9080",
                vec![
                    Domain::parse("svc").unwrap(),
                    Domain::parse("svc:9080").unwrap(),
                ],
                routes,
            )
            .unwrap();
            let table = RouteTable::new("svc:9080", vec![vh]).unwrap();
            MeshConfig::new(
                "p",
                BTreeMap::from([(Arc::from("svc:9080"), Arc::new(table))]),
                clusters
                    .into_iter()
                    .map(|c| (c.name.clone(), Arc::new(c)))
                    .collect(),
                ServerPolicy::default(),
            )
            .unwrap()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_configs_round_trip(config in config()) {
        assert_round_trips(&config);
    }
}
