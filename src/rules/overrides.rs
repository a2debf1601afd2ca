//! Overrides: limits for one exact descriptor (a domain and entries with
//! values), set at runtime by an operator instead of in YAML.
//!
//! An [`OverrideSpec`] is what the admin API, the `--overrides-file` and
//! Redis hold (JSON); [`OverrideSpec::compile`] checks it and builds the
//! [`Override`] a decision uses: a [`Rule`] whose limits replace those of
//! the rule the descriptor matches (or apply where none matches). The
//! [`OverrideSet`] is immutable: a change builds a new set, swapped in
//! atomically, so the decision path reads it without a lock, and a set with
//! no override for a request's domain costs one hash lookup (none when the
//! set is empty).
//!
//! An override's counter keys are written exactly as a rule's
//! (`store::key`), from the descriptor's own values, so raising or lowering
//! a limit keeps the usage already counted in the current window (a key
//! depends on the algorithm, window and slot, never on `requests_per_unit`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{EntryLike, Rule, RuleLimit};
use crate::limit::calendar::calendar_for;
use crate::limit::{Algorithm, Limit, NANOS_PER_SECOND, Nanos, Unit};

/// The rule id suffix of every override of a domain (`shop.(admin
/// override)`): one per domain, so metric labels stay bounded.
pub const ADMIN_OVERRIDE_RULE_ID: &str = "(admin override)";

/// Most overrides per domain. A change past it is refused: overrides are
/// exceptions for a few customers; plans for many belong in YAML.
pub const MAX_OVERRIDES_PER_DOMAIN: usize = 1_000;

/// Most overrides in all, whatever their domains.
pub const MAX_OVERRIDES: usize = 10 * MAX_OVERRIDES_PER_DOMAIN;

/// Most entries in an override's descriptor, limits in an override, and
/// bytes in a domain, key or value.
const MAX_ENTRIES: usize = 16;
const MAX_LIMITS: usize = 8;
const MAX_TEXT_BYTES: usize = 1_024;

/// One override as written (admin API, file, Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    /// The domain.
    pub domain: String,
    /// The descriptor's entries, in request order; every value is exact.
    pub entries: Vec<EntrySpec>,
    /// The limits, as in a YAML `rate_limits` list.
    pub limits: Vec<LimitSpec>,
    /// When the override stops applying, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// One descriptor entry of an override.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The entry's key.
    pub key: String,
    /// The entry's exact value.
    pub value: String,
}

/// One limit of an override, with the keys of a YAML limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Required when there are several limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests per window, at most `u32::MAX`.
    pub requests_per_unit: u64,
    /// `second` ... `year`.
    pub unit: String,
    /// `fixed_window` (default), `sliding_window` or `token_bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// The window is this many units (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_multiplier: Option<u64>,
    /// A token bucket's capacity (default `requests_per_unit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Windows start at local calendar boundaries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calendar: bool,
    /// The calendar's IANA zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A checked override, ready for decisions.
#[derive(Debug)]
pub struct Override {
    /// As written (the admin API lists it back).
    pub spec: OverrideSpec,
    /// The rule that replaces the matched one for this descriptor.
    pub rule: Arc<Rule>,
    /// When it stops applying.
    expires_at: Option<Nanos>,
}

impl Override {
    /// Whether it applies at `now`.
    pub fn live_at(&self, now: Nanos) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl OverrideSpec {
    /// Checks the override and builds its rule; the error names the
    /// problem (an unknown unit, no entries, a limit over `u32::MAX`, ...).
    pub fn compile(self) -> Result<Override, String> {
        check_text("domain", &self.domain)?;
        if self.entries.is_empty() {
            return Err("'entries' must name at least one entry".into());
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} entries"));
        }
        for entry in &self.entries {
            check_text("entry key", &entry.key)?;
            if entry.value.len() > MAX_TEXT_BYTES {
                return Err(format!(
                    "an entry value is longer than {MAX_TEXT_BYTES} bytes"
                ));
            }
        }
        if self.limits.is_empty() {
            return Err("'limits' must hold at least one limit".into());
        }
        if self.limits.len() > MAX_LIMITS {
            return Err(format!("at most {MAX_LIMITS} limits"));
        }
        let multi = self.limits.len() > 1;
        let mut limits = Vec::with_capacity(self.limits.len());
        for (index, spec) in self.limits.iter().enumerate() {
            let limit = spec
                .compile()
                .map_err(|reason| format!("limits[{index}]: {reason}"))?;
            let name = spec.name.as_deref().filter(|name| !name.is_empty());
            if multi && name.is_none() {
                return Err(format!(
                    "limits[{index}]: each of several limits needs a non-empty 'name'"
                ));
            }
            if let Some(name) = name {
                check_text("limit name", name)?;
                if limits
                    .iter()
                    .any(|l: &RuleLimit| l.name.as_deref() == Some(name))
                {
                    return Err(format!("limits[{index}]: duplicate limit name '{name}'"));
                }
            }
            limits.push(RuleLimit {
                name: name.map(Arc::from),
                limit,
            });
        }
        let reference_form = !multi
            && limits.first().is_some_and(|l| {
                l.limit.algorithm == Algorithm::FixedWindow && l.limit.unit_multiplier == 1
            });
        // As a rule's single fixed window: denied hits count.
        let counts_denied_hits = !multi
            && limits
                .first()
                .is_some_and(|l| l.limit.algorithm == Algorithm::FixedWindow);
        let rule = Rule {
            id: Arc::from(format!("{}.{ADMIN_OVERRIDE_RULE_ID}", self.domain)),
            name: (!multi)
                .then(|| limits.first().and_then(|l| l.name.clone()))
                .flatten(),
            limits,
            unlimited: false,
            shadow_mode: false,
            quota_mode: false,
            replaces: Vec::new(),
            reference_form,
            counts_denied_hits,
            header_limit: None,
            detailed_metric: false,
            value_to_metric: Vec::new(),
            stat_levels: Vec::new(),
        };
        let expires_at = self
            .expires_at
            .map(|seconds| seconds.saturating_mul(NANOS_PER_SECOND));
        Ok(Override {
            spec: self,
            rule: Arc::new(rule),
            expires_at,
        })
    }
}

impl LimitSpec {
    fn compile(&self) -> Result<Limit, String> {
        let unit = Unit::parse(&self.unit).ok_or_else(|| {
            format!(
                "unknown unit '{}' (expected second, minute, hour, day, week, month or year)",
                self.unit
            )
        })?;
        let max = u64::from(u32::MAX);
        if self.requests_per_unit > max {
            return Err(format!(
                "'requests_per_unit' must be at most {max}, found {}",
                self.requests_per_unit
            ));
        }
        let algorithm = match &self.algorithm {
            None => Algorithm::FixedWindow,
            Some(name) => Algorithm::parse(name).ok_or_else(|| {
                format!(
                    "unknown algorithm '{name}' (expected fixed_window, sliding_window or token_bucket)"
                )
            })?,
        };
        let unit_multiplier = self.unit_multiplier.unwrap_or(1);
        if !(1..=max).contains(&unit_multiplier) {
            return Err(format!(
                "'unit_multiplier' must be between 1 and {max}, found {unit_multiplier}"
            ));
        }
        let burst = match self.burst {
            Some(_) if algorithm != Algorithm::TokenBucket => {
                return Err("'burst' is only valid with 'algorithm: token_bucket'".into());
            }
            Some(burst) if !(1..=max).contains(&burst) => {
                return Err(format!(
                    "'burst' must be between 1 and {max}, found {burst}"
                ));
            }
            Some(burst) => burst,
            None => self.requests_per_unit,
        };
        if algorithm == Algorithm::TokenBucket && burst == 0 {
            return Err("a token_bucket needs a burst of at least 1".into());
        }
        let calendar = calendar_for(
            self.calendar,
            self.time_zone.as_deref(),
            unit,
            algorithm,
            unit_multiplier,
        )
        .map_err(|(_, reason)| reason)?;
        Ok(Limit {
            requests_per_unit: self.requests_per_unit,
            unit,
            unit_multiplier,
            algorithm,
            burst,
            calendar,
        })
    }
}

fn check_text(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!("the {what} is longer than {MAX_TEXT_BYTES} bytes"));
    }
    Ok(())
}

/// A hash of a descriptor's entries, the same for a request's entries and
/// an override's.
fn entries_hash<E: EntryLike>(entries: &[E]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entries.len().hash(&mut hasher);
    for entry in entries {
        entry.key().hash(&mut hasher);
        entry.value().hash(&mut hasher);
    }
    hasher.finish()
}

impl EntryLike for EntrySpec {
    fn key(&self) -> &str {
        &self.key
    }
    fn value(&self) -> &str {
        &self.value
    }
}

/// The overrides of one domain, by descriptor.
#[derive(Clone, Debug, Default)]
pub struct DomainOverrides {
    by_hash: HashMap<u64, SmallVec<[Arc<Override>; 1]>>,
    len: usize,
}

impl DomainOverrides {
    /// The override for exactly these entries, if one applies at `now`.
    pub fn lookup<E: EntryLike>(&self, entries: &[E], now: Nanos) -> Option<&Arc<Override>> {
        self.by_hash
            .get(&entries_hash(entries))?
            .iter()
            .find(|o| same_entries(&o.spec.entries, entries))
            .filter(|o| o.live_at(now))
    }

    /// How many overrides the domain has (expired ones included until the
    /// next change drops them).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the domain has none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Override>> {
        self.by_hash.values().flatten()
    }
}

fn same_entries<A: EntryLike, B: EntryLike>(a: &[A], b: &[B]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.key() == y.key() && x.value() == y.value())
}

/// Every override, by domain: immutable; changes build a new set.
#[derive(Clone, Debug, Default)]
pub struct OverrideSet {
    domains: HashMap<String, DomainOverrides>,
    len: usize,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The domain already has [`MAX_OVERRIDES_PER_DOMAIN`] overrides.
    #[error(
        "domain '{0}' already has {MAX_OVERRIDES_PER_DOMAIN} overrides, the most allowed; delete some or move the plan into YAML"
    )]
    TooMany(String),
    /// There are already [`MAX_OVERRIDES`] overrides.
    #[error("there are already {MAX_OVERRIDES} overrides, the most allowed; delete some")]
    TooManyInAll,
}

impl OverrideSet {
    /// A set of `overrides` (a later one for the same descriptor wins). The
    /// per-domain bound is not checked: a file or Redis holds what an
    /// earlier, checked change wrote.
    pub fn of(overrides: impl IntoIterator<Item = Override>) -> OverrideSet {
        let mut set = OverrideSet::default();
        for one in overrides {
            set.insert(Arc::new(one));
        }
        set
    }

    /// Whether there is no override at all (the decision path's fast exit).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many overrides there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The domains that have overrides.
    pub fn domains(&self) -> impl Iterator<Item = &str> + Clone {
        self.domains.keys().map(String::as_str)
    }

    /// The overrides of `domain`, if it has any.
    pub fn domain(&self, domain: &str) -> Option<&DomainOverrides> {
        self.domains.get(domain).filter(|d| !d.is_empty())
    }

    /// The override for exactly `entries` in `domain` (live or not).
    pub fn get<E: EntryLike>(&self, domain: &str, entries: &[E]) -> Option<&Arc<Override>> {
        self.domains
            .get(domain)?
            .by_hash
            .get(&entries_hash(entries))?
            .iter()
            .find(|o| same_entries(&o.spec.entries, entries))
    }

    /// Every override live at `now`, by domain then descriptor; of `domain`
    /// only when given.
    pub fn list(&self, domain: Option<&str>, now: Nanos) -> Vec<&OverrideSpec> {
        let mut out: Vec<&OverrideSpec> = self
            .domains
            .iter()
            .filter(|(name, _)| domain.is_none_or(|d| d == name.as_str()))
            .flat_map(|(_, d)| d.iter())
            .filter(|o| o.live_at(now))
            .map(|o| &o.spec)
            .collect();
        out.sort_by(|a, b| (&a.domain, &a.entries).cmp(&(&b.domain, &b.entries)));
        out
    }

    /// This set with `one` added or replacing the override of its
    /// descriptor, and without the overrides expired at `now`.
    pub fn with(&self, one: Override, now: Nanos) -> Result<OverrideSet, OverrideError> {
        let mut next = self.without_expired(now);
        let domain = one.spec.domain.clone();
        let replacing = next.get(&domain, &one.spec.entries).is_some();
        if !replacing
            && next.domain(&domain).map_or(0, DomainOverrides::len) >= MAX_OVERRIDES_PER_DOMAIN
        {
            return Err(OverrideError::TooMany(domain));
        }
        if !replacing && next.len() >= MAX_OVERRIDES {
            return Err(OverrideError::TooManyInAll);
        }
        next.insert(Arc::new(one));
        Ok(next)
    }

    /// This set without the override of `entries` in `domain` (and without
    /// those expired at `now`), and the removed override if it was live.
    pub fn without<E: EntryLike>(
        &self,
        domain: &str,
        entries: &[E],
        now: Nanos,
    ) -> (OverrideSet, Option<Arc<Override>>) {
        let mut next = self.without_expired(now);
        let removed = next.remove(domain, entries);
        (next, removed)
    }

    /// The overrides expired at `now`: what a change drops.
    pub fn expired(&self, now: Nanos) -> Vec<&OverrideSpec> {
        self.domains
            .values()
            .flat_map(DomainOverrides::iter)
            .filter(|o| !o.live_at(now))
            .map(|o| &o.spec)
            .collect()
    }

    fn without_expired(&self, now: Nanos) -> OverrideSet {
        OverrideSet::of_arcs(
            self.domains
                .values()
                .flat_map(DomainOverrides::iter)
                .filter(|o| o.live_at(now))
                .cloned(),
        )
    }

    fn of_arcs(overrides: impl IntoIterator<Item = Arc<Override>>) -> OverrideSet {
        let mut set = OverrideSet::default();
        for one in overrides {
            set.insert(one);
        }
        set
    }

    fn insert(&mut self, one: Arc<Override>) {
        let domain = self.domains.entry(one.spec.domain.clone()).or_default();
        let bucket = domain
            .by_hash
            .entry(entries_hash(&one.spec.entries))
            .or_default();
        match bucket
            .iter_mut()
            .find(|o| same_entries(&o.spec.entries, &one.spec.entries))
        {
            Some(existing) => *existing = one,
            None => {
                bucket.push(one);
                domain.len += 1;
                self.len += 1;
            }
        }
    }

    fn remove<E: EntryLike>(&mut self, domain: &str, entries: &[E]) -> Option<Arc<Override>> {
        let overrides = self.domains.get_mut(domain)?;
        let hash = entries_hash(entries);
        let bucket = overrides.by_hash.get_mut(&hash)?;
        let at = bucket
            .iter()
            .position(|o| same_entries(&o.spec.entries, entries))?;
        let removed = bucket.remove(at);
        if bucket.is_empty() {
            overrides.by_hash.remove(&hash);
        }
        overrides.len -= 1;
        self.len -= 1;
        if overrides.is_empty() {
            self.domains.remove(domain);
        }
        Some(removed)
    }
}

#[cfg(test)]
mod tests;
