//! Routing through a mesh channel to real tonic servers on 127.0.0.1: weighted splits, header
//! and URI-prefix routing, hot weight changes, and the answers for what is missing.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use mesh_test_support::echo as support;
use support::*;
use tonic::Code;

async fn count_by_server(
    client: &mut EchoClient<mesh_tower::Channel>,
    n: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let reply = client
            .say(request(&i.to_string()))
            .await
            .expect("rpc succeeds");
        *counts.entry(reply.into_inner().served_by).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_ninety_ten_split_holds_and_moves_at_once_when_republished() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let servers = [("v1", v1.addr), ("v2", v2.addr)];
    let mesh = mesh(&servers, &split(90, 10));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let counts = count_by_server(&mut client, 2_000).await;
    let share_v2 = counts.get("v2").copied().unwrap_or(0) as f64 / 2_000.0;
    assert!(
        (share_v2 - 0.10).abs() <= 0.03,
        "v2 got {share_v2}: {counts:?}"
    );

    // Moving all weight to v2 applies to the very next request.
    mesh.publish(
        config(&format!(
            "{}---\n{}",
            services_yaml(&servers),
            split(0, 100)
        ))
        .into(),
    );
    let counts = count_by_server(&mut client, 200).await;
    assert_eq!(counts.get("v2"), Some(&200), "{counts:?}");
}

#[tokio::test]
async fn beta_users_go_to_v2_and_uri_prefixes_route_by_method() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let policy = virtual_service(&format!(
        "  - match:
    - headers:
        x-beta-user: {{exact: \"true\"}}
    route:
    - destination: {{host: {HOST}, subset: v2}}
  - match:
    - uri: {{prefix: /echo.Echo/Shout}}
    route:
    - destination: {{host: {HOST}, subset: v2}}
  - route:
    - destination: {{host: {HOST}, subset: v1}}
"
    ));
    let mesh = mesh(&[("v1", v1.addr), ("v2", v2.addr)], &policy);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for _ in 0..20 {
        let mut beta = request("hi");
        beta.metadata_mut()
            .insert("x-beta-user", "true".parse().unwrap());
        assert_eq!(client.say(beta).await.unwrap().into_inner().served_by, "v2");
        assert_eq!(
            client
                .say(request("hi"))
                .await
                .unwrap()
                .into_inner()
                .served_by,
            "v1"
        );
        let shouted = client.shout(request("hi")).await.unwrap().into_inner();
        assert_eq!(
            (shouted.served_by.as_str(), shouted.message.as_str()),
            ("v2", "HI")
        );
    }
}

#[tokio::test]
async fn what_is_missing_is_named_in_the_status() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let mesh = mesh(&[("v1", v1.addr)], REGISTRY_ONLY);

    // A target in no registry, refused (without the Sidecar, it would be passed through).
    let mut unknown = EchoClient::new(mesh.channel("ratings.default.svc.cluster.local:9080"));
    let status = unknown.say(request("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains(
            "target `ratings.default.svc.cluster.local:9080` is not in the mesh registry: refused by outboundTrafficPolicy REGISTRY_ONLY of Sidecar istio-system/default"
        ),
        "{status:?}"
    );

    // An unreachable endpoint: connect failure, answered at once on the next try (backoff).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mesh = support::mesh(&[("v1", dead)], "");
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for _ in 0..2 {
        let status = client.say(request("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("upstream connect error"),
            "{status:?}"
        );
        assert!(status.message().contains(&dead.to_string()), "{status:?}");
    }

    // A service whose ServiceEntry lists no endpoints.
    let empty = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: empty}
spec:
  hosts: [empty.default.svc.cluster.local]
  resolution: STATIC
  ports:
  - {number: 50051, name: grpc, protocol: GRPC}
";
    let mesh = support::mesh(&[("v1", v1.addr)], empty);
    let mut client = EchoClient::new(mesh.channel("empty.default.svc.cluster.local:50051"));
    let status = client.say(request("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("has no endpoints"), "{status:?}");
}

#[tokio::test]
async fn a_plain_http_caller_gets_http_statuses_for_what_is_missing() {
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;

    let v1 = spawn_echo("v1", Behavior::default()).await;
    let mesh = mesh(&[("v1", v1.addr)], "");
    // An authority that no virtual host of the target claims.
    let req = http::Request::get("http://unknown.example.com/anything")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = mesh.channel(TARGET).oneshot(req).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    assert!(
        response.headers().get("grpc-status").is_none(),
        "an HTTP caller gets HTTP"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("no route matches `unknown.example.com/anything`"),
        "{text}"
    );
}

#[tokio::test]
async fn routes_match_the_normalized_path_and_the_server_receives_it() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let policy = virtual_service(&format!(
        "  - match:
    - uri: {{exact: /echo.Echo/Shout}}
    route:
    - destination: {{host: {HOST}, subset: v2}}
  - route:
    - destination: {{host: {HOST}, subset: v1}}
"
    ));
    let mesh = mesh(&[("v1", v1.addr), ("v2", v2.addr)], &policy);
    let mut grpc = tonic::client::Grpc::new(mesh.channel(TARGET));
    let call = async |grpc: &mut tonic::client::Grpc<mesh_tower::Channel>, path: &'static str| {
        grpc.ready().await.unwrap();
        grpc.unary::<_, EchoReply, _>(
            request("hi"),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await
    };
    for path in [
        "/echo.Echo/Say/../Shout",
        "/echo.Echo/%53hout",
        "/echo.Echo\\Shout",
    ] {
        let reply = call(&mut grpc, path).await.unwrap().into_inner();
        // Routed to v2 by the exact match, and shouted: the server got `/echo.Echo/Shout`.
        assert_eq!(
            (reply.served_by.as_str(), reply.message.as_str()),
            ("v2", "HI"),
            "{path}"
        );
    }
    let refused = call(&mut grpc, "/echo.Echo/Say%00").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

/// Istio's `sourceLabels`: two workloads with different labels call the same service through
/// the same policy; only the one the match names takes the scoped route. Before, the condition
/// was dropped and both took it.
#[tokio::test]
async fn source_labels_route_each_workload_by_its_own_labels() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let servers = [("v1", v1.addr), ("v2", v2.addr)];
    let policy = virtual_service(&format!(
        "  - match:
    - sourceLabels: {{app: frontend}}
    route:
    - destination: {{host: {HOST}, subset: v2}}
  - route:
    - destination: {{host: {HOST}, subset: v1}}
"
    ));
    let labels = |app: &str| mesh_tower::mesh_core::Labels::new([("app", app)]).unwrap();
    let frontend = mesh(&servers, &policy);
    assert!(frontend.set_local_labels(labels("frontend")).is_ok());
    let batch = mesh(&servers, &policy);
    assert!(batch.set_local_labels(labels("batch")).is_ok());
    let unlabelled = mesh(&servers, &policy);

    for (mesh, expected) in [(&frontend, "v2"), (&batch, "v1"), (&unlabelled, "v1")] {
        let mut client = EchoClient::new(mesh.channel(TARGET));
        for _ in 0..5 {
            let reply = client.say(request("hi")).await.unwrap().into_inner();
            assert_eq!(reply.served_by, expected);
        }
    }
}

/// A VirtualService bound only to an ingress gateway leaves mesh traffic on the default route.
#[tokio::test]
async fn a_gateway_only_virtual_service_leaves_mesh_traffic_alone() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let servers = [("v1", v1.addr), ("v2", v2.addr)];
    let gateway_only = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo-edge
spec:
  hosts: [{HOST}]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: {HOST}, subset: v2}}
"
    );
    let mesh = mesh(&servers, &gateway_only);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let counts = count_by_server(&mut client, 40).await;
    assert!(
        counts.get("v1").copied().unwrap_or(0) > 0,
        "the default route spreads over both: {counts:?}"
    );
}
