//! How large a request floodgate accepts, and the check that enforces it.
//!
//! A caller on the gRPC port chooses its descriptors, so without bounds one
//! request could carry millions of entries or megabyte-long values, each
//! copied into counter keys. [`RequestLimits`] caps every dimension; a request
//! over any cap is refused whole with `INVALID_ARGUMENT` (HTTP 400), and the
//! message names the field, its size and the flag that sets the cap.
//!
//! The defaults sit far above what Envoy sends. A route's rate limit actions
//! produce one descriptor each (a handful in practice) with one entry per
//! action; keys come from the route config; values are request header values,
//! addresses, cluster names or metadata, and Envoy's own default header limit
//! (`max_request_headers_kb`, 60 KiB for all headers together) bounds a value
//! copied from a header. A value cap below that would turn a long header into
//! an error, and Envoy's default `failure_mode_deny: false` lets a request
//! through when the rate limit service errs: a client could skip its limit by
//! padding a header. So values default to 64 KiB, and the counter store
//! weighs long keys so that they cannot multiply its memory (see
//! [`crate::store::memory`]).
//!
//! `floodgate serve` sets each field with a flag (`--max-descriptors`, ...;
//! [`crate::cli`]).

use super::DecideError;
use crate::proto::RateLimitRequest;
use crate::proto::convert::unit_from_proto;

/// Default [`RequestLimits::max_descriptors`].
pub const DEFAULT_MAX_DESCRIPTORS: usize = 64;

/// Default [`RequestLimits::max_descriptor_entries`].
pub const DEFAULT_MAX_DESCRIPTOR_ENTRIES: usize = 32;

/// Default [`RequestLimits::max_key_bytes`].
pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;

/// Default [`RequestLimits::max_value_bytes`].
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;

/// Default [`RequestLimits::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The largest request floodgate accepts. `Default` is the safe defaults
/// (the `DEFAULT_*` constants of this module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most descriptors in one request.
    pub max_descriptors: usize,

    /// Most entries in one descriptor.
    pub max_descriptor_entries: usize,

    /// Longest entry key, and longest domain, in bytes.
    pub max_key_bytes: usize,

    /// Longest entry value in bytes.
    pub max_value_bytes: usize,

    /// Largest request message in bytes: a gRPC message (after
    /// decompression) or a `POST /json` body.
    pub max_message_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> RequestLimits {
        RequestLimits {
            max_descriptors: DEFAULT_MAX_DESCRIPTORS,
            max_descriptor_entries: DEFAULT_MAX_DESCRIPTOR_ENTRIES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl RequestLimits {
    /// Checks a decoded request against every cap but the message size
    /// (which the transports enforce before decoding). `Err` is the message
    /// for the caller: what is too large, how large it is, the cap and the
    /// flag that sets it.
    pub fn check(&self, request: &RateLimitRequest) -> Result<(), String> {
        if request.domain.len() > self.max_key_bytes {
            return Err(format!(
                "domain is {} bytes, more than the limit of {} (--max-key-bytes)",
                request.domain.len(),
                self.max_key_bytes
            ));
        }
        if request.descriptors.len() > self.max_descriptors {
            return Err(format!(
                "request has {} descriptors, more than the limit of {} (--max-descriptors)",
                request.descriptors.len(),
                self.max_descriptors
            ));
        }
        for (index, descriptor) in request.descriptors.iter().enumerate() {
            if descriptor.entries.len() > self.max_descriptor_entries {
                return Err(format!(
                    "descriptor {index} has {} entries, more than the limit of {} \
                     (--max-descriptor-entries)",
                    descriptor.entries.len(),
                    self.max_descriptor_entries
                ));
            }
            for (entry_index, entry) in descriptor.entries.iter().enumerate() {
                if entry.key.len() > self.max_key_bytes {
                    return Err(format!(
                        "descriptor {index} entry {entry_index} has a key of {} bytes, \
                         more than the limit of {} (--max-key-bytes)",
                        entry.key.len(),
                        self.max_key_bytes
                    ));
                }
                if entry.value.len() > self.max_value_bytes {
                    return Err(format!(
                        "descriptor {index} entry {entry_index} (key {:?}) has a value of {} \
                         bytes, more than the limit of {} (--max-value-bytes)",
                        truncated(&entry.key),
                        entry.value.len(),
                        self.max_value_bytes
                    ));
                }
            }
        }
        Ok(())
    }
}

/// At most the first 64 bytes of `text` (on a character boundary), so an
/// error message stays short whatever the caller sent.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Rejects what the reference rejects, what would make a counter key
/// ambiguous, and what is larger than `limits` allow.
pub(super) fn validate(
    request: &RateLimitRequest,
    limits: &RequestLimits,
) -> Result<(), DecideError> {
    if request.domain.is_empty() {
        return Err(DecideError::InvalidRequest(
            "rate limit domain must not be empty".into(),
        ));
    }
    if request.descriptors.is_empty() {
        return Err(DecideError::InvalidRequest(
            "rate limit descriptor list must not be empty".into(),
        ));
    }
    limits.check(request).map_err(DecideError::InvalidRequest)?;
    for (index, descriptor) in request.descriptors.iter().enumerate() {
        if let Some(limit) = &descriptor.limit
            && unit_from_proto(limit.unit).is_none()
        {
            return Err(DecideError::InvalidRequest(format!(
                "descriptor {index} has a limit override with unit {} (expected SECOND to YEAR)",
                limit.unit
            )));
        }
        if let Some(entry) = descriptor.entries.iter().position(|e| e.key.is_empty()) {
            return Err(DecideError::InvalidRequest(format!(
                "descriptor {index} entry {entry} has an empty key"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Entry, RateLimitDescriptor};

    fn request(descriptors: usize, entries: usize, key: usize, value: usize) -> RateLimitRequest {
        RateLimitRequest {
            domain: "d".into(),
            descriptors: (0..descriptors)
                .map(|_| RateLimitDescriptor {
                    entries: (0..entries)
                        .map(|_| Entry {
                            key: "k".repeat(key),
                            value: "v".repeat(value),
                        })
                        .collect(),
                    ..RateLimitDescriptor::default()
                })
                .collect(),
            hits_addend: 0,
        }
    }

    #[test]
    fn accepts_requests_at_every_limit() {
        let limits = RequestLimits {
            max_descriptors: 3,
            max_descriptor_entries: 2,
            max_key_bytes: 5,
            max_value_bytes: 7,
            max_message_bytes: 100,
        };
        assert_eq!(limits.check(&request(3, 2, 5, 7)), Ok(()));
    }

    #[test]
    fn names_the_problem_and_the_limit() {
        let limits = RequestLimits {
            max_descriptors: 3,
            max_descriptor_entries: 2,
            max_key_bytes: 5,
            max_value_bytes: 7,
            max_message_bytes: 100,
        };
        let error = |r: RateLimitRequest| limits.check(&r).expect_err("over a limit");
        assert_eq!(
            error(request(4, 1, 1, 1)),
            "request has 4 descriptors, more than the limit of 3 (--max-descriptors)"
        );
        assert!(error(request(1, 3, 1, 1)).contains("3 entries, more than the limit of 2"));
        assert!(error(request(1, 1, 6, 1)).contains("key of 6 bytes, more than the limit of 5"));
        assert!(error(request(1, 1, 1, 8)).contains("value of 8 bytes, more than the limit of 7"));
        let mut long_domain = request(1, 1, 1, 1);
        long_domain.domain = "x".repeat(6);
        assert!(error(long_domain).contains("domain is 6 bytes"));
    }

    #[test]
    fn truncates_on_a_character_boundary() {
        let text = "é".repeat(40);
        assert_eq!(truncated(&text).len(), 64);
        assert_eq!(truncated("short"), "short");
    }
}
