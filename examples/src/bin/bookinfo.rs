//! One bookinfo service as a deployable process, for Istio's proxyless gRPC mode
//! (`examples/k8s/`): `bookinfo --service reviews --version v2 --port 9080`.
//!
//! The xDS bootstrap comes from `GRPC_XDS_BOOTSTRAP` (istio-agent writes it); outgoing calls go
//! to `xds:///` targets; the workload identity is the bootstrap's `default` certificate
//! provider (the agent's workload certificate). With `--serve-over-xds` the server takes its
//! mTLS mode and RBAC from its inbound listener (gRFC A36; the bootstrap's
//! `server_listener_resource_name_template`, as istio-agent writes it) and serves nothing
//! until it arrives; otherwise it accepts mTLS and plaintext (Istio's PERMISSIVE default)
//! unless a PeerAuthentication in the served configuration says otherwise.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Parser, ValueEnum};
use mesh_core::{Labels, MeshConfig};
use mesh_examples::{
    bookinfo::{RATINGS, REVIEWS, RatingsService, ReviewsService, product_page},
    echo::Knobs,
};
use mesh_tower::{
    Mesh, Peer, Workload,
    tls::{CertificateFiles, MeshListener, ServerTls},
};
use mesh_xds::{
    bootstrap::{Bootstrap, CertificateProvider},
    client::XdsClient,
};

/// Runs one bookinfo service behind the mesh.
#[derive(Debug, Parser)]
struct Args {
    /// Which service.
    #[arg(long, value_enum)]
    service: Service,
    /// The version label.
    #[arg(long, default_value = "v1")]
    version: String,
    /// The port to serve on (all interfaces).
    #[arg(long, default_value_t = 9080)]
    port: u16,
    /// The namespace, for authorization and peer-authentication selectors.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Take the server's mTLS mode and authorization from its xDS inbound listener. Off by
    /// default: the port then refuses a plaintext readiness probe whenever istiod sends an
    /// mTLS chain, so the manifests' `httpGet` probes on the same port would never pass.
    #[arg(long)]
    serve_over_xds: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Service {
    Productpage,
    Reviews,
    Ratings,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = Bootstrap::from_env()?;
    let mut mesh = Mesh::builder();
    if let Some(identity) = workload_identity(&bootstrap) {
        mesh = mesh.workload_identity(identity);
    }
    let mesh = mesh.build(MeshConfig::empty())?;
    let xds = XdsClient::start(bootstrap, mesh.clone())?;

    let name = match args.service {
        Service::Productpage => "productpage",
        Service::Reviews => "reviews",
        Service::Ratings => "ratings",
    };
    let host = format!("{name}.{}.svc.cluster.local", args.namespace);
    let labels = Labels::new([("app", name), ("version", args.version.as_str())])?;
    let workload = Workload::new(args.namespace.clone(), host, args.port)
        .with_name(format!("{name}-{}", args.version))
        .with_labels(labels.clone());
    let address = SocketAddr::from(([0, 0, 0, 0], args.port));
    if args.serve_over_xds {
        // Before the server's TLS: the port is not serving until its listener arrives.
        xds.serve(address)?;
    }
    let tls = match mesh.tls().workload_identity() {
        Some(_) => mesh.server_tls(args.namespace.clone(), labels, args.port)?,
        // Without an identity there is nothing to present: plaintext only, said loudly.
        None => {
            eprintln!("bookinfo: no workload certificate in the bootstrap; serving plaintext");
            ServerTls::plaintext()
        }
    };
    let listener = MeshListener::bind(address, tls).await?;
    println!("{name} {} serving on {address}", args.version);

    let layer = mesh.server_layer(workload).bypass_health_checks(true);
    let knobs = Arc::new(Knobs::default());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match args.service {
        Service::Productpage => {
            let router = product_page(mesh.channel(format!("xds:///{REVIEWS}"))).layer(layer);
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?;
        }
        Service::Reviews => {
            let ratings = mesh.channel(format!("xds:///{RATINGS}"));
            let service = ReviewsService::new(&args.version, ratings, knobs).into_server();
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming_shutdown(listener, shutdown)
                .await?;
        }
        Service::Ratings => {
            let service = RatingsService::new(address, knobs).into_server();
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming_shutdown(listener, shutdown)
                .await?;
        }
    }
    Ok(())
}

/// The workload certificate istio-agent provides: the bootstrap's `default` file_watcher.
fn workload_identity(bootstrap: &Bootstrap) -> Option<CertificateFiles> {
    let CertificateProvider::FileWatcher(files) = bootstrap.certificate_providers.get("default")?
    else {
        return None;
    };
    let identity = CertificateFiles::identity(
        files.certificate_file.clone()?,
        files.private_key_file.clone()?,
    );
    Some(match &files.ca_certificate_file {
        Some(ca) => identity.with_trust_bundle(ca),
        None => identity,
    })
}
