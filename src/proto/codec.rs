//! The gRPC codec of the RLS service: prost's, except that a response's
//! `dynamic_metadata` (a `google.protobuf.Struct`) is encoded in one pass
//! over lengths computed once.
//!
//! prost encodes a nested message by asking each level for its
//! `encoded_len`, which walks the whole subtree again, and `Message::encode`
//! walks the whole message once more before writing; for the metadata's
//! Struct → ListValue → Struct → Value nesting that was most of the
//! instructions floodgate spent per request beyond the gRPC stack itself.
//! The bytes written are exactly prost's (tested below).

// The parent module allows every clippy lint for the generated code; this
// hand-written module takes the crate's lints back.
#![warn(clippy::all)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use prost_types::value::Kind;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use super::{RateLimitRequest, RateLimitResponse};

/// A message the RLS codec can encode.
pub trait RlsEncode: Message + Sized {
    /// Writes the message, as `Message::encode_raw` would.
    fn encode_fast(self, buf: &mut impl BufMut) {
        self.encode_raw(buf);
    }
}

impl RlsEncode for RateLimitRequest {}

impl RlsEncode for RateLimitResponse {
    fn encode_fast(mut self, buf: &mut impl BufMut) {
        let metadata = self.dynamic_metadata.take();
        let quota = self.quota.take();
        // Fields 1..=5, then 6 (metadata) and 7 (quota): prost's order.
        self.encode_raw(buf);
        if let Some(metadata) = &metadata {
            let mut lens = Vec::with_capacity(64);
            let len = struct_len(metadata, &mut lens);
            encode_key(6, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            let mut lens = lens.into_iter();
            next(&mut lens); // the Struct's own length, written above
            encode_struct(metadata, &mut lens, buf);
        }
        if let Some(quota) = &quota {
            prost::encoding::message::encode(7, quota, buf);
        }
    }
}

/// prost's codec with [`RlsEncode`] for the encoding side.
#[derive(Debug, Clone)]
pub struct RlsCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for RlsCodec<T, U> {
    fn default() -> Self {
        RlsCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for RlsCodec<T, U>
where
    T: RlsEncode + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = RlsEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        RlsEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// Encodes with [`RlsEncode::encode_fast`].
#[derive(Debug, Clone)]
pub struct RlsEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: RlsEncode> Encoder for RlsEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed, so no length check first.
        item.encode_fast(buf);
        Ok(())
    }
}

/// A length-delimited field's size around a body of `len` bytes.
fn delimited(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

// The lengths of every nested message, in the order `encode_*` needs them
// (pre-order): each function reserves its slot, then recurses.

fn struct_len(s: &prost_types::Struct, lens: &mut Vec<usize>) -> usize {
    let slot = lens.len();
    lens.push(0);
    let mut len = 0;
    for (key, value) in &s.fields {
        let entry = entry_len(key, value, lens);
        len += delimited(entry);
    }
    lens[slot] = len;
    len
}

/// A map entry: key (1) unless empty, value (2) unless the default Value.
fn entry_len(key: &str, value: &prost_types::Value, lens: &mut Vec<usize>) -> usize {
    let slot = lens.len();
    lens.push(0);
    let mut len = 0;
    if !key.is_empty() {
        len += delimited(key.len());
    }
    if value.kind.is_some() {
        len += delimited(value_len(value, lens));
    }
    lens[slot] = len;
    len
}

fn value_len(value: &prost_types::Value, lens: &mut Vec<usize>) -> usize {
    let slot = lens.len();
    lens.push(0);
    let len = match &value.kind {
        None => 0,
        Some(Kind::NullValue(n)) => 1 + encoded_len_varint(i64::from(*n) as u64),
        Some(Kind::NumberValue(_)) => 1 + 8,
        Some(Kind::StringValue(s)) => delimited(s.len()),
        Some(Kind::BoolValue(_)) => 1 + 1,
        Some(Kind::StructValue(s)) => delimited(struct_len(s, lens)),
        Some(Kind::ListValue(list)) => {
            let slot = lens.len();
            lens.push(0);
            let mut inner = 0;
            for item in &list.values {
                inner += delimited(value_len(item, lens));
            }
            lens[slot] = inner;
            delimited(inner)
        }
    };
    lens[slot] = len;
    len
}

/// The next precomputed length (always there: computed by the same walk).
fn next(lens: &mut impl Iterator<Item = usize>) -> usize {
    lens.next().unwrap_or_default()
}

/// A Struct's entries (its own length already taken and written).
fn encode_struct(
    s: &prost_types::Struct,
    lens: &mut impl Iterator<Item = usize>,
    buf: &mut impl BufMut,
) {
    for (key, value) in &s.fields {
        let entry = next(lens);
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(entry as u64, buf);
        if !key.is_empty() {
            prost::encoding::string::encode(1, key, buf);
        }
        if value.kind.is_some() {
            let len = next(lens);
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            encode_value_body(value, lens, buf);
        }
    }
}

/// A Value's fields (its own length already taken and written).
fn encode_value_body(
    value: &prost_types::Value,
    lens: &mut impl Iterator<Item = usize>,
    buf: &mut impl BufMut,
) {
    match &value.kind {
        None => {}
        Some(Kind::NullValue(n)) => prost::encoding::int32::encode(1, n, buf),
        Some(Kind::NumberValue(x)) => prost::encoding::double::encode(2, x, buf),
        Some(Kind::StringValue(s)) => prost::encoding::string::encode(3, s, buf),
        Some(Kind::BoolValue(b)) => prost::encoding::bool::encode(4, b, buf),
        Some(Kind::StructValue(s)) => {
            let len = next(lens);
            encode_key(5, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            encode_struct(s, lens, buf);
        }
        Some(Kind::ListValue(list)) => {
            let len = next(lens);
            encode_key(6, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            for item in &list.values {
                let item_len = next(lens);
                encode_key(1, WireType::LengthDelimited, buf);
                encode_varint(item_len as u64, buf);
                encode_value_body(item, lens, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::proto::{Code, DescriptorStatus};

    fn string(s: &str) -> prost_types::Value {
        prost_types::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    fn nested() -> prost_types::Struct {
        let inner = |n: f64| prost_types::Value {
            kind: Some(Kind::StructValue(prost_types::Struct {
                fields: BTreeMap::from([
                    ("code".to_owned(), string("OK")),
                    (
                        "remaining".to_owned(),
                        prost_types::Value {
                            kind: Some(Kind::NumberValue(n)),
                        },
                    ),
                    (
                        "shadowed".to_owned(),
                        prost_types::Value {
                            kind: Some(Kind::BoolValue(true)),
                        },
                    ),
                    (
                        "null".to_owned(),
                        prost_types::Value {
                            kind: Some(Kind::NullValue(0)),
                        },
                    ),
                    ("absent".to_owned(), prost_types::Value { kind: None }),
                    (String::new(), string("empty key")),
                    ("long".to_owned(), string(&"x".repeat(300))),
                ]),
            })),
        };
        prost_types::Struct {
            fields: BTreeMap::from([
                ("domain".to_owned(), string("bench")),
                (
                    "empty".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::StructValue(prost_types::Struct::default())),
                    },
                ),
                (
                    "descriptors".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::ListValue(prost_types::ListValue {
                            values: (0..40)
                                .map(|i| inner(f64::from(i)))
                                .chain([prost_types::Value { kind: None }])
                                .collect(),
                        })),
                    },
                ),
            ]),
        }
    }

    fn fast(response: RateLimitResponse) -> Vec<u8> {
        let mut buf = Vec::new();
        response.encode_fast(&mut buf);
        buf
    }

    #[test]
    fn responses_encode_exactly_as_prost_encodes_them() {
        let responses = [
            RateLimitResponse::default(),
            RateLimitResponse {
                overall_code: Code::OverLimit as i32,
                statuses: vec![DescriptorStatus::default(); 3],
                raw_body: b"slow down".to_vec(),
                dynamic_metadata: Some(nested()),
                ..RateLimitResponse::default()
            },
            RateLimitResponse {
                dynamic_metadata: Some(prost_types::Struct::default()),
                quota: Some(Default::default()),
                ..RateLimitResponse::default()
            },
        ];
        for response in responses {
            assert_eq!(
                fast(response.clone()),
                response.encode_to_vec(),
                "{response:?}"
            );
        }
    }
}
