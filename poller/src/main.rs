//! The `vault-redirect-poller` binary: parse flags, set up logging and signals, run the
//! library (or, with `status`, print a running poller's status). Everything else lives in the
//! library so tests can run it in-process.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use log::LevelFilter;
use vault_redirect_poller::cli::table::Verdict;
use vault_redirect_poller::cli::{client, table};
use vault_redirect_poller::config::{Command, StatusArgs};
use vault_redirect_poller::{run, signals, Config};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    if let Some(Command::Status(args)) = &config.command {
        return Ok(status_command(args).await);
    }
    let mut logger = env_logger::Builder::new();
    logger
        .parse_filters(&config.log_level)
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr);
    logger.try_init().context("cannot set up logging")?;
    // The level SIGUSR1 restores: what the filter set up, before --log-disable turns it off.
    let level = log::max_level();
    let _toggles =
        signals::spawn_log_toggles(level).context("cannot install SIGUSR1/SIGUSR2 handlers")?;
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
    Ok(ExitCode::SUCCESS)
}

/// `vault-redirect-poller status`: the table (or JSON) on stdout, the verdict as exit code.
async fn status_command(args: &StatusArgs) -> ExitCode {
    match client::fetch(&args.addr, args.timeout).await {
        Ok(doc) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", table::render_table(&doc, &args.addr));
            }
            ExitCode::from(Verdict::of(&doc) as u8)
        }
        Err(e) => {
            println!("vault-redirect-poller at {}: UNKNOWN", args.addr);
            eprintln!("vault-redirect-poller status: {e}");
            ExitCode::from(Verdict::Unknown as u8)
        }
    }
}
