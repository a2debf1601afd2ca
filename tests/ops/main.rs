//! Operations: the binary and its command line, reference environment,
//! admin server, dashboard, metrics, reload, shutdown, store health and
//! rules from an xDS management server.
//! One binary of modules, for the link time (see tests/grpc/main.rs).

#[path = "../harness/mod.rs"]
mod harness;

mod admin;
mod binary;
mod cli;
mod dashboard;
mod dashboard_browser;
mod metrics;
mod monitoring;
mod overrides;
mod overrides_cli;
mod reference_env;
mod reference_metrics;
mod reload;
mod shutdown;
mod store_health;
mod tools;
mod traces;
mod xds;
mod xds_envoy_gateway;
