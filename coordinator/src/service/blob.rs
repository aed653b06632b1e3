//! `BlobService`: the gRPC edge of the blob store. Every digest is checked before it is used as
//! a name, every blob is verified against its digest before it is kept, and store work runs on
//! blocking threads so that a slow disk never stalls the scheduler's tasks.

use std::sync::Arc;

use testgrid_proto as pb;
use testgrid_proto::client::{BATCH_BYTES, BLOB_CHUNK_BYTES, FIND_MISSING_DIGESTS};
use testgrid_proto::tree;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::blobs::{BlobError, BlobStore};

/// Threads one `BatchUpload` stores its blobs with.
const STORE_THREADS: usize = 4;

/// The blob service; `store` is `None` on a coordinator without a data directory (local mode),
/// which keeps no blobs.
#[derive(Clone)]
pub struct BlobSvc {
    pub store: Option<Arc<dyn BlobStore>>,
    /// Counts the bytes uploaded.
    pub metrics: Arc<super::metrics::Metrics>,
}

fn status(e: BlobError) -> Status {
    match e {
        BlobError::BadDigest(_) | BlobError::Mismatch { .. } => Status::invalid_argument(e.to_string()),
        BlobError::TooLarge { .. } | BlobError::Full { .. } => Status::resource_exhausted(e.to_string()),
        BlobError::Io(_) => Status::internal(e.to_string()),
    }
}

impl BlobSvc {
    fn store(&self) -> Result<Arc<dyn BlobStore>, Status> {
        self.store.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator keeps no blobs (it runs without a --data-dir): pass `testgrid run --no-upload` to \
                 run the tests in the workers' own --root",
            )
        })
    }
}

/// `digests` as one call may ask for them: at most [`FIND_MISSING_DIGESTS`], each well formed.
fn check_digests(digests: &[pb::Digest], call: &str) -> Result<(), Status> {
    if digests.len() > FIND_MISSING_DIGESTS {
        return Err(Status::invalid_argument(format!(
            "{} digests in one {call} (at most {FIND_MISSING_DIGESTS})",
            digests.len()
        )));
    }
    digests.iter().try_for_each(|d| tree::check_digest(d).map_err(Status::invalid_argument))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("the blob store's task failed: {e}")))
}

#[tonic::async_trait]
impl pb::blob_service_server::BlobService for BlobSvc {
    async fn find_missing(
        &self,
        request: Request<pb::FindMissingRequest>,
    ) -> Result<Response<pb::FindMissingResponse>, Status> {
        let store = self.store()?;
        let digests = request.into_inner().digests;
        check_digests(&digests, "FindMissing")?;
        let missing = blocking(move || digests.into_iter().filter(|d| !store.contains(d)).collect()).await?;
        Ok(Response::new(pb::FindMissingResponse { missing }))
    }

    async fn batch_upload(
        &self,
        request: Request<pb::BatchUploadRequest>,
    ) -> Result<Response<pb::BatchUploadResponse>, Status> {
        let store = self.store()?;
        let blobs = request.into_inner().blobs;
        // Stored by a few threads at once: each blob's fsync waits on the disk, and waits on
        // several threads share the filesystem's journal commits.
        let statuses = blocking(move || {
            let put = |blob: pb::Blob| {
                let digest = blob.digest.unwrap_or_default();
                // Checked before its hash is quoted in a message or used as a name.
                let result = if let Err(problem) = tree::check_digest(&digest) {
                    Err(BlobError::BadDigest(problem))
                } else if blob.data.len() as u64 != digest.size_bytes {
                    Err(BlobError::Mismatch { want: digest.hash.clone(), got: format!("{} bytes", blob.data.len()) })
                } else {
                    store.put(&digest, &blob.data)
                };
                pb::BlobStatus { error: result.err().map(|e| e.to_string()).unwrap_or_default(), digest: Some(digest) }
            };
            let mut slots: Vec<Option<pb::Blob>> = blobs.into_iter().map(Some).collect();
            let parts = slots.len().div_ceil(STORE_THREADS).max(1);
            let mut statuses: Vec<pb::BlobStatus> = Vec::with_capacity(slots.len());
            std::thread::scope(|scope| {
                let handles: Vec<_> = slots
                    .chunks_mut(parts)
                    .map(|chunk| {
                        let put = &put;
                        scope.spawn(move || chunk.iter_mut().filter_map(Option::take).map(put).collect::<Vec<_>>())
                    })
                    .collect();
                for handle in handles {
                    // A thread storing blobs does not panic; if one did, this call fails the same way.
                    statuses.extend(handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
                }
            });
            statuses
        })
        .await?;
        let stored: u64 = statuses
            .iter()
            .filter(|s| s.error.is_empty())
            .filter_map(|s| s.digest.as_ref())
            .map(|d| d.size_bytes)
            .sum();
        self.metrics.upload_bytes.inc_by(stored);
        Ok(Response::new(pb::BatchUploadResponse { statuses }))
    }

    async fn upload(
        &self,
        request: Request<tonic::Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let store = self.store()?;
        let mut chunks = request.into_inner();
        let first = chunks.next().await.ok_or_else(|| Status::invalid_argument("an upload without a chunk"))??;
        let digest =
            first.digest.ok_or_else(|| Status::invalid_argument("an upload whose first chunk names no digest"))?;
        let mut writer = {
            let (store, digest) = (Arc::clone(&store), digest.clone());
            blocking(move || store.write(&digest)).await?.map_err(status)?
        };
        let mut data = first.data;
        loop {
            if data.len() > BLOB_CHUNK_BYTES * 4 {
                return Err(Status::invalid_argument(format!("an upload chunk of {} bytes", data.len())));
            }
            let (w, result) = blocking(move || {
                let result = writer.write(&data);
                (writer, result)
            })
            .await?;
            writer = w;
            result.map_err(status)?;
            match chunks.next().await {
                Some(chunk) => data = chunk?.data,
                None => break,
            }
        }
        blocking(move || writer.commit()).await?.map_err(status)?;
        self.metrics.upload_bytes.inc_by(digest.size_bytes);
        Ok(Response::new(pb::UploadResponse { digest: Some(digest) }))
    }

    async fn batch_download(
        &self,
        request: Request<pb::BatchDownloadRequest>,
    ) -> Result<Response<pb::BatchDownloadResponse>, Status> {
        let store = self.store()?;
        let digests = request.into_inner().digests;
        let total: u64 = digests.iter().map(|d| d.size_bytes).fold(0, u64::saturating_add);
        check_digests(&digests, "BatchDownload")?;
        if total > BATCH_BYTES {
            return Err(Status::invalid_argument(format!(
                "a BatchDownload of {total} bytes (at most {BATCH_BYTES}: download bigger blobs one by one)"
            )));
        }
        let blobs = blocking(move || -> Result<Vec<pb::Blob>, Status> {
            let mut blobs = Vec::with_capacity(digests.len());
            for digest in digests {
                let Some(reader) = store.open(&digest).map_err(status)? else {
                    return Err(Status::not_found(format!("no blob {}", digest.hash)));
                };
                let mut data = Vec::with_capacity(digest.size_bytes as usize);
                std::io::Read::read_to_end(&mut std::io::Read::take(reader, digest.size_bytes), &mut data)
                    .map_err(|e| Status::internal(format!("reading blob {}: {e}", digest.hash)))?;
                blobs.push(pb::Blob { digest: Some(digest), data });
            }
            Ok(blobs)
        })
        .await??;
        Ok(Response::new(pb::BatchDownloadResponse { blobs }))
    }

    type DownloadStream = tokio_stream::wrappers::ReceiverStream<Result<pb::DownloadChunk, Status>>;

    async fn download(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        let store = self.store()?;
        let digest = request.into_inner().digest.unwrap_or_default();
        let opened = {
            let digest = digest.clone();
            blocking(move || store.open(&digest)).await?.map_err(status)?
        };
        let mut reader = opened.ok_or_else(|| Status::not_found(format!("no blob {}", digest.hash)))?;
        // A bounded channel: the reader waits while the client is slow (back-pressure).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0u8; BLOB_CHUNK_BYTES];
                let chunk = match std::io::Read::read(&mut reader, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(pb::DownloadChunk { data: buf })
                    }
                    Err(e) => Err(Status::internal(format!("reading blob {}: {e}", digest.hash))),
                };
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
