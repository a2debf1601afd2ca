//! What the decision path records: metric names and recording
//! ([`metrics`], Prometheus text), and what the dashboard reads back live
//! ([`live`]: a latency histogram and the top-K descriptors closest to their
//! limits).

pub mod live;
pub mod metrics;
