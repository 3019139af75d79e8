//! The variants of the load comparison, what each one's client and server are, and the hooks
//! for the parts of the mesh that have not landed yet.
//!
//! Every variant sends the same `echo.Echo/Say` call to the same echo service
//! ([`mesh_examples::echo`]) over loopback HTTP/2:
//!
//! | key | client | path | server |
//! |---|---|---|---|
//! | `a` | plain tonic | direct | plain tonic |
//! | `b` | mesh client stack (routing, retries, breaker, outlier detection; no faults) | direct | mesh server stack ([hook](MESH_SERVER_STACK)) |
//! | `c1` | plain tonic | one nginx `grpc_pass` hop (server-side sidecar) | plain tonic |
//! | `c2` | plain tonic | two nginx hops (client- and server-side sidecars) | plain tonic |
//! | `d-tls` | tonic over rustls TLS | direct | tonic over rustls TLS ([`tls`](crate::tls)) |
//! | `d-mtls` | mesh with mTLS | direct | mesh with mTLS ([hook](MESH_MTLS_AVAILABLE)) |
//!
//! A variant whose parts are missing is reported as "not yet available" with the reason;
//! nothing is ever measured in its place.

use std::{fmt, net::SocketAddr, path::Path, str::FromStr, sync::Arc, time::Duration};

use mesh_examples::echo::{EchoService, Knobs};
use mesh_tower::{
    Mesh, MeshMetrics, Workload,
    mesh_core::{MeshConfig, istio},
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, server::TcpIncoming};

/// Whether [`serve`] wraps the echo service in the mesh server stack (trace → metrics → authz
/// → fault → rate limit) for [`ServerStack::Mesh`]; it does, so variant `b` measures both
/// stacks.
pub const MESH_SERVER_STACK: bool = true;

/// HOOK(integrator): `true` once the mesh's mTLS has landed and [`Variant::MeshMtls`] is built
/// (client: a mesh channel whose DestinationRule says `ISTIO_MUTUAL`; server: the mesh server
/// stack's TLS accept with the workload certificate).
pub const MESH_MTLS_AVAILABLE: bool = false;

/// One variant of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// (a) plain tonic client → plain tonic server.
    Plain,
    /// (b) the mesh client stack → the echo server (behind the mesh server stack once it lands).
    Mesh,
    /// (c) plain tonic through one nginx `grpc_pass` hop.
    NginxOneHop,
    /// (c) plain tonic through two nginx hops, client-side and server-side "sidecars".
    NginxTwoHop,
    /// (d) tonic with plain rustls TLS on both ends.
    Tls,
    /// (d) the mesh with mTLS on both ends.
    MeshMtls,
}

/// Which stack the echo server runs behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStack {
    /// tonic alone.
    Plain,
    /// The mesh server stack (see [`MESH_SERVER_STACK`]).
    Mesh,
    /// tonic over rustls TLS ([`tls`](crate::tls)).
    Tls,
}

/// The virtual host the mesh client addresses; its ServiceEntry points at the echo server.
pub const MESH_HOST: &str = "echo.bench.svc.cluster.local";
/// The service port of [`MESH_HOST`].
pub const MESH_PORT: u16 = 50051;

// === impl Variant ===

impl Variant {
    /// Every variant, in report order.
    pub const ALL: [Variant; 6] = [
        Variant::Plain,
        Variant::Mesh,
        Variant::NginxOneHop,
        Variant::NginxTwoHop,
        Variant::Tls,
        Variant::MeshMtls,
    ];

    /// The short key used on the command line and in reports.
    pub fn key(self) -> &'static str {
        match self {
            Variant::Plain => "a",
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
            Variant::Mesh if MESH_SERVER_STACK => "mesh client stack → mesh server stack",
            Variant::Mesh => "mesh client stack → plain tonic server",
            Variant::NginxOneHop => "tonic → nginx → tonic (one hop)",
            Variant::NginxTwoHop => "tonic → nginx → nginx → tonic (two sidecars)",
            Variant::Tls => "tonic + rustls TLS → tonic + rustls TLS",
            Variant::MeshMtls => "mesh + mTLS → mesh + mTLS",
        }
    }

    /// `Err(reason)` when the variant cannot be measured in this build.
    pub fn availability(self) -> Result<(), &'static str> {
        match self {
            Variant::MeshMtls if !MESH_MTLS_AVAILABLE => Err(
                "not yet available: mesh mTLS has not landed (hook MESH_MTLS_AVAILABLE in benches/src/variant.rs)",
            ),
            _ => Ok(()),
        }
    }

    /// Whether the variant runs through nginx.
    pub fn uses_nginx(self) -> bool {
        matches!(self, Variant::NginxOneHop | Variant::NginxTwoHop)
    }

    /// The stack the variant's echo server runs behind.
    pub fn server_stack(self) -> ServerStack {
        match self {
            Variant::Mesh | Variant::MeshMtls => ServerStack::Mesh,
            Variant::Tls => ServerStack::Tls,
            _ => ServerStack::Plain,
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
    /// The variant cannot be measured in this build.
    #[error("variant {variant}: {reason}")]
    Unavailable {
        /// The variant.
        variant: Variant,
        /// Why.
        reason: &'static str,
    },
    /// The mesh configuration was rejected.
    #[error("the mesh configuration of variant b: {0}")]
    Config(String),
    /// Connecting or serving failed.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Istio YAML for variant `b`: [`MESH_HOST`] served by one endpoint on `server_port`, with a
/// header-match route before the default route (so routing does real matching), a timeout,
/// Istio's default retries, a circuit breaker and outlier detection. No faults.
pub fn mesh_yaml(server_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: bench}}
spec:
  hosts: [{MESH_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {MESH_PORT}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {server_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: bench}}
spec:
  host: {MESH_HOST}
  trafficPolicy:
    connectionPool: {{http: {{http2MaxRequests: 100000, http1MaxPendingRequests: 100000, maxRetries: 1000}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: bench}}
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

/// The mesh of variant `b`, routing [`MESH_HOST`] to `server_port`.
pub fn mesh_for(server_port: u16) -> Result<Mesh, SetupError> {
    let loaded = istio::load_str("bench.yaml", &mesh_yaml(server_port))
        .map_err(|e| SetupError::Config(e.to_string()))?;
    let mesh = Mesh::new(loaded.config);
    // Metrics on, as a deployed client would have them (reporter="source").
    let _ = MeshMetrics::install(
        &mesh,
        &mut Registry::default(),
        &Workload::new("bench", "bench-client.bench.svc.cluster.local", 0),
    );
    Ok(mesh)
}

/// A client of `variant` whose traffic goes to `port` on loopback (the echo server, or the
/// first nginx hop); `tls_dir` holds the certificate [`tls::write_material`](crate::tls::write_material)
/// wrote, for `d-tls`. Connects eagerly for plain tonic so connection setup is not measured.
pub async fn client(variant: Variant, port: u16, tls_dir: &Path) -> Result<Client, SetupError> {
    variant
        .availability()
        .map_err(|reason| SetupError::Unavailable { variant, reason })?;
    match variant {
        Variant::Mesh => {
            let mesh = mesh_for(port)?;
            Ok(Client::Mesh(
                mesh.channel(format!("{MESH_HOST}:{MESH_PORT}")),
                mesh,
            ))
        }
        Variant::Tls => Ok(Client::Tonic(
            crate::tls::channel(crate::tls::client_config(tls_dir)?, port).await?,
        )),
        // HOOK(integrator): build the mesh mTLS client here (unreachable while
        // MESH_MTLS_AVAILABLE is false).
        Variant::MeshMtls => Err(SetupError::Unavailable {
            variant,
            reason: "not built",
        }),
        Variant::Plain | Variant::NginxOneHop | Variant::NginxTwoHop => {
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            Ok(Client::Tonic(channel))
        }
    }
}

/// A client channel of one variant.
#[derive(Clone, Debug)]
pub enum Client {
    /// A plain tonic channel.
    Tonic(tonic::transport::Channel),
    /// A mesh channel (and its mesh, kept alive with it).
    Mesh(mesh_tower::Channel, Mesh),
}

/// Serves the echo service on `listener` behind `stack` until `shutdown` completes; `tls_dir`
/// holds the certificate and key for [`ServerStack::Tls`].
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
        ServerStack::Mesh => {
            // The mesh server stack with metrics on: trace extraction, Istio metrics,
            // authorization (no policy: allow), fault and rate limit checks.
            let mesh = Mesh::new(MeshConfig::empty());
            let workload = Workload::new("bench", MESH_HOST, address.port());
            let _ = MeshMetrics::install(&mesh, &mut Registry::default(), &workload);
            tonic::transport::Server::builder()
                .layer(mesh.server_layer(workload))
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
