//! `decode(encode_as(config, MeshExtensions)) == canonical(config)`, for Istio's documented
//! examples, for the cases Envoy cannot carry, and for random configurations; the istiod
//! shape against istiod's generator in `istiod`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use mesh_core::{
    CertificateSource, Cluster, LbPolicy, MeshConfig, Percentage, ServerPolicy, TlsMode,
    UpstreamTls,
    istio::{Source, load},
    route::{Action, PathRewrite},
};

use super::*;
use crate::decode::{
    EndpointSource, Unsupported, decode_cluster, decode_load_assignment,
    listener::{ListenerRoutes, decode_listener},
    route::decode_route_configuration,
};

const SERVICES: &str = include_str!("../../../mesh-core/tests/fixtures/bookinfo-services.yaml");

const FIXTURES: [(&str, &str); 8] = [
    (
        "canary.yaml",
        include_str!("../../../mesh-core/tests/fixtures/canary.yaml"),
    ),
    (
        "destination-policies.yaml",
        include_str!("../../../mesh-core/tests/fixtures/destination-policies.yaml"),
    ),
    (
        "faults.yaml",
        include_str!("../../../mesh-core/tests/fixtures/faults.yaml"),
    ),
    (
        "header-routing.yaml",
        include_str!("../../../mesh-core/tests/fixtures/header-routing.yaml"),
    ),
    (
        "more-routing.yaml",
        include_str!("../../../mesh-core/tests/fixtures/more-routing.yaml"),
    ),
    (
        "retries.yaml",
        include_str!("../../../mesh-core/tests/fixtures/retries.yaml"),
    ),
    (
        "security.yaml",
        include_str!("../../../mesh-core/tests/fixtures/security.yaml"),
    ),
    (
        "uri-prefix.yaml",
        include_str!("../../../mesh-core/tests/fixtures/uri-prefix.yaml"),
    ),
];

/// Decodes every resource and assembles the snapshot, as a client that received all of
/// them would; also returns what the decoder reported as unsupported.
pub(crate) fn decode_all(
    r: &Resources,
    version: &str,
    server: ServerPolicy,
) -> (MeshConfig, Vec<Unsupported>) {
    let mut unsupported = Vec::new();
    let routes: BTreeMap<&str, _> = r.routes.iter().map(|rc| (rc.name.as_str(), rc)).collect();
    let mut listeners = BTreeMap::new();
    for l in &r.listeners {
        let d = decode_listener(l).unwrap_or_else(|e| panic!("{e}"));
        unsupported.extend(d.unsupported);
        let ListenerRoutes::Rds { route_config_name } = d.value.routes else {
            panic!("listener {} has inline routes", l.name);
        };
        let rc = routes[route_config_name.as_str()];
        let t = decode_route_configuration(rc, &d.value.filters).unwrap_or_else(|e| panic!("{e}"));
        unsupported.extend(t.unsupported);
        listeners.insert(Arc::from(l.name.as_str()), Arc::new(t.value));
    }
    let cla: BTreeMap<&str, _> = r
        .load_assignments
        .iter()
        .map(|c| (c.cluster_name.as_str(), c))
        .collect();
    let mut clusters = BTreeMap::new();
    for c in &r.clusters {
        let d = decode_cluster(c).unwrap_or_else(|e| panic!("{e}"));
        unsupported.extend(d.unsupported);
        let EndpointSource::Eds { service_name } = d.value.endpoints else {
            panic!("cluster {} is not EDS", c.name);
        };
        let e =
            decode_load_assignment(cla[service_name.as_str()]).unwrap_or_else(|e| panic!("{e}"));
        unsupported.extend(e.unsupported);
        let mut cluster = d.value.cluster;
        cluster.endpoints = e.value.into();
        clusters.insert(Arc::from(c.name.as_str()), Arc::new(cluster));
    }
    let config =
        MeshConfig::new(version, listeners, clusters, server).unwrap_or_else(|e| panic!("{e}"));
    (config, unsupported)
}

/// Encodes, decodes, and checks the result is the canonical form with nothing reported.
fn round_trip(config: &MeshConfig) -> MeshConfig {
    let (decoded, unsupported) = decode_all(
        &encode_as(config, Shape::MeshExtensions),
        config.version(),
        (**config.server()).clone(),
    );
    assert!(
        unsupported.is_empty(),
        "reported as unsupported: {unsupported:#?}"
    );
    decoded
}

fn assert_round_trips(config: &MeshConfig) {
    let expected = canonical(config);
    let decoded = round_trip(config);
    for (target, table) in expected.listeners() {
        assert_eq!(
            decoded.listeners().get(target),
            Some(table),
            "listener {target}"
        );
    }
    for (name, cluster) in expected.clusters() {
        assert_eq!(
            decoded.clusters().get(name),
            Some(cluster),
            "cluster {name}"
        );
    }
    assert_eq!(decoded, expected);
}

fn fixture(name: &str, text: &str) -> MeshConfig {
    let with_services = [
        Source {
            name: "bookinfo-services.yaml",
            text: SERVICES,
        },
        Source { name, text },
    ];
    match load(&with_services) {
        Ok(l) => l.config,
        Err(first) => match load(&[Source { name, text }]) {
            Ok(l) => l.config,
            Err(e) => panic!("{name}: {first}\n{e}"),
        },
    }
}

#[test]
fn every_istio_fixture_round_trips() {
    for (name, text) in FIXTURES {
        let config = fixture(name, text);
        assert!(!config.listeners().is_empty(), "{name}");
        assert_round_trips(&config);
    }
}

#[test]
fn canonical_changes_only_what_envoy_cannot_carry() {
    // Fixtures without full-path rewrites or ISTIO_MUTUAL differ from their canonical form
    // only in the route tables' names, istiod's `outbound|port||host`.
    let config = fixture("canary.yaml", FIXTURES[0].1);
    let canon = canonical(&config);
    for (target, table) in config.listeners() {
        let c = &canon.listeners()[target];
        let (host, port) = target.rsplit_once(':').unwrap();
        assert_eq!(c.name(), format!("outbound|{port}||{host}"));
        assert_eq!(c.virtual_hosts(), table.virtual_hosts());
    }
    assert_eq!(canon.clusters(), config.clusters());
}

#[test]
fn resources_have_the_shape_grpc_requires() {
    let r = encode(&fixture("faults.yaml", FIXTURES[2].1));
    for l in &r.listeners {
        assert!(l.api_listener.is_some(), "{}", l.name);
    }
    for cla in &r.load_assignments {
        for group in &cla.endpoints {
            assert!(group.locality.is_some(), "{}", cla.cluster_name);
            assert!(
                group.load_balancing_weight.is_some_and(|w| w.value > 0),
                "{}",
                cla.cluster_name
            );
        }
    }
    // Every listener's routes and every cluster's endpoints are there, by name.
    let listeners = r.by_type(LISTENER_TYPE);
    let routes = r.by_type(ROUTE_TYPE);
    assert_eq!(
        listeners
            .keys()
            .map(|l| route_config_name(l))
            .collect::<Vec<_>>(),
        routes.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        r.by_type(CLUSTER_TYPE).keys().collect::<Vec<_>>(),
        r.by_type(ENDPOINT_TYPE).keys().collect::<Vec<_>>()
    );
    assert!(r.by_type("type.googleapis.com/unknown").is_empty());
}

#[test]
fn with_extensions_the_fault_filter_is_only_in_listeners_that_need_it() {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;
    // faults.yaml injects faults on both services, canary.yaml on none.
    for (fixture_index, want) in [(2, 2), (0, 1)] {
        let (name, text) = FIXTURES[fixture_index];
        let r = encode_as(&fixture(name, text), Shape::MeshExtensions);
        for l in &r.listeners {
            let any = l
                .api_listener
                .as_ref()
                .and_then(|a| a.api_listener.as_ref())
                .unwrap();
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
            let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names.len(), want, "{name}: {}: {names:?}", l.name);
            assert_eq!(names.last(), Some(&"envoy.filters.http.router"));
            if want == 2 {
                assert_eq!(names[0], crate::decode::filter::FAULT_FILTER);
            }
        }
    }
}

/// A config of one cluster (with `edit` applied) and a listener forwarding to it.
fn one_cluster(edit: impl FnOnce(&mut Cluster)) -> MeshConfig {
    let mut c = fixture("canary.yaml", FIXTURES[0].1);
    let name = c.clusters().keys().next().unwrap().clone();
    let mut cluster = (*c.clusters()[&name]).clone();
    edit(&mut cluster);
    let mut clusters = c.clusters().clone();
    clusters.insert(name, Arc::new(cluster));
    c = MeshConfig::new(
        "1",
        c.listeners().clone(),
        clusters,
        ServerPolicy::default(),
    )
    .unwrap();
    c
}

#[test]
fn peak_ewma_is_sent_as_least_request() {
    let config = one_cluster(|c| {
        c.lb = LbPolicy::PeakEwma {
            decay: Duration::from_secs(10),
        }
    });
    assert_round_trips(&config);
    let decoded = round_trip(&config);
    assert!(
        decoded
            .clusters()
            .values()
            .any(|c| c.lb == LbPolicy::LeastRequest { choice_count: 2 })
    );
}

#[test]
fn random_survives_and_falls_back_to_round_robin_for_grpc() {
    let config = one_cluster(|c| c.lb = LbPolicy::Random);
    assert_round_trips(&config);
    let r = encode_as(&config, Shape::MeshExtensions);
    let random = r
        .clusters
        .iter()
        .find(|c| c.load_balancing_policy.is_some())
        .unwrap();
    let policies = &random.load_balancing_policy.as_ref().unwrap().policies;
    assert_eq!(policies.len(), 2, "random, then round robin for gRPC");
}

#[test]
fn istio_mutual_becomes_explicit_certificate_providers() {
    let config = one_cluster(|c| {
        c.tls = UpstreamTls {
            mode: TlsMode::IstioMutual,
            sni: Some("outbound_.9080_.v1_.reviews".into()),
            ..UpstreamTls::default()
        }
    });
    assert_round_trips(&config);
    let decoded = round_trip(&config);
    let tls = decoded
        .clusters()
        .values()
        .map(|c| &c.tls)
        .find(|t| t.mode != TlsMode::Disable)
        .unwrap();
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert_eq!(
        tls.client_certificate,
        Some(CertificateSource::Provider {
            instance: WORKLOAD_PROVIDER.into(),
            certificate_name: WORKLOAD_CERTIFICATE.into()
        })
    );
    assert_eq!(
        tls.trust_bundle,
        Some(CertificateSource::Provider {
            instance: WORKLOAD_PROVIDER.into(),
            certificate_name: ROOT_CA_CERTIFICATE.into()
        })
    );
}

#[test]
fn whole_percents_are_rounded_in_outlier_detection() {
    let config = one_cluster(|c| {
        c.outlier = Some(mesh_core::OutlierDetection {
            max_ejection_percent: Percentage::from_ppm(333_333).unwrap(),
            ..mesh_core::OutlierDetection::default()
        })
    });
    assert_round_trips(&config);
    let decoded = round_trip(&config);
    assert!(decoded.clusters().values().any(|c| {
        c.outlier
            .as_ref()
            .is_some_and(|o| o.max_ejection_percent == Percentage::from_percent(33).unwrap())
    }));
}

#[test]
fn a_full_path_rewrite_is_a_prefix_rewrite_under_an_exact_match_else_a_regex() {
    let config = fixture("more-routing.yaml", FIXTURES[4].1);
    let full_paths = config
        .listeners()
        .values()
        .flat_map(|t| t.virtual_hosts().iter().flat_map(|vh| vh.routes().iter()))
        .filter(|r| matches!(&r.action, Action::Forward(f) if matches!(f.path_rewrite, Some(PathRewrite::FullPath(_)))))
        .count();
    assert!(full_paths > 0, "the fixture has a full-path rewrite");
    let decoded = round_trip(&config);
    let still = decoded
        .listeners()
        .values()
        .flat_map(|t| t.virtual_hosts().iter().flat_map(|vh| vh.routes().iter()))
        .filter(|r| matches!(&r.action, Action::Forward(f) if matches!(f.path_rewrite, Some(PathRewrite::FullPath(_)))))
        .count();
    assert_eq!(still, 0);
    assert_round_trips(&config);
}

#[test]
fn faults_that_inject_nothing_and_inert_outlier_rules_take_their_envoy_meaning() {
    use mesh_core::{ConsecutiveRule, FaultPolicy, OutlierDetection, route::Forward};
    let base = one_cluster(|c| {
        c.outlier = Some(OutlierDetection {
            // Without split_external_local_origin_errors Envoy never applies this rule.
            consecutive_local_origin_failure: Some(ConsecutiveRule {
                threshold: 3,
                enforcing: Percentage::HUNDRED,
            }),
            ..OutlierDetection::default()
        })
    });
    let (target, table) = base.listeners().iter().next().unwrap();
    let mut vh = table.virtual_hosts()[0].clone();
    let mut routes = vh.routes().to_vec();
    let inert = Arc::new(FaultPolicy {
        max_active_faults: Some(3),
        ..FaultPolicy::default()
    });
    routes[0].fault = Some(inert.clone());
    if let Action::Forward(f) = &routes[0].action {
        let mut f: Forward = (**f).clone();
        let mut clusters = f.clusters.clusters().to_vec();
        clusters[0].fault = Some(inert);
        f.clusters = mesh_core::route::WeightedClusters::new(clusters).unwrap();
        routes[0].action = Action::Forward(Arc::new(f));
    }
    vh = mesh_core::route::VirtualHost::new(vh.name(), vh.domains().to_vec(), routes).unwrap();
    let mut listeners = base.listeners().clone();
    listeners.insert(
        target.clone(),
        Arc::new(RouteTable::new(table.name(), vec![vh]).unwrap()),
    );
    let config = MeshConfig::new(
        "1",
        listeners,
        base.clusters().clone(),
        ServerPolicy::default(),
    )
    .unwrap();
    assert_round_trips(&config);
    let decoded = round_trip(&config);
    let route = &decoded.listeners()[target].virtual_hosts()[0].routes()[0];
    assert_eq!(
        route.fault, None,
        "a route fault that injects nothing is no fault"
    );
    let Action::Forward(f) = &route.action else {
        panic!("not a forward");
    };
    assert_eq!(
        f.clusters.clusters()[0].fault.as_deref(),
        Some(&FaultPolicy::default()),
        "a weighted cluster's inert fault disables the route's"
    );
    assert!(decoded.clusters().values().all(|c| {
        c.outlier
            .as_ref()
            .is_none_or(|o| o.consecutive_local_origin_failure.is_none())
    }));
}

#[test]
fn header_controlled_faults_round_trip_with_their_denominator() {
    use mesh_core::{FaultPolicy, HeaderFaultShare};
    let base = one_cluster(|_| {});
    let (target, table) = base.listeners().iter().next().unwrap();
    let vh = table.virtual_hosts()[0].clone();
    let mut routes = vh.routes().to_vec();
    let fault = Arc::new(FaultPolicy {
        header_abort: Some(HeaderFaultShare::new(2_500, 10_000).unwrap()),
        header_delay: Some(HeaderFaultShare::HUNDRED),
        ..FaultPolicy::default()
    });
    routes[0].fault = Some(fault.clone());
    let vh = mesh_core::route::VirtualHost::new(vh.name(), vh.domains().to_vec(), routes).unwrap();
    let mut listeners = base.listeners().clone();
    listeners.insert(
        target.clone(),
        Arc::new(RouteTable::new(table.name(), vec![vh]).unwrap()),
    );
    let config = MeshConfig::new(
        "1",
        listeners,
        base.clusters().clone(),
        ServerPolicy::default(),
    )
    .unwrap();
    assert_round_trips(&config);
    let decoded = round_trip(&config);
    let route = &decoded.listeners()[target].virtual_hosts()[0].routes()[0];
    assert_eq!(route.fault, Some(fault));
}

mod istiod;
mod prop;

/// The faults example scopes its reviews route to callers labelled `env: prod`: one set of
/// resources for every node leaves it out instead of sending it to every caller.
#[test]
fn a_route_scoped_by_its_caller_is_not_sent_unscoped() {
    let config = fixture("faults.yaml", FIXTURES[2].1);
    let r = encode(&config);
    let reviews = r
        .routes
        .iter()
        .find(|rc| rc.name.contains("reviews"))
        .expect("the reviews route configuration");
    let routes: usize = reviews.virtual_hosts.iter().map(|vh| vh.routes.len()).sum();
    assert_eq!(routes, 0, "{reviews:#?}");
    let ratings = r
        .routes
        .iter()
        .find(|rc| rc.name.contains("ratings"))
        .expect("the ratings route configuration");
    assert_eq!(ratings.virtual_hosts[0].routes.len(), 1);
}
