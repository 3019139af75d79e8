#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io::ErrorKind, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    time::Instant,
};

use super::*;

fn hello() -> impl tower::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        Ok(http::Response::new(format!("hello {}", req.uri().path())))
    })
}

/// Lets every task run until all are idle (the paused clock moves only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_served_service_answers_over_a_pipe_and_the_connection_is_counted() {
    let net = MemNet::new();
    let addr = net.next_addr();
    assert_ne!(addr, net.next_addr(), "fresh addresses");
    let host = net.serve(addr, hello());

    let stream = net.dial(addr).await.unwrap();
    assert_eq!(stream.peer_addr(), addr);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get("http://x/there").body(Empty::<bytes::Bytes>::new());
    let response = sender.send_request(request.unwrap()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello /there");
    assert_eq!((host.accepted(), host.open()), (1, 1));

    drop(sender);
    driver.await.unwrap().unwrap();
    settle().await;
    assert_eq!((host.accepted(), host.open()), (1, 0), "the server let go");
}

#[tokio::test(start_paused = true)]
async fn connects_are_refused_where_nothing_listens_or_the_host_refuses() {
    let net = MemNet::new();
    let nowhere = net.next_addr();
    let error = net.dial(nowhere).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);

    let addr = net.next_addr();
    let listener = net.bind(addr);
    let host = listener.host();
    host.refuse_connections(true);
    let error = net.dial(addr).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    host.refuse_connections(false);
    net.dial(addr).await.unwrap();
    assert_eq!(host.accepted(), 1, "a refused connect is not accepted");

    drop(listener);
    let error = net.dial(addr).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "no listener");
}

#[tokio::test(start_paused = true)]
async fn a_connect_delay_passes_on_the_paused_clock() {
    let net = MemNet::new();
    let addr = net.next_addr();
    let host = net.serve(addr, hello());
    host.delay_connect(Some(Duration::from_secs(5)));
    let started = Instant::now();
    net.dial(addr).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    host.delay_connect(None);
    let started = Instant::now();
    net.dial(addr).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_reset_fails_both_ends_and_wakes_a_waiting_read() {
    let net = MemNet::new();
    let addr = net.next_addr();
    let mut listener = net.bind(addr);
    let mut client = net.dial(addr).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    server.read_exact(&mut buf).await.unwrap();

    // A read waiting when the reset comes fails then.
    let waiting = tokio::spawn(async move {
        let mut buf = [0; 1];
        client.read(&mut buf).await.map(|_| client)
    });
    settle().await;
    listener.host().reset_connections();
    let error = waiting.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    let error = server.write_all(b"pong").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    assert_eq!(listener.host().open(), 1, "the server still holds its end");
    drop(server);
    assert_eq!(listener.host().open(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_close_reads_end_of_stream_and_refuses_writes() {
    let net = MemNet::new();
    let addr = net.next_addr();
    let mut listener = net.bind(addr);
    let mut client = net.dial(addr).await.unwrap();
    let _server = listener.accept().await.unwrap();
    listener.host().close_connections();
    let mut buf = [0; 1];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "end of stream");
    let error = client.write_all(b"x").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BrokenPipe);

    // Only the connections open at the cut: a new one is fine.
    let mut again = net.dial(addr).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    again.write_all(b"ok").await.unwrap();
    let mut buf = [0; 2];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
}
