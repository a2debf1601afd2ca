//! A domain's `response:` block and its `fallbacks:` groups, compiled from
//! their raw structs with errors by file, line and path.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Sink;
use crate::config::error::Pos;
use crate::config::schema::{RawFallback, RawResponse, Text};
use crate::rules::policy::{
    BodyTemplate, FallbackGroup, HeaderStyle, ResetFormat, ResponsePolicy, is_json_content_type,
};

pub(super) fn choice<T: Copy>(
    text: &Text,
    key: &str,
    names: &[(&str, T)],
    sink: &mut Sink<'_>,
) -> Option<T> {
    let found = names
        .iter()
        .find(|(name, _)| *name == text.value)
        .map(|(_, value)| *value);
    if found.is_none() {
        let expected: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
        sink.error(
            text.pos,
            "response",
            format!(
                "unknown {key} '{}' (expected one of: {})",
                text.value,
                expected.join(", ")
            ),
        );
    }
    found
}

/// A `response:` block, checked; `None` after an error.
pub(super) fn build_response(raw: &RawResponse, sink: &mut Sink<'_>) -> Option<ResponsePolicy> {
    let mut ok = true;
    let mut policy = ResponsePolicy {
        content_type: Arc::from("application/json"),
        ..ResponsePolicy::default()
    };
    if let Some(text) = &raw.headers {
        match choice(text, "headers", &HeaderStyle::NAMES, sink) {
            Some(style) => policy.headers = style,
            None => ok = false,
        }
    }
    if let Some(text) = &raw.reset {
        match choice(text, "reset", &ResetFormat::NAMES, sink) {
            Some(format) => policy.reset = format,
            None => ok = false,
        }
    }
    if let Some(text) = &raw.content_type {
        let value = text.value.trim();
        let valid = value.contains('/')
            && value
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t');
        if valid {
            policy.content_type = Arc::from(value);
        } else {
            sink.error(
                text.pos,
                "response",
                format!(
                    "content_type '{}' is not a media type such as application/json or text/plain",
                    text.value
                ),
            );
            ok = false;
        }
    }
    if let Some((text, block)) = &raw.body {
        match BodyTemplate::parse(&text.value, is_json_content_type(&policy.content_type)) {
            Ok(template) => policy.body = Some(template),
            Err(error) => {
                // A block scalar's text starts on the line after `|`.
                let offset = error.line + usize::from(*block);
                let pos = Pos {
                    line: text.pos.line.map(|line| line + offset),
                    column: if offset == 0 { text.pos.column } else { None },
                };
                sink.error(pos, "response.body", error.message);
                ok = false;
            }
        }
    }
    ok.then_some(policy)
}

/// `fallbacks:`, checked: the groups, and every shape with its place for
/// the lookup that waits until the domain is complete.
#[allow(clippy::type_complexity)]
pub(super) fn build_fallbacks(
    raw: &[RawFallback],
    sink: &mut Sink<'_>,
) -> (Vec<FallbackGroup>, Vec<(Pos, String, Vec<String>)>) {
    let mut groups = Vec::new();
    let mut shapes = Vec::new();
    let mut names: HashMap<String, Pos> = HashMap::new();
    // Every shape of every group, with the group that has it.
    let mut owners: HashMap<Vec<String>, (String, Pos)> = HashMap::new();
    for item in raw {
        let name = match item.name.as_ref().filter(|text| !text.value.is_empty()) {
            Some(text) => {
                if let Some(first) = names.insert(text.value.clone(), text.pos) {
                    sink.error(
                        text.pos,
                        &item.path,
                        format!(
                            "duplicate fallback group name '{}' (first at line {})",
                            text.value,
                            first.line.map_or("?".to_owned(), |l| l.to_string())
                        ),
                    );
                }
                text.value.clone()
            }
            None => {
                sink.error(
                    item.pos,
                    &item.path,
                    "a fallback group needs a non-empty 'name'",
                );
                continue;
            }
        };
        let Some((order_pos, order)) = &item.order else {
            sink.error(
                item.pos,
                &item.path,
                "a fallback group needs an 'order': descriptor shapes, most preferred first, e.g. [[user, seller], [user], [remote_address]]",
            );
            continue;
        };
        if order.len() < 2 {
            sink.error(
                *order_pos,
                &item.path,
                "a fallback group's 'order' needs at least two shapes (with one there is nothing to fall back to)",
            );
        }
        let mut group = Vec::new();
        for (index, (pos, keys)) in order.iter().enumerate() {
            let path = format!("{}.order[{index}]", item.path);
            let keys: Vec<String> = keys.iter().map(|text| text.value.clone()).collect();
            if keys.is_empty() || keys.iter().any(String::is_empty) {
                sink.error(
                    *pos,
                    &path,
                    "a descriptor shape needs at least one key, and no empty key",
                );
                continue;
            }
            match owners.get(&keys) {
                Some((owner, first)) => {
                    let line = first.line.map_or("?".to_owned(), |l| l.to_string());
                    let reason = if *owner == name {
                        format!(
                            "shape [{}] appears twice in group '{name}' (first at line {line})",
                            keys.join(", ")
                        )
                    } else {
                        format!(
                            "shape [{}] is already in fallback group '{owner}' (line {line}); a descriptor shape can be in one group only",
                            keys.join(", ")
                        )
                    };
                    sink.error(*pos, &path, reason);
                    continue;
                }
                None => {
                    owners.insert(keys.clone(), (name.clone(), *pos));
                }
            }
            shapes.push((*pos, path, keys.clone()));
            group.push(keys);
        }
        groups.push(FallbackGroup {
            name: Arc::from(name.as_str()),
            order: group,
        });
    }
    (groups, shapes)
}
