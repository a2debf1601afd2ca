//! The compiled, immutable rule tree and descriptor matching.
//!
//! [`crate::config`] turns YAML into a [`RuleSet`]; the service asks it, per
//! request descriptor, which [`Rule`] applies. Matching follows the reference
//! server exactly: at each level an exact `key`+`value` beats a wildcard
//! value, which beats a key-only default; a rule applies only at the depth of
//! the descriptor's last entry.

mod matcher;
pub mod overrides;
pub mod policy;

use std::sync::Arc;

use crate::limit::Limit;
use crate::rules::policy::{FallbackGroup, ResponsePolicy};

pub use matcher::WildcardPattern;

/// The rule tree's maps. Every request looks up its domain and each entry's
/// key and value in them, so they hash with foldhash rather than SipHash
/// (seeded per process; requests only look up, never insert, so hash
/// flooding cannot grow them).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, hashbrown::DefaultHashBuilder>;

/// Something with a descriptor entry's key and value (a protobuf entry, a pair
/// of strings in tests).
pub trait EntryLike {
    /// The entry's key.
    fn key(&self) -> &str;
    /// The entry's value.
    fn value(&self) -> &str;
}

impl<K: AsRef<str>, V: AsRef<str>> EntryLike for (K, V) {
    fn key(&self) -> &str {
        self.0.as_ref()
    }
    fn value(&self) -> &str {
        self.1.as_ref()
    }
}

/// All loaded domains.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub(crate) domains: HashMap<String, Domain>,
}

/// One domain's descriptor tree.
#[derive(Debug, Default)]
pub struct Domain {
    /// The domain's name.
    pub name: String,
    /// The same name, shared: what each decision of the domain carries
    /// ([`crate::decide::ResponseContext::domain`]) without copying it.
    pub(crate) shared_name: Arc<str>,
    /// The top level of descriptors.
    pub(crate) root: Level,
    /// The `response:` block: headers and 429 body (`None`: as the reference).
    pub(crate) response: Option<Arc<ResponsePolicy>>,
    /// The `fallbacks:` groups.
    pub(crate) fallbacks: Vec<FallbackGroup>,
}

/// The descriptors at one depth, by key.
#[derive(Debug, Default)]
pub(crate) struct Level {
    pub(crate) keys: HashMap<String, KeyNode>,
}

/// The descriptors of one key at one depth.
#[derive(Debug, Default)]
pub(crate) struct KeyNode {
    /// `key` + exact `value`.
    pub(crate) exact: HashMap<String, Node>,
    /// `key` + a `value` containing `*`, in config order.
    pub(crate) wildcards: Vec<(WildcardPattern, Node)>,
    /// `key` with no `value`: matches any value, each value counted separately.
    pub(crate) default: Option<Node>,
}

/// One descriptor of the config: an optional rule and the level below it.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) rule: Option<Arc<Rule>>,
    pub(crate) children: Level,
    /// A wildcard descriptor with `share_threshold: true`: every value it
    /// matches shares one counter, keyed by the pattern.
    pub(crate) share_threshold: bool,
}

/// One configured rule: what applies when a request descriptor ends here.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// A stable, unique id within its rule set, e.g. `domain.key_value.key`
    /// as the reference names its stats (`key_value` for exact and wildcard
    /// matches, `key` for key-only defaults). Bounded by the number of rules,
    /// so it is safe as a metric label.
    pub id: Arc<str>,
    /// The limits; empty when `unlimited`. One for a reference `rate_limit`.
    pub limits: Vec<RuleLimit>,
    /// `unlimited: true`: always OK, nothing counted.
    pub unlimited: bool,
    /// Report OK but still count.
    pub shadow_mode: bool,
    /// An over-limit quota-mode descriptor does not deny by itself.
    pub quota_mode: bool,
    /// Names of rules this rule replaces when both match one request.
    pub replaces: Vec<String>,
    /// The reference `rate_limit`'s `name` (also for an unlimited rule, which
    /// has no [`RuleLimit`] to carry it); `None` for `rate_limits`, whose
    /// limits are named one by one.
    pub name: Option<Arc<str>>,
    /// The limits were written as one reference `rate_limit` (a fixed window
    /// of one unit): `/rlconfig` prints it as the reference does.
    pub reference_form: bool,
    /// The rule is one `rate_limit` on a fixed window, whatever its
    /// `unit_multiplier`: hits of denied requests are counted, as the
    /// reference counts them. Sliding windows, token buckets and
    /// `rate_limits` lists count admitted hits only.
    pub counts_denied_hits: bool,
    /// The index in `limits` of the limit that a domain's `response.headers`
    /// describe (`headers: true` on one item of `rate_limits`); `None`: the
    /// most restrictive limit, as for the status.
    pub header_limit: Option<usize>,
    /// `detailed_metric: true` on the rule's descriptor. The reference then
    /// names its stats after the request's values; `id` never does, so a
    /// metrics layer that honours this must bound the cardinality itself.
    pub detailed_metric: bool,
    /// `value_to_metric: true`, per level of the rule's path (index = entry
    /// index in a matching request): the reference names that level's stat
    /// after the request's value instead of the configured one.
    pub value_to_metric: Vec<bool>,
    /// The rule's config path, one level per entry, kept only when some
    /// level has `value_to_metric` or the rule `detailed_metric` (empty
    /// otherwise): what the reference's stat key is built from then.
    pub stat_levels: Vec<StatLevel>,
}

/// One level of a rule's config path, as the reference's `value_to_metric`
/// stat key needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatLevel {
    /// `key_value`, or `key` for a descriptor without a value.
    pub configured: Arc<str>,
    /// `value_to_metric: true` on this level.
    pub value_to_metric: bool,
    /// This level is a `share_threshold` wildcard: its stat keeps the
    /// pattern even with `value_to_metric`.
    pub shared: bool,
}

/// One limit of a rule, with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleLimit {
    /// The `name` given in the config, if any (used by `replaces` and reports).
    pub name: Option<Arc<str>>,
    /// The limit.
    pub limit: Limit,
}

/// The rule that applies to one request descriptor.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    /// The rule.
    pub rule: &'a Arc<Rule>,
    /// Entries (by index in the request descriptor) whose value is replaced
    /// by the matched wildcard pattern in the counter key, because the
    /// wildcard has `share_threshold: true`. Empty in the common case.
    pub shared: Vec<(usize, &'a str)>,
}

impl RuleSet {
    /// A rule set with no domains: every request is OK with no limit.
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    /// No domain has rules.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The domain named `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// Every domain, in no particular order.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }

    /// The rule for a request descriptor of `domain`, if any.
    pub fn lookup<'a, E: EntryLike>(&'a self, domain: &str, entries: &[E]) -> Option<Matched<'a>> {
        self.domains.get(domain)?.lookup(entries)
    }
}

impl Domain {
    /// The rule for a request descriptor, if any: walks the tree one entry per
    /// level, preferring exact value, then wildcard, then key-only default,
    /// and returns the rule of the node reached by the last entry.
    pub fn lookup<'a, E: EntryLike>(&'a self, entries: &[E]) -> Option<Matched<'a>> {
        matcher::lookup(&self.root, entries)
    }

    /// Every rule of the domain with its depth (1 for a top-level
    /// descriptor), in no particular order.
    pub fn rules(&self) -> Vec<(&Arc<Rule>, usize)> {
        let mut out = Vec::new();
        self.root.collect_rules(1, &mut out);
        out
    }

    /// How deep the descriptor tree goes (0 for a domain with no descriptors).
    pub fn depth(&self) -> usize {
        self.root.depth()
    }

    /// The domain's name as a shared string (cloning it never allocates).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.shared_name
    }

    /// The domain's `response:` block, if it has one.
    pub fn response(&self) -> Option<&Arc<ResponsePolicy>> {
        self.response.as_ref()
    }

    /// The domain's identity fallback groups.
    pub fn fallbacks(&self) -> &[FallbackGroup] {
        &self.fallbacks
    }

    /// Whether some configured descriptor path has exactly these keys, one
    /// per level (whatever its values).
    pub fn has_key_path<K: AsRef<str>>(&self, keys: &[K]) -> bool {
        self.root.has_key_path(keys)
    }
}

impl Level {
    fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.keys.values().flat_map(|key_node| {
            key_node
                .exact
                .values()
                .chain(key_node.wildcards.iter().map(|(_, node)| node))
                .chain(key_node.default.iter())
        })
    }

    fn collect_rules<'a>(&'a self, depth: usize, out: &mut Vec<(&'a Arc<Rule>, usize)>) {
        for node in self.nodes() {
            if let Some(rule) = &node.rule {
                out.push((rule, depth));
            }
            node.children.collect_rules(depth + 1, out);
        }
    }

    fn has_key_path<K: AsRef<str>>(&self, keys: &[K]) -> bool {
        let Some((first, rest)) = keys.split_first() else {
            return false;
        };
        let Some(key_node) = self.keys.get(first.as_ref()) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        key_node
            .exact
            .values()
            .chain(key_node.wildcards.iter().map(|(_, node)| node))
            .chain(key_node.default.iter())
            .any(|node| node.children.has_key_path(rest))
    }

    fn depth(&self) -> usize {
        self.nodes()
            .map(|node| 1 + node.children.depth())
            .max()
            .unwrap_or(0)
    }
}
