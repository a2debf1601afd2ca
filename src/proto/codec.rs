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

impl RlsEncode for RateLimitResponse {}

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::value::Kind;

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
                dynamic_metadata: Some(nested().into()),
                ..RateLimitResponse::default()
            },
            RateLimitResponse {
                dynamic_metadata: Some(Default::default()),
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
