//! Rotation: twenty under load without a failed RPC, broken rotations that keep the old
//! material serving, polling, and initial material that must be complete.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use mesh_tower::{
    Mesh,
    mesh_core::MtlsMode,
    tls::{CertificateFiles, CertificateWatcher, MeshTls, ServerTls, TlsError},
};

use crate::{
    certs::{Ca, Leaf, Validity, spiffe, yaml_path},
    harness::*,
};

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
        let before = ok.load(Ordering::Relaxed);
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
        // The load keeps succeeding through every rotation, not only between some.
        wait_for(|| ok.load(Ordering::Relaxed) >= before + 10).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "failed RPCs: {failures:?}");
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok >= 200, "the load ran: {ok} RPCs");
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
        CertificateWatcher::load(CertificateFiles::identity(
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

#[tokio::test(start_paused = true)]
async fn rotated_files_are_picked_up_by_polling() {
    let pki = pki();
    let watcher = CertificateWatcher::load(pki.server.clone()).unwrap();
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

#[tokio::test]
async fn a_rotated_trust_bundle_applies_to_the_next_handshake() {
    let pki = pki();
    // The server moves to a new CA; the client trusts only the old one at first.
    let next_ca = Ca::new("next root");
    let server_side = quiet_tls();
    server_side
        .set_workload_identity(pki.dir.identity(
            "next-server",
            &next_ca.workload("server"),
            &pki.ca,
        ))
        .unwrap();
    let server_tls = server_side.server(MtlsMode::Strict).unwrap();
    let addrs = [
        serve(server_tls.clone()).await,
        serve(server_tls.clone()).await,
    ];
    let mesh = client(
        Some(pki.client.clone()),
        client_config(addrs[0], &istio_mutual("server")),
    );
    assert_tls_failure(say(&mesh).await, "UnknownIssuer");

    // The client's bundle gains the new CA (as during an Istio root rotation).
    let bundle = pki.dir.path("client-ca.crt");
    std::fs::write(&bundle, format!("{}{}", pki.ca.pem(), next_ca.pem())).unwrap();
    assert_eq!(mesh.tls().workload_identity().unwrap().reload(), Ok(true));
    // A new endpoint (no backoff to wait out), the same cached client configuration.
    mesh.publish(client_config(addrs[1], &istio_mutual("server")).into());
    let reply = say(&mesh).await.unwrap();
    assert_eq!(reply.message, "cluster.local/ns/default/sa/client");
}
