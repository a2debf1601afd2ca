//! Config errors as values: each names the file, the line and column, the
//! rule path and the reason, and a load reports every error it found.

use std::fmt;
use std::path::PathBuf;

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as it was named to the loader.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column, when the problem has a place in the file.
    pub column: Option<usize>,
    /// Where in the rules, e.g. `domain rl, descriptors[1].descriptors[0]`;
    /// empty when the problem is not inside a rule.
    pub rule_path: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.reason)?;
        if !self.rule_path.is_empty() {
            write!(f, " ({})", self.rule_path)?;
        }
        Ok(())
    }
}

/// Every error found while loading a rule set, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never true for an error returned by a load).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A place in a file: what a [`ConfigError`] needs besides its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
}

impl Pos {
    pub(crate) fn of(span: &marked_yaml::Span) -> Pos {
        match span.start() {
            Some(marker) => Pos {
                line: Some(marker.line()),
                column: Some(marker.column()),
            },
            None => Pos::default(),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}"),
            (Some(line), None) => write!(f, "{line}"),
            _ => f.write_str("?"),
        }
    }
}
