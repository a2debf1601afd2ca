//! The protobuf JSON mapping (protojson) of the RLS request and response, as
//! the reference's `POST /json` endpoint speaks it.
//!
//! Requests accept both `lowerCamelCase` and `snake_case` field names, enum
//! values by name or number, and 64-bit integers as numbers or strings, as
//! protojson parsers do. Responses use `lowerCamelCase`, enum names, durations
//! as `"1.5s"` strings, and omit default values.

use serde::{Deserialize, Deserializer, Serialize};

use crate::proto::{self, Code, DescriptorStatus, RateLimitResponse};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonRequest {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    descriptors: Vec<JsonDescriptor>,
    #[serde(default, alias = "hitsAddend", deserialize_with = "lenient_u32")]
    hits_addend: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDescriptor {
    #[serde(default)]
    entries: Vec<JsonEntry>,
    #[serde(default)]
    limit: Option<JsonOverride>,
    #[serde(default, alias = "hitsAddend", deserialize_with = "lenient_opt_u64")]
    hits_addend: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOverride {
    #[serde(default, alias = "requestsPerUnit", deserialize_with = "lenient_u32")]
    requests_per_unit: u32,
    #[serde(default, deserialize_with = "unit_name_or_number")]
    unit: i32,
}

impl JsonRequest {
    /// The protobuf request this JSON stands for.
    pub(crate) fn into_proto(self) -> proto::RateLimitRequest {
        proto::RateLimitRequest {
            domain: self.domain,
            hits_addend: self.hits_addend,
            descriptors: self
                .descriptors
                .into_iter()
                .map(|d| proto::RateLimitDescriptor {
                    entries: d
                        .entries
                        .into_iter()
                        .map(|e| proto::Entry {
                            key: e.key,
                            value: e.value,
                        })
                        .collect(),
                    limit: d.limit.map(|l| proto::RateLimitOverride {
                        requests_per_unit: l.requests_per_unit,
                        unit: l.unit,
                    }),
                    hits_addend: d.hits_addend,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

fn lenient_u64_value<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    match NumberOrString::deserialize(de)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::String(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid integer {s:?}"))),
    }
}

fn lenient_u32<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    let n = lenient_u64_value(de)?;
    u32::try_from(n)
        .map_err(|_| serde::de::Error::custom(format!("{n} is out of range for uint32")))
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    lenient_u64_value(de).map(Some)
}

fn unit_name_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<i32, D::Error> {
    use crate::proto::envoy::r#type::v3::RateLimitUnit;
    match NumberOrString::deserialize(de)? {
        NumberOrString::Number(n) => i32::try_from(n)
            .ok()
            .filter(|n| RateLimitUnit::try_from(*n).is_ok())
            .ok_or_else(|| serde::de::Error::custom(format!("unknown unit {n}"))),
        NumberOrString::String(s) => RateLimitUnit::from_str_name(&s)
            .map(|u| u as i32)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown unit {s:?}"))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonResponse {
    overall_code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    response_headers_to_add: Vec<JsonHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    request_headers_to_add: Vec<JsonHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_metadata: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatus {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_limit: Option<JsonLimit>,
    #[serde(skip_serializing_if = "is_zero")]
    limit_remaining: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_until_reset: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLimit {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "is_zero")]
    requests_per_unit: u32,
    unit: &'static str,
}

#[derive(Serialize)]
struct JsonHeader {
    key: String,
    value: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn code_name(code: i32) -> &'static str {
    Code::try_from(code).unwrap_or(Code::Unknown).as_str_name()
}

/// A protobuf duration in protojson form: seconds with up to 9 decimals, then `s`.
fn duration_string(d: &prost_types::Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let frac = format!("{:09}", d.nanos.unsigned_abs());
        format!("{}.{}s", d.seconds, frac.trim_end_matches('0'))
    }
}

impl JsonResponse {
    /// The protojson form of a protobuf response.
    pub(crate) fn from_proto(response: &RateLimitResponse) -> JsonResponse {
        let headers = |hs: &[proto::envoy::config::core::v3::HeaderValue]| {
            hs.iter()
                .map(|h| JsonHeader {
                    key: h.key.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        JsonResponse {
            overall_code: code_name(response.overall_code),
            statuses: response.statuses.iter().map(status).collect(),
            response_headers_to_add: headers(&response.response_headers_to_add),
            request_headers_to_add: headers(&response.request_headers_to_add),
            raw_body: (!response.raw_body.is_empty())
                .then(|| String::from_utf8_lossy(&response.raw_body).into_owned()),
            // The server's own metadata always decodes (tested in `respond`).
            dynamic_metadata: response
                .dynamic_metadata
                .as_ref()
                .and_then(|metadata| metadata.to_struct().ok())
                .map(|metadata| struct_to_json(&metadata)),
        }
    }
}

fn status(s: &DescriptorStatus) -> JsonStatus {
    use crate::proto::ResponseUnit;
    JsonStatus {
        code: code_name(s.code),
        current_limit: s.current_limit.as_ref().map(|l| JsonLimit {
            name: l.name.clone(),
            requests_per_unit: l.requests_per_unit,
            unit: ResponseUnit::try_from(l.unit)
                .unwrap_or(ResponseUnit::Unknown)
                .as_str_name(),
        }),
        limit_remaining: s.limit_remaining,
        duration_until_reset: s.duration_until_reset.as_ref().map(duration_string),
    }
}

/// A protobuf `Struct` as the JSON object it stands for.
pub(crate) fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_camel_and_snake_case_and_string_integers() {
        let json = r#"{"domain":"d","hitsAddend":"3","descriptors":[
            {"entries":[{"key":"k","value":"v"}],"limit":{"requests_per_unit":5,"unit":"MINUTE"},"hits_addend":"0"}]}"#;
        let request: JsonRequest = serde_json::from_str(json).expect("valid protojson");
        let request = request.into_proto();
        assert_eq!(request.hits_addend, 3);
        assert_eq!(request.descriptors[0].hits_addend, Some(0));
        let limit = request.descriptors[0].limit.expect("override");
        assert_eq!(limit.requests_per_unit, 5);
        assert_eq!(limit.unit, 2);
    }

    #[test]
    fn rejects_unknown_fields_and_units() {
        assert!(serde_json::from_str::<JsonRequest>(r#"{"domain":"d","bogus":1}"#).is_err());
        let bad_unit =
            r#"{"domain":"d","descriptors":[{"entries":[],"limit":{"unit":"FORTNIGHT"}}]}"#;
        assert!(serde_json::from_str::<JsonRequest>(bad_unit).is_err());
    }

    #[test]
    fn durations_use_protojson_form() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(duration_string(&d(60, 0)), "60s");
        assert_eq!(duration_string(&d(1, 500_000_000)), "1.5s");
        assert_eq!(duration_string(&d(0, 1)), "0.000000001s");
    }
}
