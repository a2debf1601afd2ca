//! Semantic checks and compilation: [`RawFile`]s into the immutable
//! [`RuleSet`] tree, with every rejection the reference server makes (and
//! those of floodgate's extensions), each reported with its place.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limit::{Algorithm, Limit, Unit};
use crate::rules::{
    Domain, KeyNode, Level, Node, Rule, RuleLimit, RuleSet, StatLevel, WildcardPattern,
};

mod policy;

use super::ConfigError;
use super::error::Pos;
use super::schema::{Int, RawDescriptor, RawFile, RawLimit, Text};
use super::{LoadOptions, Sink};
use policy::{build_fallbacks, build_response};

/// Where a composite key was first defined, for duplicate reports.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    pos: Pos,
}

impl Origin {
    fn describe(&self, current: &Path) -> String {
        if self.file == current {
            format!(
                "line {}",
                self.pos.line.map_or("?".to_owned(), |l| l.to_string())
            )
        } else {
            format!("{}:{}", self.file.display(), self.pos)
        }
    }
}

struct DomainBuild {
    domain: Domain,
    first_file: PathBuf,
    /// The top level's composite keys, kept across files for merging.
    seen: HashMap<String, Origin>,
    /// Where `response:` was given (one file per domain may).
    response_origin: Option<Origin>,
    /// Where `fallbacks:` was given (one file per domain may).
    fallbacks_origin: Option<Origin>,
    /// Fallback shapes to look up once every file of the domain is loaded.
    shapes: Vec<PendingShape>,
}

/// A fallback shape whose keys must name a configured descriptor path.
struct PendingShape {
    file: PathBuf,
    pos: Pos,
    rule_path: String,
    keys: Vec<String>,
}

/// Accumulates files into a rule set.
pub(crate) struct Builder {
    merge_domains: bool,
    calendar_month: bool,
    domains: HashMap<String, DomainBuild>,
}

impl Builder {
    pub(crate) fn new(opts: &LoadOptions) -> Builder {
        Builder {
            merge_domains: opts.merge_domains,
            calendar_month: opts.calendar_month,
            domains: HashMap::new(),
        }
    }

    /// Whether every `month` limit counts in UTC calendar months.
    pub(crate) fn calendar_month(&self) -> bool {
        self.calendar_month
    }

    /// Errors for fallback shapes that name no configured descriptor path;
    /// checked after every file so that merged domains see all descriptors.
    pub(crate) fn check_fallback_shapes(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for build in self.domains.values() {
            for shape in &build.shapes {
                if !build.domain.has_key_path(&shape.keys) {
                    errors.push(ConfigError {
                        file: shape.file.clone(),
                        line: shape.pos.line,
                        column: shape.pos.column,
                        rule_path: shape.rule_path.clone(),
                        reason: format!(
                            "fallback shape [{}] matches no descriptor of domain '{}' (a shape lists the keys of a configured descriptor path, outermost first)",
                            shape.keys.join(", "),
                            build.domain.name
                        ),
                    });
                }
            }
        }
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        errors
    }

    pub(crate) fn finish(self) -> RuleSet {
        RuleSet {
            domains: self
                .domains
                .into_iter()
                .map(|(name, build)| (name, build.domain))
                .collect(),
        }
    }

    /// Adds one file's descriptors (errors go to `sink`; a file with errors
    /// may be partly added, which is fine: the caller discards the rule set).
    pub(crate) fn add_file(&mut self, file: RawFile, sink: &mut Sink<'_>) {
        let name = file.domain.value.clone();
        if name.is_empty() {
            let pos = if file.domain.pos.line.is_some() {
                file.domain.pos
            } else {
                file.pos
            };
            sink.error(
                pos,
                "",
                "config file cannot have empty domain (set a top-level 'domain')",
            );
            // Still check the descriptors, in a throwaway domain.
            let mut scratch = Level::default();
            let mut seen = HashMap::new();
            load_level(&mut scratch, &mut seen, "", &file.descriptors, &[], sink);
            if let Some(raw) = &file.response {
                build_response(raw, sink);
            }
            if let Some((_, raw)) = &file.fallbacks {
                build_fallbacks(raw, sink);
            }
            return;
        }
        let build = match self.domains.entry(name.clone()) {
            Entry::Occupied(entry) => {
                let build = entry.into_mut();
                if !self.merge_domains {
                    let first = build.first_file.display().to_string();
                    sink.error(
                        file.domain.pos,
                        "",
                        format!(
                            "duplicate domain '{name}' in config file (first defined in {first}; set MERGE_DOMAIN_CONFIG=true to merge)"
                        ),
                    );
                    let mut scratch = Level::default();
                    let mut seen = HashMap::new();
                    load_level(&mut scratch, &mut seen, &name, &file.descriptors, &[], sink);
                    return;
                }
                build
            }
            Entry::Vacant(entry) => entry.insert(DomainBuild {
                domain: Domain {
                    name: name.clone(),
                    shared_name: Arc::from(name.as_str()),
                    ..Domain::default()
                },
                first_file: sink.file.to_path_buf(),
                seen: HashMap::new(),
                response_origin: None,
                fallbacks_origin: None,
                shapes: Vec::new(),
            }),
        };
        load_level(
            &mut build.domain.root,
            &mut build.seen,
            &name,
            &file.descriptors,
            &[],
            sink,
        );
        if let Some(raw) = &file.response {
            let policy = build_response(raw, sink);
            if let Some(first) = &build.response_origin {
                let first = first.describe(sink.file);
                sink.error(
                    raw.pos,
                    "response",
                    format!("domain '{name}' already has a 'response' block (at {first}); give it in one file only"),
                );
            } else {
                build.response_origin = Some(Origin {
                    file: sink.file.to_path_buf(),
                    pos: raw.pos,
                });
                build.domain.response = policy.map(Arc::new);
            }
        }
        if let Some((pos, raw)) = &file.fallbacks {
            if let Some(first) = &build.fallbacks_origin {
                let first = first.describe(sink.file);
                sink.error(
                    *pos,
                    "fallbacks",
                    format!("domain '{name}' already has 'fallbacks' (at {first}); give them in one file only"),
                );
            } else {
                build.fallbacks_origin = Some(Origin {
                    file: sink.file.to_path_buf(),
                    pos: *pos,
                });
                let (groups, shapes) = build_fallbacks(raw, sink);
                build.domain.fallbacks = groups;
                build.shapes = shapes
                    .into_iter()
                    .map(|(pos, rule_path, keys)| PendingShape {
                        file: sink.file.to_path_buf(),
                        pos,
                        rule_path: format!("domain {name}, {rule_path}"),
                        keys,
                    })
                    .collect();
            }
        }
    }
}

/// Loads descriptors into one level. `parent_id` is the stat key of the
/// level's parent (the domain name at the top); `above` holds the levels
/// above.
fn load_level(
    level: &mut Level,
    seen: &mut HashMap<String, Origin>,
    parent_id: &str,
    descriptors: &[RawDescriptor],
    above: &[StatLevel],
    sink: &mut Sink<'_>,
) {
    for raw in descriptors {
        let key = raw.key.as_ref().map_or("", |text| text.value.as_str());
        let value = raw.value.value.as_str();
        let composite = if value.is_empty() {
            key.to_owned()
        } else {
            format!("{key}_{value}")
        };
        let id = format!("{parent_id}.{composite}");
        let pattern = WildcardPattern::new(value);
        let mut levels = above.to_vec();
        levels.push(StatLevel {
            configured: Arc::from(composite.as_str()),
            value_to_metric: raw.value_to_metric.value,
            shared: raw.share_threshold.value && pattern.is_some(),
        });

        let mut valid = true;
        if raw.bad_key {
            valid = false;
        } else if key.is_empty() {
            let pos = raw.key.as_ref().map_or(raw.pos, |text| text.pos);
            sink.error(
                pos,
                &raw.path,
                "descriptor has empty key (every descriptor needs a 'key')",
            );
            valid = false;
        } else {
            match seen.entry(composite.clone()) {
                Entry::Occupied(first) => {
                    let first = first.get().describe(sink.file);
                    sink.error(
                        raw.pos,
                        &raw.path,
                        format!(
                            "duplicate descriptor composite key '{id}' (first defined at {first})"
                        ),
                    );
                    valid = false;
                }
                Entry::Vacant(slot) => {
                    slot.insert(Origin {
                        file: sink.file.to_path_buf(),
                        pos: raw.pos,
                    });
                }
            }
        }

        if raw.share_threshold.value && pattern.is_none() {
            sink.error(
                raw.share_threshold.pos,
                &raw.path,
                format!(
                    "share_threshold can only be used with wildcard values (containing '*'), but found key '{composite}'"
                ),
            );
        }

        let rule = build_rule(raw, &id, &levels, sink);
        let mut node = Node {
            rule: rule.map(Arc::new),
            children: Level::default(),
            share_threshold: raw.share_threshold.value && pattern.is_some(),
        };
        let mut child_seen = HashMap::new();
        load_level(
            &mut node.children,
            &mut child_seen,
            &id,
            &raw.descriptors,
            &levels,
            sink,
        );

        if !valid {
            continue;
        }
        let key_node: &mut KeyNode = level.keys.entry(key.to_owned()).or_default();
        match pattern {
            _ if value.is_empty() => key_node.default = Some(node),
            Some(pattern) => key_node.wildcards.push((pattern, node)),
            None => {
                key_node.exact.insert(value.to_owned(), node);
            }
        }
    }
}

fn build_rule(
    raw: &RawDescriptor,
    id: &str,
    levels: &[StatLevel],
    sink: &mut Sink<'_>,
) -> Option<Rule> {
    let value_to_metric: Vec<bool> = levels.iter().map(|l| l.value_to_metric).collect();
    let stat_levels = if value_to_metric.contains(&true) || raw.detailed_metric.value {
        levels.to_vec()
    } else {
        Vec::new()
    };
    let base = |limits: Vec<RuleLimit>| Rule {
        id: Arc::from(id),
        limits,
        unlimited: false,
        shadow_mode: raw.shadow_mode.value,
        quota_mode: raw.quota_mode.value,
        replaces: Vec::new(),
        reference_form: false,
        counts_denied_hits: false,
        header_limit: None,
        detailed_metric: raw.detailed_metric.value,
        value_to_metric: value_to_metric.clone(),
        stat_levels: stat_levels.clone(),
        name: None,
    };
    match (&raw.rate_limit, &raw.rate_limits) {
        (Some(_), Some((pos, _))) => {
            sink.error(
                *pos,
                &raw.path,
                "a descriptor cannot have both 'rate_limit' and 'rate_limits'",
            );
            None
        }
        (Some(limit), None) => {
            let name = limit
                .name
                .as_ref()
                .filter(|text| !text.value.is_empty())
                .map(|text| Arc::<str>::from(text.value.as_str()));
            let replaces = check_replaces(limit, sink);
            if limit.unlimited.value {
                check_unlimited(limit, sink);
                let mut rule = base(Vec::new());
                rule.unlimited = true;
                rule.replaces = replaces;
                rule.reference_form = true;
                rule.counts_denied_hits = true;
                rule.name = name;
                return Some(rule);
            }
            let limit = build_limit(limit, sink)?;
            // One rule for counting denied hits: every single `rate_limit`
            // on a fixed window counts them as the reference does; a longer
            // window (`unit_multiplier`) changes the window, not the counting.
            let fixed = limit.limit.algorithm == Algorithm::FixedWindow;
            let reference_form = fixed && limit.limit.unit_multiplier == 1;
            let mut rule = base(vec![limit]);
            rule.replaces = replaces;
            rule.reference_form = reference_form;
            rule.counts_denied_hits = fixed;
            rule.name = name;
            Some(rule)
        }
        (None, Some((pos, items))) => {
            if items.is_empty() {
                sink.error(
                    *pos,
                    &raw.path,
                    "'rate_limits' is empty: give at least one limit or remove it",
                );
                return None;
            }
            let mut names: HashMap<&str, Pos> = HashMap::new();
            let mut limits = Vec::new();
            let mut ok = true;
            let mut header_limit: Option<(usize, Pos)> = None;
            for (index, item) in items.iter().enumerate() {
                if item.headers.value {
                    if let Some((_, first)) = header_limit {
                        sink.error(
                            item.headers.pos,
                            &item.path,
                            format!(
                                "only one limit of 'rate_limits' can have 'headers: true' (first at line {})",
                                first.line.map_or("?".to_owned(), |l| l.to_string())
                            ),
                        );
                        ok = false;
                    } else {
                        header_limit = Some((index, item.headers.pos));
                    }
                }
                match item.name.as_ref().filter(|text| !text.value.is_empty()) {
                    None => {
                        sink.error(
                            item.pos,
                            &item.path,
                            "each limit in 'rate_limits' needs a non-empty 'name'",
                        );
                        ok = false;
                    }
                    Some(text) => {
                        if let Some(first) = names.insert(text.value.as_str(), text.pos) {
                            sink.error(
                                text.pos,
                                &item.path,
                                format!(
                                    "duplicate limit name '{}' in 'rate_limits' (first at line {})",
                                    text.value,
                                    first.line.map_or("?".to_owned(), |l| l.to_string())
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                match build_limit(item, sink) {
                    Some(limit) => limits.push(limit),
                    None => ok = false,
                }
            }
            ok.then(|| Rule {
                header_limit: header_limit.map(|(index, _)| index),
                ..base(limits)
            })
        }
        (None, None) => None,
    }
}

fn check_replaces(limit: &RawLimit, sink: &mut Sink<'_>) -> Vec<String> {
    let own = limit.name.as_ref().map_or("", |text| text.value.as_str());
    let mut out = Vec::new();
    for (index, (pos, name)) in limit.replaces.iter().enumerate() {
        let path = format!("{}.replaces[{index}]", limit.path);
        let name = name.as_ref().map_or("", |text| text.value.as_str());
        if name.is_empty() {
            sink.error(
                *pos,
                &path,
                "should not have an empty replaces entry (each needs a 'name')",
            );
        } else if name == own {
            sink.error(
                *pos,
                &path,
                format!("replaces should not contain name of same descriptor ('{name}')"),
            );
        } else {
            out.push(name.to_owned());
        }
    }
    out
}

fn check_unlimited(limit: &RawLimit, sink: &mut Sink<'_>) {
    if let Some(unit) = &limit.unit
        && Unit::parse(&unit.value).is_some()
    {
        sink.error(
            unit.pos,
            &limit.path,
            "should not specify rate limit unit when unlimited",
        );
    }
    let extras = [
        ("algorithm", limit.algorithm.as_ref().map(|text| text.pos)),
        ("unit_multiplier", limit.unit_multiplier.map(|int| int.pos)),
        ("burst", limit.burst.map(|int| int.pos)),
        (
            "calendar",
            limit.calendar.value.then_some(limit.calendar.pos),
        ),
        ("time_zone", limit.time_zone.as_ref().map(|text| text.pos)),
    ];
    for (key, pos) in extras {
        if let Some(pos) = pos {
            sink.error(
                pos,
                &limit.path,
                format!("'{key}' cannot be used with 'unlimited: true'"),
            );
        }
    }
}

const UNITS: &str = "second, minute, hour, day, week, month or year";

fn build_limit(raw: &RawLimit, sink: &mut Sink<'_>) -> Option<RuleLimit> {
    let unit_text = raw.unit.as_ref().map_or("", |text| text.value.as_str());
    let unit_pos = raw.unit.as_ref().map_or(raw.pos, |text| text.pos);
    let unit = Unit::parse(unit_text);
    if unit.is_none() {
        sink.error(
            unit_pos,
            &raw.path,
            format!("invalid rate limit unit '{unit_text}' (expected {UNITS})"),
        );
    }
    let requests_per_unit = match raw.requests_per_unit {
        None => Some(0),
        Some(int) => ranged(int, "requests_per_unit", 0, &raw.path, sink),
    };
    let algorithm = match &raw.algorithm {
        None => Some(Algorithm::FixedWindow),
        Some(Text { value, pos }) => {
            let parsed = Algorithm::parse(value);
            if parsed.is_none() {
                sink.error(
                    *pos,
                    &raw.path,
                    format!("unknown algorithm '{value}' (expected fixed_window, sliding_window or token_bucket)"),
                );
            }
            parsed
        }
    };
    let unit_multiplier = match raw.unit_multiplier {
        None => Some(1),
        Some(int) => ranged(int, "unit_multiplier", 1, &raw.path, sink),
    };
    let burst = match raw.burst {
        None => None,
        Some(int) => {
            if algorithm.is_some_and(|algorithm| algorithm != Algorithm::TokenBucket) {
                sink.error(
                    int.pos,
                    &raw.path,
                    "'burst' is only valid with 'algorithm: token_bucket'",
                );
                return None;
            }
            Some(ranged(int, "burst", 1, &raw.path, sink)?)
        }
    };
    let (unit, requests_per_unit, algorithm, unit_multiplier) =
        (unit?, requests_per_unit?, algorithm?, unit_multiplier?);
    let burst = burst.unwrap_or(requests_per_unit);
    if algorithm == Algorithm::TokenBucket && burst == 0 {
        sink.error(
            raw.pos,
            &raw.path,
            "a token_bucket needs a burst of at least 1 (requests_per_unit is 0 and no 'burst' is given)",
        );
        return None;
    }
    let calendar = super::calendar::build_calendar(raw, unit, algorithm, unit_multiplier, sink)?;
    Some(RuleLimit {
        name: raw
            .name
            .as_ref()
            .filter(|text| !text.value.is_empty())
            .map(|text| Arc::from(text.value.as_str())),
        limit: Limit {
            requests_per_unit,
            unit,
            unit_multiplier,
            algorithm,
            burst,
            calendar,
        },
    })
}

/// An integer in `min..=u32::MAX`, as the reference's `uint32` fields take.
fn ranged(int: Int, key: &str, min: u64, path: &str, sink: &mut Sink<'_>) -> Option<u64> {
    let max = i128::from(u32::MAX);
    if int.value < i128::from(min) || int.value > max {
        sink.error(
            int.pos,
            path,
            format!(
                "'{key}' must be between {min} and {max}, found {}",
                int.value
            ),
        );
        return None;
    }
    u64::try_from(int.value).ok()
}
