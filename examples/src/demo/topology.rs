//! The demo's world: the development control plane and bookinfo's services on loopback, each
//! with its own [`Mesh`] and xDS client, and the Istio YAML that describes them.
//!
//! Every service runs as its own tonic or axum server on `127.0.0.1:0` with its own mesh
//! handle and its own ADS stream to the control plane, exactly as separate processes would:
//! they share nothing but the network and the control plane. Their outgoing calls use
//! `xds:///` targets, so every policy they enforce arrived over xDS. They run as tasks of the demo's process so that stopping the demo —
//! normally or by Ctrl-C — can never leave a process or a port behind.
//!
//! Each service also serves its admin endpoint (Istio's metrics on `/metrics`, `/config_dump`,
//! `/clusters`) on its own loopback port, listed in [`Topology::admin`], for a Prometheus to
//! scrape.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use mesh_core::{Labels, MeshConfig};
use mesh_tower::{
    Mesh, MeshMetrics, Workload,
    admin::{Admin, AdminServer},
    tls::{MeshListener, TlsError},
};
use mesh_xds::{
    bootstrap::{Bootstrap, CertificateProvider, FileWatcherConfig},
    client::{XdsClient, XdsMetrics},
    server::ControlPlane,
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::server::TcpIncoming;

use crate::{
    bookinfo::{self, RATINGS, REVIEWS, RatingsService, ReviewsService},
    echo::Knobs,
    pki::{Pki, PkiError, principal},
};

/// The product page's mesh target.
pub const PRODUCTPAGE: &str = "productpage.default.svc.cluster.local:9080";

/// One running instance and its knobs.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its version label.
    pub version: &'static str,
    /// Where it listens.
    pub address: SocketAddr,
    /// What the demo turns to make it fail or slow down.
    pub knobs: Arc<Knobs>,
}

/// Bookinfo on loopback.
#[derive(Debug)]
pub struct Topology {
    /// `reviews` v1, v2, v3.
    pub reviews: Vec<Instance>,
    /// Two `ratings` replicas (both `v1`).
    pub ratings: Vec<Instance>,
    /// The product page.
    pub productpage: SocketAddr,
    /// The demo client's mesh: it calls `reviews`, `ratings` and the product page.
    pub client: Mesh,
    /// Every mesh in the demo with the targets it calls, the client's first.
    pub meshes: Vec<(Mesh, &'static [&'static str])>,
    /// The development control plane every mesh follows.
    pub control_plane: ControlPlane,
    /// The meshes of the ratings replicas. Ratings calls nobody, so it has no xDS client: its
    /// server-side policy (PeerAuthentication STRICT, authorization) is Istio YAML published
    /// to these meshes directly — the embedded, control-plane-free path.
    pub ratings_meshes: Vec<Mesh>,
    /// Every service's admin endpoint (`/metrics`, `/config_dump`, `/clusters`, ...), on an
    /// ephemeral loopback port: the client's first, then ratings, reviews and the product page.
    pub admin: Vec<AdminEndpoint>,
    /// The xDS clients, kept so their streams live as long as the topology.
    xds: Vec<XdsClient>,
    /// The servers behind [`Topology::admin`]; dropping one stops it.
    admin_servers: Vec<AdminServer>,
    /// The certificate authority; its files are removed with the topology.
    _pki: Pki,
    tasks: Vec<JoinHandle<()>>,
}

/// Where one service's admin endpoint listens, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// The workload's name, Istio's `source_workload` / `destination_workload` (`reviews-v2`).
    pub workload: String,
    /// The admin endpoint's address on 127.0.0.1: `http://{address}/metrics` is what a
    /// Prometheus scrapes.
    pub address: SocketAddr,
}

/// The traffic policy of a scenario, spliced into the services' YAML.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The `http:` list of the `reviews` VirtualService (each line indented by two spaces);
    /// empty routes everything to v1.
    pub reviews_http: String,
    /// A `trafficPolicy:` body for `reviews` (indented by four spaces), if any.
    pub reviews_traffic: String,
    /// A `trafficPolicy:` body for `ratings` (indented by four spaces), if any.
    pub ratings_traffic: String,
    /// More documents (e.g. an AuthorizationPolicy), `---`-separated.
    pub extra: String,
}

// === impl Policy ===

impl Policy {
    /// The traffic-policy documents of this policy, as Istio YAML: the `reviews` and `ratings`
    /// DestinationRules, the `reviews` VirtualService and the extra documents. This is the part
    /// of [`Topology::yaml`] a scenario changes, and what the demo shows a user.
    pub fn traffic_yaml(&self) -> String {
        let mut yaml = String::new();
        destination_rule(
            &mut yaml,
            "reviews",
            &["v1", "v2", "v3"],
            &self.reviews_traffic,
        );
        // Ratings requires mTLS (its PeerAuthentication is STRICT): callers use their mesh
        // identity.
        let ratings_traffic = format!("    tls: {{mode: ISTIO_MUTUAL}}\n{}", self.ratings_traffic);
        destination_rule(&mut yaml, "ratings", &["v1"], &ratings_traffic);
        let http = if self.reviews_http.is_empty() {
            "  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}\n"
        } else {
            &self.reviews_http
        };
        let _ = write!(
            yaml,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: reviews, namespace: default}}\nspec:\n  \
             hosts: [reviews.default.svc.cluster.local]\n  http:\n{http}"
        );
        if !self.extra.is_empty() {
            let _ = write!(yaml, "---\n{}", self.extra);
        }
        yaml
    }
}

/// Starting the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A listener could not be bound.
    #[error("binding a loopback port: {0}")]
    Bind(#[from] std::io::Error),
    /// An xDS client could not start.
    #[error("starting an xDS client: {0}")]
    Xds(#[from] mesh_xds::client::StartError),
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The generated YAML did not load (a bug in the demo).
    #[error("the demo's own configuration is invalid: {0}")]
    Config(String),
}

// === impl Topology ===

impl Topology {
    /// Starts the control plane (serving nothing yet), ratings ×2, reviews v1/v2/v3 and the
    /// product page, and the demo client; every mesh gets its own xDS client.
    pub async fn start() -> Result<Self, TopologyError> {
        let mut tasks = Vec::new();
        // The demo shows outlier ejection and the full circuit breaker, which istiod does not send
        // gRPC clients: every mesh here is this mesh's client, so it takes the extensions.
        let control_plane = ControlPlane::with_mesh_extensions(MeshConfig::empty());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let xds_address = listener.local_addr()?;
        let served = control_plane.clone();
        tasks.push(tokio::spawn(async move {
            let _ = served.serve(listener).await;
        }));
        let pki = Pki::temporary()?;
        let mut clients = Vec::new();
        let mut new_mesh = |node: &str, sa: &str| -> Result<Mesh, TopologyError> {
            let identity = pki.identity("default", sa)?;
            // As istio-agent writes it for proxyless gRPC: one `default` file_watcher
            // instance with the workload certificate, its key and the mesh trust bundle.
            let mut bootstrap = Bootstrap::insecure(xds_address.to_string(), node);
            let (chain, key) = identity.identity_files().unzip();
            bootstrap.certificate_providers.insert(
                "default".into(),
                CertificateProvider::FileWatcher(FileWatcherConfig {
                    certificate_file: chain.map(Into::into),
                    private_key_file: key.map(Into::into),
                    ca_certificate_file: identity.trust_bundle_file().map(Into::into),
                    refresh_interval: std::time::Duration::from_secs(600),
                }),
            );
            let mesh = Mesh::builder()
                .workload_identity(identity)
                .build(MeshConfig::empty())?;
            clients.push(XdsClient::start(bootstrap, mesh.clone())?);
            Ok(mesh)
        };
        // Each mesh with its workload, for metrics and the admin endpoints, in the order of
        // `Topology::admin`.
        let mut observed: Vec<(Mesh, Workload)> = Vec::new();
        let mut meshes: Vec<(Mesh, &'static [&'static str])> = vec![(
            new_mesh("demo-client", "demo-client")?,
            &[REVIEWS, RATINGS, PRODUCTPAGE],
        )];
        observed.push((
            meshes[0].0.clone(),
            Workload::new("default", "demo-client.default.svc.cluster.local", 9080)
                .with_name("demo-client")
                .with_labels(app_labels("demo-client", "v1")?)
                .with_principal(principal("default", "demo-client")),
        ));

        let mut ratings = Vec::new();
        let mut ratings_meshes = Vec::new();
        for _ in 0..2 {
            let mesh = Mesh::builder()
                .workload_identity(pki.identity("default", "bookinfo-ratings")?)
                .build(ratings_server_config(false)?)?;
            let labels = app_labels("ratings", "v1")?;
            let tls = mesh.server_tls("default", labels.clone(), 9080)?;
            let listener = MeshListener::new(TcpListener::bind("127.0.0.1:0").await?, tls)?;
            let address = listener.local_addr();
            let knobs = Arc::new(Knobs::default());
            let service = RatingsService::new(address, knobs.clone()).into_server();
            let workload = Workload::new("default", "ratings.default.svc.cluster.local", 9080)
                .with_labels(labels)
                .with_principal(principal("default", "bookinfo-ratings"));
            observed.push((mesh.clone(), workload.clone()));
            let layer = mesh.server_layer(workload);
            tasks.push(tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .layer(layer)
                    .add_service(service)
                    .serve_with_incoming(listener)
                    .await;
            }));
            ratings.push(Instance {
                version: "v1",
                address,
                knobs,
            });
            ratings_meshes.push(mesh);
        }

        let mut reviews = Vec::new();
        for version in ["v1", "v2", "v3"] {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            let knobs = Arc::new(Knobs::default());
            let mesh = new_mesh(&format!("reviews-{version}"), "bookinfo-reviews")?;
            let service = ReviewsService::new(version, mesh.channel(xds(RATINGS)), knobs.clone())
                .into_server();
            let workload = Workload::new("default", "reviews.default.svc.cluster.local", 9080)
                .with_name(format!("reviews-{version}"))
                .with_labels(app_labels("reviews", version)?)
                .with_principal(principal("default", "bookinfo-reviews"));
            observed.push((mesh.clone(), workload.clone()));
            let layer = mesh.server_layer(workload);
            meshes.push((mesh, &[RATINGS]));
            tasks.push(tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .layer(layer)
                    .add_service(service)
                    .serve_with_incoming(TcpIncoming::from(listener))
                    .await;
            }));
            reviews.push(Instance {
                version,
                address,
                knobs,
            });
        }

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let productpage = listener.local_addr()?;
        let mesh = new_mesh("productpage", "bookinfo-productpage")?;
        let workload = Workload::new("default", "productpage.default.svc.cluster.local", 9080)
            .with_labels(app_labels("productpage", "v1")?)
            .with_principal(principal("default", "bookinfo-productpage"));
        observed.push((mesh.clone(), workload.clone()));
        let layer = mesh.server_layer(workload);
        let router = bookinfo::product_page(mesh.channel(xds(REVIEWS))).layer(layer);
        meshes.push((mesh, &[REVIEWS]));
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));

        let mut admin = Vec::new();
        let mut admin_servers = Vec::new();
        for (mesh, workload) in &observed {
            let xds_client = clients
                .iter()
                .find(|c| c.bootstrap().node.id == *workload.name);
            let server = serve_admin(mesh, workload, xds_client).await?;
            admin.push(AdminEndpoint {
                workload: workload.name.to_string(),
                address: server.local_addr(),
            });
            admin_servers.push(server);
        }

        // The demo client calls these targets later; asking for them now subscribes at once.
        for target in meshes[0].1 {
            drop(meshes[0].0.channel(xds(target)));
        }
        Ok(Self {
            reviews,
            ratings,
            productpage,
            client: meshes[0].0.clone(),
            meshes,
            control_plane,
            ratings_meshes,
            admin,
            xds: clients,
            admin_servers,
            _pki: pki,
            tasks,
        })
    }

    /// The instance of `reviews` at `version`.
    pub fn reviews(&self, version: &str) -> Option<&Instance> {
        self.reviews.iter().find(|i| i.version == version)
    }

    /// Heals every instance: no failures, no latency, no authorization policy.
    pub fn heal(&self) {
        if let Ok(config) = ratings_server_config(false) {
            for mesh in &self.ratings_meshes {
                mesh.publish_server(config.server().clone());
            }
        }
        for instance in self.reviews.iter().chain(&self.ratings) {
            instance.knobs.fail(0, tonic::Code::Ok);
            instance.knobs.delay(std::time::Duration::ZERO);
        }
    }

    /// The whole configuration for `policy`, as Istio YAML.
    pub fn yaml(&self, policy: &Policy) -> String {
        let mut yaml = String::new();
        let reviews: Vec<_> = self
            .reviews
            .iter()
            .map(|i| (i.address, i.version, ""))
            .collect();
        service_entry(&mut yaml, "reviews", &reviews, "GRPC");
        let ratings: Vec<_> = self
            .ratings
            .iter()
            .enumerate()
            .map(|(n, i)| (i.address, i.version, if n == 0 { "a" } else { "b" }))
            .collect();
        service_entry(&mut yaml, "ratings", &ratings, "GRPC");
        service_entry(
            &mut yaml,
            "productpage",
            &[(self.productpage, "v1", "")],
            "HTTP",
        );
        yaml.push_str(&policy.traffic_yaml());
        yaml
    }

    /// The configuration for `policy`, loaded.
    pub fn config(&self, policy: &Policy) -> Result<MeshConfig, TopologyError> {
        mesh_core::istio::load_str("demo.yaml", &self.yaml(policy))
            .map(|loaded| loaded.config)
            .map_err(|e| TopologyError::Config(e.to_string()))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.admin_servers.clear();
        for client in &self.xds {
            client.shutdown();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Gives `mesh` Istio's standard metrics as `workload` and serves its admin endpoint on an
/// ephemeral loopback port, the way the README wires them: one registry per process holding
/// the mesh's metrics (and, for a mesh with an xDS client, the client's update counters and
/// configuration age; its resources go into `/config_dump`).
async fn serve_admin(
    mesh: &Mesh,
    workload: &Workload,
    xds_client: Option<&XdsClient>,
) -> Result<AdminServer, TopologyError> {
    let mut registry = Registry::default();
    // `None` means the mesh had metrics already: then they are already being recorded, and
    // this registry reports the mesh's internals only.
    let _ = MeshMetrics::install(mesh, &mut registry, workload);
    if let Some(client) = xds_client {
        let metrics = XdsMetrics::new();
        metrics.register(&mut registry);
        // A new client: its metrics are not set yet.
        let _ = client.set_metrics(metrics);
    }
    let mut admin = Admin::new(mesh, Arc::new(registry));
    if let Some(client) = xds_client {
        admin = admin.with_extension(Arc::new(client.clone()));
    }
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(mesh_tower::admin::serve(address, admin.router()).await?)
}

/// The server-side policy of ratings: STRICT mTLS and, with `reviews_only`, an
/// AuthorizationPolicy that lets only the reviews service account in.
pub(crate) fn ratings_server_config(reviews_only: bool) -> Result<MeshConfig, TopologyError> {
    mesh_core::istio::load_str("ratings-security.yaml", &ratings_server_yaml(reviews_only))
        .map(|loaded| loaded.config)
        .map_err(|e| TopologyError::Config(e.to_string()))
}

/// The Istio YAML of [`ratings_server_config`].
pub(crate) fn ratings_server_yaml(reviews_only: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: ratings-strict, namespace: default}\n\
         spec: {selector: {matchLabels: {app: ratings}}, mtls: {mode: STRICT}}\n",
    );
    if reviews_only {
        let _ = write!(
            yaml,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: ratings-from-reviews, namespace: default}}\n\
             spec:\n  selector: {{matchLabels: {{app: ratings}}}}\n  action: ALLOW\n  \
             rules: [{{from: [{{source: {{principals: [{}]}}}}]}}]\n",
            principal("default", "bookinfo-reviews")
        );
    }
    yaml
}

fn app_labels(app: &str, version: &str) -> Result<Labels, TopologyError> {
    Labels::new([("app", app), ("version", version)])
        .map_err(|e| TopologyError::Config(e.to_string()))
}

/// The `xds:///` form of a target: resolved through the mesh's xDS client.
pub fn xds(target: &str) -> String {
    format!("xds:///{target}")
}

/// Appends a ServiceEntry for `name` with the given endpoints (address, version, instance).
fn service_entry(
    yaml: &mut String,
    name: &str,
    endpoints: &[(SocketAddr, &str, &str)],
    protocol: &str,
) {
    let _ = write!(
        yaml,
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         hosts: [{name}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  \
         resolution: STATIC\n  ports: [{{number: 9080, name: main, protocol: {protocol}}}]\n  \
         endpoints:\n"
    );
    for (address, version, instance) in endpoints {
        let _ = write!(
            yaml,
            "  - address: {}\n    ports: {{main: {}}}\n    labels: {{app: {name}, version: {version}",
            address.ip(),
            address.port()
        );
        if !instance.is_empty() {
            let _ = write!(yaml, ", instance: {instance}");
        }
        yaml.push_str("}\n");
    }
}

/// Appends a DestinationRule for `name` with one subset per version and `traffic` as its
/// `trafficPolicy` body.
fn destination_rule(yaml: &mut String, name: &str, versions: &[&str], traffic: &str) {
    let _ = write!(
        yaml,
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         host: {name}.default.svc.cluster.local\n  subsets:\n"
    );
    for version in versions {
        let _ = writeln!(
            yaml,
            "  - {{name: {version}, labels: {{version: {version}}}}}"
        );
    }
    if !traffic.is_empty() {
        let _ = write!(yaml, "  trafficPolicy:\n{traffic}");
    }
}
