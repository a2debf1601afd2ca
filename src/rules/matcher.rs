//! TODO: being written.
use super::{EntryLike, Level, Matched};

/// A `value` containing `*` wildcards, each matching zero or more characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardPattern {
    pattern: String,
}

pub(crate) fn lookup<'a, E: EntryLike>(_root: &'a Level, _entries: &[E]) -> Option<Matched<'a>> {
    todo!()
}
