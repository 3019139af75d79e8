//! Our client against an independently written management server: the grpcio + xds-protos
//! fixture in `tests/interop/management_server.py`, run from the virtualenv `scripts/python-env`
//! creates in `target/py`. Missing virtualenv = a failing test that says how to create it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use mesh_test_support as support;
use mesh_tower::{Mesh, mesh_core::MeshConfig};
use mesh_xds::{
    bootstrap::Bootstrap,
    client::{ResourceStatus, XdsClient},
};
use support::{
    echo::{Behavior, EchoClient, request, spawn_echo},
    interop::python,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const TARGET: &str = "echo.default.svc.cluster.local:50051";

#[tokio::test]
async fn our_client_accepts_an_independent_grpcio_management_server() {
    let python = python();
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/management_server.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(["--target", TARGET])
        .args(["--version", &format!("v1={}=80", v1.addr)])
        .args(["--version", &format!("v2={}=20", v2.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python management server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the management server starts within 30 s")
        .unwrap()
        .expect("a `port N` line");
    let port: u16 = first
        .strip_prefix("port ")
        .expect("`port N`")
        .parse()
        .unwrap();

    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(
        Bootstrap::insecure(format!("127.0.0.1:{port}"), "interop"),
        mesh.clone(),
    )
    .unwrap();
    let mut client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..500 {
        let mut req = request(&i.to_string());
        req.set_timeout(Duration::from_secs(20));
        let reply = tokio::time::timeout(Duration::from_secs(25), client.say(req))
            .await
            .expect("rpc hung")
            .expect("rpc succeeds");
        *counts.entry(reply.into_inner().served_by).or_default() += 1;
    }
    let v2_share = counts.get("v2").copied().unwrap_or(0) as f64 / 500.0;
    assert!((v2_share - 0.2).abs() < 0.06, "80/20 split, got {counts:?}");

    // Every resource ACKed, on both sides.
    let dump = xds.config_dump();
    assert_eq!(dump.resources.len(), 1 + 1 + 2 + 2, "{dump:#?}");
    assert!(
        dump.resources
            .iter()
            .all(|r| r.status == ResourceStatus::Acked && r.version == "1"),
        "{dump:#?}"
    );
    assert_eq!(xds.counters().updates_rejected, 0);
    drop(child.stdin.take()); // The server exits when its stdin closes.
    let mut acks = HashMap::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap_or(Ok(None))
    {
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["error_detail"], "", "the client NACKed: {line}");
        if r["version_info"] == "1" && r["response_nonce"] != "" {
            acks.insert(r["type"].as_str().unwrap().to_owned(), true);
        }
    }
    assert_eq!(
        acks.len(),
        4,
        "an ACK for each of LDS, RDS, CDS, EDS: {acks:?}"
    );
}

/// Issue 13 item 2 against an independent server: grpcio sends the response headers of the ADS
/// stream only with its first response, so a stream opened before any target is watched
/// must still send the subscription made afterwards.
#[tokio::test]
async fn a_target_watched_after_the_stream_opened_is_sent_to_a_grpcio_server() {
    let python = python();
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/management_server.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(["--target", TARGET])
        .args(["--version", &format!("v1={}=100", v1.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python management server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the management server starts within 30 s")
        .unwrap()
        .expect("a `port N` line");
    let port: u16 = first
        .strip_prefix("port ")
        .expect("`port N`")
        .parse()
        .unwrap();

    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(
        Bootstrap::insecure(format!("127.0.0.1:{port}"), "interop"),
        mesh.clone(),
    )
    .unwrap();
    // The stream is being opened with nothing to subscribe to.
    for _ in 0..1_000 {
        if xds.connected_server().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(xds.connected_server().is_some(), "the ADS stream opens");
    // Let the request headers reach the server, which then waits for a request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    let reply = tokio::time::timeout(Duration::from_secs(15), client.say(req))
        .await
        .expect("rpc hung")
        .expect("the subscription was sent and answered");
    assert_eq!(reply.into_inner().served_by, "v1");
    drop(child.stdin.take()); // The server exits when its stdin closes.
}
