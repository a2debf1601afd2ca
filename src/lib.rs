//! floodgate: a rate-limit decision service.
//!
//! Envoy, Istio or any gRPC client asks `ShouldRateLimit`; floodgate matches
//! the request's descriptors against YAML rules (the reference server's
//! format, plus extensions), counts hits and answers OK or OVER_LIMIT.
//!
//! # Layout
//!
//! Three tiers, data flowing one way; a module imports only modules of its
//! own tier or the tiers below it.
//!
//! - **Edge** (how the world reaches floodgate)
//!   - [`cli`]: the composition root (`serve`, `check`): `args` (every
//!     flag), `reference_env` (the reference server's variables as flag
//!     defaults), `parse` (one syntax per value). `main.rs` parses and sets
//!     the global allocator.
//!   - [`server`]: transports (gRPC RLS v3 with health and reflection,
//!     HTTP `/json` and `/healthcheck`), the admin server (with the
//!     overrides API and where overrides persist) and its live dashboard,
//!     config reload and the xDS client that streams rules from a
//!     management server, TLS, start and graceful shutdown.
//! - **Decide** (the one decision path)
//!   - [`decide`]: `RateLimiter::decide` = validate, `plan` (match, fallbacks,
//!     `replaces`, counter keys; shared with `/usage`), the store's `apply`,
//!     `combine`.
//!   - [`respond`]: a decision on the wire: statuses, headers, 429 bodies,
//!     dynamic metadata, with the options the transport hands in.
//!   - [`observe`]: what the path records: metrics, the dashboard's live
//!     histogram and top-K, the reference server's stats (statsd, its
//!     Prometheus names) and OpenTelemetry traces.
//! - **State** (rules and counters)
//!   - [`config`]: where rules come from ([`config::Source`]: a path, the
//!     built-in set or an xDS server, whose resources go through the same
//!     YAML loader) and the YAML they are compiled from, with errors by
//!     file (or resource), line and rule.
//!   - [`rules`]: the compiled, immutable rule tree and matching; a domain's
//!     `response:` and `fallbacks:` policy; operators' overrides of single
//!     descriptors ([`rules::overrides`]).
//!   - [`store`]: where counters live ([`store::CounterStore`]: in memory,
//!     or in Redis, single, cluster or behind Sentinel, counted exactly in
//!     batched script calls or from leased blocks of quota and tokens) and
//!     the counter key ([`store::key`]),
//!     written and read in one place.
//!   - [`limit`]: the algorithms, pure functions of (limit, state, now, hits);
//!     calendar windows in a time zone.
//! - **Wire**: [`proto`]: the generated Envoy protobufs and every proto to
//!   domain conversion.
//! - Leaves any tier may use: [`clock`] (where "now" comes from), [`health`]
//!   (whether to receive traffic).

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
