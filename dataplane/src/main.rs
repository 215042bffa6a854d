//! `connect-proxy`: see the library docs and the README.

use clap::Parser;
use dataplane::{Config, Options, start, wait_for_shutdown};
use model::env::ProcessEnv;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The SSH gateway to Studios. Configured by `CONNECT_*` variables.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Start a complete local system: embedded control plane, a local
    /// connect-client as a demo Studio, a demo user, and print the ssh line.
    #[arg(long)]
    dev: bool,
}

fn main() {
    let args = Args::parse();
    if args.dev {
        std::process::exit(dataplane::dev::run());
    }
    let config = match Config::from_env(ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect-proxy: {e}");
            std::process::exit(model::env::EXIT_CONFIG);
        }
    };
    model::logging::init(config.log_level);
    match start(config, Options { control: None }) {
        Ok(running) => wait_for_shutdown(&running),
        Err(e) => {
            tracing::error!(error = %e, "connect-proxy cannot start");
            eprintln!("connect-proxy: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
