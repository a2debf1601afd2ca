use super::*;

fn istio_env(root: &str) -> ReferenceEnv {
    ReferenceEnv::from_vars([
        ("RUNTIME_ROOT", root),
        ("RUNTIME_SUBDIRECTORY", "ratelimit"),
        ("RUNTIME_IGNOREDOTFILES", "true"),
        ("RUNTIME_WATCH_ROOT", "false"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_URL", "redis:6379"),
        ("USE_STATSD", "false"),
        ("LOG_LEVEL", "debug"),
    ])
}

fn default_of<'a>(resolved: &'a Resolved, id: &str) -> Option<&'a str> {
    resolved
        .defaults
        .iter()
        .find(|(k, _)| *k == id)
        .map(|(_, v)| v.as_str())
}

#[test]
fn istio_variables_resolve_the_runtime_directory() {
    let resolved = istio_env("/data").resolve(true).unwrap();
    assert_eq!(
        default_of(&resolved, "config"),
        Some("/data/ratelimit/config")
    );
    assert!(resolved.notes.iter().any(|n| {
        n.message
            .contains("REDIS_URL=redis:6379: counters are kept in that Redis")
    }));
    // Everything Istio sets is honoured: nothing to warn about.
    assert!(
        resolved.notes.iter().all(|n| n.level == NoteLevel::Info),
        "{:?}",
        resolved.notes
    );
    assert_eq!(default_of(&resolved, "grpc_addr"), None);
}

#[test]
fn without_watch_root_the_app_directory_is_config() {
    let env = ReferenceEnv::from_vars([
        ("RUNTIME_ROOT", "/srv"),
        ("RUNTIME_SUBDIRECTORY", "rl"),
        ("RUNTIME_APPDIRECTORY", "rules"),
        ("RUNTIME_WATCH_ROOT", "false"),
    ]);
    let resolved = env.resolve(true).unwrap();
    assert_eq!(default_of(&resolved, "config"), Some("/srv/rl/config"));
    assert_eq!(default_of(&resolved, "config_watch_root"), None);
    assert!(
        resolved
            .notes
            .iter()
            .any(|n| n.level == NoteLevel::Warn && n.message.contains("RUNTIME_APPDIRECTORY"))
    );
}

#[test]
fn cheap_reference_variables_become_flag_defaults() {
    let resolved = ReferenceEnv::from_vars([
        ("CACHE_KEY_PREFIX", "rl_"),
        ("REDIS_TIMEOUT", "2s"),
        ("RESPONSE_DYNAMIC_METADATA", "false"),
    ])
    .resolve(true)
    .unwrap();
    assert_eq!(default_of(&resolved, "key_prefix"), Some("rl_"));
    assert_eq!(default_of(&resolved, "store_timeout"), Some("2000000us"));
    assert_eq!(default_of(&resolved, "dynamic_metadata"), Some("false"));
    assert!(resolved.notes.is_empty(), "{:?}", resolved.notes);
    let bad = ReferenceEnv::from_vars([("REDIS_TIMEOUT", "soon")]);
    assert!(matches!(
        bad.resolve(true),
        Err(SettingsError::NotADuration { .. })
    ));
}

#[test]
fn ignored_variables_warn_once_and_fixed_ones_only_when_different() {
    let resolved = ReferenceEnv::from_vars([
        ("USE_DOG_STATSD_MOGRIFIERS", "A"),
        ("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "true"),
        ("RUNTIME_IGNOREDOTFILES", "false"),
        ("REDIS_PIPELINE_WINDOW", "150us"),
    ])
    .resolve(true)
    .unwrap();
    let warned: Vec<&str> = resolved
        .notes
        .iter()
        .filter(|n| n.level == NoteLevel::Warn)
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(warned.len(), 3, "{warned:?}");
    assert!(
        warned
            .iter()
            .any(|m| m.starts_with("USE_DOG_STATSD_MOGRIFIERS=A is ignored"))
    );
    assert!(
        warned
            .iter()
            .any(|m| m.starts_with("RUNTIME_IGNOREDOTFILES=false is ignored"))
    );
    assert!(
        warned
            .iter()
            .any(|m| m.starts_with("REDIS_PIPELINE_WINDOW=150us"))
    );
}

#[test]
fn restricted_variables_refuse_other_values() {
    for (name, value) in [
        ("CONFIG_TYPE", "GRPC_XDS_DELTA"),
        ("BACKEND_TYPE", "memcache"),
    ] {
        let err = ReferenceEnv::from_vars([(name, value)]).resolve(true);
        assert!(
            matches!(err, Err(SettingsError::Refused { name: n, .. }) if n == name),
            "{name}={value}: {err:?}"
        );
    }
    for (name, value) in [
        ("CONFIG_TYPE", "file"),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
        ("BACKEND_TYPE", "REDIS"),
    ] {
        assert!(
            ReferenceEnv::from_vars([(name, value)])
                .resolve(true)
                .is_ok()
        );
    }
}

#[test]
fn known_variables_are_listed_once() {
    let mut names: Vec<&str> = KNOWN_REFERENCE_VARS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a variable is listed twice");
}

/// The README's table of reference variables says what
/// [`KNOWN_REFERENCE_VARS`] says: the same names, and for each the same
/// kind of handling (and flag).
#[test]
fn the_readme_table_matches_the_known_variables() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("### Reference environment variables")
        .expect("the README has a reference variables section");
    let mut rows = BTreeMap::new();
    for line in readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, what) = (cells[1], cells[2]);
        for name in names.split(',').map(|n| n.trim().trim_matches('`')) {
            assert!(
                rows.insert(name.to_owned(), what.to_owned()).is_none(),
                "{name} twice in the README"
            );
        }
    }
    for (name, handling) in KNOWN_REFERENCE_VARS {
        let what = rows
            .remove(*name)
            .unwrap_or_else(|| panic!("{name} is missing from the README table"));
        let ok = match handling {
            Handling::Flag(flag) => what.starts_with("yes") && what.contains(flag),
            Handling::FlagDefault(flag) => what.starts_with("default of") && what.contains(flag),
            Handling::Fixed { value, .. } => what.starts_with("always") && what.contains(value),
            Handling::Ignored(_) => what.starts_with("ignored"),
            Handling::Restricted { .. } => what.starts_with("restricted"),
        };
        assert!(
            ok,
            "README says `{what}` for {name}, settings.rs {handling:?}"
        );
    }
    assert!(
        rows.is_empty(),
        "the README lists variables settings.rs does not know: {:?}",
        rows.keys()
    );
}

#[test]
fn app_directory_and_ports() {
    let env = ReferenceEnv::from_vars([
        ("RUNTIME_ROOT", "/srv"),
        ("RUNTIME_APPDIRECTORY", "rules"),
        ("PORT", "9000"),
        ("GRPC_PORT", "9001"),
        ("GRPC_HOST", "127.0.0.1"),
        ("DEBUG_HOST", "::1"),
    ]);
    let resolved = env.resolve(false).unwrap();
    assert_eq!(default_of(&resolved, "config"), Some("/srv/rules"));
    // RUNTIME_WATCH_ROOT defaults to true: the root symlink is watched.
    assert_eq!(default_of(&resolved, "config_watch_root"), Some("/srv"));
    assert_eq!(default_of(&resolved, "http_addr"), Some("0.0.0.0:9000"));
    assert_eq!(default_of(&resolved, "grpc_addr"), Some("127.0.0.1:9001"));
    assert_eq!(resolved.admin_addr, Some("[::1]:6070".parse().unwrap()));
}

#[test]
fn no_config_anywhere_means_embedded() {
    let resolved = ReferenceEnv::default().resolve(false).unwrap();
    assert_eq!(default_of(&resolved, "config"), Some(EMBEDDED_CONFIG));
    let resolved = ReferenceEnv::default().resolve(true).unwrap();
    assert_eq!(default_of(&resolved, "config"), None);
}

#[test]
fn tls_variables_apply_only_with_use_tls() {
    let vars = [
        ("GRPC_SERVER_TLS_CERT", "/tls/cert.pem"),
        ("GRPC_SERVER_TLS_KEY", "/tls/key.pem"),
        ("GRPC_CLIENT_TLS_CACERT", "/tls/ca.pem"),
    ];
    let off = ReferenceEnv::from_vars(vars).resolve(true).unwrap();
    assert_eq!(default_of(&off, "tls_cert"), None);
    let on = ReferenceEnv::from_vars(vars.into_iter().chain([("GRPC_SERVER_USE_TLS", "true")]))
        .resolve(true)
        .unwrap();
    assert_eq!(default_of(&on, "tls_cert"), Some("/tls/cert.pem"));
    assert_eq!(default_of(&on, "tls_key"), Some("/tls/key.pem"));
    assert_eq!(default_of(&on, "tls_client_ca"), Some("/tls/ca.pem"));
    let san = ReferenceEnv::from_vars([
        ("GRPC_SERVER_USE_TLS", "1"),
        ("GRPC_CLIENT_TLS_SAN", "client"),
    ]);
    assert!(matches!(
        san.resolve(true),
        Err(SettingsError::Unsupported { .. })
    ));
}

#[test]
fn bad_values_are_errors() {
    let bad_bool = ReferenceEnv::from_vars([("GRPC_SERVER_USE_TLS", "yes")]);
    assert!(matches!(
        bad_bool.resolve(true),
        Err(SettingsError::NotABool { .. })
    ));
    let bad_port = ReferenceEnv::from_vars([("PORT", "http")]);
    assert!(matches!(
        bad_port.resolve(true),
        Err(SettingsError::NotAPort { .. })
    ));
}

#[test]
fn prometheus_alone_turns_statsd_off_as_the_reference_requires() {
    let statsd_default = |vars: &[(&str, &str)]| {
        ReferenceEnv::from_vars(vars.iter().copied())
            .resolve(true)
            .unwrap()
            .defaults
            .into_iter()
            .find(|(id, _)| *id == "use_statsd")
            .map(|(_, value)| value)
    };
    assert_eq!(
        statsd_default(&[("USE_PROMETHEUS", "true")]),
        Some("false".to_owned())
    );
    // Set, USE_STATSD is read by the flag itself.
    assert_eq!(
        statsd_default(&[("USE_PROMETHEUS", "true"), ("USE_STATSD", "true")]),
        None
    );
    assert_eq!(statsd_default(&[]), None);
    // The statsd and tracing variables are read, not warned about.
    let resolved = ReferenceEnv::from_vars([
        ("USE_STATSD", "true"),
        ("STATSD_HOST", "statsd"),
        ("TRACING_ENABLED", "true"),
    ])
    .resolve(true)
    .unwrap();
    assert!(resolved.notes.is_empty(), "{:?}", resolved.notes);
}

/// Envoy Gateway's environment for its rate-limit Deployment: rules from
/// its xDS server (not RUNTIME_ROOT), gRPC TLS with its client CA.
#[test]
fn envoy_gateways_environment() {
    let env = ReferenceEnv::from_vars([
        ("RUNTIME_ROOT", "/data"),
        ("RUNTIME_SUBDIRECTORY", "ratelimit"),
        ("RUNTIME_IGNOREDOTFILES", "true"),
        ("RUNTIME_WATCH_ROOT", "false"),
        ("LOG_LEVEL", "info"),
        ("USE_STATSD", "false"),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
        ("CONFIG_GRPC_XDS_SERVER_URL", "envoy-gateway:18001"),
        ("CONFIG_GRPC_XDS_NODE_ID", "envoy-ratelimit"),
        ("GRPC_SERVER_USE_TLS", "true"),
        ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
        ("GRPC_SERVER_TLS_KEY", "/certs/tls.key"),
        ("GRPC_SERVER_TLS_CA_CERT", "/certs/ca.crt"),
        ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "/certs/tls.crt"),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "/certs/tls.key"),
        ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "/certs/ca.crt"),
        ("FORCE_START_WITHOUT_INITIAL_CONFIG", "true"),
    ]);
    let resolved = env.resolve(false).unwrap();
    assert_eq!(
        resolved
            .defaults
            .iter()
            .filter(|(id, _)| *id == "config")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>(),
        ["xds://envoy-gateway:18001"]
    );
    assert_eq!(default_of(&resolved, "tls_cert"), Some("/certs/tls.crt"));
    assert_eq!(
        default_of(&resolved, "tls_client_ca"),
        Some("/certs/ca.crt")
    );
    let warned: Vec<&str> = resolved
        .notes
        .iter()
        .filter(|n| n.level == NoteLevel::Warn)
        .map(|n| n.message.as_str())
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
}
