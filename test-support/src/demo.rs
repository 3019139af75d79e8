//! The demo's configurations (`examples/src/demo/topology.rs` builds them the same way: one
//! ServiceEntry per bookinfo service, a DestinationRule with a subset per version — ratings
//! with ISTIO_MUTUAL — and the reviews VirtualService), one per scenario of the demo
//! (`examples/src/demo/mod.rs`), plus the repository's Istio example `examples/config/echo.yaml`.
//! gRPC's own clients must ACK everything the control plane sends for each of them.

use std::{fmt::Write as _, net::SocketAddr};

use mesh_core::{MeshConfig, istio::load_str};

/// The targets the demo's services call.
pub const TARGETS: [&str; 3] = [
    "reviews.default.svc.cluster.local:9080",
    "ratings.default.svc.cluster.local:9080",
    "productpage.default.svc.cluster.local:9080",
];

/// Where the demo's instances listen.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub reviews: [SocketAddr; 3],
    pub ratings: [SocketAddr; 2],
    pub productpage: SocketAddr,
}

/// One scenario's policy: the reviews VirtualService's `http:` list, and the `trafficPolicy:`
/// bodies of reviews and ratings (as in the demo's `Policy`).
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub reviews_http: &'static str,
    pub reviews_traffic: &'static str,
    pub ratings_traffic: &'static str,
}

fn route_to(subset: &str) -> String {
    format!(
        "  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}}}]\n"
    )
}

/// Every scenario of the demo.
pub fn scenarios() -> Vec<(String, Scenario)> {
    let base = Scenario {
        name: "",
        reviews_http: "",
        reviews_traffic: "",
        ratings_traffic: "",
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let list = [
        Scenario {
            name: "everything to v1",
            ..base
        },
        Scenario {
            name: "canary 90/10",
            reviews_http: "  - route:\n    \
                 - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 90}\n    \
                 - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 10}\n",
            ..base
        },
        Scenario {
            name: "header routing",
            reviews_http: "  - match: [{headers: {end-user: {exact: jason}}}]\n    \
                 route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]\n  \
                 - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]\n",
            ..base
        },
        Scenario {
            name: "fault abort",
            reviews_http: leak(format!(
                "{}    fault: {{abort: {{percentage: {{value: 50}}, grpcStatus: UNAVAILABLE}}}}\n",
                route_to("v1")
            )),
            ..base
        },
        Scenario {
            name: "fault delay",
            reviews_http: leak(format!(
                "{}    fault: {{delay: {{percentage: {{value: 100}}, fixedDelay: 300ms}}}}\n",
                route_to("v1")
            )),
            ..base
        },
        Scenario {
            name: "no retries",
            reviews_http: leak(format!("{}    retries: {{attempts: 0}}\n", route_to("v3"))),
            ..base
        },
        Scenario {
            name: "retries",
            reviews_http: leak(format!(
                "{}    retries: {{attempts: 3, retryOn: unavailable}}\n",
                route_to("v3")
            )),
            ..base
        },
        Scenario {
            name: "circuit breaker",
            reviews_http: leak(format!("{}    retries: {{attempts: 0}}\n", route_to("v1"))),
            reviews_traffic: "    connectionPool: {http: {http2MaxRequests: 3}}\n",
            ..base
        },
        Scenario {
            name: "outlier detection",
            reviews_http: leak(route_to("v2")),
            ratings_traffic: "    outlierDetection: {consecutive5xxErrors: 3, interval: 500ms, \
                 baseEjectionTime: 2000ms, maxEjectionPercent: 50}\n",
            ..base
        },
        Scenario {
            name: "least request",
            reviews_traffic: "    loadBalancer: {simple: LEAST_REQUEST}\n",
            ..base
        },
        Scenario {
            name: "consistent hash",
            reviews_traffic: "    loadBalancer: {consistentHash: {httpHeaderName: end-user}}\n",
            ..base
        },
    ];
    list.into_iter().map(|s| (s.name.to_string(), s)).collect()
}

/// The demo's YAML for `scenario` with instances at `at`.
pub fn yaml(at: &Addresses, scenario: &Scenario) -> String {
    let mut yaml = String::new();
    let reviews: Vec<_> = at
        .reviews
        .iter()
        .zip(["v1", "v2", "v3"])
        .map(|(a, v)| (*a, v, ""))
        .collect();
    service_entry(&mut yaml, "reviews", &reviews, "GRPC");
    let ratings: Vec<_> = at
        .ratings
        .iter()
        .zip(["a", "b"])
        .map(|(a, i)| (*a, "v1", i))
        .collect();
    service_entry(&mut yaml, "ratings", &ratings, "GRPC");
    service_entry(
        &mut yaml,
        "productpage",
        &[(at.productpage, "v1", "")],
        "HTTP",
    );
    destination_rule(
        &mut yaml,
        "reviews",
        &["v1", "v2", "v3"],
        scenario.reviews_traffic,
    );
    let ratings_traffic = format!(
        "    tls: {{mode: ISTIO_MUTUAL}}\n{}",
        scenario.ratings_traffic
    );
    destination_rule(&mut yaml, "ratings", &["v1"], &ratings_traffic);
    let default_http = route_to("v1");
    let http = if scenario.reviews_http.is_empty() {
        default_http.as_str()
    } else {
        scenario.reviews_http
    };
    let _ = write!(
        yaml,
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: reviews, namespace: default}}\nspec:\n  \
         hosts: [reviews.default.svc.cluster.local]\n  http:\n{http}"
    );
    yaml
}

/// The demo's configuration for `scenario`, loaded.
pub fn config(at: &Addresses, scenario: &Scenario) -> MeshConfig {
    load_str("demo.yaml", &yaml(at, scenario))
        .unwrap_or_else(|e| panic!("{}: {e}", scenario.name))
        .config
}

/// The repository's Kubernetes scenarios (`examples/k8s/scenarios/*.yaml`), each loaded with
/// the loader's stand-in services (`examples/k8s/loader-check/services.yaml`) and the base
/// DestinationRules (`destination-rules.yaml`) unless the scenario replaces them, as the
/// README applies them. Their endpoints are placeholder addresses: calls to them fail.
pub fn k8s_scenarios() -> Vec<(String, MeshConfig)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s");
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let services = read(root.join("loader-check/services.yaml"));
    let base = read(root.join("scenarios/destination-rules.yaml"));
    let mut names: Vec<_> = std::fs::read_dir(root.join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = read(path);
            let mut sources = vec![
                mesh_core::istio::Source {
                    name: "services.yaml",
                    text: &services,
                },
                mesh_core::istio::Source {
                    name: &name,
                    text: &text,
                },
            ];
            if !text.contains("kind: DestinationRule") {
                sources.push(mesh_core::istio::Source {
                    name: "destination-rules.yaml",
                    text: &base,
                });
            }
            let config = mesh_core::istio::load(&sources)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .config;
            (name, config)
        })
        .collect()
}

/// The repository's Istio example, `examples/config/echo.yaml`, and its target.
pub fn echo_example() -> (MeshConfig, &'static str) {
    let text = include_str!("../../examples/config/echo.yaml");
    let config = load_str("echo.yaml", text)
        .unwrap_or_else(|e| panic!("echo.yaml: {e}"))
        .config;
    (config, "echo.default.svc.cluster.local:50051")
}

fn service_entry(
    yaml: &mut String,
    name: &str,
    endpoints: &[(SocketAddr, &str, &str)],
    protocol: &str,
) {
    let _ = write!(
        yaml,
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         hosts: [{name}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  \
         resolution: STATIC\n  ports: [{{number: 9080, name: main, protocol: {protocol}}}]\n  \
         endpoints:\n"
    );
    for (address, version, instance) in endpoints {
        let _ = write!(
            yaml,
            "  - address: {}\n    ports: {{main: {}}}\n    labels: {{app: {name}, version: {version}",
            address.ip(),
            address.port()
        );
        if !instance.is_empty() {
            let _ = write!(yaml, ", instance: {instance}");
        }
        yaml.push_str("}\n");
    }
}

fn destination_rule(yaml: &mut String, name: &str, versions: &[&str], traffic: &str) {
    let _ = write!(
        yaml,
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         host: {name}.default.svc.cluster.local\n  subsets:\n"
    );
    for version in versions {
        let _ = writeln!(
            yaml,
            "  - {{name: {version}, labels: {{version: {version}}}}}"
        );
    }
    if !traffic.is_empty() {
        let _ = write!(yaml, "  trafficPolicy:\n{traffic}");
    }
}
