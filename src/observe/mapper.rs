//! The statsd-to-Prometheus mapping the reference server applies to its
//! stats when `USE_PROMETHEUS=true`: the statsd_exporter mapping format
//! (`PROMETHEUS_MAPPER_YAML`), or, without one, the reference's default
//! mapping, which [`DEFAULT_MAPPINGS`] states in that same format.
//!
//! A stat is mapped once, when it is created; nothing here runs per
//! request. Supported, per mapping: `match` (a glob whose `*` matches one
//! dot-free part, or with `match_type: regex` a regular expression
//! (unanchored, as statsd_exporter uses it)), `name`, `labels` (values
//! with `$n` or `${n}` from the captures),
//! `action: drop`, `match_metric_type` (`counter`, `gauge`, `observer`),
//! `timer_type` (histograms only) and `scale`. Glob mappings are tried
//! before regex ones, each kind in file order, as statsd_exporter does. A
//! stat no mapping matches is served under its name with every character
//! outside `[a-zA-Z0-9_]` turned into `_`, without labels (statsd_exporter's
//! escaping). Anything else in the file (`defaults`, `ttl`, buckets,
//! `honor_labels`, ...) is refused at start rather than silently ignored.

use marked_yaml::Node;

/// The reference's default mapping (its `src/stats/prom/default_mapper.yaml`),
/// in the statsd_exporter format.
pub const DEFAULT_MAPPINGS: &str = include_str!("default_mapper.yaml");

/// What kind of stat a mapping applies to (`match_metric_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    /// A counter (`name:1|c`).
    Counter,
    /// A gauge.
    Gauge,
    /// A timer or histogram (`observer`).
    Observer,
}

/// A stat's Prometheus identity: its name and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// The metric name.
    pub name: String,
    /// The labels, in the mapping's order.
    pub labels: Vec<(String, String)>,
    /// Multiplies observed values (`scale`); 1 when not given.
    pub scale: f64,
}

#[derive(Debug)]
enum Pattern {
    /// The glob split at its `*`s: literal pieces, one more than captures.
    Glob(Vec<String>),
    Regex(regex::Regex),
}

#[derive(Debug)]
struct Mapping {
    pattern: Pattern,
    name: String,
    labels: Vec<(String, String)>,
    drop: bool,
    kind: Option<StatKind>,
    scale: f64,
}

/// A parsed mapping file.
#[derive(Debug)]
pub struct Mapper {
    /// Glob mappings first, then regex ones, each in file order.
    mappings: Vec<Mapping>,
}

/// Why a mapping file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("Prometheus mapping: {0}")]
pub struct MapperError(String);

const MAPPING_KEYS: &[&str] = &[
    "match",
    "match_type",
    "name",
    "labels",
    "action",
    "match_metric_type",
    "timer_type",
    "observer_type",
    "scale",
    "help",
];

impl Mapper {
    /// The reference's default mapping; `response_time_as_milliseconds`
    /// (`PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS`) drops the response
    /// time's scale, as the reference does.
    pub fn reference_default(response_time_as_milliseconds: bool) -> Mapper {
        let mut mapper = match Mapper::parse(DEFAULT_MAPPINGS) {
            Ok(mapper) => mapper,
            // The embedded file is tested to parse; an empty mapper still
            // serves every stat, under its escaped name.
            Err(_) => Mapper {
                mappings: Vec::new(),
            },
        };
        if response_time_as_milliseconds {
            for mapping in &mut mapper.mappings {
                mapping.scale = 1.0;
            }
        }
        mapper
    }

    /// Parses a statsd_exporter mapping file (see the module docs for what
    /// is supported).
    pub fn parse(text: &str) -> Result<Mapper, MapperError> {
        let error = |message: String| MapperError(message);
        let root = std::panic::catch_unwind(|| marked_yaml::parse_yaml(0, text))
            .map_err(|_| error("the YAML parser failed".to_owned()))?
            .map_err(|e| error(e.to_string()))?;
        let root = root
            .as_mapping()
            .ok_or_else(|| error("the file must be a mapping with 'mappings:'".to_owned()))?;
        for (key, _) in root.iter() {
            if key.as_str() != "mappings" {
                return Err(error(format!(
                    "'{}' is not supported (only 'mappings:' is)",
                    key.as_str()
                )));
            }
        }
        let list = root
            .get_sequence("mappings")
            .ok_or_else(|| error("'mappings:' must be a list".to_owned()))?;
        let mut globs = Vec::new();
        let mut regexes = Vec::new();
        for (index, node) in list.iter().enumerate() {
            let mapping =
                parse_mapping(node).map_err(|e| error(format!("mapping {index}: {e}")))?;
            match mapping.pattern {
                Pattern::Glob(_) => globs.push(mapping),
                Pattern::Regex(_) => regexes.push(mapping),
            }
        }
        globs.extend(regexes);
        Ok(Mapper { mappings: globs })
    }

    /// The Prometheus identity of the stat `name`; `None` when a mapping
    /// drops it.
    pub fn map(&self, name: &str, kind: StatKind) -> Option<Mapped> {
        for mapping in &self.mappings {
            if mapping.kind.is_some_and(|k| k != kind) {
                continue;
            }
            let Some(captures) = mapping.pattern.captures(name) else {
                continue;
            };
            if mapping.drop {
                return None;
            }
            return Some(Mapped {
                name: expand(&mapping.name, &captures),
                labels: mapping
                    .labels
                    .iter()
                    .map(|(label, value)| (label.clone(), expand(value, &captures)))
                    .collect(),
                scale: mapping.scale,
            });
        }
        Some(Mapped {
            name: escape_name(name),
            labels: Vec::new(),
            scale: 1.0,
        })
    }
}

fn parse_mapping(node: &Node) -> Result<Mapping, String> {
    let map = node.as_mapping().ok_or("must be a mapping")?;
    for (key, _) in map.iter() {
        if !MAPPING_KEYS.contains(&key.as_str()) {
            return Err(format!("'{}' is not supported", key.as_str()));
        }
    }
    let text = |key: &str| map.get_scalar(key).map(|s| s.as_str().to_owned());
    let matched = text("match").ok_or("'match' is required")?;
    let pattern = match text("match_type").as_deref() {
        None | Some("glob" | "") => {
            if matched.contains("**") {
                return Err("'**' globs are not supported".to_owned());
            }
            Pattern::Glob(matched.split('*').map(str::to_owned).collect())
        }
        // Unanchored, as statsd_exporter compiles it.
        Some("regex") => Pattern::Regex(regex::Regex::new(&matched).map_err(|e| e.to_string())?),
        Some(other) => return Err(format!("match_type '{other}' is not supported")),
    };
    let drop = match text("action").as_deref() {
        None | Some("map" | "") => false,
        Some("drop") => true,
        Some(other) => return Err(format!("action '{other}' is not supported")),
    };
    let name = text("name").unwrap_or_default();
    if !drop && !valid_name(&name) {
        return Err(format!("'{name}' is not a valid metric name"));
    }
    let kind = match text("match_metric_type").as_deref() {
        None | Some("") => None,
        Some("counter") => Some(StatKind::Counter),
        Some("gauge") => Some(StatKind::Gauge),
        Some("observer" | "timer") => Some(StatKind::Observer),
        Some(other) => return Err(format!("match_metric_type '{other}' is not supported")),
    };
    for key in ["timer_type", "observer_type"] {
        match text(key).as_deref() {
            None | Some("" | "histogram" | "default") => {}
            Some(other) => return Err(format!("{key} '{other}': only histograms are served")),
        }
    }
    let scale = match text("scale") {
        None => 1.0,
        Some(scale) => scale
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or(format!("scale '{scale}' is not a number"))?,
    };
    let mut labels = Vec::new();
    if let Some(node) = map.get_node("labels") {
        let label_map = node.as_mapping().ok_or("'labels' must be a mapping")?;
        for (label, value) in label_map.iter() {
            if !valid_label(label.as_str()) {
                return Err(format!("'{}' is not a valid label name", label.as_str()));
            }
            let value = value
                .as_scalar()
                .ok_or(format!("label '{}' must be a string", label.as_str()))?;
            labels.push((label.as_str().to_owned(), value.as_str().to_owned()));
        }
    }
    Ok(Mapping {
        pattern,
        name,
        labels,
        drop,
        kind,
        scale,
    })
}

impl Pattern {
    /// The captures (`$0` the whole name) when `name` matches.
    fn captures<'n>(&self, name: &'n str) -> Option<Vec<&'n str>> {
        match self {
            Pattern::Glob(pieces) => glob_captures(pieces, name),
            Pattern::Regex(regex) => regex.captures(name).map(|captures| {
                captures
                    .iter()
                    .map(|group| group.map_or("", |m| m.as_str()))
                    .collect()
            }),
        }
    }
}

/// Matches a glob whose `*`s each match a (possibly empty) run of
/// characters other than `.`.
fn glob_captures<'n>(pieces: &[String], name: &'n str) -> Option<Vec<&'n str>> {
    let (first, rest) = pieces.split_first()?;
    let mut at = name.strip_prefix(first.as_str())?;
    let mut captures = vec![name];
    for (index, piece) in rest.iter().enumerate() {
        let last = index + 1 == rest.len();
        // The star cannot cross a dot: its run ends at the next '.' at most.
        let limit = at.find('.').unwrap_or(at.len());
        let found = if last {
            // The final piece must end the name.
            (at.len() >= piece.len() && at.ends_with(piece.as_str()))
                .then(|| at.len() - piece.len())
                .filter(|&end| end <= limit)
        } else if piece.is_empty() {
            Some(limit)
        } else {
            // As the glob's regex `([^.]*)` is greedy: the last place the
            // piece starts within this part.
            at[..(limit + piece.len()).min(at.len())].rfind(piece.as_str())
        };
        let end = found?;
        captures.push(&at[..end]);
        at = &at[end + piece.len()..];
    }
    if rest.is_empty() && !at.is_empty() {
        return None;
    }
    Some(captures)
}

/// `$n` and `${n}` replaced by capture `n` (nothing when there is none).
fn expand(template: &str, captures: &[&str]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (digits, skip) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(close) => (&inner[..close], close + 2),
                None => ("", 0),
            },
            None => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                (&after[..len], len)
            }
        };
        match digits.parse::<usize>() {
            Ok(index) if skip > 0 => {
                out.push_str(captures.get(index).copied().unwrap_or(""));
                rest = &after[skip..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// statsd_exporter's escaping of an unmapped name.
fn escape_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
