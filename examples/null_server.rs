//! An RLS v3 server that does no rate limiting: it answers every
//! `ShouldRateLimit` with OK and one OK status per descriptor.
//!
//! It runs on the same tonic stack, runtime and transport settings as
//! floodgate ([`floodgate::server::grpc_server_builder`] and
//! [`floodgate::server::grpc_incoming`]), so the load
//! generator's figures against it are the ceiling for this machine: what
//! gRPC, HTTP/2 and protobuf cost before any decision is made. `scripts/bench`
//! compares floodgate with it.
//!
//! ```text
//! cargo run --release --example null_server -- --addr 127.0.0.1:0
//! ```
//!
//! Prints `listening on <addr>` once bound, then serves until SIGINT/SIGTERM.

use std::net::SocketAddr;

use clap::Parser;
use floodgate::proto::{
    Code, DescriptorStatus, RateLimitRequest, RateLimitResponse, RateLimitService,
    RateLimitServiceServer,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// An RLS server that always answers OK.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

struct AlwaysOk;

#[tonic::async_trait]
impl RateLimitService for AlwaysOk {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let descriptors = request.get_ref().descriptors.len();
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: (0..descriptors)
                .map(|_| DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                })
                .collect(),
            ..RateLimitResponse::default()
        }))
    }
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    println!("listening on {bound}");
    floodgate::server::grpc_server_builder()
        .add_service(RateLimitServiceServer::new(AlwaysOk))
        .serve_with_incoming_shutdown(floodgate::server::grpc_incoming(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))
}

// floodgate's allocator, so the ceiling is measured on the same stack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    let result = floodgate::server::runtime()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(serve(args.addr)));
    if let Err(e) = result {
        eprintln!("null_server: {e}");
        std::process::exit(1);
    }
}
