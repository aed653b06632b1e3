//! Ctrl-C and SIGTERM. `run` cancels its session on the first and leaves on the second;
//! `watch` only stops following. Taken over before a session exists, so that no signal falls
//! between submitting and being ready to cancel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{Error, exit};
use crate::grid::Grid;
use crate::live::Mode;

/// SIGINT and SIGTERM, taken over from their default (die at once) actions.
pub struct Signals {
    pub int: Signal,
    pub term: Signal,
}

pub fn take() -> Result<Signals, Error> {
    Ok(Signals {
        int: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
        term: signal(SignalKind::terminate()).map_err(Error::Signals)?,
    })
}

/// Leave at once: kill the tests and runners this process runs itself (local mode) and exit.
pub fn quit_now(code: u8) -> ! {
    testgrid_worker::kill_all_running();
    std::process::exit(i32::from(code));
}

/// For `run`. First Ctrl-C: cancel the session and let the watch show how it ends (setting
/// `interrupted`). Second Ctrl-C: leave at once. SIGTERM (a CI job's timeout): cancel, give it
/// two seconds, leave.
pub async fn cancel_on_interrupt(
    mut signals: Signals,
    grid: Grid,
    session: String,
    interrupted: Arc<AtomicBool>,
    mode: Mode,
) {
    tokio::select! {
        _ = signals.int.recv() => {}
        _ = signals.term.recv() => {
            let _ = tokio::time::timeout(Duration::from_secs(2), grid.cancel(&session, "testgrid was terminated (SIGTERM)")).await;
            quit_now(exit::INTERRUPTED);
        }
    }
    interrupted.store(true, Ordering::SeqCst);
    if mode != Mode::Json {
        err!("\ninterrupted: cancelling session {session} (Ctrl-C again to quit at once)");
    }
    let cancel = {
        let grid = grid.clone();
        let session = session.clone();
        tokio::spawn(async move { grid.cancel(&session, "interrupted by the user (Ctrl-C)").await })
    };
    tokio::select! {
        _ = signals.int.recv() => quit_now(exit::INTERRUPTED),
        _ = signals.term.recv() => quit_now(exit::INTERRUPTED),
        _ = cancel => {}
    }
    // The cancel went through; a second Ctrl-C still means "stop waiting".
    tokio::select! {
        _ = signals.int.recv() => quit_now(exit::INTERRUPTED),
        _ = signals.term.recv() => quit_now(exit::INTERRUPTED),
    }
}
