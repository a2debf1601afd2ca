//! TODO: being written (stub so the server compiles).
use std::path::Path;

use crate::rules::RuleSet;

#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    pub merge_domains: bool,
}

#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

pub fn load_path(_path: &Path, _opts: &LoadOptions) -> Result<RuleSet, ConfigErrors> {
    todo!()
}

pub fn summary(_rules: &RuleSet) -> Vec<String> {
    todo!()
}
