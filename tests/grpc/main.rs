//! The integration tests that drive an in-process server over real gRPC and
//! HTTP on loopback: decisions, limits, answers, hostile input, TLS, clocks.
//! One binary of modules (a test binary per file linked tonic, axum and
//! redis again each time, and links were most of a clean build).

#[path = "../harness/mod.rs"]
mod harness;

mod clock_faults;
mod config_reference;
mod decisions;
mod hostile_input;
mod http_json;
mod key_flood;
mod limits_grpc;
mod respond_fallbacks;
mod respond_headers;
mod respond_seeds;
mod tls;
