//! `google.protobuf.Struct` held as its encoded bytes, and the writer that
//! builds those bytes directly.
//!
//! build.rs maps the protobuf `Struct` to [`EncodedStruct`] (prost's
//! `extern_path`), so the response's `dynamic_metadata` costs one buffer
//! instead of a tree of `BTreeMap`s, `String`s and `Value`s: building it is
//! one allocation, encoding it is a copy (`encoded_len` is the buffer's
//! length), dropping it is one free. [`StructWriter`] writes exactly the
//! bytes prost writes for the equivalent `prost_types::Struct` (map entries
//! in key order, as its `BTreeMap` iterates; minimal varints; numbers as
//! doubles), which the tests in `respond` check against prost itself.
//!
//! Decoding keeps the map entries raw; a client reads them with
//! [`EncodedStruct::to_struct`].

// The parent module allows every clippy lint for the generated code; this
// hand-written module takes the crate's lints back.
#![warn(clippy::all)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};
use prost::{DecodeError, Message};

/// A `google.protobuf.Struct` as the bytes of its encoded fields (its body,
/// without the enclosing field's key and length).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncodedStruct {
    body: Vec<u8>,
}

impl EncodedStruct {
    /// The encoded body: the Struct's map entries (field 1), in order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The Struct these bytes encode. Entries are checked here, not when
    /// the enclosing message is decoded, so malformed ones are reported here.
    pub fn to_struct(&self) -> Result<prost_types::Struct, DecodeError> {
        prost_types::Struct::decode(self.body.as_slice())
    }
}

impl From<&prost_types::Struct> for EncodedStruct {
    fn from(value: &prost_types::Struct) -> EncodedStruct {
        EncodedStruct {
            body: value.encode_to_vec(),
        }
    }
}

impl From<prost_types::Struct> for EncodedStruct {
    fn from(value: prost_types::Struct) -> EncodedStruct {
        EncodedStruct::from(&value)
    }
}

impl std::fmt::Debug for EncodedStruct {
    /// The decoded Struct when it decodes, else the raw bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_struct() {
            Ok(decoded) => f
                .debug_tuple("EncodedStruct")
                .field(&decoded.fields)
                .finish(),
            Err(_) => f.debug_tuple("EncodedStruct").field(&self.body).finish(),
        }
    }
}

impl Message for EncodedStruct {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.body);
    }

    /// Appends a map entry (field 1) as it came; skips any other field.
    /// Duplicate keys are kept: the last one wins in [`Self::to_struct`], as
    /// it would in a decoded `prost_types::Struct`.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != FIELDS {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        // prost's own checks: wire type, length within the buffer.
        let mut entry = Vec::new();
        prost::encoding::bytes::merge(wire_type, &mut entry, buf, ctx)?;
        encode_key(FIELDS, WireType::LengthDelimited, &mut self.body);
        encode_varint(entry.len() as u64, &mut self.body);
        self.body.extend_from_slice(&entry);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.body.len()
    }

    fn clear(&mut self) {
        self.body.clear();
    }
}

/// `Struct.fields`; also `ListValue.values` and a map entry's key.
const FIELDS: u32 = 1;

// Field keys (tag << 3 | wire type), all one byte.
/// Field 1, length-delimited: `Struct.fields`, `ListValue.values`, a map
/// entry's key.
const FIELDS_KEY: u8 = 1 << 3 | 2;
/// Field 2, length-delimited: a map entry's value.
const ENTRY_VALUE_KEY: u8 = 2 << 3 | 2;
// The `Value.kind` oneof.
const NUMBER_VALUE_KEY: u8 = 2 << 3 | 1;
const STRING_VALUE_KEY: u8 = 3 << 3 | 2;
const BOOL_VALUE_KEY: u8 = 4 << 3;
const STRUCT_VALUE_KEY: u8 = 5 << 3 | 2;
const LIST_VALUE_KEY: u8 = 6 << 3 | 2;

/// Writes a Struct's encoding front to back, in one buffer.
///
/// The caller writes each Struct's keys in ascending byte order (the order
/// prost's `BTreeMap` encodes them in), each key once. A nested message's
/// length is written as one byte before its body and widened (the body
/// shifted) when the body turns out longer than 127 bytes.
#[derive(Debug)]
pub struct StructWriter {
    buf: Vec<u8>,
}

/// An open list (`key: [...]`), from [`StructWriter::begin_list`].
#[derive(Debug)]
#[must_use = "close it with StructWriter::end_list"]
pub struct OpenList {
    entry: usize,
    value: usize,
    list: usize,
}

/// An open Struct inside a list, from [`StructWriter::begin_list_struct`].
#[derive(Debug)]
#[must_use = "close it with StructWriter::end_list_struct"]
pub struct OpenStruct {
    item: usize,
    value: usize,
}

impl StructWriter {
    /// A writer whose buffer holds `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> StructWriter {
        StructWriter {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// `key: "value"`.
    #[inline]
    pub fn string(&mut self, key: &str, value: &str) {
        self.entry_head(key, delimited_len(value.len()));
        if value.len() < 0x80 {
            self.buf
                .extend_from_slice(&[STRING_VALUE_KEY, value.len() as u8]);
        } else {
            self.buf.push(STRING_VALUE_KEY);
            self.len(value.len());
        }
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// `key: value`, a double.
    #[inline]
    pub fn number(&mut self, key: &str, value: f64) {
        self.entry_head(key, 1 + 8);
        let mut field = [NUMBER_VALUE_KEY; 9];
        field[1..].copy_from_slice(&value.to_le_bytes());
        self.buf.extend_from_slice(&field);
    }

    /// `key: true` or `key: false`.
    #[inline]
    pub fn bool(&mut self, key: &str, value: bool) {
        self.entry_head(key, 1 + 1);
        self.buf
            .extend_from_slice(&[BOOL_VALUE_KEY, u8::from(value)]);
    }

    /// Opens `key: [...]`; its items follow, then [`Self::end_list`].
    pub fn begin_list(&mut self, key: &str) -> OpenList {
        let entry = self.open(FIELDS_KEY);
        self.key(key);
        let value = self.open(ENTRY_VALUE_KEY);
        let list = self.open(LIST_VALUE_KEY);
        OpenList { entry, value, list }
    }

    /// Closes a list.
    pub fn end_list(&mut self, list: OpenList) {
        // Innermost first: widening a length moves only what follows it.
        self.close(list.list);
        self.close(list.value);
        self.close(list.entry);
    }

    /// Opens a Struct as the next item of the open list; its entries follow,
    /// then [`Self::end_list_struct`].
    #[inline]
    pub fn begin_list_struct(&mut self) -> OpenStruct {
        let item = self.open(FIELDS_KEY);
        let value = self.open(STRUCT_VALUE_KEY);
        OpenStruct { item, value }
    }

    /// Closes a Struct in a list.
    #[inline]
    pub fn end_list_struct(&mut self, open: OpenStruct) {
        self.close(open.value);
        self.close(open.item);
    }

    /// The Struct written.
    pub fn finish(self) -> EncodedStruct {
        EncodedStruct { body: self.buf }
    }

    /// A map entry's key, length and key field, then the key and length of
    /// its value, a `Value` body of `value_len` bytes.
    #[inline]
    fn entry_head(&mut self, key: &str, value_len: usize) {
        let key_len = if key.is_empty() {
            0
        } else {
            delimited_len(key.len())
        };
        let entry_len = key_len + delimited_len(value_len);
        if entry_len < 0x80 && !key.is_empty() {
            // Every length one byte (key and value are shorter than the
            // entry): three copies instead of a push per byte.
            self.buf
                .extend_from_slice(&[FIELDS_KEY, entry_len as u8, FIELDS_KEY, key.len() as u8]);
            self.buf.extend_from_slice(key.as_bytes());
            self.buf
                .extend_from_slice(&[ENTRY_VALUE_KEY, value_len as u8]);
            return;
        }
        self.buf.push(FIELDS_KEY);
        self.len(entry_len);
        self.key(key);
        self.buf.push(ENTRY_VALUE_KEY);
        self.len(value_len);
    }

    /// A map entry's key field; prost leaves out an empty key.
    #[inline]
    fn key(&mut self, key: &str) {
        if !key.is_empty() {
            self.buf.push(FIELDS_KEY);
            self.len(key.len());
            self.buf.extend_from_slice(key.as_bytes());
        }
    }

    /// A length as a varint; most are one byte.
    #[inline]
    fn len(&mut self, len: usize) {
        if len < 0x80 {
            // Less than 0x80: the varint is the byte itself.
            self.buf.push(len as u8);
        } else {
            encode_varint(len as u64, &mut self.buf);
        }
    }

    /// Writes a length-delimited field's key and a one-byte length to be set
    /// by [`Self::close`]; returns that byte's position.
    #[inline]
    fn open(&mut self, field_key: u8) -> usize {
        self.buf.extend_from_slice(&[field_key, 0]);
        self.buf.len() - 1
    }

    /// Sets the length at `at` to the bytes written since, widening it when
    /// one byte cannot hold it.
    #[inline]
    fn close(&mut self, at: usize) {
        let body = at + 1;
        let len = self.buf.len() - body;
        if len < 0x80 {
            self.buf[at] = len as u8;
        } else {
            self.widen(at, len);
        }
    }

    /// Moves the `len` bytes after `at` to make room for `len`'s varint.
    fn widen(&mut self, at: usize, len: usize) {
        let body = at + 1;
        if len < 1 << 14 {
            // Two bytes, the common case: one insert, no varint loop.
            self.buf.insert(body, (len >> 7) as u8);
            self.buf[at] = (len as u8) | 0x80;
            return;
        }
        let width = encoded_len_varint(len as u64);
        let end = self.buf.len();
        self.buf.resize(end + width - 1, 0);
        self.buf.copy_within(body..end, at + width);
        let mut slot = &mut self.buf[at..at + width];
        encode_varint(len as u64, &mut slot);
    }
}

/// A length-delimited field's size (one-byte key) around `len` bytes.
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::value::Kind;
    use prost_types::{ListValue, Struct, Value};

    use super::*;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    /// A writer's output and prost's encoding of `expected`, side by side.
    fn assert_same(written: EncodedStruct, expected: &Struct) {
        assert_eq!(written.as_bytes(), expected.encode_to_vec().as_slice());
        assert_eq!(written.encoded_len(), expected.encoded_len());
        assert_eq!(&written.to_struct().expect("decodes"), expected);
    }

    #[test]
    fn scalar_entries_encode_as_prost_encodes_them() {
        let mut w = StructWriter::with_capacity(0);
        w.string("", "empty key");
        w.string("a", "");
        w.bool("f", false);
        w.number("n", -0.0);
        w.number("n2", 1e300);
        w.string("s", &"x".repeat(200));
        w.bool("t", true);
        let expected = Struct {
            fields: BTreeMap::from([
                (String::new(), value(Kind::StringValue("empty key".into()))),
                ("a".into(), value(Kind::StringValue(String::new()))),
                ("f".into(), value(Kind::BoolValue(false))),
                ("n".into(), value(Kind::NumberValue(-0.0))),
                ("n2".into(), value(Kind::NumberValue(1e300))),
                ("s".into(), value(Kind::StringValue("x".repeat(200)))),
                ("t".into(), value(Kind::BoolValue(true))),
            ]),
        };
        assert_same(w.finish(), &expected);
    }

    /// Lists and nested Structs of every size class: empty, under 128 bytes,
    /// over 127 (a two-byte length) and over 16383 (three bytes).
    #[test]
    fn nested_lengths_widen_as_prost_writes_them() {
        for (items, text) in [(0, 0), (1, 3), (1, 120), (3, 60), (2, 200), (150, 300)] {
            let mut w = StructWriter::with_capacity(16);
            let list = w.begin_list("list");
            let mut values = Vec::new();
            for i in 0..items {
                let open = w.begin_list_struct();
                let mut fields = BTreeMap::new();
                if i % 2 == 0 {
                    w.string("k", &"v".repeat(text));
                    fields.insert("k".to_owned(), value(Kind::StringValue("v".repeat(text))));
                }
                w.end_list_struct(open);
                values.push(value(Kind::StructValue(Struct { fields })));
            }
            w.end_list(list);
            w.string("z", "after");
            let expected = Struct {
                fields: BTreeMap::from([
                    ("list".into(), value(Kind::ListValue(ListValue { values }))),
                    ("z".into(), value(Kind::StringValue("after".into()))),
                ]),
            };
            let written = w.finish();
            if items == 150 {
                assert!(written.as_bytes().len() > 16_383);
            }
            assert_same(written, &expected);
        }
    }

    #[test]
    fn decoding_keeps_entries_and_skips_unknown_fields() {
        // Two entries, written separately so the bytes between them are known.
        let entry = |key: &str, text: &str| {
            let mut w = StructWriter::with_capacity(0);
            w.string(key, text);
            w.finish()
        };
        let (first, second) = (entry("domain", "d"), entry("z", &"long".repeat(40)));
        let body = [first.as_bytes(), second.as_bytes()].concat();
        // Unknown fields of every wire type around and between the entries.
        let mut encoded = Vec::new();
        prost::encoding::uint64::encode(9, &300, &mut encoded);
        prost::encoding::fixed32::encode(10, &7, &mut encoded);
        encoded.extend_from_slice(first.as_bytes());
        prost::encoding::string::encode(11, &"unknown".to_owned(), &mut encoded);
        prost::encoding::fixed64::encode(12, &1, &mut encoded);
        encoded.extend_from_slice(second.as_bytes());
        prost::encoding::message::encode(13, &Struct::default(), &mut encoded);
        let body = EncodedStruct { body };

        let decoded = EncodedStruct::decode(encoded.as_slice()).expect("decodes");
        assert_eq!(decoded, body);
        // And as a field of an enclosing message, which is how responses carry it.
        let response = crate::proto::RateLimitResponse {
            dynamic_metadata: Some(body.clone()),
            ..Default::default()
        };
        let round = crate::proto::RateLimitResponse::decode(response.encode_to_vec().as_slice())
            .expect("decodes");
        assert_eq!(round.dynamic_metadata, Some(body));
    }

    #[test]
    fn malformed_input_is_an_error() {
        // Field 1 with the varint wire type.
        assert!(EncodedStruct::decode([0x08, 0x01].as_slice()).is_err());
        // An entry longer than the buffer.
        assert!(EncodedStruct::decode([0x0a, 0x05, 0x0a].as_slice()).is_err());
        // Well-framed but not a map entry: kept raw, reported by to_struct.
        let odd = EncodedStruct::decode([0x0a, 0x02, 0x0a, 0x05].as_slice()).expect("framed");
        assert!(odd.to_struct().is_err());
    }

    #[test]
    fn converts_from_a_struct() {
        let s = Struct {
            fields: BTreeMap::from([("k".into(), value(Kind::NullValue(0)))]),
        };
        let encoded = EncodedStruct::from(&s);
        assert_eq!(encoded.to_struct().expect("decodes"), s);
        assert_eq!(EncodedStruct::from(s.clone()), encoded);
        let mut cleared = encoded;
        cleared.clear();
        assert_eq!(cleared, EncodedStruct::default());
    }
}
