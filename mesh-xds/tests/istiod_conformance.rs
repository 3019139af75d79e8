//! Issue 13's verification: the xDS client and xDS-driven servers against an ADS server that
//! speaks istiod's proxyless-gRPC xDS as istio's source writes it (`support::istiod`, not this
//! repository's encoder), end to end on 127.0.0.1 with real mTLS (rcgen certificates).
//!
//! The small mesh: `echo` with subsets v1 and v2 split 80/20, a fault on `Shout`, istiod's
//! default retry policy on every route; `flaky` with ring hash and a backend failing every
//! other call. Every backend is a server whose port is served from its inbound listener:
//! STRICT mTLS, an RBAC DENY for `productpage` and an ALLOW for `reviews` and `productpage`.
//! Cluster and listener TLS come in both of istiod's shapes (≤ 1.28 and ≥ 1.29).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use mesh_test_support as support;
use mesh_test_support::pki as certs;
use mesh_tower::{
    Mesh, Workload,
    mesh_core::{InboundState, Labels, MeshConfig},
    tls::MeshListener,
};
use mesh_xds::{
    bootstrap::{Bootstrap, CertificateProvider, ChannelCreds, FileWatcherConfig, XdsServer},
    client::XdsClient,
};
use support::{
    ads::{AdsServer, Snapshot},
    echo::{Behavior, EchoClient, echo_service, request},
    eventually,
    istiod::{
        self, AuthzRule, Destination, HttpRoute, TlsShape, TrafficPolicy, cluster_name,
        push_version,
    },
    resources::{CDS, EDS, LDS, RDS},
};
use tonic::Code;

const ECHO: &str = "echo.default.svc.cluster.local";
const FLAKY: &str = "flaky.default.svc.cluster.local";
const PORT: u16 = 50051;
/// `Status::Unavailable` as the fault's gRPC status.
const UNAVAILABLE: u32 = 14;

type Client = EchoClient<mesh_tower::Channel>;

/// Fields of istiod's resources the client reports as ignored: the outbound listener's VIP,
/// stats names, tracing decorators, and retry knobs gRPC does not have.
const BENIGN_UNSUPPORTED: &[&str] = &[
    ": address: not supported",
    ": alt_stat_name: not supported",
    ".include_request_attempt_count: not supported",
    ".decorator: not supported",
    ".retry_policy.host_selection_retry_max_attempts: not supported",
];

/// Certificates for the workloads, as files the bootstrap's `default` provider names.
struct Pki {
    ca: certs::Ca,
    dir: certs::Dir,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: certs::Ca::new("mesh"),
            dir: certs::Dir::new(),
        }
    }

    /// Writes the identity of service account `sa` and returns the provider naming it.
    fn provider(&self, sa: &str) -> CertificateProvider {
        self.dir.identity(sa, &self.ca.workload(sa), &self.ca);
        CertificateProvider::FileWatcher(FileWatcherConfig {
            certificate_file: Some(self.dir.path(&format!("{sa}.crt"))),
            private_key_file: Some(self.dir.path(&format!("{sa}.key"))),
            ca_certificate_file: Some(self.dir.path(&format!("{sa}-ca.crt"))),
            refresh_interval: Duration::from_secs(600),
        })
    }
}

/// The istio-agent bootstrap of workload `sa`: the ADS server, a `default` provider.
fn bootstrap(ads: SocketAddr, pki: &Pki, sa: &str) -> Bootstrap {
    let mut b = Bootstrap::insecure(ads.to_string(), format!("sidecar~127.0.0.1~{sa}.default"));
    b.xds_servers = vec![XdsServer {
        server_uri: ads.to_string(),
        channel_creds: ChannelCreds::Insecure,
        server_features: vec!["xds_v3".into()],
    }];
    b.certificate_providers = BTreeMap::from([("default".to_string(), pki.provider(sa))]);
    b.server_listener_resource_name_template = Some("xds.istio.io/grpc/lds/inbound/%s".into());
    b
}

/// A server whose port is served from its inbound listener.
struct Backend {
    addr: SocketAddr,
    behavior: Arc<Behavior>,
    mesh: Mesh,
    xds: XdsClient,
}

async fn backend(ads: &AdsServer, pki: &Pki, name: &str, sa: &str, behavior: Behavior) -> Backend {
    let mesh = Mesh::new(MeshConfig::empty());
    let bootstrap = bootstrap(ads.addr, pki, sa);
    // No `set_workload_identity`: the server presents the bootstrap's `default` provider.
    let xds = XdsClient::start(bootstrap, mesh.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    xds.serve(addr).unwrap();
    let labels = Labels::new([("app", sa), ("version", name)]).unwrap();
    let tls = mesh
        .server_tls("default", labels.clone(), addr.port())
        .unwrap();
    let listener = MeshListener::new(tcp, tls).unwrap();
    let layer = mesh.server_layer(
        Workload::new(
            "default",
            format!("{sa}.default.svc.cluster.local").as_str(),
            addr.port(),
        )
        .with_labels(labels),
    );
    let behavior = Arc::new(behavior);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(echo_service(name, behavior.clone()))
            .serve_with_incoming(listener),
    );
    Backend {
        addr,
        behavior,
        mesh,
        xds,
    }
}

/// A caller with workload identity `sa` whose channels are `xds:///` targets.
fn caller(ads: &AdsServer, pki: &Pki, sa: &str) -> (XdsClient, Client, Client) {
    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(bootstrap(ads.addr, pki, sa), mesh.clone()).unwrap();
    let echo = EchoClient::new(mesh.channel(format!("xds:///{ECHO}:{PORT}")));
    let flaky = EchoClient::new(mesh.channel(format!("xds:///{FLAKY}:{PORT}")));
    (xds, echo, flaky)
}

struct Backends {
    v1: Backend,
    v2: Backend,
    flaky: Backend,
}

fn spiffe(sa: &str) -> String {
    certs::spiffe(sa)
}

/// Everything istiod would push for this mesh at `version`: `split` is (v1, v2) in percent
/// (a destination of weight 0 is left out, and a single destination is a plain cluster, as
/// istio's `translateRoute` does); `deny_productpage` adds the DENY policy.
fn snapshot(counter: u64, m: &Backends, split: (u32, u32), deny_productpage: bool) -> Snapshot {
    let v1 = cluster_name("v1", ECHO, PORT);
    let v2 = cluster_name("v2", ECHO, PORT);
    let flaky = cluster_name("", FLAKY, PORT);
    let mut s = Snapshot::new(&push_version(counter));
    let add = |s: Snapshot, ty: &str, (name, any): (String, _)| s.with(ty, &name, any);

    s = add(s, LDS, istiod::outbound_listener(ECHO, PORT));
    s = add(s, LDS, istiod::outbound_listener(FLAKY, PORT));
    let weighted: Vec<(String, u32)> = [(v1.clone(), split.0), (v2.clone(), split.1)]
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .collect();
    let destination = match weighted.as_slice() {
        [(only, _)] => Destination::Cluster(only.clone()),
        _ => Destination::Weighted(weighted),
    };
    s = add(
        s,
        RDS,
        istiod::route_configuration(
            ECHO,
            PORT,
            &[
                HttpRoute {
                    path: Some("/echo.Echo/Shout".into()),
                    destination: Destination::Cluster(v1.clone()),
                    abort: Some((UNAVAILABLE, 50.0)),
                    hash_header: None,
                },
                HttpRoute {
                    path: None,
                    destination,
                    abort: None,
                    hash_header: None,
                },
            ],
        ),
    );
    s = add(
        s,
        RDS,
        istiod::route_configuration(
            FLAKY,
            PORT,
            &[HttpRoute {
                path: None,
                destination: Destination::Cluster(flaky.clone()),
                abort: None,
                hash_header: Some("x-user".into()),
            }],
        ),
    );
    let mutual = |shape, sa: &str| TrafficPolicy {
        istio_mutual: Some((shape, vec![spiffe(sa)])),
        ring_hash: false,
    };
    s = s
        .with(
            CDS,
            &v1,
            istiod::cluster(&v1, &mutual(TlsShape::Istio1_28, "echo")),
        )
        .with(
            CDS,
            &v2,
            istiod::cluster(&v2, &mutual(TlsShape::Istio1_29, "echo")),
        )
        .with(
            CDS,
            &flaky,
            istiod::cluster(
                &flaky,
                &TrafficPolicy {
                    ring_hash: true,
                    ..mutual(TlsShape::Istio1_29, "flaky")
                },
            ),
        )
        .with(EDS, &v1, istiod::cluster_load_assignment(&v1, &[m.v1.addr]))
        .with(EDS, &v2, istiod::cluster_load_assignment(&v2, &[m.v2.addr]))
        .with(
            EDS,
            &flaky,
            istiod::cluster_load_assignment(&flaky, &[m.flaky.addr]),
        );

    let deny = if deny_productpage {
        vec![AuthzRule {
            principals: vec![spiffe("productpage")],
            paths: None,
        }]
    } else {
        Vec::new()
    };
    let allow = vec![AuthzRule {
        principals: vec![spiffe("reviews"), spiffe("productpage")],
        paths: None,
    }];
    for (backend, shape) in [
        (&m.v1, TlsShape::Istio1_28),
        (&m.v2, TlsShape::Istio1_29),
        (&m.flaky, TlsShape::Istio1_29),
    ] {
        s = add(
            s,
            LDS,
            istiod::inbound_listener(backend.addr, shape, &deny, &allow),
        );
    }
    s
}

async fn call(
    client: &mut Client,
    shout: bool,
    user: Option<&str>,
) -> Result<String, tonic::Status> {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    if let Some(user) = user {
        req.metadata_mut().insert("x-user", user.parse().unwrap());
    }
    let call = async {
        if shout {
            client.shout(req).await
        } else {
            client.say(req).await
        }
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("rpc hung")
        .map(|r| r.into_inner().served_by)
}

fn code(result: &Result<String, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn serving(backend: &Backend) -> Option<InboundState> {
    backend
        .mesh
        .config()
        .inbound()
        .get(backend.addr.port())
        .cloned()
}

#[tokio::test]
async fn the_client_and_servers_follow_istiods_proxyless_xds_end_to_end() {
    let pki = Pki::new();
    let ads = AdsServer::start().await;
    istiod::behave_like_istiod(&ads);
    let m = Backends {
        v1: backend(&ads, &pki, "v1", "echo", Behavior::default()).await,
        v2: backend(&ads, &pki, "v2", "echo", Behavior::default()).await,
        flaky: backend(
            &ads,
            &pki,
            "flaky",
            "flaky",
            Behavior {
                fail: Some((1, 2)),
                ..Default::default()
            },
        )
        .await,
    };
    let (reviews_xds, mut reviews, mut reviews_flaky) = caller(&ads, &pki, "reviews");
    let (productpage_xds, mut productpage, _) = caller(&ads, &pki, "productpage");
    ads.set_snapshot(snapshot(1, &m, (80, 20), true));
    for b in [&m.v1, &m.v2, &m.flaky] {
        eventually("the inbound listener is served", || {
            matches!(serving(b), Some(InboundState::Serving(_)))
        })
        .await;
    }

    // The 80/20 split, over mTLS to servers presenting both TLS shapes.
    let mut served: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let by = call(&mut reviews, false, None).await.expect("say succeeds");
        *served.entry(by).or_default() += 1;
    }
    let v1 = served.get("v1").copied().unwrap_or(0);
    assert_eq!(
        v1 + served.get("v2").copied().unwrap_or(0),
        400,
        "{served:?}"
    );
    assert!((280..=360).contains(&v1), "80/20 split: {served:?}");

    // The fault: half of Shout aborted with UNAVAILABLE before reaching a backend, and the
    // abort is not retried (the fault filter runs before the router).
    let before = m.v1.behavior.calls.load(Ordering::SeqCst);
    let mut outcomes: HashMap<Code, u32> = HashMap::new();
    for _ in 0..400 {
        *outcomes
            .entry(code(&call(&mut reviews, true, None).await))
            .or_default() += 1;
    }
    let aborted = outcomes.get(&Code::Unavailable).copied().unwrap_or(0);
    let ok = outcomes.get(&Code::Ok).copied().unwrap_or(0);
    assert_eq!(aborted + ok, 400, "{outcomes:?}");
    assert!((168..=232).contains(&aborted), "50% aborted: {outcomes:?}");
    assert_eq!(
        m.v1.behavior.calls.load(Ordering::SeqCst) - before,
        ok,
        "aborted calls never reach the backend"
    );

    // Retries with istiod's default policy: every other call to `flaky` fails with
    // UNAVAILABLE, and each failed first attempt is retried once, through ring hash.
    for i in 0..50 {
        let user = format!("user-{}", i % 5);
        let result = call(&mut reviews_flaky, false, Some(&user)).await;
        assert_eq!(result.ok().as_deref(), Some("flaky"), "call {i}");
    }
    assert_eq!(
        m.flaky.behavior.calls.load(Ordering::SeqCst),
        100,
        "each call: one failed attempt, one retry"
    );

    // RBAC: the DENY policy refuses productpage.
    let denied = call(&mut productpage, false, None).await;
    assert_eq!(code(&denied), Code::PermissionDenied, "{denied:?}");

    // STRICT: a plaintext caller gets no answer from the handler.
    let v1_calls = m.v1.behavior.calls.load(Ordering::SeqCst);
    let plaintext_mesh = Mesh::new(support::echo::config(&support::echo::services_yaml(&[(
        "v1", m.v1.addr,
    )])));
    let mut plaintext = EchoClient::new(plaintext_mesh.channel(format!("{ECHO}:{PORT}")));
    let plain = call(&mut plaintext, false, None).await;
    assert!(plain.is_err(), "plaintext under STRICT: {plain:?}");
    assert_eq!(m.v1.behavior.calls.load(Ordering::SeqCst), v1_calls);

    // A policy change mid-traffic: all to v2, productpage allowed. No call fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU32::new(0));
    let traffic = {
        let (stop, failures) = (stop.clone(), failures.clone());
        let mut client = reviews.clone();
        tokio::spawn(async move {
            let mut calls = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if let Err(status) = call(&mut client, false, None).await {
                    eprintln!("failed mid-change: {status:?}");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                calls += 1;
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    ads.set_snapshot(snapshot(2, &m, (0, 100), false));
    let mut applied = false;
    for _ in 0..200 {
        let allowed = call(&mut productpage, false, None).await.is_ok();
        let to_v2 = call(&mut reviews, false, None).await.ok().as_deref() == Some("v2");
        if allowed && to_v2 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "version 2 applied");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let calls = traffic.await.unwrap();
    assert!(calls > 0);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {calls} calls");
    for _ in 0..20 {
        assert_eq!(
            call(&mut reviews, false, None).await.ok().as_deref(),
            Some("v2")
        );
        assert_eq!(code(&call(&mut productpage, false, None).await), Code::Ok);
    }

    // Everything ACKed, with istiod's versions and nonces, in both TLS shapes.
    for xds in [
        &reviews_xds,
        &productpage_xds,
        &m.v1.xds,
        &m.v2.xds,
        &m.flaky.xds,
    ] {
        let counters = xds.counters();
        // Only fields without a proxyless meaning are ignored; none of TLS, RBAC, routing,
        // retries or the fault.
        for resource in xds.config_dump().resources {
            for field in &resource.unsupported {
                assert!(
                    BENIGN_UNSUPPORTED.iter().any(|b| field.contains(b)),
                    "{field}"
                );
            }
        }
        assert_eq!(counters.updates_rejected, 0, "{counters:?}");
    }
    let requests = ads.requests();
    assert!(requests.iter().all(|r| r.error_detail.is_none()));
    for ty in [LDS, RDS, CDS, EDS] {
        let ack = requests
            .iter()
            .find(|r| r.type_url == ty && r.version_info == push_version(2))
            .unwrap_or_else(|| panic!("no ACK of {ty} version 2"));
        let uuid = ack
            .response_nonce
            .strip_prefix(&push_version(2))
            .expect("istiod's nonce starts with the version");
        assert_eq!(uuid.len(), 36, "a UUID: {uuid}");
    }
}
