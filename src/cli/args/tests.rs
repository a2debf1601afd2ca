//! The flags' tests: the reference variables as flags and defaults, the
//! store flags.

mod store_args_tests {
    use super::super::*;

    fn args(list: &[&str]) -> StoreArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            store: StoreArgs,
        }
        let mut all = vec!["x"];
        all.extend_from_slice(list);
        match Wrap::try_parse_from(all) {
            Ok(wrap) => wrap.store,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reference_variables_build_a_url() {
        let a = args(&["--redis-url", "cache:6379", "--redis-auth", "u:p@ss"]);
        assert_eq!(
            a.redis_url(),
            Ok(Some("redis://u:p%40ss@cache:6379".into()))
        );
        let a = args(&[
            "--redis-url",
            "a:1,b:2",
            "--redis-type",
            "cluster",
            "--redis-tls",
        ]);
        assert_eq!(a.redis_url(), Ok(Some("rediss+cluster://a:1,b:2".into())));
        let a = args(&["--redis-url", "/run/redis.sock"]);
        assert_eq!(
            a.redis_url(),
            Ok(Some("redis+unix:///run/redis.sock".into()))
        );
        let a = args(&["--store", "memory", "--redis-url", "cache:6379"]);
        assert_eq!(a.redis_url(), Ok(None));
    }
}

mod reference_var_tests {
    use super::super::*;
    use crate::cli::reference_env::{Handling, KNOWN_REFERENCE_VARS, ReferenceEnv};
    use clap::{CommandFactory, FromArgMatches};

    fn serve_command() -> clap::Command {
        match Cli::command().find_subcommand("serve") {
            Some(serve) => serve.clone(),
            None => panic!("no serve subcommand"),
        }
    }

    fn arg<'a>(serve: &'a clap::Command, flag: &str) -> &'a clap::Arg {
        serve
            .get_arguments()
            .find(|a| a.get_long().is_some_and(|l| format!("--{l}") == flag))
            .unwrap_or_else(|| panic!("serve has no {flag}"))
    }

    #[test]
    fn a_bare_ratelimit_serves() {
        let args = |list: &[&str]| -> Vec<std::ffi::OsString> {
            list.iter().map(std::ffi::OsString::from).collect()
        };
        assert_eq!(
            reference_invocation(args(&["/bin/ratelimit"])),
            args(&["/bin/ratelimit", "serve"])
        );
        assert_eq!(
            reference_invocation(args(&["/bin/ratelimit", "check"])),
            args(&["/bin/ratelimit", "check"])
        );
        assert_eq!(
            reference_invocation(args(&["floodgate"])),
            args(&["floodgate"])
        );
    }

    /// A variable said to be read by a flag is that flag's `env`; one said
    /// to set a flag's default names a real flag.
    #[test]
    fn reference_variables_name_real_flags() {
        let serve = serve_command();
        for (name, handling) in KNOWN_REFERENCE_VARS {
            match handling {
                Handling::Flag(flag) => assert_eq!(
                    arg(&serve, flag).get_env(),
                    Some(std::ffi::OsStr::new(name)),
                    "{flag} should read {name}"
                ),
                Handling::FlagDefault(flag) => {
                    arg(&serve, flag);
                }
                _ => {}
            }
        }
    }

    /// Every default the reference variables produce lands on a real
    /// argument of `serve`, and the values parse.
    #[test]
    fn reference_defaults_apply_and_parse() {
        let env = ReferenceEnv::from_vars([
            ("HOST", "127.0.0.1"),
            ("PORT", "18080"),
            ("GRPC_PORT", "18081"),
            ("DEBUG_PORT", "16070"),
            ("RUNTIME_ROOT", "/data"),
            ("RUNTIME_SUBDIRECTORY", "ratelimit"),
            ("LOG_FORMAT", "JSON"),
            ("CACHE_KEY_PREFIX", "rl_"),
            ("REDIS_TIMEOUT", "250ms"),
            ("RESPONSE_DYNAMIC_METADATA", "false"),
        ]);
        let resolved = match env.resolve(true) {
            Ok(resolved) => resolved,
            Err(e) => panic!("{e}"),
        };
        let serve = serve_command();
        for (id, _) in &resolved.defaults {
            assert!(
                serve.get_arguments().any(|a| a.get_id() == id),
                "no argument {id}"
            );
        }
        let matches = resolved
            .apply(Cli::command())
            .try_get_matches_from(["floodgate", "serve"]);
        let cli = match matches.and_then(|m| Cli::from_arg_matches(&m)) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        };
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.http_addr.to_string(), "127.0.0.1:18080");
        assert_eq!(args.grpc_addr.port(), 18081);
        assert_eq!(args.admin_addr.port(), 16070);
        assert_eq!(args.config.config, PathBuf::from("/data/ratelimit/config"));
        assert_eq!(args.config_watch_root, Some(PathBuf::from("/data")));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.store.key_prefix, "rl_");
        assert_eq!(args.store.store_timeout, Duration::from_millis(250));
        assert!(!args.dynamic_metadata);
    }
}

mod store_health_tests {
    use super::super::*;

    #[test]
    fn an_outage_matters_to_health_when_it_fails_requests_or_when_asked() {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            store: StoreArgs,
        }
        let unhealthy = |list: &[&str]| {
            let all = std::iter::once("x").chain(list.iter().copied());
            match Wrap::try_parse_from(all) {
                Ok(wrap) => wrap.store.outage_makes_unhealthy(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(!unhealthy(&[]));
        assert!(unhealthy(&["--on-store-error", "deny"]));
        assert!(unhealthy(&["--on-store-error", "error"]));
        assert!(unhealthy(&["--redis-health-check-active-connection"]));
    }
}
