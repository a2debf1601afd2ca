//! Loading YAML rule files into a [`RuleSet`].
//!
//! The format is the reference server's (envoyproxy/ratelimit), unchanged: a
//! file has a `domain` and a tree of `descriptors`, each with a `key`, an
//! optional `value` (exact, or a wildcard with `*`), an optional
//! `rate_limit` and nested `descriptors`. floodgate adds, without changing
//! what a reference file means: `algorithm`, `unit_multiplier` and `burst` on
//! a limit, and `rate_limits`, a list of named limits on one descriptor.
//! At the top level, floodgate adds `response:` (rate-limit headers, reset
//! format, a 429 body template and its content type) and `fallbacks:`
//! (identity fallback groups); see [`crate::rules::policy`]. A domain may have each
//! in one file only; fallback shapes must name configured descriptor paths.
//!
//! Loading is three steps, each its own module:
//! - parsing ([`marked_yaml`]) into a node tree that keeps line and column;
//! - `schema`: the node tree into plain structs, with the reference's
//!   typing rules (lenient scalars, YAML 1.1 booleans, unknown keys);
//! - `validate`: semantic checks and compilation into the rule tree.
//!
//! Every problem in every file is reported, each as a [`ConfigError`] naming
//! the file, line, column and rule path, so a bad reload can be fixed in one
//! go; a load with any error yields no rule set at all.

mod calendar;
mod error;
mod schema;
pub mod source;
mod validate;
pub mod xds;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use marked_yaml::{LoadError, LoaderOptions, Node};

use crate::limit::{Algorithm, Unit};
use crate::rules::{Rule, RuleSet};

use error::Pos;
pub use error::{ConfigError, ConfigErrors};
pub use source::{EMBEDDED_CONFIG, Source};

/// How files are combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Several files may name the same domain; their descriptors are merged
    /// into one tree (the reference's `MERGE_DOMAIN_CONFIG`). A top-level
    /// descriptor defined in two files is still a duplicate.
    pub merge_domains: bool,
    /// Every `month` limit counts in UTC calendar months (the reference's
    /// `USE_CALENDAR_MONTH_RATE_LIMIT`), as if written with `calendar: true`.
    pub calendar_month: bool,
}

/// A rule set and the warnings of its load: things the reference server
/// silently accepts that are probably mistakes (a key with no meaning where
/// it is written, a key given twice in one mapping, a skipped file).
#[derive(Debug)]
pub struct Loaded {
    /// The rules.
    pub rules: RuleSet,
    /// The warnings, in file order.
    pub warnings: Vec<ConfigError>,
    /// A hash of the loaded sources (paths and texts, in load order): equal
    /// versions mean the same files with the same content. FNV-1a, so it is
    /// stable across builds and platforms.
    pub version: u64,
}

/// Loads `path`: one YAML file, or a directory whose `*.yaml` and `*.yml`
/// files are loaded (recursively, as the reference's runtime loader reads
/// subdirectories; entries whose names start with `.` are skipped), sorted by
/// path so that a load is deterministic.
pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<RuleSet, ConfigErrors> {
    load_path_with_warnings(path, opts).map(|loaded| loaded.rules)
}

/// [`load_path`], also returning the warnings.
pub fn load_path_with_warnings(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => collect_files(path, 0, &mut files, &mut errors, &mut warnings),
        Ok(_) => files.push(path.to_path_buf()),
        Err(err) => errors.push(file_error(path, format!("cannot read config path: {err}"))),
    }
    files.sort();
    let mut sources = Vec::new();
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push((file, text)),
                Err(_) => errors.push(file_error(
                    &file,
                    "config file is not valid UTF-8".to_owned(),
                )),
            },
            Err(err) => errors.push(file_error(&file, format!("cannot read config file: {err}"))),
        }
    }
    match load_sources_with_warnings(&sources, opts) {
        Ok(loaded) if errors.is_empty() => {
            warnings.extend(loaded.warnings);
            Ok(Loaded {
                rules: loaded.rules,
                warnings,
                version: loaded.version,
            })
        }
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more.0);
            Err(ConfigErrors(errors))
        }
    }
}

/// Deep enough for any real layout, shallow enough to stop a symlink loop.
const MAX_DIRECTORY_DEPTH: usize = 16;

fn collect_files(
    dir: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    if depth > MAX_DIRECTORY_DEPTH {
        errors.push(file_error(
            dir,
            "config directories nest too deep (a symlink loop?)".to_owned(),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(file_error(
                dir,
                format!("cannot read config directory: {err}"),
            ));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                errors.push(file_error(
                    dir,
                    format!("cannot read config directory: {err}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            // Editors' swap files, Kubernetes' `..data` and the like.
            continue;
        }
        // Follows symlinks, as ConfigMap mounts need.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => collect_files(&path, depth + 1, files, errors, warnings),
            Ok(_) => {
                let yaml = path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml");
                if yaml {
                    files.push(path);
                } else {
                    warnings.push(file_error(
                        &path,
                        "skipped: only *.yaml and *.yml files are loaded".to_owned(),
                    ));
                }
            }
            Err(err) => errors.push(file_error(&path, format!("cannot read config file: {err}"))),
        }
    }
}

fn file_error(file: &Path, reason: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        column: None,
        rule_path: String::new(),
        reason,
    }
}

/// Loads YAML texts, each named by a path for error messages, in order.
pub fn load_sources(
    sources: &[(PathBuf, String)],
    opts: &LoadOptions,
) -> Result<RuleSet, ConfigErrors> {
    load_sources_with_warnings(sources, opts).map(|loaded| loaded.rules)
}

/// [`load_sources`], also returning the warnings.
pub fn load_sources_with_warnings(
    sources: &[(PathBuf, String)],
    opts: &LoadOptions,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut builder = validate::Builder::new(opts);
    for (file, text) in sources {
        let first_error = errors.len();
        load_one(file, text, &mut builder, &mut errors, &mut warnings);
        // Report each file's errors in reading order.
        errors[first_error..].sort_by_key(|error| (error.line, error.column));
    }
    errors.extend(builder.check_fallback_shapes());
    if errors.is_empty() {
        Ok(Loaded {
            rules: builder.finish(),
            warnings,
            version: sources_version(sources),
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// FNV-1a over each source's path and text, each followed by a separator
/// byte that UTF-8 text cannot contain, so boundaries cannot shift.
fn sources_version(sources: &[(PathBuf, String)]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (path, text) in sources {
        feed(path.as_os_str().as_encoded_bytes());
        feed(text.as_bytes());
    }
    hash
}

fn load_one(
    file: &Path,
    text: &str,
    builder: &mut validate::Builder,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let mut sink = Sink {
        file,
        calendar_month: builder.calendar_month(),
        domain: String::new(),
        errors,
        warnings,
    };
    // YAML allows a byte order mark at the start of a stream, and editors on
    // Windows write one; it is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(root) = parse_document(text, &mut sink) else {
        return;
    };
    let Some(map) = root.as_mapping() else {
        sink.error(
            Pos::of(root.span()),
            "",
            "the top level must be a mapping with 'domain' and 'descriptors'",
        );
        return;
    };
    // Known up front so that every error can name its domain.
    if let Some(domain) = map.get_scalar("domain") {
        sink.domain = domain.as_str().to_owned();
    }
    let raw = schema::read_file(map, &mut sink);
    builder.add_file(raw, &mut sink);
}

/// Parses the first YAML document of `text` (as the reference does; later
/// documents are ignored). A mapping key given twice is a warning and the
/// last value wins, as in the reference.
fn parse_document(text: &str, sink: &mut Sink<'_>) -> Option<Node> {
    let parse = |strict: bool| {
        let options = LoaderOptions::default()
            .prevent_coercion(true)
            .error_on_duplicate_keys(strict);
        // The parser is not ours: a config file must never bring the server
        // down, so a panic in it is reported as an error.
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(0, text, options))
    };
    let result = match parse(true) {
        Ok(Err(LoadError::DuplicateKey(inner))) => {
            let key = inner.key.as_str().to_owned();
            let first = Pos::of(inner.prev_key.span());
            sink.warn(
                Pos::of(inner.key.span()),
                "",
                format!(
                    "key '{key}' appears twice in one mapping (first at line {}); the last one wins, as in the reference server",
                    first.line.map_or("?".to_owned(), |l| l.to_string())
                ),
            );
            parse(false)
        }
        other => other,
    };
    let error = match result {
        Ok(Ok(node)) => return Some(node),
        Ok(Err(error)) => error,
        Err(_) => {
            sink.error(
                Pos::default(),
                "",
                "error loading config file: the YAML parser failed",
            );
            return None;
        }
    };
    let (marker, reason) = match &error {
        LoadError::ScanError(marker, scan) => (
            *marker,
            format!("error loading config file: {}", scan.info()),
        ),
        LoadError::UnexpectedAnchor(marker) => (
            *marker,
            "YAML anchors and aliases are not supported: write the values out".to_owned(),
        ),
        LoadError::UnexpectedTag(marker) => (
            *marker,
            "YAML tags (such as !!str) are not supported: quote the value instead".to_owned(),
        ),
        LoadError::TopLevelMustBeMapping(marker) | LoadError::TopLevelMustBeSequence(marker) => (
            *marker,
            "the top level must be a mapping with 'domain' and 'descriptors'".to_owned(),
        ),
        LoadError::MappingKeyMustBeScalar(marker) => (
            *marker,
            "config error, mapping keys must be strings".to_owned(),
        ),
        LoadError::DuplicateKey(inner) => {
            let pos = Pos::of(inner.key.span());
            sink.error(pos, "", format!("duplicate key '{}'", inner.key.as_str()));
            return None;
        }
    };
    sink.error(
        Pos {
            line: Some(marker.line()),
            column: Some(marker.column()),
        },
        "",
        reason,
    );
    None
}

/// Where errors and warnings of one file go.
pub(crate) struct Sink<'a> {
    file: &'a Path,
    /// [`LoadOptions::calendar_month`], for the limits of this file.
    calendar_month: bool,
    domain: String,
    errors: &'a mut Vec<ConfigError>,
    warnings: &'a mut Vec<ConfigError>,
}

impl Sink<'_> {
    fn make(&self, pos: Pos, path: &str, reason: String) -> ConfigError {
        let rule_path = match (self.domain.is_empty(), path.is_empty()) {
            (true, _) => path.to_owned(),
            (false, true) => format!("domain {}", self.domain),
            (false, false) => format!("domain {}, {path}", self.domain),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            rule_path,
            reason,
        }
    }

    pub(crate) fn error(&mut self, pos: Pos, path: &str, reason: impl Into<String>) {
        let error = self.make(pos, path, reason.into());
        self.errors.push(error);
    }

    pub(crate) fn warn(&mut self, pos: Pos, path: &str, reason: impl Into<String>) {
        let warning = self.make(pos, path, reason.into());
        self.warnings.push(warning);
    }
}

/// One line per domain, sorted by name, for `floodgate check`, e.g.
/// `domain acme: 12 rules, 3 levels deep, algorithms fixed_window×10 token_bucket×2`.
pub fn summary(rules: &RuleSet) -> Vec<String> {
    let mut domains: Vec<_> = rules.domains().collect();
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    domains
        .into_iter()
        .map(|domain| {
            let found = domain.rules();
            let mut counts = [0usize; Algorithm::ALL.len()];
            let mut unlimited = 0;
            for (rule, _) in &found {
                if rule.unlimited {
                    unlimited += 1;
                }
                for limit in &rule.limits {
                    if let Some(slot) = Algorithm::ALL
                        .iter()
                        .position(|algorithm| *algorithm == limit.limit.algorithm)
                    {
                        counts[slot] += 1;
                    }
                }
            }
            let depth = domain.depth();
            let mut line = format!(
                "domain {}: {} rule{}, {} level{} deep",
                domain.name,
                found.len(),
                if found.len() == 1 { "" } else { "s" },
                depth,
                if depth == 1 { "" } else { "s" },
            );
            let algorithms: Vec<String> = Algorithm::ALL
                .iter()
                .zip(counts)
                .filter(|(_, count)| *count > 0)
                .map(|(algorithm, count)| format!("{}×{count}", algorithm.as_str()))
                .collect();
            if !algorithms.is_empty() {
                let _ = write!(line, ", algorithms {}", algorithms.join(" "));
            }
            if unlimited > 0 {
                let _ = write!(line, ", {unlimited} unlimited");
            }
            line
        })
        .collect()
}

/// The loaded rules as text, one line per rule sorted by id, as the
/// reference's `/rlconfig` dump writes them:
/// `domain.key_value: unit=MINUTE requests_per_unit=10, shadow_mode: false`.
/// A rule beyond the reference's format lists each limit with its extra
/// settings, separated by `; `.
pub fn describe(rules: &RuleSet) -> String {
    let mut all: Vec<&Rule> = rules
        .domains()
        .flat_map(|domain| domain.rules().into_iter().map(|(rule, _)| rule.as_ref()))
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = String::new();
    for rule in all {
        let _ = write!(out, "{}: ", rule.id);
        if rule.limits.is_empty() {
            // What the reference prints for an unlimited rule: no unit.
            out.push_str("unit=UNKNOWN requests_per_unit=0");
        }
        for (index, limit) in rule.limits.iter().enumerate() {
            if index > 0 {
                out.push_str("; ");
            }
            let l = &limit.limit;
            let _ = write!(
                out,
                "unit={} requests_per_unit={}",
                unit_upper(l.unit),
                l.requests_per_unit
            );
            if !rule.reference_form {
                if let Some(name) = &limit.name {
                    let _ = write!(out, " name={name}");
                }
                let _ = write!(out, " algorithm={}", l.algorithm.as_str());
                if l.unit_multiplier != 1 {
                    let _ = write!(out, " unit_multiplier={}", l.unit_multiplier);
                }
                if l.algorithm == Algorithm::TokenBucket {
                    let _ = write!(out, " burst={}", l.burst);
                }
            }
            // Also on a reference-form rule: a calendar month under
            // USE_CALENDAR_MONTH_RATE_LIMIT is not the 30-day window.
            if let Some(calendar) = l.calendar {
                let _ = write!(out, " calendar={}", calendar.zone_name());
            }
        }
        let _ = writeln!(out, ", shadow_mode: {}", rule.shadow_mode);
    }
    out
}

fn unit_upper(unit: Unit) -> &'static str {
    match unit {
        Unit::Second => "SECOND",
        Unit::Minute => "MINUTE",
        Unit::Hour => "HOUR",
        Unit::Day => "DAY",
        Unit::Week => "WEEK",
        Unit::Month => "MONTH",
        Unit::Year => "YEAR",
    }
}

#[cfg(test)]
mod tests;
