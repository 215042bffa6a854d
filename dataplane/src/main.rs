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
    // No transparent huge pages for this process: mimalloc marks its arenas
    // MADV_HUGEPAGE, and with thousands of mostly idle sessions the 2 MiB
    // pages cost ~50 KiB of RSS per session (a quarter of it) while bulk
    // throughput does not depend on them (docs/benchmarks.md). Failure
    // (a kernel without the prctl) changes nothing else.
    let _ = nix::sys::prctl::set_thp_disable(true);
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
