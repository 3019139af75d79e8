//! Issue 15, item 6: when the port turns STRICT, open connections without a verified client
//! certificate stop being served and are closed after the drain grace; mTLS connections stay.

use std::time::{Duration, Instant};

use mesh_tower::mesh_core::Labels;

use crate::{certs::spiffe, fixture::*, harness::wait_for, support};

const GRACE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn strict_drains_open_plaintext_connections() {
    let pki = pki();
    let mesh = pki.server_mesh(&peer_authentication("PERMISSIVE"));
    let tls = mesh
        .server_tls("default", Labels::default(), workload().port)
        .unwrap()
        .with_drain_grace(GRACE);
    let addr = serve_axum(
        mesh.server_layer(workload()),
        tls.clone(),
        Axum::WithConnectInfo,
    )
    .await;

    let mut plaintext = H2::open(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let caller = pki.caller(&[&spiffe("client")]);
    let mut mtls = H2::open(mtls_connect(addr, &caller, Version::Http2).await).await;
    assert_eq!(plaintext.get().await.unwrap(), 200);
    assert_eq!(mtls.get().await.unwrap(), 200);

    mesh.publish(support::config(&peer_authentication("STRICT")).into());
    wait_for(|| tls.mode() == mesh_tower::mesh_core::MtlsMode::Strict).await;
    let strict_at = Instant::now();

    // Within the grace the connection is open, but no request on it is served.
    let mut served = 0;
    for _ in 0..50 {
        if let Ok(200) = plaintext.get().await {
            served += 1;
        }
    }
    assert_eq!(served, 0, "plaintext requests served after STRICT");

    // After the grace the server closes the connection.
    let closed = tokio::time::timeout(GRACE + Duration::from_secs(5), plaintext.connection).await;
    assert!(
        closed.is_ok(),
        "the plaintext connection is still open after the drain grace"
    );
    assert!(
        strict_at.elapsed() >= GRACE - Duration::from_millis(100),
        "closed before the grace"
    );

    // The mTLS connection is admitted by STRICT and keeps serving on the same connection.
    assert_eq!(mtls.get().await.unwrap(), 200);
    assert!(!mtls.connection.is_finished());
    // A new plaintext connection is refused outright.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), plaintext_get_result(addr))
            .await
            .unwrap()
            .is_err()
    );
}

/// A fresh plaintext HTTP/2 `GET`, or the error that prevented it.
async fn plaintext_get_result(addr: std::net::SocketAddr) -> Result<u16, hyper::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(conn);
    let request = http::Request::get("http://localhost/hello")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    Ok(send.send_request(request).await?.status().as_u16())
}
