//! The YAML schema: a config file's node tree read into plain structs that
//! keep every value's position, with the reference server's typing rules.
//!
//! The reference decodes with `gopkg.in/yaml.v2` after checking every mapping
//! key against one flat list of known keys, so this module reproduces what
//! that accepts:
//! - string fields (`domain`, `key`, `value`, `unit`, `name`) take any plain
//!   scalar as written (`value: 123` is `"123"`, `value: true` is `"true"`,
//!   `value: ~` is empty), but not a floating-point number (`value: 1.5`),
//!   which the reference rejects;
//! - booleans are YAML 1.1 booleans (`true`, `yes`, `on`, ...), unquoted;
//!   a missing or null boolean is false;
//! - integers are YAML 1.1 integers (`1_000`, `0x10`), unquoted, in range;
//! - every list element must be a mapping;
//! - a key the reference knows but that means nothing at its level (`unit`
//!   directly on a descriptor) is ignored with a warning, as the reference
//!   silently ignores it; a key it does not know at all is an error;
//! - `metadata` is free-form and ignored.

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

mod scalars;

use super::Sink;
use super::error::Pos;
use scalars::{
    Kind, classify, flag, float_reason, integer, kind_name, list_of_mappings, map_pos,
    optional_mapping, pos, string, unknown_key,
};

/// A string value and where it was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Text {
    pub(crate) value: String,
    pub(crate) pos: Pos,
}

/// An integer value and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int {
    pub(crate) value: i128,
    pub(crate) pos: Pos,
}

/// A boolean value and where it was written (default: false, nowhere).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flag {
    pub(crate) value: bool,
    pub(crate) pos: Pos,
}

/// One config file.
#[derive(Debug, Default)]
pub(crate) struct RawFile {
    /// Where the document starts, for errors about the file as a whole.
    pub(crate) pos: Pos,
    pub(crate) domain: Text,
    pub(crate) descriptors: Vec<RawDescriptor>,
    /// floodgate's `response:` block.
    pub(crate) response: Option<RawResponse>,
    /// floodgate's `fallbacks:` groups.
    pub(crate) fallbacks: Option<(Pos, Vec<RawFallback>)>,
}

/// A domain's `response:` block (floodgate only).
#[derive(Debug, Default)]
pub(crate) struct RawResponse {
    pub(crate) pos: Pos,
    pub(crate) headers: Option<Text>,
    pub(crate) reset: Option<Text>,
    /// The body and whether it is a block scalar (`|` or `>`), whose text
    /// starts on the line after its position.
    pub(crate) body: Option<(Text, bool)>,
    pub(crate) content_type: Option<Text>,
}

/// One item of `fallbacks:` (floodgate only).
#[derive(Debug, Default)]
pub(crate) struct RawFallback {
    pub(crate) pos: Pos,
    /// e.g. `fallbacks[0]`.
    pub(crate) path: String,
    pub(crate) name: Option<Text>,
    /// Each shape: where it is written and its keys.
    pub(crate) order: Option<(Pos, Vec<RawShape>)>,
}

/// One descriptor shape of a fallback group: where it is written, its keys.
pub(crate) type RawShape = (Pos, Vec<Text>);

/// One descriptor, with its nested descriptors.
#[derive(Debug, Default)]
pub(crate) struct RawDescriptor {
    pub(crate) pos: Pos,
    /// e.g. `descriptors[1].descriptors[0]`.
    pub(crate) path: String,
    pub(crate) key: Option<Text>,
    /// `key` was given but is not a string (already reported).
    pub(crate) bad_key: bool,
    pub(crate) value: Text,
    pub(crate) rate_limit: Option<RawLimit>,
    pub(crate) rate_limits: Option<(Pos, Vec<RawLimit>)>,
    pub(crate) shadow_mode: Flag,
    pub(crate) quota_mode: Flag,
    pub(crate) share_threshold: Flag,
    pub(crate) detailed_metric: Flag,
    pub(crate) value_to_metric: Flag,
    pub(crate) descriptors: Vec<RawDescriptor>,
}

/// A `rate_limit` block or one item of `rate_limits`.
#[derive(Debug, Default)]
pub(crate) struct RawLimit {
    pub(crate) pos: Pos,
    /// e.g. `descriptors[0].rate_limits[1]`.
    pub(crate) path: String,
    pub(crate) unit: Option<Text>,
    pub(crate) requests_per_unit: Option<Int>,
    pub(crate) unlimited: Flag,
    pub(crate) name: Option<Text>,
    pub(crate) replaces: Vec<(Pos, Option<Text>)>,
    pub(crate) algorithm: Option<Text>,
    pub(crate) unit_multiplier: Option<Int>,
    pub(crate) burst: Option<Int>,
    /// `headers: true` (an item of `rate_limits` only): the limit that the
    /// domain's response headers describe.
    pub(crate) headers: Flag,
    /// `calendar: true`: windows start at local calendar boundaries.
    pub(crate) calendar: Flag,
    /// The IANA zone of a calendar window (default UTC).
    pub(crate) time_zone: Option<Text>,
}

/// Every key the reference server's key check accepts, anywhere.
const REFERENCE_KEYS: &[&str] = &[
    "domain",
    "key",
    "value",
    "descriptors",
    "rate_limit",
    "unit",
    "requests_per_unit",
    "unlimited",
    "shadow_mode",
    "quota_mode",
    "name",
    "replaces",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "unit_multiplier",
    "metadata",
];

const ROOT_KEYS: &[&str] = &["domain", "descriptors", "response", "fallbacks"];
const RESPONSE_KEYS: &[&str] = &["headers", "reset", "body", "content_type"];
const FALLBACK_KEYS: &[&str] = &["name", "order"];
const DESCRIPTOR_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "rate_limits",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "share_threshold",
    "detailed_metric",
    "value_to_metric",
    "metadata",
];
const RATE_LIMIT_KEYS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "unit_multiplier",
    "burst",
    "calendar",
    "time_zone",
];
const RATE_LIMITS_ITEM_KEYS: &[&str] = &[
    "name",
    "algorithm",
    "unit",
    "unit_multiplier",
    "requests_per_unit",
    "burst",
    "headers",
    "calendar",
    "time_zone",
];
const REPLACES_KEYS: &[&str] = &["name"];

/// Reads a parsed document into a [`RawFile`], reporting every problem.
pub(crate) fn read_file(root: &MarkedMappingNode, sink: &mut Sink<'_>) -> RawFile {
    let mut file = RawFile {
        // An empty document has no better place than its start.
        pos: if root.is_empty() {
            Pos {
                line: Some(1),
                column: Some(1),
            }
        } else {
            map_pos(root)
        },
        ..RawFile::default()
    };
    let ctx = "";
    for (key, node) in known_entries(root, ROOT_KEYS, false, ctx, sink) {
        match key {
            "domain" => {
                if let Some(text) = string(node, "domain", ctx, sink) {
                    file.domain = text;
                }
            }
            "descriptors" => {
                file.descriptors = descriptor_list(node, "descriptors", sink);
            }
            "response" => {
                if let Some(map) = optional_mapping(node, key, ctx, sink) {
                    file.response = Some(response(map, sink));
                }
            }
            "fallbacks" => {
                let items = list_of_mappings(node, "fallbacks", sink)
                    .into_iter()
                    .map(|(index, map)| fallback(map, &format!("fallbacks[{index}]"), sink))
                    .collect();
                file.fallbacks = Some((pos(node), items));
            }
            _ => {}
        }
    }
    file
}

fn response(map: &MarkedMappingNode, sink: &mut Sink<'_>) -> RawResponse {
    let path = "response";
    let mut out = RawResponse {
        pos: map_pos(map),
        ..RawResponse::default()
    };
    for (key, node) in known_entries(map, RESPONSE_KEYS, true, path, sink) {
        match key {
            "headers" => out.headers = string(node, key, path, sink),
            "reset" => out.reset = string(node, key, path, sink),
            "content_type" => out.content_type = string(node, key, path, sink),
            "body" => {
                let block = matches!(node, Node::Scalar(scalar) if !scalar.may_coerce())
                    && is_block_scalar(node);
                out.body = string(node, key, path, sink).map(|text| (text, block));
            }
            _ => {}
        }
    }
    out
}

/// A `|` or `>` scalar: its span starts at the indicator, its text on the
/// next line.
fn is_block_scalar(node: &Node) -> bool {
    let Node::Scalar(scalar) = node else {
        return false;
    };
    let text = scalar.as_str();
    // A block scalar's span covers more lines than a flow scalar of the
    // same text would; a flow scalar starting on its key's line keeps its
    // content on that line.
    match (scalar.span().start(), scalar.span().end()) {
        (Some(start), Some(end)) => {
            let lines = end.line().saturating_sub(start.line());
            lines > text.matches('\n').count() || (lines > 0 && !text.contains('\n'))
        }
        _ => false,
    }
}

fn fallback(map: &MarkedMappingNode, path: &str, sink: &mut Sink<'_>) -> RawFallback {
    let mut out = RawFallback {
        pos: map_pos(map),
        path: path.to_owned(),
        ..RawFallback::default()
    };
    for (key, node) in known_entries(map, FALLBACK_KEYS, true, path, sink) {
        match key {
            "name" => out.name = string(node, key, path, sink),
            "order" => {
                let Node::Sequence(shapes) = node else {
                    sink.error(
                        pos(node),
                        path,
                        format!(
                            "'order' must be a list of descriptor shapes (lists of keys), found {}",
                            kind_name(node)
                        ),
                    );
                    continue;
                };
                let mut list = Vec::new();
                for (index, shape) in shapes.iter().enumerate() {
                    let shape_path = format!("{path}.order[{index}]");
                    let Node::Sequence(keys) = shape else {
                        sink.error(
                            pos(shape),
                            &shape_path,
                            format!(
                                "a descriptor shape must be a list of keys, e.g. [user, seller], found {}",
                                kind_name(shape)
                            ),
                        );
                        continue;
                    };
                    let keys = keys
                        .iter()
                        .filter_map(|k| string(k, "key", &shape_path, sink))
                        .collect();
                    list.push((pos(shape), keys));
                }
                out.order = Some((pos(node), list));
            }
            _ => {}
        }
    }
    out
}

fn descriptor_list(node: &Node, path: &str, sink: &mut Sink<'_>) -> Vec<RawDescriptor> {
    list_of_mappings(node, path, sink)
        .into_iter()
        .map(|(index, map)| descriptor(map, &format!("{path}[{index}]"), sink))
        .collect()
}

fn descriptor(map: &MarkedMappingNode, path: &str, sink: &mut Sink<'_>) -> RawDescriptor {
    let mut out = RawDescriptor {
        pos: map_pos(map),
        path: path.to_owned(),
        ..RawDescriptor::default()
    };
    for (key, node) in known_entries(map, DESCRIPTOR_KEYS, false, path, sink) {
        match key {
            "key" => {
                out.key = string(node, key, path, sink);
                out.bad_key = out.key.is_none();
            }
            "value" => {
                if let Some(text) = string(node, key, path, sink) {
                    out.value = text;
                }
            }
            "rate_limit" => {
                if let Some(map) = optional_mapping(node, key, path, sink) {
                    let path = format!("{path}.rate_limit");
                    out.rate_limit = Some(limit(map, RATE_LIMIT_KEYS, false, &path, sink));
                }
            }
            "rate_limits" => {
                let items = list_of_mappings(node, &format!("{path}.rate_limits"), sink)
                    .into_iter()
                    .map(|(index, map)| {
                        let path = format!("{path}.rate_limits[{index}]");
                        limit(map, RATE_LIMITS_ITEM_KEYS, true, &path, sink)
                    })
                    .collect();
                out.rate_limits = Some((Pos::of(node.span()), items));
            }
            "descriptors" => {
                out.descriptors = descriptor_list(node, &format!("{path}.descriptors"), sink)
            }
            "shadow_mode" => out.shadow_mode = flag(node, key, path, sink),
            "quota_mode" => out.quota_mode = flag(node, key, path, sink),
            "share_threshold" => out.share_threshold = flag(node, key, path, sink),
            "detailed_metric" => out.detailed_metric = flag(node, key, path, sink),
            "value_to_metric" => out.value_to_metric = flag(node, key, path, sink),
            // Free-form, for other tools; the reference ignores it too.
            "metadata" => {}
            _ => {}
        }
    }
    out
}

fn limit(
    map: &MarkedMappingNode,
    allowed: &[&'static str],
    strict: bool,
    path: &str,
    sink: &mut Sink<'_>,
) -> RawLimit {
    let mut out = RawLimit {
        pos: map_pos(map),
        path: path.to_owned(),
        ..RawLimit::default()
    };
    for (key, node) in known_entries(map, allowed, strict, path, sink) {
        match key {
            "unit" => out.unit = string(node, key, path, sink),
            "requests_per_unit" => out.requests_per_unit = integer(node, key, path, sink),
            "unlimited" => out.unlimited = flag(node, key, path, sink),
            "name" => out.name = string(node, key, path, sink),
            "replaces" => {
                let replaces_path = format!("{path}.replaces");
                for (index, item) in list_of_mappings(node, &replaces_path, sink) {
                    let item_path = format!("{replaces_path}[{index}]");
                    let mut name = None;
                    for (key, node) in known_entries(item, REPLACES_KEYS, false, &item_path, sink) {
                        if key == "name" {
                            name = string(node, key, &item_path, sink);
                        }
                    }
                    out.replaces.push((map_pos(item), name));
                }
            }
            "algorithm" => out.algorithm = string(node, key, path, sink),
            "unit_multiplier" => out.unit_multiplier = integer(node, key, path, sink),
            "burst" => out.burst = integer(node, key, path, sink),
            "headers" => out.headers = flag(node, key, path, sink),
            "calendar" => out.calendar = flag(node, key, path, sink),
            "time_zone" => out.time_zone = string(node, key, path, sink),
            _ => {}
        }
    }
    out
}

/// The entries of `map` whose keys are allowed at this level. Reports the
/// others: unknown keys as errors, reference keys that mean nothing here
/// as warnings (their values are still checked as the reference checks
/// them), or as errors too when `strict` (inside floodgate-only blocks,
/// which the reference rejects anyway).
fn known_entries<'n>(
    map: &'n MarkedMappingNode,
    allowed: &[&'static str],
    strict: bool,
    path: &str,
    sink: &mut Sink<'_>,
) -> Vec<(&'static str, &'n Node)> {
    let mut out = Vec::new();
    for (key, node) in map.iter() {
        let name = key.as_str();
        let pos = Pos::of(key.span());
        if let Some(known) = allowed.iter().find(|allowed| **allowed == name) {
            out.push((*known, node));
        } else if !strict && REFERENCE_KEYS.contains(&name) {
            let place = if path.is_empty() {
                "the top level"
            } else {
                "this level"
            };
            sink.warn(
                pos,
                path,
                format!("key '{name}' has no meaning at {place} and is ignored, as the reference server ignores it"),
            );
            if name != "metadata" {
                check_ignored(node, path, sink);
            }
        } else {
            sink.error(pos, path, unknown_key(name, allowed));
        }
    }
    out
}

/// Checks an ignored subtree as the reference's key check does: known
/// keys only, lists of mappings only, no floating-point scalars.
fn check_ignored(node: &Node, path: &str, sink: &mut Sink<'_>) {
    match node {
        Node::Scalar(scalar) => {
            if classify(scalar) == Kind::Float {
                sink.error(Pos::of(scalar.span()), path, float_reason(scalar));
            }
        }
        Node::Mapping(map) => {
            for (key, value) in map.iter() {
                if !REFERENCE_KEYS.contains(&key.as_str()) {
                    sink.error(
                        Pos::of(key.span()),
                        path,
                        format!("unknown key '{}'", key.as_str()),
                    );
                } else if key.as_str() != "metadata" {
                    check_ignored(value, path, sink);
                }
            }
        }
        Node::Sequence(list) => {
            for item in list.iter() {
                if item.as_mapping().is_none() {
                    sink.error(Pos::of(item.span()), path, "list element is not a mapping");
                } else {
                    check_ignored(item, path, sink);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
