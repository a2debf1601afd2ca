//! The `floodgate` binary: parse the command line, then serve or check.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory, FromArgMatches};
use floodgate::cli::{self, Cli, Command};
use floodgate::settings;

fn main() {
    // The reference server's variables (RUNTIME_ROOT, GRPC_PORT, ...) become
    // defaults that floodgate's own flags and variables override.
    let reference = match settings::resolve_from_env() {
        Ok(reference) => reference,
        Err(e) => {
            eprintln!("floodgate: {e}");
            std::process::exit(2);
        }
    };
    let cli = reference
        .apply(Cli::command())
        .try_get_matches_from(cli::reference_invocation(std::env::args_os().collect()))
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|e| e.exit());
    let code = match cli.command {
        Command::Check(args) => cli::check(&args),
        Command::Serve(args) => {
            cli::init_logging(&args.log_level, args.log_format);
            reference.log_notes();
            match floodgate::server::runtime() {
                Ok(runtime) => runtime.block_on(cli::serve(*args)),
                Err(e) => {
                    eprintln!("floodgate: cannot start the async runtime: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
