//! Reading YAML scalars as the reference's Go YAML library types them:
//! integers, booleans, strings and floats, with the position of each for
//! errors; the small node helpers [`super`] builds its raw structs with.

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::{Flag, Int, Text};
use crate::config::Sink;
use crate::config::error::Pos;

pub(super) fn unknown_key(name: &str, allowed: &[&str]) -> String {
    let suggestion = allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    match suggestion {
        Some((_, candidate)) => format!("unknown key '{name}' (did you mean '{candidate}'?)"),
        None => format!(
            "unknown key '{name}' (expected one of: {})",
            allowed.join(", ")
        ),
    }
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

/// How YAML 1.1 (and so the reference) reads a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str,
}

pub(super) fn classify(scalar: &MarkedScalarNode) -> Kind {
    if !scalar.may_coerce() {
        // Quoted or block scalars are always strings.
        return Kind::Str;
    }
    let text = scalar.as_str();
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Kind::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Kind::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Kind::Float,
        _ => {}
    }
    let plain: String = text.chars().filter(|c| *c != '_').collect();
    if let Some(value) = parse_int(&plain) {
        // yaml.v2 reads a larger one as a uint64, which the reference's key
        // check rejects like a float.
        return if value > i128::from(i64::MAX) {
            Kind::Float
        } else {
            Kind::Int(value)
        };
    }
    if is_float(&plain) {
        return Kind::Float;
    }
    Kind::Str
}

/// An integer as Go's `strconv.ParseInt(s, 0, 64)` (or `ParseUint`) reads it.
pub(super) fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(body) = lower.strip_prefix("0x") {
        (16, body)
    } else if let Some(body) = lower.strip_prefix("0b") {
        (2, body)
    } else if let Some(body) = lower.strip_prefix("0o") {
        (8, body)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    let value = i128::from(magnitude);
    if negative {
        (value <= i128::from(i64::MAX) + 1).then_some(-value)
    } else {
        Some(value)
    }
}

/// YAML 1.1's float syntax as yaml.v2 checks it:
/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
pub(super) fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => digits(e.strip_prefix(['-', '+']).unwrap_or(e)),
    };
    mantissa_ok && exponent_ok
}

pub(super) fn float_reason(scalar: &MarkedScalarNode) -> String {
    format!(
        "'{}' is a floating-point number or too large an integer, which the reference server rejects (error checking config); quote it if it is a string",
        scalar.as_str()
    )
}

/// Where a mapping is best pointed at: its first key (the parser marks a
/// block mapping's start after that key).
pub(super) fn map_pos(map: &MarkedMappingNode) -> Pos {
    match map.keys().next() {
        Some(key) => Pos::of(key.span()),
        None => Pos::of(map.span()),
    }
}

pub(super) fn kind_name(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a scalar",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

pub(super) fn pos(node: &Node) -> Pos {
    Pos::of(node.span())
}

pub(super) fn string(node: &Node, key: &str, path: &str, sink: &mut Sink<'_>) -> Option<Text> {
    let Node::Scalar(scalar) = node else {
        sink.error(
            pos(node),
            path,
            format!("'{key}' must be a string, found {}", kind_name(node)),
        );
        return None;
    };
    let value = match classify(scalar) {
        Kind::Null => String::new(),
        Kind::Float => {
            sink.error(pos(node), path, float_reason(scalar));
            return None;
        }
        Kind::Bool(_) | Kind::Int(_) | Kind::Str => scalar.as_str().to_owned(),
    };
    Some(Text {
        value,
        pos: pos(node),
    })
}

pub(super) fn flag(node: &Node, key: &str, path: &str, sink: &mut Sink<'_>) -> Flag {
    let found = match node {
        Node::Scalar(scalar) => match classify(scalar) {
            Kind::Bool(value) => {
                return Flag {
                    value,
                    pos: pos(node),
                };
            }
            Kind::Null => {
                return Flag {
                    value: false,
                    pos: pos(node),
                };
            }
            Kind::Float => {
                sink.error(pos(node), path, float_reason(scalar));
                return Flag::default();
            }
            Kind::Str if !scalar.may_coerce() => format!("the string \"{}\"", scalar.as_str()),
            _ => format!("'{}'", scalar.as_str()),
        },
        other => kind_name(other).to_owned(),
    };
    sink.error(
        pos(node),
        path,
        format!("'{key}' must be true or false, found {found}"),
    );
    Flag::default()
}

pub(super) fn integer(node: &Node, key: &str, path: &str, sink: &mut Sink<'_>) -> Option<Int> {
    let found = match node {
        Node::Scalar(scalar) => match classify(scalar) {
            Kind::Int(value) => {
                return Some(Int {
                    value,
                    pos: pos(node),
                });
            }
            Kind::Null => return None,
            Kind::Float => {
                sink.error(
                    pos(node),
                    path,
                    format!("'{key}' must be an integer, found '{}'", scalar.as_str()),
                );
                return None;
            }
            Kind::Str if !scalar.may_coerce() => format!("the string \"{}\"", scalar.as_str()),
            _ => format!("'{}'", scalar.as_str()),
        },
        other => kind_name(other).to_owned(),
    };
    sink.error(
        pos(node),
        path,
        format!("'{key}' must be an integer, found {found}"),
    );
    None
}

pub(super) fn optional_mapping<'n>(
    node: &'n Node,
    key: &str,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<&'n MarkedMappingNode> {
    match node {
        Node::Mapping(map) => Some(map),
        Node::Scalar(scalar) if classify(scalar) == Kind::Null => None,
        other => {
            sink.error(
                pos(other),
                path,
                format!("'{key}' must be a mapping, found {}", kind_name(other)),
            );
            None
        }
    }
}

/// A list whose elements must all be mappings; a null is an empty list.
pub(super) fn list_of_mappings<'n>(
    node: &'n Node,
    path: &str,
    sink: &mut Sink<'_>,
) -> Vec<(usize, &'n MarkedMappingNode)> {
    match node {
        Node::Sequence(list) => {
            let mut out = Vec::new();
            for (index, item) in list.iter().enumerate() {
                match item {
                    Node::Mapping(map) => out.push((index, map)),
                    other => sink.error(
                        pos(other),
                        &format!("{path}[{index}]"),
                        format!("list element must be a mapping, found {}", kind_name(other)),
                    ),
                }
            }
            out
        }
        Node::Scalar(scalar) if classify(scalar) == Kind::Null => Vec::new(),
        other => {
            let key = path.rsplit('.').next().unwrap_or(path);
            sink.error(
                pos(other),
                path,
                format!("'{key}' must be a list, found {}", kind_name(other)),
            );
            Vec::new()
        }
    }
}
