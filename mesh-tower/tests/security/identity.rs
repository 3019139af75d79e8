//! Issue 15, items 2 and 4: the caller's verified identity reaches authorization on every
//! serving path, every URI SAN counts, and foreign trust domains do not pass for the mesh's.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use mesh_tower::{Mesh, mesh_core::MtlsMode};
use tonic::Code;

use crate::{
    certs::spiffe,
    fixture::*,
    harness::{self, client_config, istio_mutual},
};

const GOOD: &str = "cluster.local/ns/default/sa/good";
const BAD: &str = "cluster.local/ns/default/sa/bad";

fn deny_bad() -> String {
    policy(
        "deny-bad",
        &format!(
            "  action: DENY\n  rules:\n  - from:\n    - source: {{principals: [\"{BAD}\"]}}\n"
        ),
    )
}

fn allow_good() -> String {
    policy(
        "allow-good",
        &format!(
            "  action: ALLOW\n  rules:\n  - from:\n    - source: {{principals: [\"{GOOD}\"]}}\n"
        ),
    )
}

/// Where a test server runs.
#[derive(Clone, Copy, Debug)]
enum Serving {
    Axum(Axum),
    Hyper,
}

async fn serve(mesh: &Mesh, serving: Serving) -> SocketAddr {
    let layer = mesh.server_layer(workload());
    let tls = server_tls(mesh, MtlsMode::Strict);
    match serving {
        Serving::Axum(how) => serve_axum(layer, tls, how).await,
        Serving::Hyper => serve_hyper(layer, tls).await,
    }
}

/// The statuses `good` and `bad` get over HTTP/1.1 and HTTP/2 from a server of `yaml`.
async fn statuses(yaml: &str, serving: Serving) -> [(&'static str, Version, u16); 4] {
    let pki = pki();
    let mesh = pki.server_mesh(yaml);
    let addr = serve(&mesh, serving).await;
    let good = pki.caller(&[&format!("spiffe://{GOOD}")]);
    let bad = pki.caller(&[&format!("spiffe://{BAD}")]);
    let mut out = [("", Version::Http1, 0); 4];
    let mut i = 0;
    for version in [Version::Http1, Version::Http2] {
        out[i] = ("good", version, https_get(addr, &good, version).await);
        out[i + 1] = ("bad", version, https_get(addr, &bad, version).await);
        i += 2;
    }
    out
}

fn expect(statuses: &[(&str, Version, u16)], good: u16, bad: u16, what: &str) {
    for &(caller, version, status) in statuses {
        let want = if caller == "good" { good } else { bad };
        assert_eq!(status, want, "{what}: {caller} over {version:?}");
    }
}

#[tokio::test]
async fn axum_with_connect_info_enforces_principals() {
    let serving = Serving::Axum(Axum::WithConnectInfo);
    let s = statuses(&deny_bad(), serving).await;
    expect(&s, 200, 403, "DENY by principal");
    let s = statuses(&allow_good(), serving).await;
    expect(&s, 200, 403, "ALLOW by principal");
}

#[tokio::test]
async fn hyper_with_the_connection_peer_enforces_principals() {
    let s = statuses(&deny_bad(), Serving::Hyper).await;
    expect(&s, 200, 403, "DENY by principal");
    let s = statuses(&allow_good(), Serving::Hyper).await;
    expect(&s, 200, 403, "ALLOW by principal");
}

/// Without connect info the layer cannot know who called: a policy about principals refuses
/// everyone rather than judging the caller as plaintext (which let `bad` through a DENY).
#[tokio::test]
async fn axum_without_connect_info_fails_closed() {
    let serving = Serving::Axum(Axum::WithoutConnectInfo);
    let s = statuses(&deny_bad(), serving).await;
    expect(&s, 403, 403, "DENY by principal, no connection facts");
    let s = statuses(&allow_good(), serving).await;
    expect(&s, 403, 403, "ALLOW by principal, no connection facts");
    // A policy that does not look at identities still works.
    let paths = policy(
        "deny-admin",
        "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/admin\"]}\n",
    );
    let s = statuses(&paths, serving).await;
    expect(&s, 200, 200, "a path policy, no connection facts");
}

#[tokio::test]
async fn tonic_behind_the_mesh_listener_enforces_principals() {
    let pki = pki();
    for (yaml, what) in [(deny_bad(), "DENY"), (allow_good(), "ALLOW")] {
        let mesh = pki.server_mesh(&yaml);
        let addr = serve_tonic(
            mesh.server_layer(workload()),
            server_tls(&mesh, MtlsMode::Strict),
        )
        .await;
        for (sa, want) in [("good", Code::Ok), ("bad", Code::PermissionDenied)] {
            let leaf = pki
                .ca
                .leaf(&[&spiffe(sa)], &[], crate::certs::Validity::Now);
            let files = pki.dir.identity(sa, &leaf, &pki.ca);
            let client = harness::client(Some(files), client_config(addr, &istio_mutual("server")));
            let code = match harness::say(&client).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            };
            assert_eq!(code, want, "{what}: {sa}");
        }
    }
}

/// A STRICT port served without `MeshListener` (a plain TCP listener, no connect info): the
/// plaintext caller must not be served as if STRICT had been enforced.
#[tokio::test]
async fn strict_without_connection_facts_refuses_the_request() {
    let mesh = Mesh::new(crate::support::config(&peer_authentication("STRICT")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(mesh.server_layer(workload()));
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
    assert_eq!(plaintext_get(addr, Version::Http1).await, 403);
    assert_eq!(plaintext_get(addr, Version::Http2).await, 403);
}
