//! Live usage for the dashboard, recorded beside the Prometheus metrics on
//! the request path and read back by the admin server: a latency histogram
//! of plain atomics, and a bounded top-K of the descriptors closest to their
//! limits.
//!
//! Both are cheap to record into. The histogram is one relaxed atomic
//! increment. The top-K is skipped after two relaxed loads unless the
//! descriptor's usage ratio beats the K-th entry's (or an entry's window has
//! passed and must be pruned). A descriptor already held whose ratio moved
//! by less than 1/64 since its last update, without reaching its limit, is
//! skipped too, after hashing it and comparing with K atomics, so the
//! hottest descriptors (often the ones at the top) do not take the lock on
//! every request; their `used` may lag by that much. Otherwise the lock is
//! tried, never waited for (a busy lock skips the offer), and only a
//! descriptor that enters allocates. Memory is bounded by K and by the
//! request limits on entry sizes, whatever the traffic and key cardinality.
//!
//! Descriptor values in the top-K are request values: they are shown on the
//! loopback admin server only and never become metric labels.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::limit::Nanos;
use crate::proto::Entry;

/// Buckets of [`LatencyHistogram`]: one for everything up to 1.024 µs, then
/// four per doubling (each at most 25% wide) up to 2^34 ns (about 17 s),
/// and the last for everything above.
pub const LATENCY_BUCKETS: usize = 98;

/// Exponent of the first doubling after bucket 0 (2^10 ns).
const FIRST_EXPONENT: u32 = 10;
/// Exponent at which values go to the last bucket (2^34 ns).
const LAST_EXPONENT: u32 = 34;

/// Decision latencies in log-spaced buckets of atomic counts, which (unlike
/// the exporter's histogram) can be read back and differenced over time.
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram").finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    /// Counts one latency of `nanos`.
    pub fn record(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// The cumulative counts, bucket by bucket.
    pub fn counts(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// The bucket of a latency of `nanos`.
pub fn bucket_of(nanos: u64) -> usize {
    if nanos < 1 << FIRST_EXPONENT {
        return 0;
    }
    let exponent = 63 - nanos.leading_zeros();
    if exponent >= LAST_EXPONENT {
        return LATENCY_BUCKETS - 1;
    }
    let quarter = ((nanos >> (exponent - 2)) & 3) as usize;
    1 + (exponent - FIRST_EXPONENT) as usize * 4 + quarter
}

/// The bounds `[lower, upper)` of a bucket, in nanoseconds.
pub fn bucket_bounds(bucket: usize) -> (u64, u64) {
    if bucket == 0 {
        return (0, 1 << FIRST_EXPONENT);
    }
    if bucket >= LATENCY_BUCKETS - 1 {
        return (1 << LAST_EXPONENT, 1 << (LAST_EXPONENT + 1));
    }
    let exponent = FIRST_EXPONENT + ((bucket - 1) / 4) as u32;
    let quarter = ((bucket - 1) % 4) as u64;
    let unit = 1u64 << (exponent - 2);
    ((4 + quarter) * unit, (5 + quarter) * unit)
}

/// The `q` quantile (0..=1) of latencies counted in `counts`, in seconds,
/// interpolated linearly inside its bucket as Prometheus'
/// `histogram_quantile` does; `None` when nothing was counted.
pub fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (bucket, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let (lower, upper) = bucket_bounds(bucket);
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            let nanos = lower as f64 + (upper - lower) as f64 * within;
            return Some(nanos / 1e9);
        }
        below += count;
    }
    None
}

/// One descriptor in the [`TopK`].
#[derive(Clone, Debug, PartialEq)]
pub struct TopEntry {
    /// The request's domain.
    pub domain: String,
    /// The id of the rule that limited it.
    pub rule: String,
    /// The descriptor's entries as the request sent them.
    pub entries: Vec<(String, String)>,
    /// Usage under the limit after the request (window count or tokens).
    pub used: u64,
    /// The limit (requests per unit, or a token bucket's burst).
    pub limit: u64,
    /// Requests of one hit still admissible.
    pub remaining: u64,
    /// `used / limit` in millionths (above a million when over the limit).
    pub ratio_ppm: u64,
    /// The request was over the limit (or would have been, in shadow mode).
    pub over_limit: bool,
    /// When the window resets (or the bucket is full again): the entry is
    /// dropped then.
    pub reset_at: Nanos,
    /// When this descriptor was last seen.
    pub seen_at: Nanos,
    /// [`Offer::fingerprint`] of the descriptor.
    fingerprint: u64,
}

impl TopEntry {
    fn is(&self, domain: &str, rule: &str, entries: &[Entry]) -> bool {
        self.rule == rule
            && self.domain == domain
            && self.entries.len() == entries.len()
            && self
                .entries
                .iter()
                .zip(entries)
                .all(|((key, value), entry)| *key == entry.key && *value == entry.value)
    }
}

/// What a decision says about one descriptor, offered to the [`TopK`].
#[derive(Clone, Copy, Debug)]
pub struct Offer<'a> {
    /// The request's domain.
    pub domain: &'a str,
    /// The rule's id.
    pub rule: &'a str,
    /// The descriptor's entries.
    pub entries: &'a [Entry],
    /// Usage after the request.
    pub used: u64,
    /// The limit `used` counts against.
    pub limit: u64,
    /// Requests of one hit still admissible.
    pub remaining: u64,
    /// Over the limit (or shadowed).
    pub over_limit: bool,
    /// When the decision was made.
    pub now: Nanos,
    /// Time until the limit resets.
    pub reset_after: Nanos,
}

impl Offer<'_> {
    /// A hash of the rule and the descriptor's keys and values (never 0).
    fn fingerprint(&self) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut hash = 0u64;
        let mut mix = |bytes: &[u8]| {
            let mut chunks = bytes.chunks_exact(8);
            for chunk in &mut chunks {
                let word = chunk
                    .iter()
                    .rev()
                    .fold(0u64, |w, &b| (w << 8) | u64::from(b));
                hash = (hash.rotate_left(5) ^ word).wrapping_mul(K);
            }
            let rest = chunks.remainder();
            let word = rest
                .iter()
                .rev()
                .fold(0u64, |w, &b| (w << 8) | u64::from(b));
            // The length separates "ab","c" from "a","bc".
            hash = (hash.rotate_left(5) ^ word ^ ((bytes.len() as u64) << 56)).wrapping_mul(K);
        };
        mix(self.rule.as_bytes());
        for entry in self.entries {
            mix(entry.key.as_bytes());
            mix(entry.value.as_bytes());
        }
        hash | 1
    }
}

/// A ratio of 1 (used = limit) in millionths.
const FULL: u64 = 1_000_000;

/// `used / limit` in millionths; a zero limit counts as one.
pub fn ratio_ppm(used: u64, limit: u64) -> u64 {
    used.saturating_mul(1_000_000) / limit.max(1)
}

/// The K descriptors with the highest usage ratio whose window has not
/// passed. See the module docs for the cost.
pub struct TopK {
    capacity: usize,
    /// When full, the lowest ratio held: an offer at or below it cannot
    /// enter. Zero while there is room.
    threshold: AtomicU64,
    /// The earliest `reset_at` held: from then on, offers take the lock to
    /// drop expired entries.
    earliest_reset: AtomicU64,
    entries: Mutex<Vec<TopEntry>>,
    /// Per held entry (0 for none): its fingerprint and ratio, checked
    /// without the lock.
    held: Box<[(AtomicU64, AtomicU64)]>,
    /// Offers dropped because another thread held the lock.
    skipped: AtomicU64,
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopK")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl TopK {
    /// An empty top-K of `capacity` entries.
    pub fn new(capacity: usize) -> TopK {
        TopK {
            capacity,
            threshold: AtomicU64::new(0),
            earliest_reset: AtomicU64::new(u64::MAX),
            entries: Mutex::new(Vec::with_capacity(capacity)),
            held: (0..capacity)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            skipped: AtomicU64::new(0),
        }
    }

    /// How many entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Offers dropped so far because the lock was busy.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Considers one descriptor's usage. Returns at once unless it may enter
    /// (or update) the top-K or entries have expired.
    pub fn offer(&self, offer: &Offer<'_>) {
        let ratio = ratio_ppm(offer.used, offer.limit);
        let unexpired = offer.now < self.earliest_reset.load(Ordering::Relaxed);
        if ratio <= self.threshold.load(Ordering::Relaxed) && unexpired {
            return;
        }
        let fingerprint = offer.fingerprint();
        if unexpired
            && self.held.iter().any(|(held, held_ratio)| {
                let held_ratio = held_ratio.load(Ordering::Relaxed);
                // Crossing the limit is always shown.
                held.load(Ordering::Relaxed) == fingerprint
                    && ratio.abs_diff(held_ratio) <= held_ratio / 64
                    && (ratio >= FULL) == (held_ratio >= FULL)
            })
        {
            return;
        }
        let Some(mut entries) = self.entries.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        entries.retain(|entry| entry.reset_at > offer.now);
        let reset_at = offer.now.saturating_add(offer.reset_after);
        if let Some(entry) = entries.iter_mut().find(|entry| {
            entry.fingerprint == fingerprint && entry.is(offer.domain, offer.rule, offer.entries)
        }) {
            entry.used = offer.used;
            entry.limit = offer.limit;
            entry.remaining = offer.remaining;
            entry.ratio_ppm = ratio;
            entry.over_limit = offer.over_limit;
            entry.reset_at = reset_at;
            entry.seen_at = offer.now;
        } else if ratio > 0 {
            let slot = if entries.len() < self.capacity {
                entries.push(empty_entry());
                entries.len().checked_sub(1)
            } else {
                entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, entry)| entry.ratio_ppm)
                    .filter(|(_, lowest)| lowest.ratio_ppm < ratio)
                    .map(|(index, _)| index)
            };
            if let Some(entry) = slot.and_then(|index| entries.get_mut(index)) {
                *entry = TopEntry {
                    domain: offer.domain.to_owned(),
                    rule: offer.rule.to_owned(),
                    entries: offer
                        .entries
                        .iter()
                        .map(|entry| (entry.key.clone(), entry.value.clone()))
                        .collect(),
                    used: offer.used,
                    limit: offer.limit,
                    remaining: offer.remaining,
                    ratio_ppm: ratio,
                    over_limit: offer.over_limit,
                    reset_at,
                    seen_at: offer.now,
                    fingerprint,
                };
            }
        }
        for (index, (held, held_ratio)) in self.held.iter().enumerate() {
            let (value, value_ratio) = entries
                .get(index)
                .map_or((0, 0), |entry| (entry.fingerprint, entry.ratio_ppm));
            held.store(value, Ordering::Relaxed);
            held_ratio.store(value_ratio, Ordering::Relaxed);
        }
        let threshold = if entries.len() < self.capacity {
            0
        } else {
            entries
                .iter()
                .map(|entry| entry.ratio_ppm)
                .min()
                .unwrap_or(0)
        };
        let earliest = entries
            .iter()
            .map(|entry| entry.reset_at)
            .min()
            .unwrap_or(u64::MAX);
        self.threshold.store(threshold, Ordering::Relaxed);
        self.earliest_reset.store(earliest, Ordering::Relaxed);
    }

    /// The entries whose window has not passed at `now`, closest to their
    /// limit first (ties: most recently seen first).
    pub fn snapshot(&self, now: Nanos) -> Vec<TopEntry> {
        let mut entries: Vec<TopEntry> = self
            .entries
            .lock()
            .iter()
            .filter(|entry| entry.reset_at > now)
            .cloned()
            .collect();
        entries.sort_by(|a, b| {
            b.ratio_ppm
                .cmp(&a.ratio_ppm)
                .then(b.seen_at.cmp(&a.seen_at))
                .then_with(|| a.entries.cmp(&b.entries))
        });
        entries
    }
}

fn empty_entry() -> TopEntry {
    TopEntry {
        domain: String::new(),
        rule: String::new(),
        entries: Vec::new(),
        used: 0,
        limit: 0,
        remaining: 0,
        ratio_ppm: 0,
        over_limit: false,
        reset_at: 0,
        seen_at: 0,
        fingerprint: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        for bucket in 0..LATENCY_BUCKETS {
            let (lower, upper) = bucket_bounds(bucket);
            assert!(lower < upper);
            assert_eq!(bucket_of(lower), bucket, "lower bound of {bucket}");
            assert_eq!(bucket_of(upper - 1), bucket, "upper bound of {bucket}");
            if bucket + 1 < LATENCY_BUCKETS {
                assert_eq!(bucket_bounds(bucket + 1).0, upper);
            }
        }
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let histogram = LatencyHistogram::default();
        for _ in 0..90 {
            histogram.record(20_000); // 20 µs
        }
        for _ in 0..10 {
            histogram.record(3_000_000); // 3 ms
        }
        let counts = histogram.counts();
        let p50 = quantile(&counts, 0.5).unwrap();
        let p99 = quantile(&counts, 0.99).unwrap();
        assert!((16.3e-6..=20.5e-6).contains(&p50), "{p50}");
        assert!((2.5e-3..=3.2e-3).contains(&p99), "{p99}");
        assert_eq!(quantile(&[0; LATENCY_BUCKETS], 0.5), None);
    }

    fn entry(value: &str) -> Vec<Entry> {
        vec![Entry {
            key: "user".to_owned(),
            value: value.to_owned(),
        }]
    }

    fn offer<'a>(entries: &'a [Entry], used: u64, now: Nanos) -> Offer<'a> {
        Offer {
            domain: "d",
            rule: "d.user",
            entries,
            used,
            limit: 10,
            remaining: 10u64.saturating_sub(used),
            over_limit: used > 10,
            now,
            reset_after: 100,
        }
    }

    #[test]
    fn a_held_descriptor_is_updated_only_when_its_ratio_moves() {
        let top = TopK::new(2);
        let alice = entry("alice");
        let at = |used: u64| Offer {
            limit: 1000,
            ..offer(&alice, used, 0)
        };
        top.offer(&at(640));
        // 645 is within 1/64 of 640: skipped without the lock.
        top.offer(&at(645));
        assert_eq!(top.snapshot(0)[0].used, 640);
        top.offer(&at(700));
        assert_eq!(top.snapshot(0)[0].used, 700);
        // Reaching the limit is shown however small the step.
        top.offer(&at(990));
        top.offer(&at(1000));
        assert_eq!(top.snapshot(0)[0].used, 1000);
        // A different descriptor at the same ratio still enters.
        let bob = entry("bob");
        top.offer(&Offer {
            limit: 1000,
            ..offer(&bob, 700, 0)
        });
        assert_eq!(top.snapshot(0).len(), 2);
    }

    #[test]
    fn keeps_the_k_closest_and_drops_expired_ones() {
        let top = TopK::new(3);
        let values: Vec<Vec<Entry>> = (1..=6).map(|i| entry(&format!("u{i}"))).collect();
        for (i, entries) in values.iter().enumerate() {
            top.offer(&offer(entries, i as u64 + 1, 0));
        }
        let kept: Vec<String> = top
            .snapshot(0)
            .iter()
            .map(|e| e.entries[0].1.clone())
            .collect();
        assert_eq!(kept, ["u6", "u5", "u4"]);
        // An update of a held descriptor replaces its reading.
        top.offer(&offer(&values[3], 12, 1));
        let first = &top.snapshot(1)[0];
        assert_eq!((first.entries[0].1.as_str(), first.used), ("u4", 12));
        // Past their reset, entries go, and lower ratios can enter again.
        top.offer(&offer(&values[0], 1, 101));
        let kept: Vec<String> = top
            .snapshot(101)
            .iter()
            .map(|e| e.entries[0].1.clone())
            .collect();
        assert_eq!(kept, ["u1"]);
    }
}
