//! Process signals: SIGUSR1 turns logging on and SIGUSR2 off at run time (vault-redirector's
//! convention), and SIGTERM / SIGINT ask for a graceful shutdown.
//!
//! Signals are process-wide, so only the binary installs these; the library's `run` takes its
//! shutdown as a plain future and never touches signal handlers itself.

use log::LevelFilter;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the SIGUSR1/SIGUSR2 handlers. `level` is the level SIGUSR1 restores.
pub fn spawn_log_toggles(level: LevelFilter) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut on = signal(SignalKind::user_defined1())?;
    let mut off = signal(SignalKind::user_defined2())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = on.recv() => {
                    log::set_max_level(level);
                    log::warn!("logging enabled by SIGUSR1 (level {level})");
                }
                Some(()) = off.recv() => {
                    log::warn!("logging disabled by SIGUSR2");
                    log::set_max_level(LevelFilter::Off);
                }
                else => return,
            }
        }
    }))
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn terminate() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
    Ok(())
}
