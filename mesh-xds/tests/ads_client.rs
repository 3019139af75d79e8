//! The xDS client end to end: a scripted ADS server and real tonic echo servers on 127.0.0.1,
//! requests through `mesh.channel("xds:///...")`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use mesh_test_support as support;
use mesh_tower::{Discovery, Mesh, mesh_core::MeshConfig};
use mesh_xds::{
    bootstrap::{Bootstrap, ChannelCreds, XdsServer},
    client::{ResourceStatus, XdsClient, XdsClientOptions, XdsMetrics},
};
use support::{
    ads::{AdsServer, Snapshot},
    echo::{Behavior, EchoClient, Running, request, spawn_echo},
    eventually,
    resources::*,
};

const HOST: &str = "echo.default.svc.cluster.local";
const TARGET: &str = "echo.default.svc.cluster.local:50051";
const ROUTE: &str = "echo-routes";
const V1: &str = "outbound|50051|v1|echo.default.svc.cluster.local";
const V2: &str = "outbound|50051|v2|echo.default.svc.cluster.local";

/// LDS → RDS (the weighted split) → CDS → EDS (each cluster's endpoints).
fn snapshot(version: &str, split: &[(&str, u32, &[SocketAddr])]) -> Snapshot {
    let weights: Vec<(&str, u32)> = split.iter().map(|(c, w, _)| (*c, *w)).collect();
    let mut s = Snapshot::new(version)
        .with(LDS, TARGET, listener(TARGET, ROUTE))
        .with(RDS, ROUTE, route(ROUTE, HOST, &weights));
    for (c, _, addrs) in split {
        s = s.with(CDS, c, cluster(c)).with(EDS, c, endpoints(c, addrs));
    }
    s
}

fn bootstrap(servers: &[SocketAddr]) -> Bootstrap {
    let mut b = Bootstrap::insecure(servers[0].to_string(), "test-node");
    b.xds_servers = servers
        .iter()
        .map(|a| XdsServer {
            server_uri: a.to_string(),
            channel_creds: ChannelCreds::Insecure,
            server_features: vec!["xds_v3".into()],
        })
        .collect();
    b
}

fn start(servers: &[SocketAddr]) -> (Mesh, XdsClient, EchoClient<mesh_tower::Channel>) {
    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(bootstrap(servers), mesh.clone()).unwrap();
    let client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    (mesh, xds, client)
}

/// One RPC, bounded so a bug fails the test instead of hanging it.
async fn say(client: &mut EchoClient<mesh_tower::Channel>) -> Result<String, tonic::Status> {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(20));
    match tokio::time::timeout(Duration::from_secs(25), client.say(req)).await {
        Ok(r) => r.map(|r| r.into_inner().served_by),
        Err(_) => panic!("rpc hung"),
    }
}

async fn count(client: &mut EchoClient<mesh_tower::Channel>, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(say(client).await.expect("rpc succeeds"))
            .or_default() += 1;
    }
    counts
}

async fn echo(name: &str) -> Running {
    spawn_echo(name, Behavior::default()).await
}

#[tokio::test]
async fn control_plane_down_at_start_then_up() {
    let v1 = echo("v1").await;
    let addr = AdsServer::unused_addr().await;
    let (_mesh, xds, mut client) = start(&[addr]);
    // The first RPC waits while the target is pending.
    let first = tokio::spawn(async move { say(&mut client).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the rpc waits for configuration");
    assert!(xds.is_pending(TARGET));
    assert_eq!(xds.connected_server(), None);
    let server = AdsServer::start_on(addr).await;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    assert_eq!(first.await.unwrap().unwrap(), "v1");
    assert!(!xds.is_pending(TARGET));
    assert_eq!(xds.connected_server(), Some(addr.to_string()));
    let c = xds.counters();
    assert_eq!((c.updates_accepted, c.updates_rejected), (4, 0));
}

/// Issue 13 item 2: the client's stream opens before anything is watched, and the server
/// (like grpc-go's and grpcio's) sends response headers only with its first response. The
/// subscription made afterwards must still be sent.
#[tokio::test]
async fn a_subscription_made_while_the_server_withholds_response_headers_is_sent() {
    let v1 = echo("v1").await;
    let server = AdsServer::start().await;
    server
        .state
        .withhold_headers_until_subscribed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    let mesh = Mesh::new(MeshConfig::empty());
    let _xds = XdsClient::start(bootstrap(&[server.addr]), mesh.clone()).unwrap();
    eventually("the ADS stream opens with nothing watched", || {
        server
            .state
            .streams_opened
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
    let mut client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(5));
    let reply = tokio::time::timeout(Duration::from_secs(10), client.say(req))
        .await
        .expect("the rpc does not hang")
        .expect("the subscription was sent and answered");
    assert_eq!(reply.into_inner().served_by, "v1");
}

/// Issue 13 item 8: not ready until the watched target is complete; the configuration's age is
/// 0 while the stream is healthy, however long nothing changes, and grows once it is lost.
#[tokio::test]
async fn readiness_follows_watched_targets_and_the_age_follows_the_stream() {
    let v1 = echo("v1").await;
    let server = AdsServer::start().await;
    let (_mesh, xds, mut client) = start(&[server.addr]);
    let metrics = XdsMetrics::new();
    assert!(xds.set_metrics(metrics.clone()).is_ok());
    let config_age = || metrics.config_age(std::time::SystemTime::now());
    assert_eq!(config_age(), None);

    // The channel watches the target; nothing has arrived.
    let unready = xds.unready_targets();
    assert_eq!(unready.len(), 1, "{unready:?}");
    assert_eq!(unready[0].target, TARGET);
    assert!(unready[0].reason.contains("waiting"), "{unready:?}");

    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    assert_eq!(xds.unready_targets(), Vec::new());
    // Idle and healthy: fresh, not "seconds since the last change".
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(config_age(), Some(Duration::ZERO));

    // The stream is lost: the age counts from then; the configuration keeps serving, so the
    // client stays ready.
    let _state = server.stop().await;
    eventually("the age grows once the stream is lost", || {
        config_age().is_some_and(|age| age > Duration::ZERO)
    })
    .await;
    assert_eq!(xds.unready_targets(), Vec::new());
    assert_eq!(say(&mut client).await.unwrap(), "v1");
}

fn persist_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "mesh-xds-ads-client-{}-{name}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn start_persisting(
    bootstrap: Bootstrap,
    path: &std::path::Path,
) -> (XdsClient, EchoClient<mesh_tower::Channel>) {
    let mesh = Mesh::new(MeshConfig::empty());
    let options = XdsClientOptions {
        persist_path: Some(path.to_owned()),
        ..XdsClientOptions::default()
    };
    let xds = XdsClient::start_with(bootstrap, mesh.clone(), options).unwrap();
    (
        xds,
        EchoClient::new(mesh.channel(format!("xds:///{TARGET}"))),
    )
}

/// Issue 13 item 7: the last ACKed resources persisted; a restart while the control plane is
/// down serves them, marked stale until the first fresh response.
#[tokio::test]
async fn a_cold_start_without_the_control_plane_serves_the_persisted_configuration() {
    let v1 = echo("v1").await;
    let path = persist_path("cold-start");
    let server = AdsServer::start().await;
    let addr = server.addr;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    let (first, mut client) = start_persisting(bootstrap(&[addr]), &path);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    eventually("the endpoints are persisted", || {
        std::fs::read_to_string(&path).is_ok_and(|text| text.contains("ClusterLoadAssignment"))
    })
    .await;
    assert_eq!(first.config_dump().stale, None);
    first.shutdown();
    let _state = server.stop().await;

    // A new process: the control plane is down.
    let (xds, mut client) = start_persisting(bootstrap(&[addr]), &path);
    let metrics = XdsMetrics::new();
    xds.set_metrics(metrics.clone()).unwrap();
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    assert_eq!(
        xds.unready_targets(),
        Vec::new(),
        "ready on the persisted configuration"
    );
    assert_eq!(xds.connected_server(), None);
    let stale = xds.config_dump().stale.expect("marked stale");
    assert_eq!(stale.source, "persisted");
    let age = metrics.config_age(std::time::SystemTime::now()).unwrap();
    assert!(age > Duration::ZERO, "{age:?}");

    // The control plane is back: fresh.
    let server = AdsServer::start_on(addr).await;
    server.set_snapshot(snapshot("2", &[(V1, 100, &[v1.addr])]));
    eventually("a fresh response clears the stale mark", || {
        xds.config_dump().stale.is_none()
    })
    .await;
    assert_eq!(
        metrics.config_age(std::time::SystemTime::now()),
        Some(Duration::ZERO)
    );
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    std::fs::remove_file(&path).unwrap();
}

/// A persisted configuration is stale: a fallback server that comes up is used (A71 would
/// skip it when everything is cached).
#[tokio::test]
async fn a_fallback_replaces_a_persisted_configuration() {
    let (v1, from_fallback) = (echo("v1").await, echo("from-fallback").await);
    let path = persist_path("fallback");
    let server = AdsServer::start().await;
    let (primary, fallback) = (server.addr, AdsServer::unused_addr().await);
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    let (first, mut client) = start_persisting(bootstrap(&[primary, fallback]), &path);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    eventually("the endpoints are persisted", || {
        std::fs::read_to_string(&path).is_ok_and(|text| text.contains("ClusterLoadAssignment"))
    })
    .await;
    first.shutdown();
    let _state = server.stop().await;

    let (xds, mut client) = start_persisting(bootstrap(&[primary, fallback]), &path);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    assert!(xds.config_dump().stale.is_some());
    let fallback = AdsServer::start_on(fallback).await;
    fallback.set_snapshot(snapshot("f1", &[(V1, 100, &[from_fallback.addr])]));
    eventually("on the fallback, fresh", || {
        xds.connected_server() == Some(fallback.addr.to_string())
            && xds.config_dump().stale.is_none()
    })
    .await;
    assert_eq!(say(&mut client).await.unwrap(), "from-fallback");
    std::fs::remove_file(&path).unwrap();
}

/// A persisted file written for another node, or damaged, is ignored whole.
#[tokio::test]
async fn a_foreign_or_damaged_persisted_file_is_ignored() {
    let v1 = echo("v1").await;
    let path = persist_path("foreign");
    let server = AdsServer::start().await;
    let addr = server.addr;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    let (first, mut client) = start_persisting(bootstrap(&[addr]), &path);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    eventually("the endpoints are persisted", || {
        std::fs::read_to_string(&path).is_ok_and(|text| text.contains("ClusterLoadAssignment"))
    })
    .await;
    first.shutdown();
    let _state = server.stop().await;
    let good = std::fs::read_to_string(&path).unwrap();

    let mut other_node = bootstrap(&[addr]);
    other_node.node.id = "another-node".into();
    let damaged = good.replacen(
        "ClusterLoadAssignment\",\"0a",
        "ClusterLoadAssignment\",\"zz0a",
        1,
    );
    assert_ne!(damaged, good);
    for (bootstrap, text) in [(other_node, good.clone()), (bootstrap(&[addr]), damaged)] {
        std::fs::write(&path, &text).unwrap();
        let (xds, mut client) = start_persisting(bootstrap, &path);
        let mut req = request("hi");
        req.set_timeout(Duration::from_millis(500));
        // The server is down and nothing usable is persisted: the call waits for
        // configuration that never comes.
        assert!(client.say(req).await.is_err());
        assert!(xds.is_pending(TARGET));
        assert_eq!(xds.config_dump().stale, None);
        assert_eq!(xds.counters().updates_accepted, 0, "nothing half-applied");
        xds.shutdown();
    }
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_broken_stream_keeps_serving_then_resubscribes_with_known_versions() {
    let v1 = echo("v1").await;
    let server = AdsServer::start().await;
    let addr = server.addr;
    server.set_snapshot(snapshot("7", &[(V1, 100, &[v1.addr])]));
    let (_mesh, xds, mut client) = start(&[addr]);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    // Under load, the control plane goes away.
    let load = tokio::spawn({
        let mut client = client.clone();
        async move {
            let mut failures = 0;
            for _ in 0..300 {
                if say(&mut client).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    });
    let state = server.stop().await;
    eventually("the client notices", || xds.connected_server().is_none()).await;
    assert_eq!(
        load.await.unwrap(),
        0,
        "zero failed RPCs while the control plane is down"
    );
    assert_eq!(
        count(&mut client, 20).await["v1"],
        20,
        "the cached config keeps serving"
    );
    assert!(
        xds.config_dump()
            .resources
            .iter()
            .all(|r| r.status == ResourceStatus::Acked)
    );
    // Back up (a fresh server process: no memory of the client): the client resubscribes with
    // the versions it knows.
    drop(state);
    let server = AdsServer::start_on(addr).await;
    let lds = server
        .wait_request("LDS resubscription", |r| r.type_url == LDS)
        .await;
    assert_eq!(lds.version_info, "7");
    assert_eq!(lds.resource_names, [TARGET]);
    assert!(lds.node.as_ref().is_some_and(|n| n.id == "test-node"));
    let cds = server
        .wait_request("CDS resubscription", |r| r.type_url == CDS)
        .await;
    assert_eq!(
        (cds.version_info.as_str(), cds.resource_names.as_slice()),
        ("7", [V1.to_string()].as_slice())
    );
    assert_eq!(say(&mut client).await.unwrap(), "v1");
}

#[tokio::test]
async fn a_nack_keeps_the_last_good_resource_and_carries_error_detail() {
    let v1 = echo("v1").await;
    let server = AdsServer::start().await;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[v1.addr])]));
    let (_mesh, xds, mut client) = start(&[server.addr]);
    let metrics = XdsMetrics::new();
    assert!(xds.set_metrics(metrics.clone()).is_ok());
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    server.send(response(CDS, "2", "bad-nonce", vec![bad_cluster(V1)]));
    let nack = server
        .wait_request("a NACK", |r| r.error_detail.is_some())
        .await;
    assert_eq!(nack.type_url, CDS);
    assert_eq!(
        nack.version_info, "1",
        "the NACK carries the last good version"
    );
    assert_eq!(nack.response_nonce, "bad-nonce");
    let detail = nack.error_detail.unwrap().message;
    assert!(
        detail.contains(&format!("Cluster {V1}: connect_timeout")),
        "{detail}"
    );
    assert_eq!(
        count(&mut client, 20).await["v1"],
        20,
        "the last good cluster keeps serving"
    );
    let dump = xds.config_dump();
    let entry = dump
        .resources
        .iter()
        .find(|r| r.type_url == CDS && r.name == V1)
        .unwrap();
    assert_eq!(entry.status, ResourceStatus::Nacked);
    assert_eq!(entry.version, "1");
    assert_eq!(entry.error_version.as_deref(), Some("2"));
    assert!(entry.error.as_ref().unwrap().contains("connect_timeout"));
    assert_eq!(xds.counters().updates_rejected, 1);
    assert_eq!(
        metrics.rejected(CDS),
        1,
        "the NACK is counted in the metrics"
    );
    let admin_section = mesh_tower::admin::ConfigDumpExtension::dump(&xds);
    assert!(
        admin_section["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "NACKED"),
        "the admin endpoint's xds section shows the NACK"
    );
    let json = serde_json::to_value(&dump).unwrap();
    assert!(
        json["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "NACKED")
    );
}

#[tokio::test]
async fn a_mixed_response_applies_the_valid_resources_and_keeps_the_invalid_ones_last_good() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let server = AdsServer::start().await;
    server.set_snapshot(snapshot("1", &[(V1, 50, &[a.addr]), (V2, 50, &[b.addr])]));
    let (_mesh, xds, mut client) = start(&[server.addr]);
    let before = count(&mut client, 100).await;
    assert!(
        before.contains_key("a") && before.contains_key("b"),
        "{before:?}"
    );
    // One response: V1's endpoints move to c (valid), V2's are invalid.
    server.send(response(
        EDS,
        "2",
        "",
        vec![endpoints(V1, &[c.addr]), bad_endpoints(V2)],
    ));
    let nack = server
        .wait_request("the NACK", |r| {
            r.type_url == EDS && r.error_detail.is_some()
        })
        .await;
    let detail = nack.error_detail.unwrap().message;
    assert!(
        detail.contains(&format!(
            "ClusterLoadAssignment {V2}: endpoints[0].lb_endpoints[0]"
        )),
        "{detail}"
    );
    eventually("V1 moved to c", || {
        xds.config_dump()
            .resources
            .iter()
            .any(|r| r.type_url == EDS && r.name == V1 && r.version == "2")
    })
    .await;
    let after = count(&mut client, 100).await;
    assert!(
        !after.contains_key("a"),
        "the valid resource was applied: {after:?}"
    );
    assert!(
        after.contains_key("b") && after.contains_key("c"),
        "{after:?}"
    );
    let v2 = xds
        .config_dump()
        .resources
        .into_iter()
        .find(|r| r.type_url == EDS && r.name == V2)
        .unwrap();
    assert_eq!(
        (v2.status, v2.version.as_str()),
        (ResourceStatus::Nacked, "1")
    );
}

#[tokio::test]
async fn deleted_resources_leave_the_config() {
    let (a, b) = (echo("a").await, echo("b").await);
    let server = AdsServer::start().await;
    server.set_snapshot(snapshot("1", &[(V1, 50, &[a.addr]), (V2, 50, &[b.addr])]));
    let (mesh, xds, mut client) = start(&[server.addr]);
    assert_eq!(count(&mut client, 50).await.len(), 2);
    // V2 leaves the route and CDS.
    server.set_snapshot(snapshot("2", &[(V1, 100, &[a.addr])]));
    eventually("V2 removed", || mesh.config().cluster(V2).is_none()).await;
    assert_eq!(count(&mut client, 30).await["a"], 30);
    // The Listener is deleted: the target has no configuration; RPCs fail at once, not hang.
    server.set_snapshot(Snapshot::new("3"));
    eventually("target removed", || {
        mesh.config().listener(TARGET).is_none()
    })
    .await;
    let err = say(&mut client).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let dump = xds.config_dump();
    let lds = dump.resources.iter().find(|r| r.type_url == LDS).unwrap();
    assert_eq!(lds.status, ResourceStatus::DoesNotExist);
}

#[tokio::test(start_paused = true)]
async fn a_resource_nobody_answers_for_does_not_exist_after_the_timeout() {
    let server = AdsServer::start().await; // No snapshot: it records and stays silent.
    let mesh = Mesh::new(MeshConfig::empty());
    let options = XdsClientOptions {
        does_not_exist_timeout: Duration::from_secs(15),
        ..XdsClientOptions::default()
    };
    let xds = XdsClient::start_with(bootstrap(&[server.addr]), mesh.clone(), options).unwrap();
    let mut client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    let rpc = tokio::spawn(async move {
        let mut req = request("hi");
        req.set_timeout(Duration::from_secs(60));
        client.say(req).await
    });
    let sent = server.wait_request("LDS", |r| r.type_url == LDS).await;
    assert_eq!(sent.resource_names, [TARGET]);
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(xds.is_pending(TARGET), "still pending before the deadline");
    assert!(!rpc.is_finished());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!xds.is_pending(TARGET));
    let err = rpc.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    let dump = xds.config_dump();
    assert_eq!(dump.resources[0].status, ResourceStatus::DoesNotExist);
}

#[tokio::test]
async fn fallback_while_the_primary_is_down_and_back_when_it_returns() {
    let (a, b) = (echo("from-fallback").await, echo("from-primary").await);
    let primary = AdsServer::unused_addr().await;
    let fallback = AdsServer::start().await;
    fallback.set_snapshot(snapshot("f1", &[(V1, 100, &[a.addr])]));
    let (_mesh, xds, mut client) = start(&[primary, fallback.addr]);
    assert_eq!(say(&mut client).await.unwrap(), "from-fallback");
    assert_eq!(xds.connected_server(), Some(fallback.addr.to_string()));
    let primary = AdsServer::start_on(primary).await;
    primary.set_snapshot(snapshot("p1", &[(V1, 100, &[b.addr])]));
    eventually("back on the primary", || {
        xds.connected_server() == Some(primary.addr.to_string())
    })
    .await;
    eventually("primary's config", || {
        xds.config_dump()
            .resources
            .iter()
            .any(|r| r.type_url == EDS && r.version == "p1")
    })
    .await;
    assert_eq!(say(&mut client).await.unwrap(), "from-primary");
}

#[tokio::test]
async fn no_fallback_when_everything_is_cached() {
    let a = echo("a").await;
    let primary = AdsServer::start().await;
    let fallback = AdsServer::start().await;
    primary.set_snapshot(snapshot("1", &[(V1, 100, &[a.addr])]));
    let (_mesh, xds, mut client) = start(&[primary.addr, fallback.addr]);
    assert_eq!(say(&mut client).await.unwrap(), "a");
    let primary_addr = primary.addr;
    primary.stop().await;
    eventually("disconnected", || xds.connected_server().is_none()).await;
    // Two reconnect attempts (≈ 1 s and 1.6 s of backoff) go by without the fallback.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fallback
            .state
            .streams_opened
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(say(&mut client).await.unwrap(), "a");
    let _ = primary_addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_pushed_under_load_fail_no_rpc() {
    let (a, b) = (echo("v1").await, echo("v2").await);
    let server = AdsServer::start().await;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[a.addr]), (V2, 0, &[b.addr])]));
    let (mesh, _xds, client) = start(&[server.addr]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match say(&mut client).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    for (i, (w1, w2)) in [(75, 25), (50, 50), (25, 75), (0, 100)]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let version = (i + 2).to_string();
        server.set_snapshot(snapshot(
            &version,
            &[(V1, w1, &[a.addr]), (V2, w2, &[b.addr])],
        ));
    }
    // Finally V1 is removed altogether.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.set_snapshot(snapshot("6", &[(V2, 100, &[b.addr])]));
    eventually("V1 removed", || mesh.config().cluster(V1).is_none()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed RPCs: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "only {total} RPCs");
    let mut client = client.clone();
    assert_eq!(count(&mut client, 20).await["v2"], 20);
}

#[tokio::test]
async fn unsupported_fields_are_counted_dumped_and_served_over_csds() {
    use envoy_types::pb::envoy::{
        admin::v3::ClientResourceStatus,
        config::cluster::v3::Cluster,
        service::status::v3::{
            ClientStatusRequest,
            client_status_discovery_service_client::ClientStatusDiscoveryServiceClient,
        },
    };
    use prost::Message;

    let a = echo("a").await;
    let server = AdsServer::start().await;
    // A cluster with a field the mesh does not act on.
    let mut c = Cluster::decode(cluster(V1).value.as_slice()).unwrap();
    c.alt_stat_name = "reviews_stats".into();
    let mut s = snapshot("1", &[(V1, 100, &[a.addr])]);
    s.resources.insert(CDS.into(), vec![(V1.into(), pack(&c))]);
    server.set_snapshot(s);
    let (_mesh, xds, mut client) = start(&[server.addr]);
    assert_eq!(
        say(&mut client).await.unwrap(),
        "a",
        "an unsupported field is no reason to NACK"
    );
    assert_eq!(xds.counters().unsupported_fields, 1);
    let dump = xds.config_dump();
    let entry = dump.resources.iter().find(|r| r.type_url == CDS).unwrap();
    assert_eq!(entry.unsupported.len(), 1);
    assert!(
        entry.unsupported[0].contains("alt_stat_name"),
        "{:?}",
        entry.unsupported
    );

    // CSDS, mounted on a tonic server as an application would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let csds_addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(xds.csds().into_server())
            .serve_with_incoming(incoming),
    );
    let mut csds = ClientStatusDiscoveryServiceClient::connect(format!("http://{csds_addr}"))
        .await
        .unwrap();
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let config = &status.config[0];
    assert_eq!(config.node.as_ref().unwrap().id, "test-node");
    let types: Vec<_> = config
        .generic_xds_configs
        .iter()
        .map(|g| (g.type_url.as_str(), g.name.as_str()))
        .collect();
    assert_eq!(types, [(LDS, TARGET), (RDS, ROUTE), (CDS, V1), (EDS, V1)]);
    for g in &config.generic_xds_configs {
        assert_eq!(g.client_status, ClientResourceStatus::Acked as i32);
        assert_eq!(g.version_info, "1");
        assert!(g.xds_config.is_some() && g.last_updated.is_some());
    }
    let cds = &config.generic_xds_configs[2];
    assert_eq!(
        Cluster::decode(cds.xds_config.as_ref().unwrap().value.as_slice())
            .unwrap()
            .alt_stat_name,
        "reviews_stats"
    );
    let without = csds
        .fetch_client_status(ClientStatusRequest {
            exclude_resource_contents: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        without.config[0]
            .generic_xds_configs
            .iter()
            .all(|g| g.xds_config.is_none())
    );
}

#[tokio::test]
async fn only_complete_targets_are_published_and_an_incomplete_change_keeps_the_last_complete_one()
{
    const OTHER: &str = "other.default.svc.cluster.local:80";
    const OTHER_CLUSTER: &str = "outbound|80||other.default.svc.cluster.local";
    let (a, b) = (echo("v1").await, echo("v2").await);
    let server = AdsServer::start().await;
    // `echo` is complete; `other` names a cluster the server does not have.
    let with_other = |s: Snapshot| {
        s.with(LDS, OTHER, listener(OTHER, "other-routes")).with(
            RDS,
            "other-routes",
            route(
                "other-routes",
                "other.default.svc.cluster.local",
                &[(OTHER_CLUSTER, 1)],
            ),
        )
    };
    server.set_snapshot(with_other(snapshot("1", &[(V1, 100, &[a.addr])])));
    let (mesh, xds, mut client) = start(&[server.addr]);
    assert_eq!(say(&mut client).await.unwrap(), "v1");
    // Asked for once `echo` is settled, so only `other`'s own failure can wake its request.
    let mut other = EchoClient::new(mesh.channel(format!("xds:///{OTHER}")));
    let started = tokio::time::Instant::now();
    let waiting = tokio::spawn(async move { say(&mut other).await });
    eventually("other subscribed", || xds.config_dump().targets.len() == 2).await;
    server
        .wait_request("CDS for other's cluster", |r| {
            r.type_url == CDS && r.resource_names.contains(&OTHER_CLUSTER.to_string())
        })
        .await;
    // A SotW CDS response without the cluster says it does not exist: `other` is not
    // published, and its RPCs fail at once instead of waiting.
    eventually("other settled", || !xds.is_pending(OTHER)).await;
    assert!(mesh.config().listener(OTHER).is_none());
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a waiting request learns at once (not at its 20 s deadline) that its target failed"
    );

    // The echo route moves to V2, whose cluster and endpoints are not sent yet: the echo
    // target keeps its last complete configuration.
    let mut s = with_other(Snapshot::new("2"))
        .with(LDS, TARGET, listener(TARGET, ROUTE))
        .with(RDS, ROUTE, route(ROUTE, HOST, &[(V2, 100)]));
    server.set_snapshot(s.clone());
    server
        .wait_request("CDS for V2", |r| {
            r.type_url == CDS && r.resource_names.contains(&V2.to_string())
        })
        .await;
    assert_eq!(
        count(&mut client, 20).await["v1"],
        20,
        "never routed to a cluster that has not arrived"
    );
    assert!(mesh.config().cluster(V2).is_none());
    // V2 arrives: the echo target moves over; `other` is still unpublished.
    s = s
        .with(CDS, V2, cluster(V2))
        .with(EDS, V2, endpoints(V2, &[b.addr]));
    s.version = "3".into();
    server.set_snapshot(s);
    eventually("V2 published", || mesh.config().cluster(V2).is_some()).await;
    assert_eq!(count(&mut client, 20).await["v2"], 20);
    assert!(mesh.config().listener(OTHER).is_none());
}

/// Server policy published beside the xDS client (local YAML) and the client config the xDS
/// client publishes are separate halves: neither publish drops the other's.
#[tokio::test]
async fn server_policy_beside_xds_survives_xds_updates_and_keeps_them() {
    let (a, b) = (echo("a").await, echo("b").await);
    let server = AdsServer::start().await;
    server.set_snapshot(snapshot("1", &[(V1, 100, &[a.addr])]));
    let (mesh, _xds, mut client) = start(&[server.addr]);
    assert_eq!(count(&mut client, 3).await["a"], 3);
    let yaml = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                metadata: {name: strict, namespace: default}\nspec: {mtls: {mode: STRICT}}\n";
    let local = mesh_tower::mesh_core::istio::load_str("local.yaml", yaml)
        .unwrap()
        .config;
    mesh.publish_server(local.server().clone());
    // The server publish kept the xDS client config.
    assert!(mesh.config().listener(TARGET).is_some());
    assert_eq!(count(&mut client, 3).await["a"], 3);
    // An xDS update keeps the server policy.
    server.set_snapshot(snapshot("2", &[(V2, 100, &[b.addr])]));
    eventually("V2 served", || mesh.config().cluster(V2).is_some()).await;
    assert_eq!(mesh.config().server(), local.server());
    assert_eq!(count(&mut client, 3).await["b"], 3);
}
