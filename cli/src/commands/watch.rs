//! `testgrid watch`: re-attach to a session and follow it to the end. Ctrl-C stops following
//! and leaves the session running.

use std::sync::atomic::AtomicBool;

use crate::args::WatchArgs;
use crate::error::{Error, exit};
use crate::follow::follow;
use crate::live::View;
use crate::signals;

pub async fn watch(args: WatchArgs) -> Result<u8, Error> {
    let grid = super::connect(args.grid.as_deref(), "watch").await?;
    let session = args.session.trim().to_string();
    let view = View::pick(&args.output);
    let mut signals = signals::take()?;
    let never = AtomicBool::new(false);
    tokio::select! {
        result = follow(&grid, &session, &[], Vec::new(), view, &args.output, &never) => result,
        _ = signals.int.recv() => {
            err!("\nstopped watching; session {session} goes on (`testgrid watch {session}` to follow it again, `testgrid cancel {session}` to stop it)");
            Ok(exit::INTERRUPTED)
        }
        _ = signals.term.recv() => Ok(exit::INTERRUPTED),
    }
}
