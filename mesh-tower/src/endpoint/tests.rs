use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

use super::dial::open_socket;
use super::*;

#[test]
fn backoff_grows_and_stays_bounded() {
    for failures in 1..40 {
        for random in [0, u64::MAX / 3, u64::MAX] {
            let d = backoff(failures, random);
            assert!(d <= BACKOFF_MAX, "{failures}: {d:?}");
            assert!(d >= BACKOFF_BASE / 2);
        }
    }
    assert!(backoff(1, u64::MAX) <= BACKOFF_BASE);
    assert!(
        backoff(8, 0) >= Duration::from_secs(5),
        "capped at 10s, jitter keeps at least half"
    );
}

#[tokio::test]
async fn upstream_sockets_get_the_clusters_tcp_keepalive() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = EndpointAddress::Socket(listener.local_addr().unwrap());
    let mut cluster = Cluster::new("c", Vec::new());
    let socket = |settings: PoolSettings| {
        let address = address.clone();
        async move { open_socket(&address, &settings).await.unwrap() }
    };

    let plain = socket(PoolSettings::of(&cluster)).await;
    assert!(
        !socket2::SockRef::from(&plain).keepalive().unwrap(),
        "off by default"
    );

    cluster.tcp_keepalive = Some(TcpKeepalive {
        time: Some(Duration::from_secs(7)),
        interval: Some(Duration::from_millis(2_500)),
        probes: Some(4),
    });
    let stream = socket(PoolSettings::of(&cluster)).await;
    let sock = socket2::SockRef::from(&stream);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(3),
        "the kernel counts whole seconds: rounded up"
    );
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);

    // Unset fields keep the system's values; keepalive is still on.
    cluster.tcp_keepalive = Some(TcpKeepalive::default());
    let defaults = socket(PoolSettings::of(&cluster)).await;
    assert!(socket2::SockRef::from(&defaults).keepalive().unwrap());
}

/// An endpoint dialing through `connector`, with `connect_timeout`.
fn through(connector: Connector, connect_timeout: Duration) -> Endpoint {
    let address = EndpointAddress::Socket(([10, 0, 0, 1], 80).into());
    let settings = PoolSettings {
        connect_timeout,
        ..PoolSettings::of(&Cluster::new("c", Vec::new()))
    };
    Endpoint::with_tls(address, settings, None, connector, Arc::default())
}

#[tokio::test(start_paused = true)]
async fn a_custom_connector_carries_the_connection_and_is_asked_once_per_connection() {
    let dials = Arc::new(AtomicU32::new(0));
    let dialed = dials.clone();
    let connector = Connector::new(tower::service_fn(move |address: EndpointAddress| {
        dialed.fetch_add(1, Ordering::SeqCst);
        async move {
            assert_eq!(address.to_string(), "10.0.0.1:80");
            let (client, server) = tokio::io::duplex(64 * 1024);
            let ok = hyper::service::service_fn(|_: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(server), ok),
            );
            Ok::<_, std::io::Error>(client)
        }
    }));
    let ep = Arc::new(through(connector, Duration::from_secs(1)));
    for _ in 0..3 {
        let mut request = ep.start_request();
        let mut sender = request.connection().await.unwrap();
        let empty = http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync();
        let response = sender
            .send_request(http::Request::get("http://x/").body(empty).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
    }
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection, reused"
    );
}

#[tokio::test(start_paused = true)]
async fn the_connect_timeout_bounds_a_custom_connector_and_a_failure_backs_off() {
    let stalled = Connector::new(tower::service_fn(|_: EndpointAddress| async {
        std::future::pending::<Result<tokio::io::DuplexStream, std::io::Error>>().await
    }));
    let ep = through(stalled, Duration::from_secs(2));
    let started = Instant::now();
    let error = ep.lease().await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "paused time: exactly"
    );
    assert!(error.to_string().ends_with("connect timed out"), "{error}");
    assert!(ep.is_backing_off());

    let refusing = Connector::new(tower::service_fn(|_: EndpointAddress| async {
        Err::<tokio::io::DuplexStream, _>(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))
    }));
    let ep = through(refusing, Duration::from_secs(2));
    let error = ep.lease().await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    assert!(ep.is_backing_off());
}

#[tokio::test]
async fn a_refused_connect_fails_fast_until_the_backoff_ends() {
    // Bind then drop a listener to get a loopback port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ep = Endpoint::new(EndpointAddress::Socket(addr), Duration::from_secs(1));
    let first = ep.lease().await.unwrap_err();
    assert_eq!(first.address(), &EndpointAddress::Socket(addr));
    assert!(ep.is_backing_off());
    // Served from the backoff state: the same error, without a new connect.
    let second = ep.lease().await.unwrap_err();
    assert_eq!(second.to_string(), first.to_string());
}
