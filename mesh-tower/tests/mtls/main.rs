//! mTLS between mesh clients and mesh servers on 127.0.0.1, with rcgen-made certificates:
//! identity checks, the three PeerAuthentication modes, the peer's identity in handlers,
//! certificate-provider instances, and rotation under load.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs;
#[path = "../support/mod.rs"]
mod support;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use certs::{Ca, Dir, Leaf, Validity, spiffe, yaml_path};
use mesh_tower::{
    Mesh, Peer,
    mesh_core::{
        CertificateSource, MeshConfig, MtlsMode, SanKind, SanMatcher, TlsMode, UpstreamTls,
        matcher::StringMatcher,
    },
    tls::{CertificateFiles, MeshListener, MeshTls, ProviderFiles, ServerTls, TlsError},
};
use support::{EchoClient, EchoReply, EchoRequest, HOST, TARGET, request};
use tonic::{Code, Status, body::Body, server::NamedService};

// === servers ===

/// A gRPC `echo.Echo` service that answers with who called: `message` is the caller's
/// principal (empty without one), `config_version` says whether the connection was TLS.
#[derive(Clone)]
struct WhoAmI;

impl NamedService for WhoAmI {
    const NAME: &'static str = "echo.Echo";
}

impl tower::Service<http::Request<Body>> for WhoAmI {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let handler = tower::service_fn(|req: tonic::Request<EchoRequest>| async move {
                let peer = req
                    .extensions()
                    .get::<Peer>()
                    .cloned()
                    .ok_or_else(|| Status::internal("no Peer in the request's extensions"))?;
                Ok::<_, Status>(tonic::Response::new(EchoReply {
                    message: peer.principal().unwrap_or_default().to_owned(),
                    served_by: peer.address.map(|a| a.ip().to_string()).unwrap_or_default(),
                    config_version: if peer.identity.is_some() {
                        "mtls"
                    } else {
                        "none"
                    }
                    .into(),
                }))
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// Serves [`WhoAmI`] on 127.0.0.1 with `tls`.
async fn serve(tls: ServerTls) -> SocketAddr {
    let listener = MeshListener::bind("127.0.0.1:0", tls).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WhoAmI)
            .serve_with_incoming(listener),
    );
    addr
}

/// A TLS context that polls only when a test asks ([`CertificateWatcher::reload`]).
fn quiet_tls() -> MeshTls {
    MeshTls::new(Duration::from_secs(3600))
}

/// A server in `mode` with the identity in `files`.
async fn server(mode: MtlsMode, files: CertificateFiles) -> (SocketAddr, ServerTls) {
    let tls = quiet_tls();
    tls.set_workload_identity(files).unwrap();
    let server_tls = tls.server(mode).unwrap();
    (serve(server_tls.clone()).await, server_tls)
}

// === clients ===

/// Istio YAML for the echo service at `addr` with `tls` as the DestinationRule's
/// `trafficPolicy.tls` (flow style), or no TLS when empty.
fn client_config(addr: SocketAddr, tls: &str) -> MeshConfig {
    let traffic_policy = if tls.is_empty() {
        String::new()
    } else {
        format!("  trafficPolicy:\n    tls: {tls}\n")
    };
    support::config(&format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
  - address: {}
    ports: {{grpc: {}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {HOST}
{traffic_policy}---
{}",
        addr.ip(),
        addr.port(),
        support::virtual_service(&format!(
            "  - route:\n    - destination: {{host: {HOST}}}\n"
        ))
    ))
}

/// `config` with every cluster's TLS replaced by `tls` (what the xDS decoder produces for
/// certificate-provider instances, which Istio YAML cannot express).
fn with_tls(config: &MeshConfig, tls: &UpstreamTls) -> MeshConfig {
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, cluster)| {
            let mut cluster = (**cluster).clone();
            cluster.tls = tls.clone();
            (name.clone(), Arc::new(cluster))
        })
        .collect();
    MeshConfig::new(
        "with-tls",
        config.listeners().clone(),
        clusters,
        (**config.server()).clone(),
    )
    .unwrap()
}

/// ISTIO_MUTUAL expecting the server to be service account `server`.
fn istio_mutual(sa: &str) -> String {
    format!(
        "{{mode: ISTIO_MUTUAL, subjectAltNames: [\"{}\"]}}",
        spiffe(sa)
    )
}

/// A mesh client with workload identity `files` (when given) and `config`.
fn client(files: Option<CertificateFiles>, config: MeshConfig) -> Mesh {
    let mesh = Mesh::new(config);
    if let Some(files) = files {
        mesh.set_workload_identity(files).unwrap();
    }
    mesh
}

async fn say(mesh: &Mesh) -> Result<EchoReply, Status> {
    EchoClient::new(mesh.channel(TARGET))
        .say(request("hi"))
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts a mesh-synthesized TLS failure: UNAVAILABLE, and a message that says TLS and
/// contains `why`.
fn assert_tls_failure(result: Result<EchoReply, Status>, why: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("TLS") && status.message().contains(why),
        "the message should say TLS and `{why}`: {}",
        status.message()
    );
}

/// One CA, a server `server` and a client `client`, written to files.
struct Pki {
    dir: Dir,
    ca: Ca,
    server: CertificateFiles,
    client: CertificateFiles,
}

fn pki() -> Pki {
    let dir = Dir::new();
    let ca = Ca::new("mesh root");
    let server = dir.identity("server", &ca.workload("server"), &ca);
    let client = dir.identity("client", &ca.workload("client"), &ca);
    Pki {
        dir,
        ca,
        server,
        client,
    }
}

// === the matrix ===

#[tokio::test]
async fn istio_mutual_succeeds_and_the_handler_sees_the_client_principal() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Strict, pki.server.clone()).await;
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    let reply = say(&mesh).await.unwrap();
    assert_eq!(reply.message, "cluster.local/ns/default/sa/client");
    assert_eq!(reply.config_version, "mtls");
    assert_eq!(server_tls.stats().mtls(), 1);
    assert_eq!(server_tls.stats().handshake_failures(), 0);
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let pki = pki();
    let rogue = Ca::new("rogue root");
    let rogue_server = pki.dir.identity("rogue", &rogue.workload("server"), &rogue);
    let (addr, _) = server(MtlsMode::Strict, rogue_server).await;
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    assert_tls_failure(say(&mesh).await, "UnknownIssuer");
}

#[tokio::test]
async fn a_server_whose_spiffe_id_does_not_match_is_refused() {
    let pki = pki();
    let (addr, _) = server(MtlsMode::Strict, pki.server.clone()).await;
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("someone-else")),
    );
    assert_tls_failure(
        say(&mesh).await,
        "SANs (URI:spiffe://cluster.local/ns/default/sa/server) match none",
    );
}

#[tokio::test]
async fn a_dns_san_matcher_checks_dns_names() {
    let pki = pki();
    let leaf = pki
        .ca
        .leaf(&[&spiffe("server")], &["echo.default.svc"], Validity::Now);
    let (addr, _) = server(MtlsMode::Strict, pki.dir.identity("dns", &leaf, &pki.ca)).await;
    let matching = client(
        Some(pki.client.clone()),
        client_config(
            addr,
            "{mode: ISTIO_MUTUAL, subjectAltNames: [echo.default.svc]}",
        ),
    );
    say(&matching).await.unwrap();
    let other = client(
        Some(pki.client),
        client_config(addr, "{mode: ISTIO_MUTUAL, subjectAltNames: [other.svc]}"),
    );
    assert_tls_failure(say(&other).await, "match none");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let pki = pki();
    let leaf = pki.ca.leaf(&[&spiffe("server")], &[], Validity::Expired);
    let (addr, _) = server(MtlsMode::Strict, pki.dir.identity("old", &leaf, &pki.ca)).await;
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    assert_tls_failure(say(&mesh).await, "expired");
}

#[tokio::test]
async fn a_not_yet_valid_server_certificate_is_refused() {
    let pki = pki();
    let leaf = pki
        .ca
        .leaf(&[&spiffe("server")], &[], Validity::NotYetValid);
    let (addr, _) = server(MtlsMode::Strict, pki.dir.identity("new", &leaf, &pki.ca)).await;
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    assert_tls_failure(say(&mesh).await, "not valid yet");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_by_the_server() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Strict, pki.server.clone()).await;
    let leaf = pki.ca.leaf(&[&spiffe("client")], &[], Validity::Expired);
    let expired = pki.dir.identity("expired-client", &leaf, &pki.ca);
    let mesh = client(Some(expired), client_config(addr, &istio_mutual("server")));
    let status = say(&mesh).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server_tls.stats().mtls(), 0);
    wait_for(|| server_tls.stats().handshake_failures() == 1).await;
}

#[tokio::test]
async fn strict_refuses_a_tls_client_without_certificate() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Strict, pki.server.clone()).await;
    let ca = pki.dir.path("client-ca.crt");
    let simple = format!(
        "{{mode: SIMPLE, caCertificates: {}, subjectAltNames: [\"{}\"]}}",
        yaml_path(&ca),
        spiffe("server")
    );
    let mesh = client(None, client_config(addr, &simple));
    let status = say(&mesh).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server_tls.stats().mtls(), 0);
    wait_for(|| server_tls.stats().handshake_failures() == 1).await;
}

#[tokio::test]
async fn strict_refuses_a_plaintext_client() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Strict, pki.server.clone()).await;
    let mesh = client(None, client_config(addr, ""));
    let status = say(&mesh).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_for(|| server_tls.stats().handshake_failures() == 1).await;
    assert_eq!(server_tls.stats().plaintext(), 0);
}

#[tokio::test]
async fn permissive_accepts_both_and_reports_the_identity_only_for_mtls() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Permissive, pki.server.clone()).await;
    let mtls = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    let plaintext = client(None, client_config(addr, ""));
    let reply = say(&mtls).await.unwrap();
    assert_eq!(
        (reply.message.as_str(), reply.config_version.as_str()),
        ("cluster.local/ns/default/sa/client", "mtls")
    );
    let reply = say(&plaintext).await.unwrap();
    assert_eq!(
        (reply.message.as_str(), reply.config_version.as_str()),
        ("", "none")
    );
    assert_eq!(reply.served_by, "127.0.0.1", "the peer's address is known");
    let stats = server_tls.stats();
    assert_eq!((stats.mtls(), stats.plaintext()), (1, 1));
}

#[tokio::test]
async fn permissive_lets_a_tls_client_without_certificate_in_without_an_identity() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Permissive, pki.server.clone()).await;
    let simple = format!(
        "{{mode: SIMPLE, caCertificates: {}, subjectAltNames: [\"{}\"]}}",
        yaml_path(&pki.dir.path("client-ca.crt")),
        spiffe("server")
    );
    let reply = say(&client(None, client_config(addr, &simple)))
        .await
        .unwrap();
    assert_eq!(
        (reply.message.as_str(), reply.config_version.as_str()),
        ("", "none")
    );
    let stats = server_tls.stats();
    assert_eq!(
        (
            stats.tls_without_certificate(),
            stats.mtls(),
            stats.plaintext()
        ),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn disable_serves_plaintext_and_refuses_tls() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Disable, pki.server.clone()).await;
    let reply = say(&client(None, client_config(addr, ""))).await.unwrap();
    assert_eq!(reply.config_version, "none");
    let mtls = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    assert_tls_failure(say(&mtls).await, "TLS handshake failed");
    assert_eq!(server_tls.stats().mtls(), 0);
}

#[tokio::test]
async fn the_mode_can_change_for_new_connections() {
    let pki = pki();
    let (addr, server_tls) = server(MtlsMode::Permissive, pki.server.clone()).await;
    say(&client(None, client_config(addr, ""))).await.unwrap();
    server_tls.set_mode(MtlsMode::Strict).unwrap();
    let status = say(&client(None, client_config(addr, "")))
        .await
        .expect_err("STRICT now");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        ServerTls::plaintext().set_mode(MtlsMode::Strict).is_err(),
        "no material, no TLS mode"
    );
}

#[tokio::test]
async fn istio_mutual_without_a_workload_identity_fails_and_never_sends_plaintext() {
    let pki = pki();
    // PERMISSIVE would serve a plaintext request: none must arrive.
    let (addr, server_tls) = server(MtlsMode::Permissive, pki.server.clone()).await;
    let mesh = client(None, client_config(addr, &istio_mutual("server")));
    assert_tls_failure(say(&mesh).await, "no workload identity");
    assert_eq!(server_tls.stats().plaintext(), 0);
}

#[tokio::test]
async fn unreadable_client_material_fails_the_request_and_names_the_file() {
    let pki = pki();
    let (addr, _) = server(MtlsMode::Strict, pki.server.clone()).await;
    let missing = pki.dir.path("missing.crt");
    let mutual = format!(
        "{{mode: MUTUAL, clientCertificate: {}, privateKey: {}, caCertificates: {}}}",
        yaml_path(&missing),
        yaml_path(&pki.dir.path("client.key")),
        yaml_path(&pki.dir.path("client-ca.crt")),
    );
    let mesh = client(None, client_config(addr, &mutual));
    assert_tls_failure(say(&mesh).await, &yaml_path(&missing));
}

#[tokio::test]
async fn mutual_with_files_verifies_the_host_name_without_san_matchers() {
    let pki = pki();
    // SIMPLE/MUTUAL without subjectAltNames check the dialled name: here the IP address.
    let leaf = pki.ca.leaf(&[], &["localhost"], Validity::Now);
    let by_name = pki.dir.identity("by-name", &leaf, &pki.ca);
    let (addr, _) = server(MtlsMode::Strict, by_name).await;
    let mutual = |sni: &str| {
        format!(
            "{{mode: MUTUAL, clientCertificate: {}, privateKey: {}, caCertificates: {}{sni}}}",
            yaml_path(&pki.dir.path("client.crt")),
            yaml_path(&pki.dir.path("client.key")),
            yaml_path(&pki.dir.path("client-ca.crt")),
        )
    };
    let by_ip = client(None, client_config(addr, &mutual("")));
    assert_tls_failure(say(&by_ip).await, "not valid for name \"127.0.0.1\"");
    let by_sni = client(None, client_config(addr, &mutual(", sni: localhost")));
    let reply = say(&by_sni).await.unwrap();
    assert_eq!(reply.message, "cluster.local/ns/default/sa/client");
}

#[tokio::test]
async fn certificate_provider_instances_resolve_through_the_registry() {
    let pki = pki();
    let (addr, _) = server(MtlsMode::Strict, pki.server.clone()).await;
    let provider = |instance: &str| CertificateSource::Provider {
        instance: instance.into(),
        certificate_name: "default".into(),
    };
    let tls = |instance: &str| UpstreamTls {
        mode: TlsMode::Mutual,
        sni: None,
        san_matchers: vec![SanMatcher {
            kind: SanKind::Uri,
            matcher: StringMatcher::exact(spiffe("server")),
        }]
        .into(),
        client_certificate: Some(provider(instance)),
        trust_bundle: Some(provider(instance)),
    };
    let unregistered = Mesh::new(with_tls(&client_config(addr, ""), &tls("default")));
    assert_tls_failure(say(&unregistered).await, "`default` is not registered");

    // What the xDS client does with the bootstrap's `file_watcher` instances.
    let mesh = Mesh::new(with_tls(&client_config(addr, ""), &tls("default")));
    mesh.tls().certificate_providers().register(
        "default",
        ProviderFiles {
            certificate_file: Some(pki.dir.path("client.crt")),
            private_key_file: Some(pki.dir.path("client.key")),
            ca_certificate_file: Some(pki.dir.path("client-ca.crt")),
        },
    );
    let reply = say(&mesh).await.unwrap();
    assert_eq!(reply.message, "cluster.local/ns/default/sa/client");
}

#[tokio::test]
async fn an_axum_router_sees_the_peer() {
    use axum::{Router, extract::ConnectInfo, routing::get};
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;

    let pki = pki();
    let tls = quiet_tls();
    tls.set_workload_identity(pki.server.clone()).unwrap();
    let listener = MeshListener::bind("127.0.0.1:0", tls.server(MtlsMode::Strict).unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let router = Router::new()
        .route(
            "/whoami",
            get(|ConnectInfo(peer): ConnectInfo<Peer>| async move {
                peer.principal().unwrap_or("anonymous").to_owned()
            }),
        )
        // What a layer shared by tonic and axum servers sees.
        .route(
            "/extensions",
            get(|extensions: http::Extensions| async move {
                Peer::from_extensions(&extensions)
                    .and_then(Peer::principal)
                    .unwrap_or("anonymous")
                    .to_owned()
            }),
        );
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<Peer>(),
        )
        .await
    });
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    let response = mesh
        .channel(TARGET)
        .oneshot(
            http::Request::get(format!("http://{TARGET}/whoami"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"cluster.local/ns/default/sa/client");
}

#[tokio::test]
async fn a_stalled_handshake_blocks_no_other_connection_and_times_out() {
    let pki = pki();
    let tls = quiet_tls();
    tls.set_workload_identity(pki.server.clone()).unwrap();
    let server_tls = tls
        .server(MtlsMode::Permissive)
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(300));
    let addr = serve(server_tls.clone()).await;
    // Connects and says nothing: the server waits for its first byte.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mesh = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    say(&mesh).await.unwrap();
    wait_for(|| server_tls.stats().handshake_timeouts() == 1).await;
    drop(silent);
}

// === rotation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rotations_under_load_fail_no_rpc() {
    let pki = pki();
    let server_side = quiet_tls();
    server_side
        .set_workload_identity(pki.server.clone())
        .unwrap();
    let server_tls = server_side.server(MtlsMode::Strict).unwrap();
    // Two listeners with one identity: alternating the client's endpoint between them forces
    // a new connection (a new handshake) after every rotation.
    let addrs = [
        serve(server_tls.clone()).await,
        serve(server_tls.clone()).await,
    ];
    let config = |i: usize| Arc::new(client_config(addrs[i % 2], &istio_mutual("server")));
    let mesh = Mesh::new((*config(0)).clone());
    mesh.set_workload_identity(pki.client.clone()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (mesh, stop, ok) = (mesh.clone(), stop.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: the test stops the load long before this.
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match say(&mesh).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        failures.push(status);
                        0
                    }
                };
            }
            failures
        }));
    }

    let server_watcher = server_side.workload_identity().unwrap();
    let client_watcher = mesh.tls().workload_identity().unwrap();
    for round in 1..=20 {
        let sa = format!("client-{round}");
        let server_leaf = pki
            .ca
            .leaf(&[&spiffe("server")], &["localhost"], Validity::Now);
        pki.dir.rotate("server", &server_leaf);
        pki.dir.rotate("client", &pki.ca.workload(&sa));
        server_watcher.reload().unwrap();
        // The client's own poll may have seen the files first; either way they are served.
        client_watcher.reload().unwrap();
        assert_eq!(client_watcher.last_error(), None);

        mesh.publish(config(round));
        let reply = say(&mesh).await.unwrap();
        assert_eq!(
            reply.message,
            format!("cluster.local/ns/default/sa/{sa}"),
            "round {round}: the new connection presented the rotated client certificate"
        );
        assert_eq!(
            presented_certificate(addrs[round % 2], &pki).await,
            pem_der(&server_leaf.cert_pem),
            "round {round}: the server presents its rotated certificate"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "failed RPCs: {failures:?}");
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok >= 20, "the load ran: {ok} RPCs");
    eprintln!("{ok} RPCs succeeded across 20 rotations, none failed");
    assert_eq!(server_watcher.reloads(), 20);
    assert_eq!(server_watcher.failures(), 0);
    assert_eq!(server_tls.stats().handshake_failures(), 0);
}

#[tokio::test]
async fn a_broken_rotation_keeps_serving_the_old_material_and_is_reported() {
    let pki = pki();
    let server_side = quiet_tls();
    server_side
        .set_workload_identity(pki.server.clone())
        .unwrap();
    let addr = serve(server_side.server(MtlsMode::Strict).unwrap()).await;
    let watcher = server_side.workload_identity().unwrap();
    let served = watcher.current().leaf_certificate().unwrap().clone();
    let new_client = || {
        client(
            Some(pki.client.clone()),
            client_config(addr, &istio_mutual("server")),
        )
    };

    // A garbage key.
    let key = pki.dir.write(
        "server.key",
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    );
    let error = watcher.reload().expect_err("garbage key");
    assert!(
        matches!(&error, TlsError::Invalid { path, .. } if **path == *yaml_path(&key)),
        "{error}"
    );
    assert_eq!(watcher.failures(), 1);
    assert_eq!(watcher.last_error(), Some(error));
    say(&new_client()).await.expect("the old material serves");
    assert_eq!(watcher.current().leaf_certificate(), Some(&served));
    // Polling the same broken files again reports nothing new.
    assert!(watcher.reload().is_err());
    assert_eq!(watcher.failures(), 1);

    // A key that parses but belongs to another certificate.
    let other: Leaf = pki.ca.workload("server");
    pki.dir.write("server.key", &other.key_pem);
    let error = watcher.reload().expect_err("mismatched key");
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert_eq!(watcher.failures(), 2);
    say(&new_client()).await.expect("the old material serves");

    // A certificate file that is not PEM.
    pki.dir.write("server.crt", "garbage");
    assert!(
        watcher
            .reload()
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate")
    );

    // Fixed: the next reload installs it and clears the error.
    pki.dir.rotate("server", &other);
    assert_eq!(watcher.reload(), Ok(true));
    assert_eq!(watcher.last_error(), None);
    assert_eq!(watcher.reloads(), 1);
    say(&new_client()).await.unwrap();
    assert_eq!(
        watcher.current().leaf_certificate().map(|c| c.to_vec()),
        Some(pem_der(&other.cert_pem))
    );
}

#[test]
fn initial_material_must_be_complete() {
    let pki = pki();
    let chain = pki.dir.path("client.crt");
    let wrong_key = pki.dir.path("server.key");
    let error = MeshTls::default()
        .set_workload_identity(CertificateFiles::identity(&chain, &wrong_key))
        .unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    let error = ServerTls::new(
        MtlsMode::Strict,
        mesh_tower::tls::CertificateWatcher::load(CertificateFiles::identity(
            &chain,
            pki.dir.path("client.key"),
        ))
        .unwrap(),
    )
    .unwrap_err();
    assert!(matches!(error, TlsError::NoTrustBundle { .. }), "{error}");
    let error = MeshTls::default().server(MtlsMode::Strict).unwrap_err();
    assert_eq!(error, TlsError::NoWorkloadIdentity);
}

// === helpers ===

/// Waits for `condition`, polling every 10 ms for at most 5 s: for effects the server records
/// after the client has already seen the connection fail.
async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The leaf certificate the server at `addr` presents to a fresh handshake.
async fn presented_certificate(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    use rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.dir.path("client.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.dir.path("client.key")).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // rustls' stock verifier checks a name: the rotation test's server certificates carry
    // `localhost` beside their SPIFFE ID for this.
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    match tls {
        Ok(stream) => stream.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        Err(e) => panic!("handshake with {addr}: {e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn rotated_files_are_picked_up_by_polling() {
    let pki = pki();
    let watcher = mesh_tower::tls::CertificateWatcher::load(pki.server.clone()).unwrap();
    watcher.watch(Duration::from_secs(5));
    let rotated = pki.ca.workload("server");
    pki.dir.rotate("server", &rotated);
    // Before the first poll nothing changes...
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(watcher.reloads(), 0);
    // ...after it, the new material serves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(watcher.reloads(), 1);
    assert_eq!(
        watcher.current().leaf_certificate().map(|c| c.to_vec()),
        Some(pem_der(&rotated.cert_pem))
    );
    // A broken write is reported by the poll, once, and the good material stays.
    pki.dir.write("server.key", "garbage");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(watcher.failures(), 1);
    assert!(matches!(
        watcher.last_error(),
        Some(TlsError::Invalid { .. })
    ));
    assert_eq!(watcher.reloads(), 1);
}
