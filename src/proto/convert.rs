//! Conversions between the Envoy protobufs and floodgate's domain types,
//! one place for each: rate-limit units both ways, and request entries as
//! [`EntryLike`] for matching and counter keys.

use crate::limit::Unit;
use crate::proto::ResponseUnit;
use crate::rules::EntryLike;

/// Maps Envoy's `envoy.type.v3.RateLimitUnit` to a unit; `None` for UNKNOWN.
pub fn unit_from_proto(unit: i32) -> Option<Unit> {
    use crate::proto::envoy::r#type::v3::RateLimitUnit as P;
    match P::try_from(unit).ok()? {
        P::Unknown => None,
        P::Second => Some(Unit::Second),
        P::Minute => Some(Unit::Minute),
        P::Hour => Some(Unit::Hour),
        P::Day => Some(Unit::Day),
        P::Week => Some(Unit::Week),
        P::Month => Some(Unit::Month),
        P::Year => Some(Unit::Year),
    }
}

/// The response's unit for a limit's unit.
pub fn unit_to_proto(unit: Unit) -> ResponseUnit {
    match unit {
        Unit::Second => ResponseUnit::Second,
        Unit::Minute => ResponseUnit::Minute,
        Unit::Hour => ResponseUnit::Hour,
        Unit::Day => ResponseUnit::Day,
        Unit::Week => ResponseUnit::Week,
        Unit::Month => ResponseUnit::Month,
        Unit::Year => ResponseUnit::Year,
    }
}

impl EntryLike for crate::proto::Entry {
    fn key(&self) -> &str {
        &self.key
    }
    fn value(&self) -> &str {
        &self.value
    }
}
