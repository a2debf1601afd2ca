//! What the decision path records: metric names and recording
//! ([`metrics`], Prometheus text), what the dashboard reads back live
//! ([`live`]: a latency histogram and the top-K descriptors closest to their
//! limits), the reference server's stats under its names ([`mod@reference`],
//! mapped to Prometheus by [`mapper`], sent by [`statsd`]) and OpenTelemetry
//! traces ([`traces`]).

pub mod counts;
pub mod live;
pub mod mapper;
pub mod metrics;
pub mod reference;
pub mod statsd;
pub mod traces;
