//! `testgrid cancel`: cancel a session; queued tests end `cancelled`, running ones are killed.

use crate::args::SessionArgs;
use crate::error::{Error, exit};

pub async fn cancel(args: SessionArgs) -> Result<u8, Error> {
    let grid = super::connect(args.grid.grid.as_deref(), "cancel").await?;
    let session = args.session.trim();
    let cancelled = grid.cancel(session, "cancelled with `testgrid cancel`").await?;
    if args.grid.json {
        out!("{}", serde_json::json!({ "session": session, "cancelled": cancelled }));
    } else if cancelled {
        out!("cancelled session {session}");
    } else {
        out!("session {session} had already finished");
    }
    Ok(exit::PASSED)
}
