#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use mesh_core::{
    FaultDelay, FaultPolicy, Labels, LocalRateLimit, MeshConfig, Percentage, ServerPolicy,
};
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

#[test]
fn health_paths_are_recognized() {
    assert!(is_health_check("/grpc.health.v1.Health/Check"));
    assert!(is_health_check("/grpc.health.v1.Health/Watch"));
    assert!(is_health_check("/healthz"));
    assert!(!is_health_check("/healthz/extra"));
    assert!(!is_health_check("/grpc.health.v1.HealthX/Check"));
}

#[test]
fn workload_defaults_come_from_the_service() {
    let w = Workload::new("default", "reviews.default.svc.cluster.local", 9080);
    assert_eq!(&*w.name, "reviews");
    assert_eq!(w.app(), "reviews");
    assert_eq!(w.version(), "unknown");
    let w = w.with_labels(Labels::new([("app", "rev"), ("version", "v2")]).unwrap());
    assert_eq!((w.app(), w.version()), ("rev", "v2"));
}

fn mesh_with(server: ServerPolicy) -> Mesh {
    let config = MeshConfig::new("1", Default::default(), Default::default(), server).unwrap();
    Mesh::new(config)
}

fn handler() -> impl Service<
    Request<axum::body::Body>,
    Response = Response<axum::body::Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_req: Request<axum::body::Body>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::from("handled")))
    })
}

fn get() -> Request<axum::body::Body> {
    Request::get("/hello")
        .body(axum::body::Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_delay_fault_holds_the_request_on_tokio_time() {
    let mesh = mesh_with(ServerPolicy {
        fault: Some(Arc::new(FaultPolicy {
            delay: Some(FaultDelay {
                duration: Duration::from_secs(5),
                percentage: Percentage::HUNDRED,
            }),
            ..FaultPolicy::default()
        })),
        ..ServerPolicy::default()
    });
    let svc = mesh
        .server_layer(Workload::new("default", "echo.default.svc", 80))
        .layer(handler());
    let mut call = tokio_test::task::spawn(svc.oneshot(get()));
    assert_pending!(call.poll());
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert_pending!(call.poll());
    assert_eq!(
        mesh.active_faults()
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let response = assert_ready!(call.poll()).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        mesh.active_faults()
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn an_inbound_header_abort_fault_reads_the_callers_headers() {
    let mesh = mesh_with(ServerPolicy {
        fault: Some(Arc::new(FaultPolicy {
            header_abort: Some(mesh_core::HeaderFaultShare::HUNDRED),
            ..FaultPolicy::default()
        })),
        ..ServerPolicy::default()
    });
    let svc = mesh
        .server_layer(Workload::new("default", "echo.default.svc", 80))
        .layer(handler());
    let mut asked = get();
    asked
        .headers_mut()
        .insert("x-envoy-fault-abort-request", "418".parse().unwrap());
    let response = svc.clone().oneshot(asked).await.unwrap();
    assert_eq!(response.status().as_u16(), 418);
    let response = svc.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "no header, no fault");
}

#[tokio::test(start_paused = true)]
async fn the_bucket_refills_on_tokio_time_and_restarts_when_the_limit_changes() {
    let limit = LocalRateLimit::new(1, 1, Duration::from_secs(1)).unwrap();
    let mesh = mesh_with(ServerPolicy {
        rate_limit: Some(limit),
        ..ServerPolicy::default()
    });
    let mut svc = mesh
        .server_layer(Workload::new("default", "echo.default.svc", 80))
        .layer(handler());
    let mut status = async || {
        svc.ready()
            .await
            .unwrap()
            .call(get())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(status().await, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(status().await, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(status().await, StatusCode::TOO_MANY_REQUESTS);

    // A new limit starts a full bucket.
    let bigger = LocalRateLimit::new(2, 1, Duration::from_secs(1)).unwrap();
    mesh.publish(Arc::new(
        MeshConfig::new(
            "2",
            Default::default(),
            Default::default(),
            ServerPolicy {
                rate_limit: Some(bigger),
                ..ServerPolicy::default()
            },
        )
        .unwrap(),
    ));
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(status().await, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn canonical_service_and_revision_follow_istios_label_precedence() {
    let workload = |labels: &[(&str, &str)]| {
        Workload::new("default", "reviews.default.svc.cluster.local", 9080)
            .with_name("reviews-v2-5d8f")
            .with_labels(Labels::new(labels.iter().copied()).unwrap())
    };
    let bare = workload(&[]);
    assert_eq!(
        (bare.canonical_service(), bare.canonical_revision()),
        ("reviews-v2-5d8f", "latest")
    );
    let app = workload(&[("app", "reviews"), ("version", "v2")]);
    assert_eq!(
        (app.canonical_service(), app.canonical_revision()),
        ("reviews", "v2")
    );
    let all = workload(&[
        ("app", "reviews"),
        ("version", "v2"),
        ("app.kubernetes.io/name", "reviews-k8s"),
        ("app.kubernetes.io/version", "2.0"),
        ("service.istio.io/canonical-name", "reviews-canonical"),
        ("service.istio.io/canonical-revision", "2.0.1"),
    ]);
    assert_eq!(
        (all.canonical_service(), all.canonical_revision()),
        ("reviews-canonical", "2.0.1")
    );
    let k8s = workload(&[
        ("app", "reviews"),
        ("version", "v2"),
        ("app.kubernetes.io/name", "reviews-k8s"),
        ("app.kubernetes.io/version", "2.0"),
    ]);
    assert_eq!(
        (k8s.canonical_service(), k8s.canonical_revision()),
        ("reviews-k8s", "2.0")
    );
}

/// A port an xDS client serves answers UNAVAILABLE until its inbound listener arrives, then
/// follows that listener's RBAC (not the local policy), and other ports keep the local policy.
#[tokio::test]
async fn an_xds_served_port_follows_its_inbound_listener() {
    use mesh_core::{
        InboundChain, InboundListener, InboundListeners, InboundState, MtlsMode, Permission,
        Principal, Rbac, RbacAction, RbacFilter, RbacPolicy,
    };
    let mesh = mesh_with(ServerPolicy::default());
    let status = |mesh: &Mesh, port: u16| {
        let mut svc = mesh
            .server_layer(Workload::new("default", "ratings", port))
            .layer(handler());
        async move {
            svc.ready()
                .await
                .unwrap()
                .call(get())
                .await
                .unwrap()
                .status()
        }
    };
    let publish = |state: InboundState| {
        mesh.publish_inbound(Arc::new(InboundListeners::new(
            [(9080, state)].into_iter().collect(),
        )));
    };
    publish(InboundState::NotServing("waiting".into()));
    assert_eq!(status(&mesh, 9080).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&mesh, 9090).await, StatusCode::OK, "not xDS-driven");

    let deny_all = RbacFilter {
        name: "envoy.filters.http.rbac".into(),
        rules: Some(Rbac {
            action: RbacAction::Deny,
            policies: Arc::from([RbacPolicy {
                name: "default-deny-all-0".into(),
                permissions: Arc::from([Permission::Any]),
                principals: Arc::from([Principal::Any]),
            }]),
            audit: mesh_core::AuditCondition::None,
        }),
        shadow_rules: None,
    };
    publish(InboundState::Serving(Arc::new(InboundListener::single(
        "xds.istio.io/grpc/lds/inbound/0.0.0.0:9080",
        InboundChain {
            name: "inbound".into(),
            mtls: MtlsMode::Disable,
            rbac: Arc::from([deny_all]),
        },
    ))));
    assert_eq!(status(&mesh, 9080).await, StatusCode::FORBIDDEN);
    // A local publish of server policy does not drop the xDS side.
    mesh.publish_server(Arc::new(ServerPolicy::default()));
    assert_eq!(status(&mesh, 9080).await, StatusCode::FORBIDDEN);
    assert_eq!(status(&mesh, 9090).await, StatusCode::OK);

    // The chain now requires mTLS: a request on a plaintext connection (accepted before) is
    // not served, even with no RBAC at all.
    publish(InboundState::Serving(Arc::new(InboundListener::single(
        "xds.istio.io/grpc/lds/inbound/0.0.0.0:9080",
        InboundChain {
            name: "inbound".into(),
            mtls: MtlsMode::Strict,
            rbac: Arc::from([]),
        },
    ))));
    assert_eq!(status(&mesh, 9080).await, StatusCode::SERVICE_UNAVAILABLE);
}

/// Each request follows the filter chain its connection's addresses select (A36): peers in
/// 10.0.0.0/8 get the chain that denies everything, other peers the default chain.
#[tokio::test]
async fn requests_follow_the_filter_chain_of_their_connection() {
    use mesh_core::{
        FilterChainMatch, InboundChain, InboundListener, InboundListeners, InboundState, MtlsMode,
        Permission, Principal, Rbac, RbacAction, RbacFilter, RbacPolicy,
    };
    let mesh = mesh_with(ServerPolicy::default());
    let deny_all = RbacFilter {
        name: "envoy.filters.http.rbac".into(),
        rules: Some(Rbac {
            action: RbacAction::Deny,
            policies: Arc::from([RbacPolicy {
                name: "deny-all".into(),
                permissions: Arc::from([Permission::Any]),
                principals: Arc::from([Principal::Any]),
            }]),
            audit: mesh_core::AuditCondition::None,
        }),
        shadow_rules: None,
    };
    let plaintext = |name: &str, rbac: Arc<[RbacFilter]>| InboundChain {
        name: name.into(),
        mtls: MtlsMode::Disable,
        rbac,
    };
    let listener = InboundListener::new(
        "xds.istio.io/grpc/lds/inbound/0.0.0.0:9080",
        vec![(
            FilterChainMatch {
                source_prefix_ranges: Arc::from(["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]),
                ..Default::default()
            },
            plaintext("internal", Arc::from([deny_all])),
        )],
        Some(plaintext("default", Arc::from([]))),
    )
    .unwrap();
    mesh.publish_inbound(Arc::new(InboundListeners::new(
        [(9080, InboundState::Serving(Arc::new(listener)))]
            .into_iter()
            .collect(),
    )));
    let status = |remote: &str, local: Option<&str>| {
        let mut svc = mesh
            .server_layer(Workload::new("default", "ratings", 9080))
            .layer(handler());
        let mut req = get();
        req.extensions_mut().insert(Peer {
            address: Some(remote.parse().unwrap()),
            local_address: local.map(|l| l.parse().unwrap()),
            identity: None,
        });
        async move { svc.ready().await.unwrap().call(req).await.unwrap().status() }
    };
    assert_eq!(
        status("10.1.1.1:5000", Some("192.168.0.1:9080")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status("172.16.0.1:5000", Some("192.168.0.1:9080")).await,
        StatusCode::OK
    );
    // Unknown local address: which chain applies depends on the connection, so not served.
    assert_eq!(
        status("172.16.0.1:5000", None).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
