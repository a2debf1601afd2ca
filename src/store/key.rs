//! The counter key: how one limit of one descriptor is named in a store,
//! written ([`write_counter_key`]) and read back ([`descriptor_part`],
//! [`hash_tag`]) here and nowhere else. The memory store treats keys as
//! opaque bytes; the Redis store derives its cluster hash tag from
//! [`hash_tag`], so every limit of a descriptor lives in one slot.
//!
//! Layout: the domain, then each entry's key and value (or the shared
//! wildcard pattern that replaces the value), each as a little-endian `u32`
//! length and its bytes; then the limit's identity: one algorithm byte
//! (`f`, `s`, `t`), the window in nanoseconds (`u64` LE) and, when the rule
//! has several limits, the limit's slot (`u32` LE). A calendar window's
//! algorithm byte is `c` (its window is the unit's nominal length; the zone
//! is not in the key: a stored window that starts at another zone's boundary
//! is simply not the current one). Length prefixes keep
//! two descriptors from sharing a key by accident; `requests_per_unit` is
//! not part of the key, so a reload that changes a limit keeps its count,
//! as the reference's keys do.

use smallvec::SmallVec;

use crate::limit::{Algorithm, Limit};
use crate::rules::EntryLike;

/// Every counter key of one request, back to back: inline up to 256 bytes
/// (a one-entry descriptor's key is typically 40–70 bytes), one allocation
/// beyond. Larger inline buffers make the decision's future, which is moved
/// as a whole, costlier to move than the allocation they save.
pub type KeyBuffer = SmallVec<[u8; 256]>;

/// The bytes of a limit's identity after the descriptor part: the
/// algorithm byte and the window (the slot, when present, comes on top).
const IDENTITY_BYTES: usize = 9;

/// Appends to `buf` the counter key of one limit of one descriptor (the
/// layout is in the module doc). `shared` lists the entries (by index)
/// whose value is replaced by a shared wildcard pattern; `slot` is the
/// limit's index in its rule, written only when the rule has several
/// (`multi`).
pub fn write_counter_key<E: EntryLike, P: AsRef<str>>(
    buf: &mut KeyBuffer,
    domain: &str,
    entries: &[E],
    shared: &[(usize, P)],
    limit: &Limit,
    slot: usize,
    multi: bool,
) {
    /// Keys up to this size are assembled on the stack and appended in one
    /// copy: cheaper than growing `buf` piece by piece.
    const STAGE_BYTES: usize = 128;
    /// Entry `index`'s value, or the shared pattern that replaces it.
    fn value_of<'a, E: EntryLike, P: AsRef<str>>(
        shared: &'a [(usize, P)],
        index: usize,
        entry: &'a E,
    ) -> &'a str {
        shared
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(entry.value(), |(_, pattern)| pattern.as_ref())
    }
    /// Passes the key's pieces, in order, to `emit`.
    fn pieces<E: EntryLike, P: AsRef<str>>(
        mut emit: impl FnMut(&[u8]),
        domain: &str,
        entries: &[E],
        shared: &[(usize, P)],
        limit: &Limit,
        slot: usize,
        multi: bool,
    ) {
        let mut put = |bytes: &[u8]| {
            emit(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            emit(bytes);
        };
        put(domain.as_bytes());
        for (index, entry) in entries.iter().enumerate() {
            put(entry.key().as_bytes());
            put(value_of(shared, index, entry).as_bytes());
        }
        emit(&[match limit.algorithm {
            Algorithm::FixedWindow if limit.calendar.is_some() => b'c',
            Algorithm::FixedWindow => b'f',
            Algorithm::SlidingWindow => b's',
            Algorithm::TokenBucket => b't',
        }]);
        emit(&limit.window().to_le_bytes());
        if multi {
            emit(&u32::try_from(slot).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
    // The exact length, so the buffer grows at most once.
    let mut size = 4 + domain.len() + 1 + 8 + if multi { 4 } else { 0 };
    for (index, entry) in entries.iter().enumerate() {
        size += 8 + entry.key().len() + value_of(shared, index, entry).len();
    }
    let start = buf.len();
    if size <= STAGE_BYTES {
        let mut stage = [0u8; STAGE_BYTES];
        let mut at = 0;
        pieces(
            |bytes| {
                if let Some(to) = stage.get_mut(at..at + bytes.len()) {
                    to.copy_from_slice(bytes);
                }
                at += bytes.len();
            },
            domain,
            entries,
            shared,
            limit,
            slot,
            multi,
        );
        buf.extend_from_slice(stage.get(..size).unwrap_or_default());
    } else {
        buf.reserve(size);
        pieces(
            |bytes| buf.extend_from_slice(bytes),
            domain,
            entries,
            shared,
            limit,
            slot,
            multi,
        );
    }
    debug_assert_eq!(buf.len() - start, size);
}

/// One counter key on its own (the tests' view of [`write_counter_key`]).
#[cfg(test)]
pub(crate) fn counter_key<E: EntryLike>(
    domain: &str,
    entries: &[E],
    shared: &[(usize, String)],
    limit: &Limit,
    slot: usize,
    multi: bool,
) -> Box<[u8]> {
    let mut buf = KeyBuffer::new();
    write_counter_key(&mut buf, domain, entries, shared, limit, slot, multi);
    buf.as_slice().into()
}

/// The hash of a key's descriptor part ([`descriptor_part`]): the same for
/// every limit of one descriptor, and the same in every process and build,
/// so every instance of a fleet puts a descriptor's counters under one
/// Redis Cluster hash tag.
pub fn hash_tag(key: &[u8]) -> u64 {
    fnv1a(descriptor_part(key))
}

/// 64-bit FNV-1a: a hash that never changes between builds or processes.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The descriptor part of a counter key written by [`write_counter_key`]:
/// the run of length-prefixed strings (domain, entry keys and values) before
/// the limit's identity (at least the 9 bytes of an algorithm and a window). Every limit of one
/// descriptor shares it. For keys of another shape this is still a
/// deterministic function of the key, so only the co-location of a
/// descriptor's limits depends on it, never correctness.
pub fn descriptor_part(key: &[u8]) -> &[u8] {
    let mut at = 0;
    while let Some(len_bytes) = key.get(at..at + 4) {
        let mut len = [0u8; 4];
        len.copy_from_slice(len_bytes);
        let Ok(len) = usize::try_from(u32::from_le_bytes(len)) else {
            break;
        };
        let end = at.saturating_add(4).saturating_add(len);
        if end.saturating_add(IDENTITY_BYTES) > key.len() {
            break;
        }
        at = end;
    }
    &key[..at]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Unit;

    #[test]
    fn counter_keys_do_not_collide_across_entry_boundaries() {
        let limit = Limit::fixed(10, Unit::Minute);
        let a = counter_key("d", &[("ab", "c")], &[], &limit, 0, false);
        let b = counter_key("d", &[("a", "bc")], &[], &limit, 0, false);
        assert_ne!(a, b);
    }

    #[test]
    fn counter_keys_are_the_same_bytes_short_or_long() {
        let limit = Limit::fixed(10, Unit::Minute);
        // Staged on the stack (short) or appended piece by piece (long).
        for value in ["v".to_owned(), "v".repeat(300)] {
            let key = counter_key("d", &[("k", value.as_str())], &[], &limit, 0, false);
            let mut expected = Vec::new();
            for part in ["d", "k", value.as_str()] {
                expected.extend_from_slice(&(part.len() as u32).to_le_bytes());
                expected.extend_from_slice(part.as_bytes());
            }
            expected.push(b'f');
            expected.extend_from_slice(&limit.window().to_le_bytes());
            assert_eq!(*key, *expected, "{} bytes", value.len());
        }
    }

    #[test]
    fn counter_key_uses_shared_pattern() {
        let limit = Limit::fixed(10, Unit::Minute);
        let shared = vec![(0, "foo*".to_owned())];
        let a = counter_key("d", &[("k", "foo1")], &shared, &limit, 0, false);
        let b = counter_key("d", &[("k", "foo2")], &shared, &limit, 0, false);
        assert_eq!(a, b);
    }

    #[test]
    fn counter_key_depends_on_window_not_on_count() {
        let a = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(10, Unit::Minute),
            0,
            false,
        );
        let b = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(99, Unit::Minute),
            0,
            false,
        );
        let c = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(10, Unit::Hour),
            0,
            false,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn descriptor_part_stops_at_the_limit_identity() {
        let entries = [("key", ""), ("k2", "v2")];
        let mut base = Vec::new();
        for part in ["domain", "key", "", "k2", "v2"] {
            base.extend_from_slice(&(part.len() as u32).to_le_bytes());
            base.extend_from_slice(part.as_bytes());
        }
        let minute = Limit::fixed(10, Unit::Minute);
        let one = counter_key("domain", &entries, &[], &minute, 0, false);
        let multi = counter_key("domain", &entries, &[], &minute, 1, true);
        assert_eq!(descriptor_part(&one), &base[..]);
        assert_eq!(descriptor_part(&multi), &base[..]);
        assert_eq!(hash_tag(&one), hash_tag(&multi));
        assert_eq!(descriptor_part(b"x"), b"");
        // A value that looks like a length prefix stays inside its part.
        let tricky = [("k", "\x03\x00\x00\x00abc")];
        let key = counter_key("d", &tricky, &[], &minute, 0, false);
        assert_eq!(descriptor_part(&key).len(), key.len() - IDENTITY_BYTES);
    }
}
