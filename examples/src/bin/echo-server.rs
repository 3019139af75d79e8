//! An echo server with knobs, for trying the mesh by hand:
//! `echo-server --service reviews --version v2 --listen 127.0.0.1:50052 --fail-percent 10`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use mesh_examples::echo::{EchoService, Knobs};
use tonic::transport::server::TcpIncoming;

/// Serves `echo.Echo` over HTTP/2 on one address.
#[derive(Debug, Parser)]
struct Args {
    /// The service name reported in replies.
    #[arg(long, default_value = "echo")]
    service: String,
    /// The version label reported in replies.
    #[arg(long, default_value = "v1")]
    version: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Percentage of calls to fail (spread evenly).
    #[arg(long, default_value_t = 0)]
    fail_percent: u32,
    /// The gRPC status code failed calls get (14 = UNAVAILABLE).
    #[arg(long, default_value_t = 14)]
    fail_code: i32,
    /// Delay before every reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let knobs = Arc::new(Knobs::default());
    knobs.fail(args.fail_percent, tonic::Code::from(args.fail_code));
    knobs.delay(Duration::from_millis(args.latency_ms));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let service = EchoService::new(&args.service, &args.version, address, knobs);
    println!("{} {} listening on {address}", args.service, args.version);
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
