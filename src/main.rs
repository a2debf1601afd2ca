//! The `floodgate` binary: parse the command line, then serve or check.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory, FromArgMatches};
use floodgate::cli::reference_env;
use floodgate::cli::{self, Cli, Command};

/// mimalloc instead of glibc's allocator: measured end to end it cuts a
/// request's instructions and a counter's RSS (glibc fragmented between
/// counter keys and per-request buffers), for a larger fixed RSS at start;
/// the figures are in README "What each optimisation bought". The
/// benchmark's null server uses it too, so their ratio compares floodgate's
/// own work only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The reference server's variables (RUNTIME_ROOT, GRPC_PORT, ...) become
    // defaults that floodgate's own flags and variables override.
    let reference = match reference_env::resolve_from_env() {
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
        Command::Overrides(args) => cli::overrides(&args),
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
