//! The variants of the load comparison and what each one's client and server are.
//!
//! Every variant sends the same `echo.Echo/Say` call to the same echo service
//! ([`mesh_examples::echo`]) over loopback HTTP/2:
//!
//! | key | client | path | server |
//! |---|---|---|---|
//! | `a` | plain tonic | direct | plain tonic |
//! | `a-hdr` | plain tonic + the mesh's trace headers ([`TraceHeaders`]) | direct | plain tonic reading them ([`ReadTraceHeaders`](crate::baseline::ReadTraceHeaders)) |
//! | `b` | mesh client stack (routing, retries, breaker, outlier detection; no faults) | direct | mesh server stack ([hook](MESH_SERVER_STACK)) |
//! | `c1` | plain tonic | one nginx `grpc_pass` hop (server-side sidecar) | plain tonic |
//! | `c2` | plain tonic | two nginx hops (client- and server-side sidecars) | plain tonic |
//! | `d-tls` | tonic over rustls TLS | direct | tonic over rustls TLS ([`tls`](crate::tls)) |
//! | `d-mtls` | mesh client stack of `b`, ISTIO_MUTUAL | direct | mesh server stack of `b` behind a STRICT PeerAuthentication |
//! | `e` | tonic + tower's timeout, retry (budget), concurrency limit, p2c balancer, the trace headers ([`hand_made`](crate::baseline::hand_made)) | direct | the server of `a-hdr` |
//!
//! `b − a-hdr` is what the mesh itself adds; `a-hdr − a` is the wire cost of trace propagation
//! that any mesh, sidecar or proxyless, pays. `e` is the partial policy stack a Rust user would
//! assemble by hand: the mesh's whole policy surface should cost no more.
//!
//! `d-mtls` is `b` with the mesh's mTLS on both ends (SPIFFE certificates from one CA,
//! [`tls::write_mesh_material`](crate::tls::write_mesh_material)), so `d-mtls ÷ d-tls` compares
//! the mesh with mTLS against tonic with TLS. A variant that cannot run on this machine (nginx
//! missing) is reported with the reason; nothing is ever measured in its place.

use std::{fmt, net::SocketAddr, path::Path, str::FromStr, sync::Arc, time::Duration};

use mesh_examples::{
    echo::{EchoService, Knobs},
    pki,
};
use mesh_tower::{
    Mesh, MeshMetrics, Workload,
    mesh_core::{Labels, MeshConfig, MtlsMode, istio},
    tls::{MeshListener, TlsError},
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, server::TcpIncoming};
use tower::Layer;

use crate::baseline::{self, HandMade, ReadTraceHeadersLayer, TraceHeaders, TraceHeadersLayer};

/// Whether [`serve`] wraps the echo service in the mesh server stack (trace → metrics → authz
/// → fault → rate limit) for [`ServerStack::Mesh`]; it does, so variant `b` measures both
/// stacks.
pub const MESH_SERVER_STACK: bool = true;

/// One variant of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// (a) plain tonic client → plain tonic server.
    Plain,
    /// (a-hdr) plain tonic sending the mesh's trace headers → plain tonic reading them.
    PlainHeaders,
    /// (b) the mesh client stack → the echo server (behind the mesh server stack once it lands).
    Mesh,
    /// (c) plain tonic through one nginx `grpc_pass` hop.
    NginxOneHop,
    /// (c) plain tonic through two nginx hops, client-side and server-side "sidecars".
    NginxTwoHop,
    /// (d) tonic with plain rustls TLS on both ends.
    Tls,
    /// (d) the mesh with mTLS on both ends: (b) with ISTIO_MUTUAL to a STRICT server.
    MeshMtls,
    /// (e) tonic with tower's own policy layers and the trace headers → the server of a-hdr.
    HandMade,
}

/// Which stack the echo server runs behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStack {
    /// tonic alone.
    Plain,
    /// tonic reading the trace headers ([`ReadTraceHeaders`](crate::baseline::ReadTraceHeaders)).
    PlainHeaders,
    /// The mesh server stack (see [`MESH_SERVER_STACK`]).
    Mesh,
    /// tonic over rustls TLS ([`tls`](crate::tls)).
    Tls,
    /// The mesh server stack behind the mesh's mTLS accept, STRICT: plaintext is refused.
    MeshMtls,
}

/// The virtual host the mesh client addresses; its ServiceEntry points at the echo server.
pub const MESH_HOST: &str = "echo.bench.svc.cluster.local";
/// The service port of [`MESH_HOST`].
pub const MESH_PORT: u16 = 50051;
/// The namespace of the mesh client and server.
pub const MESH_NAMESPACE: &str = "bench";
/// The service account of the mesh server (its SPIFFE identity, for `d-mtls`).
pub const MESH_SERVER_SA: &str = "echo";
/// The service account of the mesh client (its SPIFFE identity, for `d-mtls`).
pub const MESH_CLIENT_SA: &str = "bench-client";

// === impl Variant ===

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 8] = [
        Variant::Plain,
        Variant::PlainHeaders,
        Variant::Mesh,
        Variant::HandMade,
        Variant::NginxOneHop,
        Variant::NginxTwoHop,
        Variant::Tls,
        Variant::MeshMtls,
    ];

    /// The short key used on the command line and in reports.
    pub fn key(self) -> &'static str {
        match self {
            Variant::Plain => "a",
            Variant::PlainHeaders => "a-hdr",
            Variant::HandMade => "e",
            Variant::Mesh => "b",
            Variant::NginxOneHop => "c1",
            Variant::NginxTwoHop => "c2",
            Variant::Tls => "d-tls",
            Variant::MeshMtls => "d-mtls",
        }
    }

    /// What the variant measures, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Plain => "plain tonic → tonic",
            Variant::PlainHeaders => "plain tonic + trace headers → tonic reading them",
            Variant::HandMade => {
                "tonic + tower timeout, retry, limit, p2c + trace headers → tonic reading them"
            }
            Variant::Mesh if MESH_SERVER_STACK => "mesh client stack → mesh server stack",
            Variant::Mesh => "mesh client stack → plain tonic server",
            Variant::NginxOneHop => "tonic → nginx → tonic (one hop)",
            Variant::NginxTwoHop => "tonic → nginx → nginx → tonic (two sidecars)",
            Variant::Tls => "tonic + rustls TLS → tonic + rustls TLS",
            Variant::MeshMtls => "mesh + mTLS → mesh + mTLS",
        }
    }

    /// Whether the variant runs through nginx.
    pub fn uses_nginx(self) -> bool {
        matches!(self, Variant::NginxOneHop | Variant::NginxTwoHop)
    }

    /// The stack the variant's echo server runs behind.
    pub fn server_stack(self) -> ServerStack {
        match self {
            Variant::Mesh => ServerStack::Mesh,
            Variant::MeshMtls => ServerStack::MeshMtls,
            Variant::Tls => ServerStack::Tls,
            Variant::PlainHeaders | Variant::HandMade => ServerStack::PlainHeaders,
            Variant::Plain | Variant::NginxOneHop | Variant::NginxTwoHop => ServerStack::Plain,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.key() == s)
            .ok_or_else(|| {
                let keys: Vec<_> = Variant::ALL.iter().map(|v| v.key()).collect();
                format!("unknown variant `{s}` (one of {})", keys.join(", "))
            })
    }
}

/// An error setting up a variant's client or server.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The mesh configuration was rejected.
    #[error("the mesh configuration: {0}")]
    Config(String),
    /// Connecting or serving failed.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The mesh's mTLS could not be set up (e.g. the workload certificate did not load).
    #[error("mesh mTLS: {0}")]
    MeshTls(#[from] TlsError),
    /// A socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Istio YAML for the mesh client of variant `b`: [`MESH_HOST`] served by one endpoint on
/// `server_port`, with a header-match route before the default route (so routing does real
/// matching), a timeout, Istio's default retries, a circuit breaker and outlier detection. No
/// faults. With `server_principal` (variant `d-mtls`), the DestinationRule also says
/// `ISTIO_MUTUAL` and expects the server to be that SPIFFE identity, as istiod writes it.
pub fn mesh_yaml(server_port: u16, server_principal: Option<&str>) -> String {
    let tls = server_principal
        .map(|p| format!("    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [\"spiffe://{p}\"]}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: {MESH_NAMESPACE}}}
spec:
  hosts: [{MESH_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {MESH_PORT}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {server_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: {MESH_NAMESPACE}}}
spec:
  host: {MESH_HOST}
  trafficPolicy:
    connectionPool: {{http: {{http2MaxRequests: 100000, http1MaxPendingRequests: 100000, maxRetries: 1000}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
{tls}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: {MESH_NAMESPACE}}}
spec:
  hosts: [{MESH_HOST}]
  http:
  - match: [{{headers: {{x-canary: {{exact: \"true\"}}}}}}]
    route: [{{destination: {{host: {MESH_HOST}}}}}]
  - timeout: 10s
    retries: {{attempts: 2, retryOn: \"unavailable,reset,connect-failure\"}}
    route: [{{destination: {{host: {MESH_HOST}}}}}]
"
    )
}

/// Istio YAML for the mesh server of variant `d-mtls`: mTLS STRICT for [`MESH_NAMESPACE`].
pub fn mesh_server_yaml() -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {MESH_NAMESPACE}}}
spec: {{mtls: {{mode: STRICT}}}}
"
    )
}

fn load(name: &str, yaml: &str) -> Result<MeshConfig, SetupError> {
    istio::load_str(name, yaml)
        .map(|loaded| loaded.config)
        .map_err(|e| SetupError::Config(e.to_string()))
}

/// The mesh client of variant `b`, routing [`MESH_HOST`] to `server_port`, metrics on. With
/// `mtls`, the directory [`tls::write_mesh_material`](crate::tls::write_mesh_material) wrote,
/// the client of `d-mtls`: it presents its workload certificate ([`MESH_CLIENT_SA`]) and calls
/// with `ISTIO_MUTUAL`, expecting the server to be [`MESH_SERVER_SA`].
pub fn mesh_for(server_port: u16, mtls: Option<&Path>) -> Result<Mesh, SetupError> {
    let server_principal = pki::principal(MESH_NAMESPACE, MESH_SERVER_SA);
    let yaml = mesh_yaml(server_port, mtls.map(|_| server_principal.as_str()));
    let mesh = Mesh::new(load("bench.yaml", &yaml)?);
    let mut workload = Workload::new(
        MESH_NAMESPACE,
        format!("{MESH_CLIENT_SA}.{MESH_NAMESPACE}.svc.cluster.local"),
        0,
    );
    if let Some(dir) = mtls {
        mesh.set_workload_identity(crate::tls::mesh_identity(dir, MESH_CLIENT_SA)?)?;
        workload = workload.with_principal(pki::principal(MESH_NAMESPACE, MESH_CLIENT_SA));
    }
    // Metrics on, as a deployed client would have them (reporter="source").
    let _ = MeshMetrics::install(&mesh, &mut Registry::default(), &workload);
    Ok(mesh)
}

/// A client of `variant` whose traffic goes to `port` on loopback (the echo server, or the
/// first nginx hop); `tls_dir` holds what [`tls::write_material`](crate::tls::write_material)
/// (for `d-tls`) and [`tls::write_mesh_material`](crate::tls::write_mesh_material) (for
/// `d-mtls`) wrote. Connects eagerly for plain tonic so connection setup is not measured.
pub async fn client(variant: Variant, port: u16, tls_dir: &Path) -> Result<Client, SetupError> {
    match variant {
        Variant::Mesh | Variant::MeshMtls => {
            let mtls = (variant == Variant::MeshMtls).then_some(tls_dir);
            let mesh = mesh_for(port, mtls)?;
            Ok(Client::Mesh(
                mesh.channel(format!("{MESH_HOST}:{MESH_PORT}")),
                mesh,
            ))
        }
        Variant::Tls => Ok(Client::Tonic(
            crate::tls::channel(crate::tls::client_config(tls_dir)?, port).await?,
        )),
        Variant::Plain | Variant::NginxOneHop | Variant::NginxTwoHop => {
            Ok(Client::Tonic(plain_channel(port).await?))
        }
        Variant::PlainHeaders => Ok(Client::Headers(
            TraceHeadersLayer.layer(plain_channel(port).await?),
        )),
        Variant::HandMade => Ok(Client::HandMade(baseline::hand_made(vec![
            plain_channel(port).await?,
        ]))),
    }
}

/// A tonic channel to `port` on loopback, connected.
async fn plain_channel(port: u16) -> Result<tonic::transport::Channel, SetupError> {
    Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A client channel of one variant.
// One per worker, moved never: boxing the mesh's channel would add a pointer chase to the
// variant being measured and to no other.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Client {
    /// A plain tonic channel.
    Tonic(tonic::transport::Channel),
    /// A plain tonic channel writing the trace headers (`a-hdr`).
    Headers(TraceHeaders<tonic::transport::Channel>),
    /// The hand-made tower stack (`e`).
    HandMade(HandMade),
    /// A mesh channel (and its mesh, kept alive with it).
    Mesh(mesh_tower::Channel, Mesh),
}

/// Serves the echo service on `listener` behind `stack` until `shutdown` completes; `tls_dir`
/// holds the certificate and key for [`ServerStack::Tls`] and the server's workload identity
/// for [`ServerStack::MeshMtls`].
pub async fn serve(
    stack: ServerStack,
    listener: TcpListener,
    tls_dir: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let address: SocketAddr = listener.local_addr()?;
    let echo = EchoService::new("echo", "v1", address, Arc::new(Knobs::default())).into_server();
    match stack {
        ServerStack::Tls => {
            let config = crate::tls::server_config(tls_dir)?;
            tonic::transport::Server::builder()
                .add_service(echo)
                .serve_with_incoming_shutdown(crate::tls::incoming(listener, config), shutdown)
                .await?
        }
        ServerStack::Mesh | ServerStack::MeshMtls => {
            // The mesh server stack with metrics on: trace extraction, Istio metrics,
            // authorization (no policy: allow), fault and rate limit checks.
            let mtls = stack == ServerStack::MeshMtls;
            let config = if mtls {
                load("bench-server.yaml", &mesh_server_yaml())?
            } else {
                MeshConfig::empty()
            };
            let mesh = Mesh::new(config);
            let mut workload = Workload::new(MESH_NAMESPACE, MESH_HOST, address.port());
            if mtls {
                mesh.set_workload_identity(crate::tls::mesh_identity(tls_dir, MESH_SERVER_SA)?)?;
                workload = workload.with_principal(pki::principal(MESH_NAMESPACE, MESH_SERVER_SA));
            }
            let _ = MeshMetrics::install(&mesh, &mut Registry::default(), &workload);
            let server = tonic::transport::Server::builder()
                .layer(mesh.server_layer(workload))
                .add_service(echo);
            if mtls {
                let tls = mesh.server_tls(MESH_NAMESPACE, Labels::default(), address.port())?;
                if tls.mode() != MtlsMode::Strict {
                    return Err(SetupError::Config(format!(
                        "the server resolved mTLS mode {:?}, expected STRICT",
                        tls.mode()
                    )));
                }
                server
                    .serve_with_incoming_shutdown(MeshListener::new(listener, tls)?, shutdown)
                    .await?
            } else {
                server
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listener).with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await?
            }
        }
        ServerStack::PlainHeaders => {
            tonic::transport::Server::builder()
                .layer(ReadTraceHeadersLayer)
                .add_service(echo)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await?
        }
        ServerStack::Plain => {
            tonic::transport::Server::builder()
                .add_service(echo)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mesh_examples::proto::echo::{EchoReply, EchoRequest, echo_client::EchoClient};
    use tonic::{Code, Status};

    use super::*;

    async fn say(client: &Client) -> Result<EchoReply, Status> {
        let request = EchoRequest {
            message: "hi".into(),
        };
        let reply = match client {
            Client::Tonic(channel) => EchoClient::new(channel.clone()).say(request).await,
            Client::Headers(channel) => EchoClient::new(channel.clone()).say(request).await,
            Client::HandMade(channel) => EchoClient::new(channel.clone()).say(request).await,
            Client::Mesh(channel, _) => EchoClient::new(channel.clone()).say(request).await,
        };
        reply.map(tonic::Response::into_inner)
    }

    #[tokio::test]
    async fn a_hdr_and_e_send_fresh_trace_headers_on_every_call_and_a_sends_none() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve(
            ServerStack::PlainHeaders,
            listener,
            Path::new(""),
            std::future::pending(),
        ));
        for variant in [Variant::PlainHeaders, Variant::HandMade] {
            let client = client(variant, port, Path::new("")).await.unwrap();
            let first = say(&client).await.unwrap().trace_id;
            let second = say(&client).await.unwrap().trace_id;
            assert_eq!(first.len(), 32, "{variant}: {first:?}");
            assert_ne!(first, second, "{variant}");
        }
        let plain = client(Variant::Plain, port, Path::new("")).await.unwrap();
        assert_eq!(say(&plain).await.unwrap().trace_id, "");
        server.abort();
    }

    #[tokio::test]
    async fn the_mtls_server_refuses_plaintext_and_sees_the_mesh_client_identity() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-mtls-{}", std::process::id()));
        crate::tls::write_mesh_material(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let dir = dir.clone();
            async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                serve(ServerStack::MeshMtls, listener, &dir, shutdown).await
            }
        });

        // The d-mtls client calls over mTLS; the server knows it by its SPIFFE identity.
        let mtls = client(Variant::MeshMtls, port, &dir).await.unwrap();
        let reply = say(&mtls).await.unwrap();
        assert_eq!(
            reply.caller_principal,
            pki::principal(MESH_NAMESPACE, MESH_CLIENT_SA)
        );

        // STRICT: the mesh client of `b` (no TLS) is refused...
        let mesh = client(Variant::Mesh, port, &dir).await.unwrap();
        assert_eq!(say(&mesh).await.unwrap_err().code(), Code::Unavailable);
        // ...and so is plain tonic, whether at connect (the eager HTTP/2 handshake) or the call.
        if let Ok(plain) = client(Variant::Plain, port, &dir).await {
            assert!(say(&plain).await.is_err());
        }

        drop((mtls, mesh));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
