//! Counters held in this process, in a bounded, sharded hash table.
//!
//! [`MemoryStore`] keeps one [`CounterState`] per key in one of a few
//! shards, each a mutex around a [`hashbrown::HashTable`] of indices into a
//! slot array, bounded together to `max_counters`. An entry remembers until
//! when its state matters ([`Evaluation::expires_at`], in the time the caller
//! passes to [`CounterStore::apply`]): after it, a missing state means the same
//! as the stored one, so an expired entry is read as missing and its slot is
//! reused first. When a shard is full, a CLOCK sweep (an approximation of
//! least-recently-used) evicts a counter not used since the hand last passed
//! it; a counter in use keeps its place however many new keys arrive, and a
//! new key is always admitted. An evicted counter forgets its hits, so
//! [`MemoryStore::evictions`] is worth alerting on.
//!
//! Why not a general-purpose cache (moka, used before): its per-entry
//! bookkeeping (access-order deques, timer wheel, a node per entry behind an
//! `Arc`, per-key locks for its eviction listener, SipHash) cost most of a
//! decision's instructions and several times a counter's memory; here a
//! decision costs one hash, one probe and an in-place update, and a counter
//! is a 112-byte entry holding its key inline plus its share of the table
//! (README "Benchmarks" has the figures).
//!
//! # Memory bound
//!
//! Callers choose descriptor values, so counter keys can be long (a request
//! may carry values up to `--max-value-bytes`). The capacity therefore counts
//! *slots*, not keys: a key of up to [`KEY_BYTES_PER_SLOT`] bytes (nearly
//! every real key: domain, a few entries) takes one slot, and a longer key one
//! more slot per further [`KEY_BYTES_PER_SLOT`] bytes. Memory stays near
//! `max_counters × (KEY_BYTES_PER_SLOT + per-entry overhead)` however long
//! the keys a flood sends, instead of growing with their length. Each shard
//! holds `max_counters / shards` slots; a key heavier than that is never
//! held (counted as an eviction).
//!
//! A key of up to [`INLINE_KEY_BYTES`] (62) bytes is stored inside its entry
//! (domain and one or two short entries: most real keys), so such a counter
//! is one 112-byte entry and no allocation of its own; a longer key is
//! copied to its own heap allocation. The weights above do not change: the
//! per-entry overhead is 112 bytes, plus the key's length for a key longer
//! than 62 bytes. Why 62: the entry's other fields take 48 bytes, and 62
//! inline bytes with the key's tag and length make the entry 112 bytes; at
//! 1M counters of 53-byte keys that is 127 B of RSS per counter, against
//! 139 B with a 64-byte entry plus a separate 64-byte key allocation (and
//! the allocations no longer interleave with per-request ones in the
//! server's heap). An entry of 96 bytes would hold only 46 key bytes, too
//! few for a typical one-entry descriptor's key.
//!
//! # Atomicity
//!
//! Every read-evaluate-write of a key happens under its shard's lock, and the
//! state is updated in place, so no caller can commit into an entry that was
//! meanwhile evicted. A call with several checks locks all of its shards in
//! ascending order, so concurrent calls cannot deadlock; no lock is held
//! across an `.await` (the work is synchronous).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Mutex, MutexGuard};

use smallvec::SmallVec;

use super::{Check, CounterStore, Outcomes, StoreError};
use crate::limit::{self, Algorithm, CounterState, Evaluation, Nanos, Outcome};

/// Most shards: enough that two cores rarely wait for each other's shard,
/// few enough that each holds many counters (the bound is per shard).
const MAX_SHARDS: usize = 64;

/// Fewest slots per shard before the store uses several shards, so that a
/// small store's bound stays close to a global least-recently-used one.
const MIN_SHARD_SLOTS: u64 = 4_096;

/// Per-check scratch of [`MemoryStore::apply_many`]: inline for requests of
/// up to eight checks, so that a multi-descriptor decision allocates nothing.
type PerCheck<T> = SmallVec<[T; 8]>;

/// Key bytes one capacity slot pays for; see "Memory bound" above.
pub const KEY_BYTES_PER_SLOT: usize = 256;

/// The slots a counter with `key` takes: 1 up to [`KEY_BYTES_PER_SLOT`]
/// bytes, one more per further [`KEY_BYTES_PER_SLOT`] bytes.
fn slots_of(key: &[u8]) -> u32 {
    let extra = key.len().saturating_sub(1) / KEY_BYTES_PER_SLOT;
    u32::try_from(extra).unwrap_or(u32::MAX - 1) + 1
}

/// Key bytes held inline in a counter's entry: with the tag and the length
/// byte, the key takes 64 bytes of the entry (see "Memory bound" above).
pub const INLINE_KEY_BYTES: usize = 62;

/// A counter's key as an entry holds it: inline up to [`INLINE_KEY_BYTES`],
/// else in its own heap allocation.
enum StoredKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl StoredKey {
    /// An empty key (of a free entry).
    const EMPTY: StoredKey = StoredKey::Inline {
        len: 0,
        bytes: [0; INLINE_KEY_BYTES],
    };

    fn new(key: &[u8]) -> StoredKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY_BYTES => {
                let mut bytes = [0; INLINE_KEY_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                StoredKey::Inline { len, bytes }
            }
            _ => StoredKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap(bytes) => bytes,
        }
    }
}

/// One counter, or a free place for one (`weight == 0`).
struct Entry {
    key: StoredKey,
    state: CounterState,
    /// From this instant on, the state means the same as no state.
    expires_at: Nanos,
    /// Capacity slots taken ([`slots_of`] the key); 0 when free.
    weight: u32,
    /// Used since the CLOCK hand last passed.
    referenced: bool,
}

/// One shard: a hash table of indices into `entries`.
struct Shard {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    /// Indices of free entries, reused before `entries` grows.
    free: Vec<u32>,
    /// The CLOCK hand: the next entry the eviction sweep looks at.
    hand: usize,
    /// Slots taken by the entries held.
    weight: u64,
    /// Most slots this shard holds.
    capacity: u64,
}

/// A shard on its own cache line, so that shards locked by different cores
/// do not contend on the line.
#[repr(align(64))]
struct ShardCell(Mutex<Shard>);

/// An in-process [`CounterStore`] bounded to a number of counters.
pub struct MemoryStore {
    shards: Box<[ShardCell]>,
    hasher: DefaultHashBuilder,
    evictions: AtomicU64,
    /// The latest `now` seen, for [`CounterStore::len`] to drop expired
    /// entries at.
    latest_now: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

impl Shard {
    fn new(capacity: u64) -> Shard {
        Shard {
            table: HashTable::new(),
            entries: Vec::new(),
            free: Vec::new(),
            hand: 0,
            weight: 0,
            capacity,
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&i| entries[i as usize].key.as_bytes() == key)
            .map(|&i| i as usize)
    }

    /// The live state of `key`, marking it used.
    fn load(&mut self, hash: u64, key: &[u8], now: Nanos) -> Option<CounterState> {
        let index = self.find(hash, key)?;
        let entry = &mut self.entries[index];
        if entry.expires_at <= now {
            return None;
        }
        entry.referenced = true;
        Some(entry.state)
    }

    /// Writes `evaluation.counted` for `key`, evaluated at `now`. Returns the
    /// counters evicted to make room.
    fn commit(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        key: &[u8],
        evaluation: &Evaluation,
        now: Nanos,
    ) -> u64 {
        let found = self.find(hash, key);
        if evaluation.expires_at <= now {
            // The state already means the same as no state.
            if let Some(index) = found {
                self.remove(hasher, index);
            }
            return 0;
        }
        if let Some(index) = found {
            let entry = &mut self.entries[index];
            entry.state = evaluation.counted;
            entry.expires_at = evaluation.expires_at;
            entry.referenced = true;
            return 0;
        }
        let weight = slots_of(key);
        if u64::from(weight) > self.capacity {
            // Could never fit: as if inserted and evicted at once.
            return 1;
        }
        let mut evicted = 0;
        while self.weight + u64::from(weight) > self.capacity {
            evicted += self.evict_one(hasher, now);
        }
        let entry = Entry {
            key: StoredKey::new(key),
            state: evaluation.counted,
            expires_at: evaluation.expires_at,
            weight,
            // Marked on its next use, not now: a key used once (a flood)
            // is then evicted when the hand first reaches it, so the hand
            // moves about one entry per new key and a full turn takes as many
            // new keys as the shard holds; a key used again within that
            // turn keeps its place, as with least-recently-used.
            referenced: false,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = entry;
                index
            }
            None => {
                // Indices fit in u32: a shard holds at most `capacity` slots
                // and every entry takes at least one.
                let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.entries.push(entry);
                index
            }
        };
        self.weight += u64::from(weight);
        let entries = &self.entries;
        self.table.insert_unique(hash, index, |&i| {
            hasher.hash_one(entries[i as usize].key.as_bytes())
        });
        evicted
    }

    /// Frees one entry by advancing the CLOCK hand: an expired entry, or one
    /// not used since the hand last passed (the hand clears the mark of those
    /// it passes). Returns 1 when a live counter was evicted, 0 when an
    /// expired one was dropped. Only called with at least one entry held.
    fn evict_one(&mut self, hasher: &DefaultHashBuilder, now: Nanos) -> u64 {
        loop {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let index = self.hand;
            self.hand += 1;
            let entry = &mut self.entries[index];
            if entry.weight == 0 {
                continue;
            }
            if entry.expires_at <= now {
                self.remove(hasher, index);
                return 0;
            }
            if entry.referenced {
                entry.referenced = false;
                continue;
            }
            self.remove(hasher, index);
            return 1;
        }
    }

    fn remove(&mut self, hasher: &DefaultHashBuilder, index: usize) {
        let entry = &mut self.entries[index];
        let hash = hasher.hash_one(entry.key.as_bytes());
        let key = std::mem::replace(&mut entry.key, StoredKey::EMPTY);
        self.weight -= u64::from(std::mem::replace(&mut entry.weight, 0));
        if let Ok(found) = self.table.find_entry(hash, |&i| i as usize == index) {
            found.remove();
        }
        drop(key);
        if let Ok(index) = u32::try_from(index) {
            self.free.push(index);
        }
    }

    /// Drops every entry expired at `now`.
    fn purge(&mut self, hasher: &DefaultHashBuilder, now: Nanos) {
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            if entry.weight != 0 && entry.expires_at <= now {
                self.remove(hasher, index);
            }
        }
    }
}

impl MemoryStore {
    /// A store holding at most `max_counters` counters (of keys up to
    /// [`KEY_BYTES_PER_SLOT`] bytes; a longer key counts as several),
    /// evicting counters not used recently beyond that.
    pub fn new(max_counters: u64) -> MemoryStore {
        let wanted = (max_counters / MIN_SHARD_SLOTS).clamp(1, MAX_SHARDS as u64);
        // A power of two, so that picking a shard is a mask.
        let shards = 1usize << (usize::BITS - 1 - (wanted as usize).leading_zeros());
        let capacity = max_counters / shards as u64;
        MemoryStore {
            shards: (0..shards)
                .map(|_| ShardCell(Mutex::new(Shard::new(capacity))))
                .collect(),
            hasher: DefaultHashBuilder::default(),
            evictions: AtomicU64::new(0),
            latest_now: AtomicU64::new(0),
        }
    }

    /// Counters evicted because the store was full since it was created.
    /// Each one forgot hits that still mattered.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash: middle bits, independent of those the
    /// hash table uses (its low bits pick a bucket, its top 7 bits are the
    /// tag compared in a group).
    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard].0.lock()
    }

    /// [`CounterStore::apply`], synchronously.
    fn apply_now(&self, checks: &[Check<'_>], now: Nanos, out: &mut Outcomes) {
        out.clear();
        self.latest_now.fetch_max(now, Ordering::Relaxed);
        match checks {
            [] => {}
            [check] => out.push(self.apply_one(check, now)),
            _ => self.apply_many(checks, now, out),
        }
    }

    /// The common case, one check: no allocation but the key of a new counter.
    fn apply_one(&self, check: &Check<'_>, now: Nanos) -> Outcome {
        let hash = self.hash(check.key);
        let mut shard = self.lock(self.shard_of(hash));
        let state = shard.load(hash, check.key, now);
        let evaluation = limit::evaluate(&check.limit, state, now, check.hits);
        // Without hits the counted state is the stored one, rolled forward:
        // the same meaning, nothing to write.
        if check.hits > 0 && (evaluation.outcome.admitted || counts_when_denied(check)) {
            let evicted = shard.commit(&self.hasher, hash, check.key, &evaluation, now);
            drop(shard);
            self.count_evictions(evicted);
        }
        evaluation.outcome
    }

    fn count_evictions(&self, evicted: u64) {
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Several checks: lock every shard involved, evaluate all checks in
    /// order (each seeing the hits earlier checks of the same key may
    /// commit), decide each group, then replay the committed hits per key and
    /// write each key once.
    fn apply_many(&self, checks: &[Check<'_>], now: Nanos, out: &mut Outcomes) {
        let hashes: PerCheck<u64> = checks.iter().map(|c| self.hash(c.key)).collect();
        let mut order: PerCheck<usize> = hashes.iter().map(|&hash| self.shard_of(hash)).collect();
        order.sort_unstable();
        order.dedup();
        // Each check's shard, as a position in `locked`.
        let at: PerCheck<usize> = hashes
            .iter()
            .map(|&hash| order.partition_point(|&shard| shard < self.shard_of(hash)))
            .collect();
        let mut locked: PerCheck<MutexGuard<'_, Shard>> =
            order.iter().map(|&i| self.lock(i)).collect();

        // The nearest earlier check with the same key, if any: hashes first,
        // so keys are compared only on a match (a request has few checks).
        let earlier: PerCheck<Option<usize>> = (0..checks.len())
            .map(|i| {
                (0..i)
                    .rev()
                    .find(|&j| hashes[j] == hashes[i] && checks[j].key == checks[i].key)
            })
            .collect();

        // Pass 1: each check sees the stored state plus the hits of earlier
        // checks on its key that may still be committed (admitted so far, or
        // counted even when denied). Seeing hits that end up rolled back
        // only makes a check stricter, never looser.
        let mut seen: PerCheck<Option<CounterState>> = PerCheck::with_capacity(checks.len());
        let mut evaluations: PerCheck<Evaluation> = PerCheck::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let state = match earlier[i] {
                Some(j) if evaluations[j].outcome.admitted || counts_when_denied(&checks[j]) => {
                    Some(evaluations[j].counted)
                }
                Some(j) => seen[j],
                None => locked[at[i]].load(hashes[i], check.key, now),
            };
            seen.push(state);
            evaluations.push(limit::evaluate(&check.limit, state, now, check.hits));
        }

        let denied_groups: PerCheck<u32> = checks
            .iter()
            .zip(&evaluations)
            .filter(|(_, evaluation)| !evaluation.outcome.admitted)
            .map(|(check, _)| check.group)
            .collect();

        // Pass 2: replay only the committed hits. Adding hits composes, so
        // a key's final state is its stored state plus exactly those hits,
        // whatever was rolled back in between.
        let mut after: PerCheck<(Option<CounterState>, Option<Evaluation>)> =
            PerCheck::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let (before, written) = match earlier[i] {
                Some(j) => after[j],
                None => (seen[i], None),
            };
            // A denied group commits only its own denied checks that count
            // over-limit hits (see `CounterStore::apply`).
            let commits = check.hits > 0
                && (!denied_groups.contains(&check.group)
                    || (counts_when_denied(check) && !evaluations[i].outcome.admitted));
            after.push(if commits {
                let evaluation = if before == seen[i] {
                    evaluations[i]
                } else {
                    limit::evaluate(&check.limit, before, now, check.hits)
                };
                (Some(evaluation.counted), Some(evaluation))
            } else {
                (before, written)
            });
        }

        // Write each changed key once, at its last occurrence.
        let mut last_of_key: PerCheck<bool> = smallvec::smallvec![true; checks.len()];
        for &j in earlier.iter().flatten() {
            last_of_key[j] = false;
        }
        let mut evicted = 0;
        for (i, check) in checks.iter().enumerate() {
            if let (true, (_, Some(evaluation))) = (last_of_key[i], &after[i]) {
                evicted +=
                    locked[at[i]].commit(&self.hasher, hashes[i], check.key, evaluation, now);
            }
        }
        drop(locked);
        self.count_evictions(evicted);

        out.extend(evaluations.iter().map(|evaluation| evaluation.outcome));
    }
}

/// Whether a denied check's hits are committed anyway: only fixed windows
/// count over-limit hits, as the reference does.
fn counts_when_denied(check: &Check<'_>) -> bool {
    check.count_when_denied && check.limit.algorithm == Algorithm::FixedWindow
}

impl CounterStore for MemoryStore {
    async fn apply<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        now: Nanos,
        out: &'a mut Outcomes,
    ) -> Result<(), StoreError> {
        // Synchronous inside: no lock is ever held across an await.
        self.apply_now(checks, now, out);
        Ok(())
    }

    fn len(&self) -> u64 {
        // Expired entries are dropped lazily; drop them first (at the latest
        // time a caller passed) so a metrics scrape (the caller) sees the
        // counters that still matter. One shard is locked at a time.
        let now = self.latest_now.load(Ordering::Relaxed);
        self.shards
            .iter()
            .map(|cell| {
                let mut shard = cell.0.lock();
                shard.purge(&self.hasher, now);
                shard.table.len() as u64
            })
            .sum()
    }

    fn evictions(&self) -> u64 {
        MemoryStore::evictions(self)
    }
}

#[cfg(test)]
mod tests;
