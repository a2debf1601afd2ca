//! floodgate: a rate-limit decision service.
//!
//! Envoy, Istio or any gRPC client asks `ShouldRateLimit`; floodgate matches
//! the request's descriptors against YAML rules (the reference server's
//! format, plus extensions), counts hits and answers OK or OVER_LIMIT.
//!
//! # Layout
//!
//! Data flows one way, from the wire to the counters and back; each module
//! imports only the ones listed below it.
//!
//! - `main.rs`, [`cli`]: the command line (`serve`, `check`) and environment;
//!   `main.rs` also sets the binary's global allocator (mimalloc; it says why).
//! - [`settings`]: the reference server's environment variables (Istio's
//!   `RUNTIME_ROOT`, `GRPC_PORT`, ...) as defaults of floodgate's flags,
//!   every one of them listed with what floodgate does with it, and the rule
//!   set embedded in the binary.
//! - [`server`]: transports: tonic gRPC (RLS v3, health, reflection) and HTTP
//!   (`/json`, `/healthcheck`, `/metrics`); the admin server (`/rlconfig`,
//!   `/usage`, `/reload`, and the live `/dashboard` with its JSON
//!   `/dashboard/data`); config hot reload; TLS and mutual TLS; start and
//!   graceful shutdown with a grace period.
//! - [`metrics`]: metric names and recording (Prometheus text).
//! - [`live`]: what the dashboard reads back from the request path: an
//!   atomic latency histogram and the bounded top-K of descriptors closest
//!   to their limits.
//! - [`respond`]: the protobuf response built from a decision.
//! - [`service`]: the one decision path: validate, match, apply limits.
//! - [`request_limits`]: the largest request accepted (descriptors, entries,
//!   key, value and message sizes), checked before anything else.
//! - [`config`]: YAML files to a validated [`rules::RuleSet`], errors with
//!   file, line and reason.
//! - [`rules`]: the compiled rule tree and descriptor matching.
//! - [`policy`]: what callers are told, as data: a domain's `response:`
//!   block (headers, 429 body template), its identity `fallbacks:`, and the
//!   service-wide response options.
//! - [`store`]: where counters live: the [`store::CounterStore`] trait and the
//!   in-process sharded store, and the Redis store shared by a fleet.
//! - [`limit`]: the algorithms as pure functions of (limit, state, now, hits).
//! - [`clock`]: where "now" comes from.
//! - [`health`]: whether to receive traffic (rules loaded, not shutting
//!   down, store reachable); imports nothing, so any layer may hold it.
//! - [`proto`]: the generated Envoy RLS v3 protobuf modules, and
//!   [`proto::encoded_struct`]: `google.protobuf.Struct` (the response's
//!   dynamic metadata) held as its encoded bytes, written in one buffer.

#![forbid(unsafe_code)]
// Nothing a request, a file or the network influences may panic the server.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod decide;
pub mod health;
pub mod limit;
pub mod observe;
pub mod proto;
pub mod respond;
pub mod rules;
pub mod server;
pub mod store;
