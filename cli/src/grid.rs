//! Talking to a grid: connect, submit, watch (resuming after a dropped stream), cancel, list.
//! The channel and its clients come from `testgrid_proto::client`, like the worker's; a gRPC
//! status becomes an [`Error`] here and nowhere else.

use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::client::GridChannel;
use testgrid_proto::client::{self, Target};
use tokio_stream::StreamExt;

use crate::error::Error;

/// How long `watch` keeps trying to get its stream back after the grid went away.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// HTTP/2 keepalive of the CLI's connection: a dead grid is noticed within twice this.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What every connection presents (the token, TLS files), set once by [`present`] before any
/// connects.
static CREDENTIALS: std::sync::OnceLock<(client::Credentials, client::TlsFiles)> = std::sync::OnceLock::new();

/// Present `credentials` on every call to a grid from now on (`--token`, `TESTGRID_TOKEN`), and
/// use `tls` for `https://` grids (`--ca`, `--tls-cert`, `--tls-key`).
pub fn present(credentials: client::Credentials, tls: client::TlsFiles) {
    // Set once, at start; a second call (tests calling `run` twice in a process) keeps the first.
    let _ = CREDENTIALS.set((credentials, tls));
}

/// A connection to a coordinator.
#[derive(Clone)]
pub struct Grid {
    pub url: String,
    channel: GridChannel,
}

impl Grid {
    pub async fn connect(url: &str) -> Result<Grid, Error> {
        let mut target = Target::new(url, KEEPALIVE);
        (target.credentials, target.tls) = CREDENTIALS.get().cloned().unwrap_or_default();
        if let Some(warning) = target.plaintext_warning() {
            err!("{warning}");
        }
        let endpoint = target.endpoint().map_err(|e| Error::BadGridAddress { url: e.url, problem: e.problem })?;
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                if let Some(message) = client::wrong_scheme(&target).await {
                    return Err(Error::WrongScheme(message));
                }
                let detail = testgrid_proto::error_chain(&e);
                if detail.contains("invalid peer certificate") {
                    return Err(Error::Untrusted { url: target.url.clone(), detail });
                }
                return Err(Error::GridUnreachable { url: target.url.clone(), detail });
            }
        };
        let channel = target.authorized(channel);
        Ok(Grid { url: target.url, channel })
    }

    /// Send the grid what it lacks of `bundle` (see [`crate::bundle::upload`]).
    /// The connection, for the blob service.
    pub fn channel(&self) -> GridChannel {
        self.channel.clone()
    }

    pub async fn upload(
        &self,
        bundle: &crate::bundle::Bundle,
        progress: &std::sync::Arc<crate::bundle::Progress>,
    ) -> Result<crate::bundle::upload::Uploaded, Error> {
        crate::bundle::upload::upload(self.channel.clone(), &self.url, bundle, progress).await
    }

    fn sessions(&self) -> pb::session_service_client::SessionServiceClient<GridChannel> {
        client::sessions(self.channel.clone())
    }

    fn refused(&self, what: &'static str) -> impl FnOnce(tonic::Status) -> Error + '_ {
        move |status| Error::from_status(&self.url, what, &status)
    }

    /// Submit `spec` as session `id` (a fresh random one when the caller chose none).
    ///
    /// The id is picked here, not by the grid, so that a submit whose connection broke under it
    /// (the coordinator restarted between creating the session and answering) can be sent again:
    /// "exists already" on a retry means the first attempt landed. Retried like `watch`, for as
    /// long as it keeps trying.
    pub async fn submit(&self, spec: pb::SessionSpec, id: Option<&str>) -> Result<String, Error> {
        let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let request = pb::SubmitRequest { spec: Some(spec), session_id: id.clone() };
        let mut retry = Retry::new();
        loop {
            let status = match self.sessions().submit(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().session_id),
                Err(status) if status.code() == tonic::Code::AlreadyExists && retry.tried() => return Ok(id),
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message().contains(testgrid_proto::client::NOT_UPLOADED) =>
                {
                    return Err(Error::WorkspaceGone { url: self.url.clone(), message: status.message().to_string() });
                }
                Err(status) if !broken(&status) => return Err(Error::from_status(&self.url, "submit", &status)),
                Err(status) => status,
            };
            if !retry.again().await {
                return Err(Error::from_status(&self.url, "submit", &status));
            }
            tracing::warn!("submitting broke off ({}); sending it again", status.message());
        }
    }

    /// What the grid's duration history knows of `tests` of `project`, in the order a session
    /// of them would be served.
    pub async fn plan(
        &self,
        project: &str,
        tests: Vec<pb::TestSpec>,
        keep_order: bool,
    ) -> Result<Vec<pb::PlannedTest>, Error> {
        let request = pb::PlanRequest { project: project.to_string(), tests, keep_order };
        let response = self.sessions().plan(request).await.map_err(self.refused("plan"))?;
        Ok(response.into_inner().tests)
    }

    pub async fn cancel(&self, session: &str, reason: &str) -> Result<bool, Error> {
        let request = pb::CancelRequest { session_id: session.to_string(), reason: reason.to_string() };
        let response = self.sessions().cancel(request).await.map_err(self.refused("cancel"))?;
        Ok(response.into_inner().cancelled)
    }

    /// Every session the grid shows us, newest first, a page at a time.
    pub async fn list(&self) -> Result<Vec<pb::SessionInfo>, Error> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListRequest { page_size: 0, page_token: std::mem::take(&mut page_token) };
            let page = self.sessions().list(request).await.map_err(self.refused("list sessions"))?.into_inner();
            let went_on = !page.sessions.is_empty();
            all.extend(page.sessions);
            // An empty page that says there is more would never end.
            if page.next_page_token.is_empty() || !went_on {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn workers(&self) -> Result<Vec<pb::WorkerInfo>, Error> {
        let response = client::admin(self.channel.clone())
            .list_workers(pb::ListWorkersRequest {})
            .await
            .map_err(self.refused("list workers"))?;
        Ok(response.into_inner().workers)
    }

    /// Follow a session's events from `from_seq`, calling `on_event` for each, until the
    /// `SessionFinished` event. A dropped stream is reopened from the next unseen sequence number.
    /// `submitted`: this client created the session, so "not found" means the grid lost it.
    pub async fn watch(
        &self,
        session: &str,
        from_seq: u64,
        submitted: bool,
        mut on_event: impl FnMut(pb::SessionEvent),
    ) -> Result<(), Error> {
        let mut next = from_seq.max(1);
        let mut retry = Retry::new();
        loop {
            let opened =
                self.sessions().watch(pb::WatchRequest { session_id: session.to_string(), from_seq: next }).await;
            let problem = match opened {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut problem = None;
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => {
                                retry.succeeded();
                                let finished = matches!(event.kind, Some(pb::session_event::Kind::Finished(_)));
                                next = event.seq + 1;
                                on_event(event);
                                if finished {
                                    return Ok(());
                                }
                            }
                            Err(status) => {
                                problem = Some(status);
                                break;
                            }
                        }
                    }
                    problem.unwrap_or_else(|| tonic::Status::unavailable("the event stream ended early"))
                }
                Err(status) if status.code() == tonic::Code::NotFound && (submitted || next > 1) => {
                    return Err(Error::SessionLost { session: session.to_string(), url: self.url.clone() });
                }
                Err(status) if !broken(&status) => return Err(Error::from_status(&self.url, "watch", &status)),
                Err(status) => status,
            };
            if !retry.again().await {
                return Err(Error::GridLost {
                    url: self.url.clone(),
                    session: session.to_string(),
                    detail: problem.message().to_string(),
                });
            }
            tracing::warn!("event stream broke ({}); resuming from event {next}", problem.message());
        }
    }
}

/// A call that failed because the connection went away under it (the coordinator restarted, or
/// the pool had not noticed a dead connection yet), not because the grid refused it. Such a
/// failure comes back as Unavailable, or as Cancelled or Unknown when it broke mid-request.
fn broken(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    )
}

/// Backoff for calls retried across a broken connection: 100 ms doubling to 2 s, for
/// [`RECONNECT_FOR`] after the first failure since the last success.
struct Retry {
    broken_since: Option<Instant>,
    delay: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry { broken_since: None, delay: Duration::from_millis(100) }
    }

    /// The call went through: the next failure starts a new bound.
    fn succeeded(&mut self) {
        *self = Retry::new();
    }

    /// Whether a failed attempt came before.
    fn tried(&self) -> bool {
        self.broken_since.is_some()
    }

    /// After a failure: wait, and say whether to try again (false once the bound has passed).
    async fn again(&mut self) -> bool {
        let since = *self.broken_since.get_or_insert_with(Instant::now);
        if since.elapsed() > RECONNECT_FOR {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        true
    }
}
