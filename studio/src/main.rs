//! `connect-client`: see the library crate docs and the README.

use connect_client::{Config, run};
use model::env::ProcessEnv;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = match Config::from_env(ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect-client: {e}");
            std::process::exit(model::env::EXIT_CONFIG);
        }
    };
    model::logging::init(config.log_level);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("connect-client: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(config)) {
        tracing::error!(error = %e, "connect-client stopped");
        eprintln!("connect-client: {e}");
        std::process::exit(e.exit_code());
    }
}
