//! Identity checks, the three PeerAuthentication modes, the peer in handlers, certificate
//! providers, and an acceptor that a stalled client cannot block.

use std::time::Duration;

use mesh_tower::{
    Mesh, Peer,
    mesh_core::{
        CertificateSource, Labels, MtlsMode, SanKind, SanMatcher, TlsMode, UpstreamTls,
        matcher::StringMatcher,
    },
    tls::{MeshListener, ProviderFiles, ServerTls},
};
use tonic::Code;

use crate::{
    certs::{Ca, Validity, spiffe, yaml_path},
    harness::*,
    support::{self, TARGET},
};

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
    let registered = |tls: &UpstreamTls| {
        let mesh = Mesh::new(with_tls(&client_config(addr, ""), tls));
        mesh.tls().certificate_providers().register(
            "default",
            ProviderFiles {
                certificate_file: Some(pki.dir.path("client.crt")),
                private_key_file: Some(pki.dir.path("client.key")),
                ca_certificate_file: Some(pki.dir.path("client-ca.crt")),
            },
        );
        mesh
    };
    let reply = say(&registered(&tls("default"))).await.unwrap();
    assert_eq!(reply.message, "cluster.local/ns/default/sa/client");

    // Without SAN matchers, as gRPC's xDS credentials: any certificate the CA validates (the
    // server's has no name matching the endpoint's IP).
    let no_matchers = UpstreamTls {
        san_matchers: Vec::new().into(),
        ..tls("default")
    };
    say(&registered(&no_matchers)).await.unwrap();
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

#[tokio::test]
async fn the_mesh_applies_peer_authentication_changes_to_new_connections() {
    let pki = pki();
    let peer_authentication = |mode: &str| {
        support::config(&format!(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"
        ))
    };
    let server_mesh = Mesh::new(peer_authentication("PERMISSIVE"));
    server_mesh
        .set_workload_identity(pki.server.clone())
        .unwrap();
    let labels = Labels::new([("app", "echo")]).unwrap();
    let server_tls = server_mesh.server_tls("default", labels, 50051).unwrap();
    assert_eq!(server_tls.mode(), MtlsMode::Permissive);
    let addr = serve(server_tls.clone()).await;
    say(&client(None, client_config(addr, ""))).await.unwrap();

    server_mesh.publish(peer_authentication("STRICT").into());
    wait_for(|| server_tls.mode() == MtlsMode::Strict).await;
    let status = say(&client(None, client_config(addr, "")))
        .await
        .expect_err("STRICT now");
    assert_eq!(status.code(), Code::Unavailable);
    let mtls = client(
        Some(pki.client),
        client_config(addr, &istio_mutual("server")),
    );
    assert_eq!(say(&mtls).await.unwrap().config_version, "mtls");
}

#[tokio::test]
async fn a_mesh_server_needs_the_workload_identity_even_when_disabled() {
    let mesh = Mesh::new(mesh_tower::mesh_core::MeshConfig::empty());
    let labels = Labels::new([("app", "echo")]).unwrap();
    assert_eq!(
        mesh.server_tls("default", labels, 50051).unwrap_err(),
        mesh_tower::tls::TlsError::NoWorkloadIdentity
    );
}
