//! The `vault-redirect-poller` binary: parse flags, set up logging and signals, run the
//! library. Everything else lives in the library so tests can run it in-process.

use anyhow::Context;
use clap::Parser;
use log::LevelFilter;
use vault_redirect_poller::{run, signals, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut logger = env_logger::Builder::new();
    logger.parse_filters(&config.log_level).format_timestamp_millis().target(env_logger::Target::Stderr);
    logger.try_init().context("cannot set up logging")?;
    // The level SIGUSR1 restores: what the filter set up, before --log-disable turns it off.
    let level = log::max_level();
    let _toggles = signals::spawn_log_toggles(level).context("cannot install SIGUSR1/SIGUSR2 handlers")?;
    if config.log_disable {
        log::set_max_level(LevelFilter::Off);
    }
    let shutdown = async {
        if let Err(e) = signals::terminate().await {
            log::error!("cannot install SIGTERM/SIGINT handlers: {e}");
            std::future::pending::<()>().await;
        }
    };
    run(config, shutdown).await.context("vault-redirect-poller")?;
    Ok(())
}
