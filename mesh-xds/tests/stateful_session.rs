//! Sticky endpoints over xDS, with resources shaped as istiod sends them (`support::istiod`):
//! the persistent-session filter istiod prepends for a service labelled
//! `istio.io/persistent-session` (cookie) or `istio.io/persistent-session-header`, with the
//! cluster's `override_host_status`; and a `consistentHash.httpCookie` with a `ttl` as a route
//! hash policy on a ring-hash cluster. End to end against tonic servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::config::{core::v3::HealthStatus, route::v3::RouteConfiguration},
    google::protobuf::Duration as PbDuration,
};
use mesh_test_support as support;
use mesh_tower::{
    Mesh,
    mesh_core::{
        MeshConfig,
        lb::{decode_host, encode_host},
    },
};
use mesh_xds::{bootstrap::Bootstrap, client::XdsClient};
use prost::Message;
use support::{
    ads::{AdsServer, Snapshot},
    echo::{Behavior, EchoClient, Running, request, spawn_echo},
    istiod::{
        self, Destination, HttpRoute, PersistentSession, TrafficPolicy, cluster_name, pack,
        push_version,
    },
    resources::{CDS, EDS, LDS, RDS},
};

const ECHO: &str = "echo.default.svc.cluster.local";
const PORT: u16 = 50051;

type Client = EchoClient<mesh_tower::Channel>;

struct Backends {
    _servers: Vec<Running>,
    addrs: HashMap<String, SocketAddr>,
}

async fn backends() -> Backends {
    let mut servers = Vec::new();
    let mut addrs = HashMap::new();
    for name in ["a", "b", "c"] {
        let s = spawn_echo(name, Behavior::default()).await;
        addrs.insert(name.to_string(), s.addr);
        servers.push(s);
    }
    Backends {
        _servers: servers,
        addrs,
    }
}

/// How the service is configured.
#[derive(Clone)]
enum Stickiness {
    /// istiod's persistent-session filter and override statuses.
    Session(PersistentSession),
    /// `consistentHash: {httpCookie: {name: user, path: /, ttl}}`.
    HashCookie(Option<PbDuration>),
}

/// What istiod pushes for the echo service with `endpoints`.
fn snapshot(counter: u64, how: &Stickiness, endpoints: &[(SocketAddr, HealthStatus)]) -> Snapshot {
    let cluster = cluster_name("", ECHO, PORT);
    let listener = match how {
        Stickiness::Session(session) => istiod::outbound_listener_with_session(ECHO, PORT, session),
        Stickiness::HashCookie(_) => istiod::outbound_listener(ECHO, PORT),
    };
    let (rc_name, rc) = istiod::route_configuration(
        ECHO,
        PORT,
        &[HttpRoute {
            path: None,
            destination: Destination::Cluster(cluster.clone()),
            abort: None,
            hash_header: None,
        }],
    );
    let mut policy = TrafficPolicy::default();
    let rc = match how {
        Stickiness::Session(_) => rc,
        Stickiness::HashCookie(ttl) => {
            policy.ring_hash = true;
            let mut rc = RouteConfiguration::decode(rc.value.as_slice()).unwrap();
            for route in &mut rc.virtual_hosts[0].routes {
                if let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) =
                    &mut route.action
                {
                    a.hash_policy = vec![istiod::cookie_hash_policy("user", "/", *ttl)];
                }
            }
            pack(&rc)
        }
    };
    let mut cds = istiod::cluster(&cluster, &policy);
    if let Stickiness::Session(_) = how {
        cds = istiod::with_session_override_host_status(cds);
    }
    Snapshot::new(&push_version(counter))
        .with(LDS, &listener.0, listener.1)
        .with(RDS, &rc_name, rc)
        .with(CDS, &cluster, cds)
        .with(
            EDS,
            &cluster,
            istiod::cluster_load_assignment_with_health(&cluster, endpoints),
        )
}

fn healthy(addrs: &HashMap<String, SocketAddr>) -> Vec<(SocketAddr, HealthStatus)> {
    let mut v: Vec<_> = addrs
        .values()
        .map(|a| (*a, HealthStatus::Healthy))
        .collect();
    v.sort();
    v
}

async fn start(how: &Stickiness, b: &Backends) -> (AdsServer, XdsClient, Client) {
    let ads = AdsServer::start().await;
    istiod::behave_like_istiod(&ads);
    ads.set_snapshot(snapshot(1, how, &healthy(&b.addrs)));
    let mesh = Mesh::new(MeshConfig::empty());
    let bootstrap = Bootstrap::insecure(ads.addr.to_string(), "sidecar~127.0.0.1~caller.default");
    let xds = XdsClient::start(bootstrap, mesh.clone()).unwrap();
    let client = EchoClient::new(mesh.channel(format!("xds:///{ECHO}:{PORT}")));
    (ads, xds, client)
}

async fn call(
    client: &mut Client,
    headers: &[(&'static str, String)],
) -> (String, tonic::metadata::MetadataMap) {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let reply = tokio::time::timeout(Duration::from_secs(15), client.say(req))
        .await
        .expect("call timed out")
        .unwrap();
    let headers = reply.metadata().clone();
    (reply.into_inner().served_by, headers)
}

fn header(headers: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> &'a str {
    let (k, v) = set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap();
    assert_eq!(k, name, "{set_cookie}");
    v.trim_matches('"')
}

/// Polls until a call with `headers` is served by a backend other than `not`, after a push.
async fn served_elsewhere(
    client: &mut Client,
    headers: &[(&'static str, String)],
    not: &str,
) -> (String, tonic::metadata::MetadataMap) {
    for _ in 0..200 {
        let (served_by, h) = call(client, headers).await;
        if served_by != not {
            return (served_by, h);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the push never took effect");
}

#[tokio::test]
async fn istiods_cookie_session_pins_an_endpoint_and_follows_it_out_of_the_cluster() {
    let b = backends().await;
    // `istio.io/persistent-session: sticky:/echo.Echo`.
    let how = Stickiness::Session(PersistentSession::Cookie("sticky:/echo.Echo".into()));
    let (ads, _xds, mut client) = start(&how, &b).await;

    let (first, headers) = call(&mut client, &[]).await;
    let set = header(&headers, "set-cookie").expect("the first response sets the session cookie");
    let value = cookie_value(&set, "sticky").to_string();
    assert_eq!(value, encode_host(b.addrs[&first]));
    // istiod sends no ttl: a session cookie.
    assert_eq!(
        set,
        format!("sticky=\"{value}\"; Path=/echo.Echo; HttpOnly")
    );
    let cookie = [("cookie", format!("sticky=\"{value}\""))];
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &cookie).await;
        assert_eq!(served_by, first, "call {i}");
        assert_eq!(header(&headers, "set-cookie"), None);
    }

    // Draining: istiod's override statuses keep the session on it.
    let mut endpoints = healthy(&b.addrs);
    for (addr, health) in &mut endpoints {
        if *addr == b.addrs[&first] {
            *health = HealthStatus::Draining;
        }
    }
    ads.set_snapshot(snapshot(2, &how, &endpoints));
    // New sessions leave the draining endpoint once the push is applied...
    served_elsewhere(&mut client, &[], &first).await;
    for _ in 0..10 {
        assert_ne!(call(&mut client, &[]).await.0, first);
    }
    // ...while the pinned one stays.
    for _ in 0..10 {
        assert_eq!(call(&mut client, &cookie).await.0, first);
    }

    // Removed: the session moves, with a new cookie.
    let rest: Vec<_> = endpoints
        .into_iter()
        .filter(|(a, _)| *a != b.addrs[&first])
        .collect();
    ads.set_snapshot(snapshot(3, &how, &rest));
    let (served_by, headers) = served_elsewhere(&mut client, &cookie, &first).await;
    let set = header(&headers, "set-cookie").expect("a new cookie");
    assert_eq!(
        decode_host(cookie_value(&set, "sticky")),
        Some(b.addrs[&served_by])
    );
}

#[tokio::test]
async fn istiods_header_session_pins_an_endpoint() {
    let b = backends().await;
    let how = Stickiness::Session(PersistentSession::Header("x-session".into()));
    let (_ads, _xds, mut client) = start(&how, &b).await;
    let (first, headers) = call(&mut client, &[]).await;
    let value = header(&headers, "x-session").expect("the session header");
    assert_eq!(decode_host(&value), Some(b.addrs[&first]));
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &[("x-session", value.clone())]).await;
        assert_eq!(served_by, first, "call {i}");
        assert_eq!(header(&headers, "x-session"), None);
    }
    // A value naming another backend moves the session there, without a new value.
    let other = b.addrs.keys().find(|n| **n != first).unwrap().clone();
    let (served_by, headers) =
        call(&mut client, &[("x-session", encode_host(b.addrs[&other]))]).await;
    assert_eq!(served_by, other);
    assert_eq!(header(&headers, "x-session"), None);
}

#[tokio::test]
async fn a_route_cookie_hash_with_a_ttl_generates_the_cookie() {
    let b = backends().await;
    let ttl = PbDuration {
        seconds: 3600,
        nanos: 0,
    };
    let (_ads, _xds, mut client) = start(&Stickiness::HashCookie(Some(ttl)), &b).await;
    let (first, headers) = call(&mut client, &[]).await;
    let set = header(&headers, "set-cookie").expect("a generated cookie");
    let value = cookie_value(&set, "user").to_string();
    assert_eq!(
        set,
        format!("user=\"{value}\"; Max-Age=3600; Path=/; HttpOnly")
    );
    let cookie = [("cookie", format!("user=\"{value}\""))];
    for i in 0..20 {
        let (served_by, headers) = call(&mut client, &cookie).await;
        assert_eq!(served_by, first, "call {i}");
        assert_eq!(header(&headers, "set-cookie"), None);
    }
}

#[tokio::test]
async fn a_route_cookie_hash_generates_the_cookie_only_with_a_ttl() {
    let b = backends().await;
    for (ttl, generated) in [(None, false), (Some(PbDuration::default()), true)] {
        let (_ads, _xds, mut client) = start(&Stickiness::HashCookie(ttl), &b).await;
        for _ in 0..5 {
            let (_, headers) = call(&mut client, &[]).await;
            assert_eq!(
                header(&headers, "set-cookie").is_some(),
                generated,
                "{ttl:?}"
            );
        }
    }
}
