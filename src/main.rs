//! The `floodgate` binary: parse the command line, then serve or check.

#![forbid(unsafe_code)]

use clap::Parser;
use floodgate::cli::{self, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => cli::check(&args),
        Command::Serve(args) => {
            cli::init_logging(&args.log_level, args.log_format);
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
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
