//! What answers carry besides statuses, service-wide: the reference's
//! limit headers (`LIMIT_RESPONSE_HEADERS_ENABLED`) and dynamic metadata.
//! The transport holds them and hands them to [`crate::respond::to_response`]
//! with each decision.

use std::sync::Arc;

/// Header names of the reference server's `LIMIT_RESPONSE_HEADERS_ENABLED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitHeaderNames {
    /// `LIMIT_LIMIT_HEADER` (default `RateLimit-Limit`).
    pub limit: String,
    /// `LIMIT_REMAINING_HEADER` (default `RateLimit-Remaining`).
    pub remaining: String,
    /// `LIMIT_RESET_HEADER` (default `RateLimit-Reset`).
    pub reset: String,
}

impl Default for LimitHeaderNames {
    fn default() -> LimitHeaderNames {
        LimitHeaderNames {
            limit: "RateLimit-Limit".to_owned(),
            remaining: "RateLimit-Remaining".to_owned(),
            reset: "RateLimit-Reset".to_owned(),
        }
    }
}

/// Service-wide switches for what answers carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseOptions {
    /// `LIMIT_RESPONSE_HEADERS_ENABLED=true`: every answer with a limit
    /// carries these headers, chosen as the reference chooses them. Domains
    /// whose `response.headers` is not `none` send their own instead.
    pub limit_headers: Option<Arc<LimitHeaderNames>>,
    /// Every answer carries `dynamic_metadata` (default on).
    pub dynamic_metadata: bool,
}

impl Default for ResponseOptions {
    fn default() -> ResponseOptions {
        ResponseOptions {
            limit_headers: None,
            dynamic_metadata: true,
        }
    }
}
