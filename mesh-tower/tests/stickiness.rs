//! Sticky endpoints through a mesh channel against real tonic servers on 127.0.0.1: the cookie
//! a `consistentHash.httpCookie` with a `ttl` generates, and stateful sessions (Envoy's
//! `stateful_session` filter, gRFC A55) carried in a cookie or a header.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use mesh_test_support::echo as support;
use mesh_tower::mesh_core::{
    Action, Cluster, HealthStatus, HealthStatusSet, MeshConfig, RouteTable,
    lb::{decode_host, encode_host},
    route::{SessionAffinity, SessionState, VirtualHost},
};
use support::*;

const SAY: &str = "/echo.Echo/Say";

/// Three echo servers, by name.
async fn three() -> (Vec<Running>, HashMap<String, SocketAddr>) {
    let mut servers = Vec::new();
    let mut addrs = HashMap::new();
    for name in ["a", "b", "c"] {
        let s = spawn_echo(name, Behavior::default()).await;
        addrs.insert(name.to_string(), s.addr);
        servers.push(s);
    }
    (servers, addrs)
}

fn endpoints(addrs: &HashMap<String, SocketAddr>) -> Vec<(&str, SocketAddr)> {
    let mut v: Vec<_> = addrs.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    v.sort();
    v
}

/// The echo service with `consistentHash` set to `hash` (a YAML flow mapping).
fn hashed(addrs: &HashMap<String, SocketAddr>, hash: &str) -> MeshConfig {
    let yaml = services_yaml(&endpoints(addrs)).replace(
        "  subsets:\n",
        &format!("  trafficPolicy:\n    loadBalancer:\n      consistentHash: {hash}\n  subsets:\n"),
    );
    config(&yaml)
}

/// One call with `headers`; returns who served it and its response headers.
async fn call(
    client: &mut EchoClient<mesh_tower::Channel>,
    headers: &[(&'static str, String)],
) -> (String, tonic::metadata::MetadataMap) {
    let mut req = request("hi");
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let reply = client.say(req).await.unwrap();
    let headers = reply.metadata().clone();
    (reply.into_inner().served_by, headers)
}

fn set_cookie(headers: &tonic::metadata::MetadataMap) -> Option<String> {
    headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
}

/// The value of `name="value"; ...`.
fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> &'a str {
    let first = set_cookie.split(';').next().unwrap();
    let (k, v) = first.split_once('=').unwrap();
    assert_eq!(k, name, "{set_cookie}");
    v.trim_matches('"')
}

#[tokio::test]
async fn an_http_cookie_with_a_ttl_is_generated_and_then_sticks() {
    let (_servers, addrs) = three().await;
    let mesh = mesh_tower::Mesh::new(hashed(
        &addrs,
        "{httpCookie: {name: user, ttl: 60s, path: /}}",
    ));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let (first, headers) = call(&mut client, &[]).await;
    let set = set_cookie(&headers).expect("the first response sets the cookie");
    // Envoy's format: name="<16 hex digits>"; Max-Age=<ttl>; Path=<path>; HttpOnly.
    let value = cookie_value(&set, "user").to_string();
    assert_eq!(value.len(), 16, "{set}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{set}");
    assert_eq!(
        set,
        format!("user=\"{value}\"; Max-Age=60; Path=/; HttpOnly")
    );

    let cookie = [("cookie", format!("user=\"{value}\""))];
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &cookie).await;
        assert_eq!(served_by, first, "call {i} with the cookie");
        assert_eq!(
            set_cookie(&headers),
            None,
            "a request with the cookie gets none"
        );
    }

    // Fresh cookies spread over the endpoints: the value, not the caller, picks.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        seen.insert(call(&mut client, &[]).await.0);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn an_http_cookie_is_generated_only_with_a_ttl() {
    let (_servers, addrs) = three().await;
    for (hash, generated) in [
        ("{httpCookie: {name: user, path: /}}", false),
        ("{httpCookie: {name: user, path: /, ttl: 1s}}", true),
    ] {
        let mesh = mesh_tower::Mesh::new(hashed(&addrs, hash));
        let mut client = EchoClient::new(mesh.channel(TARGET));
        for _ in 0..5 {
            let (_, headers) = call(&mut client, &[]).await;
            assert_eq!(set_cookie(&headers).is_some(), generated, "{hash}");
        }
    }
}

#[tokio::test]
async fn a_zero_ttl_generates_a_session_cookie() {
    let (_servers, addrs) = three().await;
    let mesh = mesh_tower::Mesh::new(hashed(&addrs, "{httpCookie: {name: user, ttl: 0s}}"));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let (_, headers) = call(&mut client, &[]).await;
    let set = set_cookie(&headers).expect("a session cookie");
    let value = cookie_value(&set, "user");
    assert_eq!(set, format!("user=\"{value}\"; HttpOnly"));
}

/// `config` with `session` on every forwarding route and `edit` applied to every cluster.
fn with_session(
    config: &MeshConfig,
    session: SessionState,
    edit: impl Fn(&mut Cluster),
) -> MeshConfig {
    with_affinity(
        config,
        SessionAffinity {
            state: session,
            strict: false,
        },
        edit,
    )
}

fn with_affinity(
    config: &MeshConfig,
    session: SessionAffinity,
    edit: impl Fn(&mut Cluster),
) -> MeshConfig {
    let session = Arc::new(session);
    let listeners = config
        .listeners()
        .iter()
        .map(|(target, table)| {
            let hosts = table
                .virtual_hosts()
                .iter()
                .map(|vh| {
                    let routes = vh
                        .routes()
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            if let Action::Forward(f) = &r.action {
                                let mut f = (**f).clone();
                                f.session = Some(session.clone());
                                r.action = Action::Forward(Arc::new(f));
                            }
                            r
                        })
                        .collect();
                    VirtualHost::new(vh.name(), vh.domains().to_vec(), routes).unwrap()
                })
                .collect();
            (
                target.clone(),
                Arc::new(RouteTable::new(table.name(), hosts).unwrap()),
            )
        })
        .collect();
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, cluster)| {
            let mut cluster = (**cluster).clone();
            edit(&mut cluster);
            (name.clone(), Arc::new(cluster))
        })
        .collect();
    MeshConfig::new("session", listeners, clusters, (**config.server()).clone()).unwrap()
}

fn cookie_session(path: &str) -> SessionState {
    SessionState::Cookie {
        name: "sticky".into(),
        path: path.into(),
        ttl: Duration::from_secs(120),
    }
}

fn plain(addrs: &HashMap<String, SocketAddr>) -> MeshConfig {
    config(&services_yaml(&endpoints(addrs)))
}

#[tokio::test]
async fn a_session_cookie_pins_its_endpoint_until_the_endpoint_leaves() {
    let (_servers, addrs) = three().await;
    let mesh = mesh_tower::Mesh::new(with_session(&plain(&addrs), cookie_session("/"), |_| {}));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let (first, headers) = call(&mut client, &[]).await;
    let set = set_cookie(&headers).expect("the first response sets the session cookie");
    let value = cookie_value(&set, "sticky").to_string();
    // base64 of the serving endpoint's ip:port, Envoy's format.
    assert_eq!(value, encode_host(addrs[&first]));
    assert_eq!(
        set,
        format!("sticky=\"{value}\"; Max-Age=120; Path=/; HttpOnly")
    );

    let cookie = [("cookie", format!("other=1; sticky=\"{value}\""))];
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &cookie).await;
        assert_eq!(served_by, first, "call {i} with the cookie");
        assert_eq!(set_cookie(&headers), None, "the pin held: no new cookie");
    }

    // The endpoint leaves the cluster: the same cookie is balanced and gets a new one.
    let mut rest = addrs.clone();
    rest.remove(&first);
    mesh.publish(Arc::new(with_session(
        &plain(&rest),
        cookie_session("/"),
        |_| {},
    )));
    let (served_by, headers) = call(&mut client, &cookie).await;
    assert_ne!(served_by, first);
    let set = set_cookie(&headers).expect("a new cookie for the new endpoint");
    assert_eq!(
        decode_host(cookie_value(&set, "sticky")),
        Some(addrs[&served_by])
    );
}

#[tokio::test]
async fn a_cookie_pins_only_within_its_path() {
    let (_servers, addrs) = three().await;
    let mesh = mesh_tower::Mesh::new(with_session(&plain(&addrs), cookie_session(SAY), |_| {}));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let pinned = [("cookie", format!("sticky=\"{}\"", encode_host(addrs["a"])))];
    let mut shouted = std::collections::HashSet::new();
    for _ in 0..30 {
        // `Say` is within the cookie's path: pinned to `a`, no new cookie.
        let (served_by, headers) = call(&mut client, &pinned).await;
        assert_eq!(served_by, "a");
        assert_eq!(set_cookie(&headers), None);
        // `Shout` is not: balanced, and given no cookie.
        let mut req = request("hi");
        req.metadata_mut()
            .insert("cookie", pinned[0].1.parse().unwrap());
        let reply = client.shout(req).await.unwrap();
        assert_eq!(set_cookie(reply.metadata()), None);
        shouted.insert(reply.into_inner().served_by);
    }
    assert!(shouted.len() > 1, "{shouted:?}");
}

#[tokio::test]
async fn a_session_header_pins_its_endpoint_while_its_health_allows() {
    let (_servers, addrs) = three().await;
    let header = || SessionState::Header(http::HeaderName::from_static("x-session"));
    let mesh = mesh_tower::Mesh::new(with_session(&plain(&addrs), header(), |_| {}));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let (first, headers) = call(&mut client, &[]).await;
    let value = headers
        .get("x-session")
        .expect("the first response carries the session header")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(decode_host(&value), Some(addrs[&first]));
    assert_eq!(set_cookie(&headers), None);
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &[("x-session", value.clone())]).await;
        assert_eq!(served_by, first, "call {i} with the header");
        assert!(headers.get("x-session").is_none(), "the pin held");
    }

    // The endpoint drains. Envoy's default override statuses (unknown, healthy, degraded)
    // exclude it: balanced elsewhere, with a new value...
    let draining = |c: &mut Cluster, statuses: HealthStatusSet| {
        let endpoints: Vec<_> = c
            .endpoints
            .iter()
            .cloned()
            .map(|mut e| {
                if e.address.to_string() == addrs[&first].to_string() {
                    e.health = HealthStatus::Draining;
                }
                e
            })
            .collect();
        c.endpoints = endpoints.into();
        c.override_host_status = statuses;
    };
    mesh.publish(Arc::new(with_session(&plain(&addrs), header(), |c| {
        draining(c, HealthStatusSet::default())
    })));
    let (served_by, headers) = call(&mut client, &[("x-session", value.clone())]).await;
    assert_ne!(served_by, first);
    let new = headers.get("x-session").expect("a new session value");
    assert_eq!(decode_host(new.to_str().unwrap()), Some(addrs[&served_by]));

    // ...while istiod's set for session services (healthy, draining, unknown, degraded) keeps
    // existing sessions on a draining endpoint, and new ones off it.
    let istiod: HealthStatusSet = [
        HealthStatus::Healthy,
        HealthStatus::Draining,
        HealthStatus::Unknown,
        HealthStatus::Degraded,
    ]
    .into_iter()
    .collect();
    mesh.publish(Arc::new(with_session(&plain(&addrs), header(), |c| {
        draining(c, istiod)
    })));
    for _ in 0..10 {
        let (served_by, _) = call(&mut client, &[("x-session", value.clone())]).await;
        assert_eq!(served_by, first, "a draining endpoint keeps its sessions");
    }
    for _ in 0..10 {
        assert_ne!(
            call(&mut client, &[]).await.0,
            first,
            "no new session drains"
        );
    }
}

#[tokio::test]
async fn an_ejected_endpoint_loses_its_sessions_to_another_with_a_new_cookie() {
    let bad = spawn_echo(
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let good = spawn_echo("good", Behavior::default()).await;
    let yaml = services_yaml(&[("bad", bad.addr), ("good", good.addr)]).replace(
        "  subsets:\n",
        "  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 60s, maxEjectionPercent: 100}
  subsets:\n",
    );
    let no_retries = virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    let mesh = mesh_tower::Mesh::new(with_session(
        &config(&format!("{yaml}---\n{no_retries}")),
        cookie_session("/"),
        |_| {},
    ));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let pinned = format!("sticky=\"{}\"", encode_host(bad.addr));

    // Pinned to `bad`: its failure reaches the caller and ejects it...
    let mut req = request("hi");
    req.metadata_mut().insert("cookie", pinned.parse().unwrap());
    assert_eq!(
        client.say(req).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
    // ...and the session moves to `good`, with a cookie naming it.
    let (served_by, headers) = call(&mut client, &[("cookie", pinned.clone())]).await;
    assert_eq!(served_by, "good");
    let set = set_cookie(&headers).expect("a new cookie");
    assert_eq!(decode_host(cookie_value(&set, "sticky")), Some(good.addr));
    assert_eq!(
        bad.behavior.calls.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_strict_session_whose_endpoint_is_gone_is_refused() {
    let (_servers, addrs) = three().await;
    let strict = SessionAffinity {
        state: SessionState::Header(http::HeaderName::from_static("x-session")),
        strict: true,
    };
    let mesh = mesh_tower::Mesh::new(with_affinity(&plain(&addrs), strict, |_| {}));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut req = request("hi");
    req.metadata_mut()
        .insert("x-session", encode_host(gone).parse().unwrap());
    let status = client.say(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Without a value, a strict session balances as any other.
    let (served_by, headers) = call(&mut client, &[]).await;
    assert_eq!(
        headers
            .get("x-session")
            .map(|v| decode_host(v.to_str().unwrap())),
        Some(Some(addrs[&served_by]))
    );
}
