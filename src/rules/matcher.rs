//! Descriptor matching: walking the compiled tree one request entry per level.
//!
//! This is the hot path of every decision, so it allocates nothing unless a
//! `share_threshold` wildcard matched, and wildcard values are matched by
//! [`WildcardPattern::matches`], a linear-time glob that never backtracks.
//!
//! The walk follows the reference server exactly:
//! - at each level the entry's value is looked up as an exact `key`+`value`
//!   first, then against the key's wildcard values in config order (the
//!   first that matches wins), then as the key-only default;
//! - once a level has been chosen there is no backtracking: if the chosen
//!   descriptor has no nested descriptors, the walk stops there;
//! - a rule applies only when the descriptor reached by the request's *last*
//!   entry has one. A request longer or shorter than the configured path
//!   matches nothing.

use super::{EntryLike, Level, Matched, Node};

/// A `value` containing `*` wildcards, each matching zero or more characters
/// (any number of `*`, anywhere; `*` alone matches every value, including the
/// empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardPattern {
    pattern: String,
}

impl WildcardPattern {
    /// The pattern for a config value, or `None` when it has no `*` (an
    /// exact value).
    pub fn new(pattern: &str) -> Option<WildcardPattern> {
        pattern.contains('*').then(|| WildcardPattern {
            pattern: pattern.to_owned(),
        })
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `value` matches the pattern.
    ///
    /// The text before the first `*` must be a prefix and the text after the
    /// last `*` a suffix, not overlapping; the pieces between stars must
    /// appear in order, in between. Taking each middle piece at its leftmost
    /// position is always right for `*`-only globs, so this runs in linear
    /// time with no backtracking.
    pub fn matches(&self, value: &str) -> bool {
        let Some((first, after_first)) = self.pattern.split_once('*') else {
            return self.pattern == value;
        };
        let (middle, last) = after_first.rsplit_once('*').unwrap_or(("", after_first));
        let Some(rest) = value.strip_prefix(first) else {
            return false;
        };
        let Some(mut rest) = rest.strip_suffix(last) else {
            return false;
        };
        for piece in middle.split('*').filter(|piece| !piece.is_empty()) {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

impl std::fmt::Display for WildcardPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// How one level was matched.
enum Step<'a> {
    Exact(&'a Node),
    Wildcard(&'a WildcardPattern, &'a Node),
    Default(&'a Node),
}

impl<'a> Step<'a> {
    fn node(&self) -> &'a Node {
        match self {
            Step::Exact(node) | Step::Wildcard(_, node) | Step::Default(node) => node,
        }
    }
}

fn step<'a>(level: &'a Level, key: &str, value: &str) -> Option<Step<'a>> {
    let key_node = level.keys.get(key)?;
    if let Some(node) = key_node.exact.get(value) {
        return Some(Step::Exact(node));
    }
    if let Some((pattern, node)) = key_node
        .wildcards
        .iter()
        .find(|(pattern, _)| pattern.matches(value))
    {
        return Some(Step::Wildcard(pattern, node));
    }
    key_node.default.as_ref().map(Step::Default)
}

pub(crate) fn lookup<'a, E: EntryLike>(root: &'a Level, entries: &[E]) -> Option<Matched<'a>> {
    let last = entries.len().checked_sub(1)?;
    let mut level = root;
    let mut shared: Vec<(usize, &'a str)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let step = step(level, entry.key(), entry.value())?;
        if let Step::Wildcard(pattern, node) = &step
            && node.share_threshold
        {
            shared.push((index, pattern.as_str()));
        }
        let node = step.node();
        if index == last {
            return node.rule.as_ref().map(|rule| Matched { rule, shared });
        }
        if node.children.keys.is_empty() {
            // The reference stops at a descriptor with no nested descriptors:
            // the request is deeper than the config, so nothing applies.
            return None;
        }
        level = &node.children;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> WildcardPattern {
        WildcardPattern::new(p).unwrap_or_else(|| panic!("{p} has no star"))
    }

    #[test]
    fn no_star_is_not_a_pattern() {
        assert!(WildcardPattern::new("plain").is_none());
        assert!(WildcardPattern::new("").is_none());
    }

    #[test]
    fn prefix_suffix_middle() {
        assert!(pat("foo*").matches("foo"));
        assert!(pat("foo*").matches("foobar"));
        assert!(!pat("foo*").matches("fo"));
        assert!(!pat("foo*").matches("xfoo"));

        assert!(pat("*bar").matches("bar"));
        assert!(pat("*bar").matches("foobar"));
        assert!(!pat("*bar").matches("barx"));

        assert!(pat("/api*v1").matches("/api/v1"));
        assert!(pat("/api*v1").matches("/apiv1"));
        assert!(!pat("/api*v1").matches("/api/v2"));
        assert!(
            !pat("bar*b").matches("bar"),
            "prefix and suffix must not overlap"
        );
        assert!(pat("bar*b").matches("barb"));
    }

    #[test]
    fn several_stars() {
        let p = pat("svc*ep*rpc");
        assert!(p.matches("svcAepBrpc"));
        assert!(p.matches("svceprpc"));
        assert!(p.matches("svc-ep-ep-rpc"));
        assert!(!p.matches("svcrpc"));
        assert!(!p.matches("svc-pe-rpc"));
        assert!(pat("a**b").matches("ab"));
        assert!(pat("*a*").matches("xax"));
        assert!(!pat("*a*").matches("xyz"));
        assert!(pat("*a*b*a*").matches("aba"));
        assert!(!pat("*a*b*a*").matches("ab"));
    }

    #[test]
    fn star_alone_matches_everything_including_empty() {
        assert!(pat("*").matches(""));
        assert!(pat("*").matches("anything at all"));
        assert!(pat("**").matches(""));
        assert!(pat("x*").matches("x"));
    }

    #[test]
    fn no_blowup_on_adversarial_input() {
        let p = pat(&format!("{}b", "*a".repeat(50)));
        let value = "a".repeat(100_000);
        assert!(!p.matches(&value));
        assert!(p.matches(&format!("{value}b")));
    }

    #[test]
    fn unicode_values() {
        assert!(pat("é*ü").matches("éaü"));
        assert!(pat("*ü").matches("ü"));
    }
}
