//! Where rules come from: THE way anyone loads them. `floodgate check`,
//! `floodgate serve` at start and the reloader all go through [`Source`], so
//! they agree on what `--config` names: a file, a directory, the rule
//! set built into the binary, or an xDS management server
//! (`xds://host:port`), which pushes rules rather than being read: its
//! stream is driven by the server's reloader (`server::xds`), each response
//! loaded by [`super::xds::load_response`].

use std::path::{Path, PathBuf};

use super::xds::{XDS_SCHEME, XdsSettings};
use super::{ConfigError, ConfigErrors, LoadOptions, Loaded};

/// The `--config` value that selects the built-in rule set.
pub const EMBEDDED_CONFIG: &str = "embedded:";

/// A source of rules.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A YAML file, or a directory of `*.yaml`/`*.yml` files.
    Path(PathBuf),
    /// The repository's `config/` files compiled into the binary
    /// ([`EMBEDDED_RULES`]), served when no config is named and `./config`
    /// does not exist.
    BuiltIn,
    /// An xDS management server that pushes the whole rule set on every
    /// change (state of the world over ADS).
    Xds(Box<XdsSettings>),
}

impl Source {
    /// The source `--config` names: [`EMBEDDED_CONFIG`] is the built-in set,
    /// `xds://host:port` a management server (with the reference's default
    /// settings), anything else a path.
    pub fn from_arg(path: &Path) -> Source {
        if path.as_os_str() == EMBEDDED_CONFIG {
            return Source::BuiltIn;
        }
        match path.to_str().and_then(|text| text.strip_prefix(XDS_SCHEME)) {
            Some(server) => Source::Xds(Box::new(XdsSettings::new(server.trim_end_matches('/')))),
            None => Source::Path(path.to_path_buf()),
        }
    }

    /// Whether rules are pushed to floodgate (by an xDS server) rather than
    /// read by it: such a source is never loaded, watched or reloaded.
    pub fn is_pushed(&self) -> bool {
        matches!(self, Source::Xds(_))
    }

    /// Loads the whole rule set, with its warnings and version.
    pub fn load(&self, options: &LoadOptions) -> Result<Loaded, ConfigErrors> {
        match self {
            Source::Path(path) => super::load_path_with_warnings(path, options),
            Source::BuiltIn => {
                let sources: Vec<(PathBuf, String)> = EMBEDDED_RULES
                    .iter()
                    .map(|(name, text)| (Path::new("embedded").join(name), (*text).to_owned()))
                    .collect();
                super::load_sources_with_warnings(&sources, options)
            }
            Source::Xds(_) => Err(ConfigErrors(vec![ConfigError {
                file: self.display(),
                line: None,
                column: None,
                rule_path: String::new(),
                reason: "an xDS server pushes its rules to `floodgate serve`; they cannot be \
                         read from here"
                    .to_owned(),
            }])),
        }
    }

    /// What to watch for changes: `None` for the built-in rules, which
    /// never change.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Path(path) => Some(path),
            Source::BuiltIn | Source::Xds(_) => None,
        }
    }

    /// The source as `--config` spells it, for logs and status reports.
    pub fn display(&self) -> PathBuf {
        match self {
            Source::Path(path) => path.clone(),
            Source::BuiltIn => PathBuf::from(EMBEDDED_CONFIG),
            Source::Xds(settings) => PathBuf::from(format!("{XDS_SCHEME}{}", settings.server)),
        }
    }
}

/// The repository's `config/*.yaml`, compiled in: (file name, text).
pub const EMBEDDED_RULES: &[(&str, &str)] = &[
    (
        "campaigns.yaml",
        include_str!("../../config/campaigns.yaml"),
    ),
    ("courses.yaml", include_str!("../../config/courses.yaml")),
    ("exotel.yaml", include_str!("../../config/exotel.yaml")),
    ("explo.yaml", include_str!("../../config/explo.yaml")),
    ("xola.yaml", include_str!("../../config/xola.yaml")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_are_the_config_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = EMBEDDED_RULES
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&embedded),
            names(&on_disk),
            "EMBEDDED_RULES must list every file of config/"
        );
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn an_xds_url_names_a_management_server() {
        let source = Source::from_arg(Path::new("xds://envoy-gateway:18001"));
        let Source::Xds(settings) = &source else {
            panic!("{source:?}")
        };
        assert_eq!(settings.server, "envoy-gateway:18001");
        assert_eq!(settings.node_id, "default");
        assert!(source.is_pushed());
        assert_eq!(source.path(), None);
        assert_eq!(source.display(), PathBuf::from("xds://envoy-gateway:18001"));
        assert!(source.load(&LoadOptions::default()).is_err());
        assert!(!Source::from_arg(Path::new("xds/rules")).is_pushed());
    }

    #[test]
    fn embedded_rules_load() {
        let loaded = Source::from_arg(Path::new(EMBEDDED_CONFIG))
            .load(&LoadOptions::default())
            .unwrap();
        assert_eq!(
            super::super::summary(&loaded.rules).len(),
            EMBEDDED_RULES.len()
        );
    }
}
