//! Issue 15, items 2 and 4: the caller's verified identity reaches authorization on every
//! serving path, every URI SAN counts, and foreign trust domains do not pass for the mesh's.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use mesh_tower::{
    Mesh, Workload,
    mesh_core::{MtlsMode, TrustDomains},
};
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
    serve_as(mesh, workload(), serving).await
}

async fn serve_as(mesh: &Mesh, workload: Workload, serving: Serving) -> SocketAddr {
    let layer = mesh.server_layer(workload);
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

/// The status a caller with exactly `uris` gets over HTTP/1.1 and HTTP/2 (asserted equal).
async fn status_of(addr: SocketAddr, pki: &Pki, uris: &[&str]) -> u16 {
    let caller = pki.caller(uris);
    let h1 = https_get(addr, &caller, Version::Http1).await;
    let h2 = https_get(addr, &caller, Version::Http2).await;
    assert_eq!(h1, h2, "{uris:?}: HTTP/1.1 and HTTP/2 disagree");
    h1
}

/// Item 4: a DENY on a principal matches any URI SAN of the caller, and `notPrincipals`
/// cannot be dodged by putting another SAN first.
#[tokio::test]
async fn every_uri_san_counts() {
    let pki = pki();
    let serving = Serving::Axum(Axum::WithConnectInfo);
    let good = format!("spiffe://{GOOD}");
    let bad = format!("spiffe://{BAD}");

    let mesh = pki.server_mesh(&deny_bad());
    let addr = serve(&mesh, serving).await;
    assert_eq!(status_of(addr, &pki, &[&good]).await, 200);
    assert_eq!(
        status_of(addr, &pki, &[&good, &bad]).await,
        403,
        "DENY on the second SAN"
    );
    assert_eq!(
        status_of(addr, &pki, &[&bad, &good]).await,
        403,
        "DENY on the first SAN"
    );

    let allow_not_bad = policy(
        "allow-not-bad",
        &format!(
            "  action: ALLOW\n  rules:\n  - from:\n    - source: {{notPrincipals: [\"{BAD}\"]}}\n"
        ),
    );
    let mesh = pki.server_mesh(&allow_not_bad);
    let addr = serve(&mesh, serving).await;
    assert_eq!(status_of(addr, &pki, &[&good]).await, 200);
    assert_eq!(
        status_of(addr, &pki, &[&good, &bad]).await,
        403,
        "notPrincipals escaped with an innocent first SAN"
    );
}

/// Item 4: `namespaces: [prod]` is not satisfied by a foreign trust domain's `/ns/prod/`,
/// unless that domain is an alias of the mesh's.
#[tokio::test]
async fn a_foreign_trust_domain_is_no_namespace_of_the_mesh() {
    let pki = pki();
    let serving = Serving::Axum(Axum::WithConnectInfo);
    let allow_prod = policy(
        "allow-prod",
        "  action: ALLOW\n  rules:\n  - from:\n    - source: {namespaces: [prod]}\n",
    );
    let evil = "spiffe://evil.example.org/ns/prod/sa/x";
    let mesh = pki.server_mesh(&allow_prod);
    let addr = serve(&mesh, serving).await;
    assert_eq!(
        status_of(addr, &pki, &["spiffe://cluster.local/ns/prod/sa/x"]).await,
        200
    );
    assert_eq!(
        status_of(addr, &pki, &[evil]).await,
        403,
        "foreign trust domain"
    );

    let aliased = workload()
        .with_trust_domains(TrustDomains::new("cluster.local", ["evil.example.org"]).unwrap());
    let addr = serve_as(&mesh, aliased, serving).await;
    assert_eq!(
        status_of(addr, &pki, &[evil]).await,
        200,
        "an explicit alias"
    );
}

/// Item 4: Istio's trust-domain migration: a policy naming the old domain's principal admits
/// the same workload under the new domain when the old one is an alias.
#[tokio::test]
async fn principals_follow_trust_domain_aliases() {
    let pki = pki();
    let serving = Serving::Axum(Axum::WithConnectInfo);
    let allow_old = policy(
        "allow-old",
        "  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [old-td/ns/default/sa/sleep]}\n",
    );
    let mesh = pki.server_mesh(&allow_old);
    let caller = "spiffe://new-td/ns/default/sa/sleep";
    let unmigrated =
        workload().with_trust_domains(TrustDomains::new("new-td", Vec::<&str>::new()).unwrap());
    let addr = serve_as(&mesh, unmigrated, serving).await;
    assert_eq!(status_of(addr, &pki, &[caller]).await, 403);
    let migrated = workload().with_trust_domains(TrustDomains::new("new-td", ["old-td"]).unwrap());
    let addr = serve_as(&mesh, migrated, serving).await;
    assert_eq!(status_of(addr, &pki, &[caller]).await, 200);
}
