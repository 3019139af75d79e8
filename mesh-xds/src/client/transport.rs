//! The ADS stream over tonic: connect, resubscribe, pump responses into the state machine,
//! reconnect with backoff, fall back to secondary servers and return to the primary.
//!
//! Every failure here is *ambient* — the cache is never touched by a transport error. Fallback
//! follows gRPC A71: a secondary server is used only while the primary is unreachable *and*
//! some subscribed resource has never been received; while on a secondary, the primary is
//! probed with the same backoff and, once it answers, the client moves back. A configuration
//! restored from the persisted file counts as missing here: it is stale, and a fallback that
//! answers is fresher.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep, sleep_until},
};
use tonic::transport::{Channel, Endpoint};

use super::{Inner, backoff};
use crate::bootstrap::{ChannelCreds, XdsServer};

/// How long a connection attempt to a management server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open ADS stream.
struct Stream {
    responses: tonic::Streaming<DiscoveryResponse>,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
}

/// Why serving a stream stopped.
enum Ended {
    /// It broke; `got_response` says whether it carried any response.
    Broken { got_response: bool },
    /// The primary is reachable again (we were on a fallback).
    PrimaryBack(Channel),
}

/// Why a server could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TLS channel credentials: not implemented, and never downgraded to plaintext.
    #[error(
        "channel_creds `tls` is not supported by this client yet (refusing to fall back to plaintext)"
    )]
    TlsUnsupported,
    /// The URI is not one this client can dial.
    #[error("server_uri `{0}`: {1}")]
    BadUri(String, String),
    /// Connecting failed.
    #[error("connecting to {0}: {1}")]
    Connect(String, tonic::transport::Error),
}

/// Runs the client until the task is aborted.
pub(crate) async fn run(inner: Arc<Inner>) {
    let servers = inner.bootstrap.xds_servers.clone();
    let Some(primary) = servers.first() else {
        return; // The bootstrap guarantees one; nothing to do otherwise.
    };
    let mut attempt: u32 = 0;
    let mut ready_primary: Option<Channel> = None;
    loop {
        let channel = match ready_primary.take() {
            Some(channel) => Ok(channel),
            None => connect(primary).await,
        };
        let primary_reached = match channel {
            Ok(channel) => match open(&inner, channel, 0).await {
                Ok(stream) => {
                    if let Ended::Broken { got_response: true } = serve(&inner, stream, None).await
                    {
                        // A stream that worked restarts at once, with the backoff reset.
                        attempt = 0;
                        continue;
                    }
                    true
                }
                Err(status) => {
                    tracing::warn!(server = %primary.server_uri, %status, "ADS stream failed");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(server = %primary.server_uri, error = %e, "xDS server unreachable");
                false
            }
        };
        // A persisted configuration is stale: it does not make a fallback server useless.
        let want_fallback = {
            let shared = inner.lock();
            shared.state.has_uncached() || shared.serving_persisted()
        };
        if !primary_reached && want_fallback {
            for (i, server) in servers.iter().enumerate().skip(1) {
                let stream = match connect(server).await {
                    Ok(channel) => open(&inner, channel, i).await.map_err(|s| s.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stream {
                    Ok(stream) => {
                        tracing::info!(server = %server.server_uri, "using fallback xDS server");
                        match serve(&inner, stream, Some(primary)).await {
                            Ended::PrimaryBack(channel) => {
                                tracing::info!(server = %primary.server_uri, "primary xDS server is back");
                                ready_primary = Some(channel);
                                attempt = 0;
                            }
                            Ended::Broken { got_response } => {
                                if got_response {
                                    attempt = 0;
                                }
                            }
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(server = %server.server_uri, %error, "fallback xDS server unreachable");
                    }
                }
            }
        }
        if ready_primary.is_some() {
            continue;
        }
        // No server answered (a fresh response would have dropped the persisted configuration).
        inner.restore_persisted();
        let delay = backoff::next_delay(attempt);
        attempt = attempt.saturating_add(1);
        sleep(delay).await;
    }
}

/// Opens an ADS stream on `channel`, sending every subscription first.
async fn open(
    inner: &Arc<Inner>,
    channel: Channel,
    server: usize,
) -> Result<Stream, tonic::Status> {
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut shared = inner.lock();
        shared.state.on_connected();
        shared.server = Some(server);
        inner.flush(&mut shared, &tx);
    }
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut call = std::pin::pin!(client.stream_aggregated_resources(outbound));
    // tonic returns the stream only once the server's response headers arrive, and grpc-go
    // servers (istiod, istio-agent) and grpcio send them only with their first response, which
    // waits for a subscription. The request body is already flowing: a target watched in the
    // meantime must be sent now, or both ends wait for each other forever.
    let opened = loop {
        tokio::select! {
            opened = &mut call => break opened,
            () = inner.wake.notified() => {
                let mut shared = inner.lock();
                inner.flush(&mut shared, &tx);
            }
        }
    };
    match opened {
        Ok(response) => Ok(Stream {
            responses: response.into_inner(),
            requests: tx,
        }),
        Err(status) => {
            let mut shared = inner.lock();
            shared.state.on_disconnected();
            shared.server = None;
            Err(status)
        }
    }
}

/// Pumps one stream until it breaks (or, on a fallback, until the primary is back).
async fn serve(inner: &Arc<Inner>, mut stream: Stream, primary: Option<&XdsServer>) -> Ended {
    let mut got_response = false;
    let far = || Instant::now() + Duration::from_secs(86_400);
    // On a fallback: the primary is dialled after each backoff delay, concurrently with the
    // stream (a primary that does not answer must not stall the fallback's responses).
    let mut probe_attempt = 0;
    let mut probe = primary.map(|p| Box::pin(probe_after(p.clone(), probe_attempt)));
    let ended = loop {
        let deadline = inner.lock().state.poll_timeout().map(Instant::from_std);
        tokio::select! {
            message = stream.responses.message() => match message {
                Ok(Some(response)) => {
                    got_response = true;
                    inner.on_response(&response, &stream.requests);
                }
                Ok(None) => {
                    tracing::warn!("ADS stream closed by the server");
                    break Ended::Broken { got_response };
                }
                Err(status) => {
                    tracing::warn!(%status, "ADS stream broke");
                    break Ended::Broken { got_response };
                }
            },
            () = inner.wake.notified() => {
                let mut shared = inner.lock();
                inner.flush(&mut shared, &stream.requests);
            }
            () = sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => {
                inner.on_timeout(&stream.requests);
            }
            reached = async {
                match probe.as_mut() {
                    Some(p) => p.as_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                match reached {
                    Some(channel) => break Ended::PrimaryBack(channel),
                    None => {
                        probe_attempt += 1;
                        probe = primary.map(|p| Box::pin(probe_after(p.clone(), probe_attempt)));
                    }
                }
            }
        }
    };
    let mut shared = inner.lock();
    shared.state.on_disconnected();
    shared.server = None;
    inner.on_stream_ended(&mut shared);
    drop(shared);
    ended
}

/// Waits the backoff delay of `attempt`, then dials `primary`.
async fn probe_after(primary: XdsServer, attempt: u32) -> Option<Channel> {
    sleep(backoff::next_delay(attempt)).await;
    connect(&primary).await.ok()
}

/// Connects a channel to `server`.
pub(crate) async fn connect(server: &XdsServer) -> Result<Channel, ConnectError> {
    if server.channel_creds == ChannelCreds::Tls {
        return Err(ConnectError::TlsUnsupported);
    }
    let uri = &server.server_uri;
    let bad = |why: &str| ConnectError::BadUri(uri.clone(), why.to_owned());
    if let Some(path) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix("unix:"))
    {
        let path = path.to_owned();
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(CONNECT_TIMEOUT);
        return endpoint
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| ConnectError::Connect(uri.clone(), e));
    }
    let authority = if let Some(rest) = uri.strip_prefix("dns:") {
        // dns:host:port, dns:///host:port, dns://resolver/host:port
        match rest.strip_prefix("//") {
            Some(rest) => rest.split_once('/').map_or(rest, |(_, host)| host),
            None => rest,
        }
    } else if uri.contains("://") {
        return Err(bad(
            "unsupported scheme (use host:port, dns:///host:port or unix:///path)",
        ));
    } else {
        uri.as_str()
    };
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Connect(uri.clone(), e))
}

/// The wall clock, for `last_updated`.
pub(crate) fn wall() -> SystemTime {
    SystemTime::now()
}
