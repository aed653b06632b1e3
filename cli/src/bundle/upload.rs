//! Sending a workspace's tree to a grid: ask which blobs it lacks (`FindMissing`), then upload
//! only those, small ones several per `BatchUpload`, big ones streamed in chunks, a few calls at
//! once. A file is re-read as it is sent and checked against its digest on the way, so a file
//! edited since it was hashed is an error ("run again"), never a wrong blob on the grid.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use testgrid_proto as pb;
use testgrid_proto::client::GridChannel;
use testgrid_proto::client::{self, BATCH_BLOB_BYTES, BATCH_BYTES, BLOB_CHUNK_BYTES, FIND_MISSING_DIGESTS};
use testgrid_proto::tree;

use super::{Bundle, Source};
use crate::error::Error;

/// How many upload calls run at once.
const PARALLEL_UPLOADS: usize = 4;

/// What an upload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Uploaded {
    /// Blobs the tree names.
    pub blobs: u64,
    /// Those the grid lacked, and their bytes: what was sent.
    pub missing: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// Upload what the grid at `url` (on `channel`) lacks of `bundle`.
pub async fn upload(
    channel: GridChannel,
    url: &str,
    bundle: &Bundle,
    progress: &Arc<super::Progress>,
) -> Result<Uploaded, Error> {
    let started = Instant::now();
    let refused = |status: tonic::Status| Error::from_status(url, "take the workspace", &status);
    let mut blobs = client::blobs(channel);
    let digests: Vec<pb::Digest> = bundle.blobs.values().map(|(d, _)| d.clone()).collect();
    let mut missing = Vec::new();
    for chunk in digests.chunks(FIND_MISSING_DIGESTS) {
        let answer =
            blobs.find_missing(pb::FindMissingRequest { digests: chunk.to_vec() }).await.map_err(refused)?.into_inner();
        missing.extend(answer.missing);
    }
    let mut stats = Uploaded { blobs: digests.len() as u64, missing: missing.len() as u64, ..Uploaded::default() };
    // Small blobs in batches, big ones alone; each job is one call.
    let mut jobs: Vec<Vec<pb::Digest>> = Vec::new();
    let mut batch: Vec<pb::Digest> = Vec::new();
    let mut batch_bytes = 0;
    for digest in missing {
        // A digest the grid names that the bundle does not hold is the grid's mistake.
        if !bundle.blobs.contains_key(&digest.hash) {
            return Err(Error::BundleRefused {
                url: url.to_string(),
                message: "it asked for a blob it was not offered".into(),
            });
        }
        stats.bytes += digest.size_bytes;
        if digest.size_bytes > BATCH_BLOB_BYTES {
            jobs.push(vec![digest]);
            continue;
        }
        if batch_bytes + digest.size_bytes > BATCH_BYTES && !batch.is_empty() {
            jobs.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += digest.size_bytes;
        batch.push(digest);
    }
    if !batch.is_empty() {
        jobs.push(batch);
    }
    progress.to_send.store(stats.bytes, std::sync::atomic::Ordering::Relaxed);
    let bundle_blobs = Arc::clone(&bundle.blobs);
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_UPLOADS));
    let mut calls = tokio::task::JoinSet::new();
    for job in jobs {
        let (mut client, blobs, permits, url, progress) =
            (blobs.clone(), Arc::clone(&bundle_blobs), Arc::clone(&permits), url.to_string(), Arc::clone(progress));
        calls.spawn(async move {
            // The semaphore is never closed: a permit always comes.
            let _permit = permits.acquire_owned().await.ok();
            let bytes: u64 = job.iter().map(|d| d.size_bytes).sum();
            let done = if job.len() == 1 && job[0].size_bytes > BATCH_BLOB_BYTES {
                stream_one(&mut client, &url, &job[0], &blobs[&job[0].hash].1).await
            } else {
                batch_upload(&mut client, &url, &job, &blobs).await
            };
            progress.sent.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            done
        });
    }
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(result) => result?,
            // An upload task does not panic; if one did, this CLI goes down the same way.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    stats.millis = started.elapsed().as_millis() as u64;
    Ok(stats)
}

type Blobs = std::collections::HashMap<String, (pb::Digest, Source)>;

/// A blob's bytes, checked against its digest (a file may have changed since it was hashed).
fn read_whole(digest: &pb::Digest, source: &Source) -> Result<Vec<u8>, Error> {
    match source {
        Source::Bytes(bytes) => Ok(bytes.clone()),
        Source::File(path) => {
            let read = |e| Error::BundleRead { path: path.clone(), source: e };
            let mut bytes = Vec::with_capacity(digest.size_bytes as usize);
            std::fs::File::open(path)
                .map_err(read)?
                .take(digest.size_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(read)?;
            if tree::digest_of(&bytes) != *digest {
                return Err(Error::BundleChanged { path: path.clone() });
            }
            Ok(bytes)
        }
    }
}

async fn batch_upload(
    client: &mut pb::blob_service_client::BlobServiceClient<GridChannel>,
    url: &str,
    job: &[pb::Digest],
    blobs: &Blobs,
) -> Result<(), Error> {
    let mut request = pb::BatchUploadRequest::default();
    for digest in job {
        let data = read_whole(digest, &blobs[&digest.hash].1)?;
        request.blobs.push(pb::Blob { digest: Some(digest.clone()), data });
    }
    let answer = client
        .batch_upload(request)
        .await
        .map_err(|status| Error::from_status(url, "take the workspace", &status))?
        .into_inner();
    if let Some(bad) = answer.statuses.iter().find(|s| !s.error.is_empty()) {
        return Err(Error::BundleRefused { url: url.to_string(), message: bad.error.clone() });
    }
    Ok(())
}

/// Stream one big blob in chunks, read as it goes (never whole in memory), its digest checked
/// as it is read: a file that changed fails the upload before the last chunk leaves.
async fn stream_one(
    client: &mut pb::blob_service_client::BlobServiceClient<GridChannel>,
    url: &str,
    digest: &pb::Digest,
    source: &Source,
) -> Result<(), Error> {
    let Source::File(path) = source else {
        // Manifests are small: they always go in batches.
        return batch_upload(
            client,
            url,
            std::slice::from_ref(digest),
            &Blobs::from([(digest.hash.clone(), (digest.clone(), source.clone()))]),
        )
        .await;
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
    let reader = {
        let (path, digest) = (path.clone(), digest.clone());
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let read = |e| Error::BundleRead { path: path.clone(), source: e };
            let mut file = std::fs::File::open(&path).map_err(read)?.take(digest.size_bytes + 1);
            let mut hasher = tree::Hasher::default();
            let mut first = true;
            loop {
                let mut buf = vec![0u8; BLOB_CHUNK_BYTES];
                let n = file.read(&mut buf).map_err(read)?;
                buf.truncate(n);
                hasher.update(&buf);
                let done = n == 0 || hasher.size() >= digest.size_bytes;
                if done && hasher.finish() != digest {
                    // Dropping the sender without the last chunk leaves the upload incomplete.
                    return Err(Error::BundleChanged { path });
                }
                let chunk = pb::UploadChunk { digest: first.then(|| digest.clone()), data: buf };
                first = false;
                if tx.blocking_send(chunk).is_err() || done {
                    return Ok(());
                }
            }
        })
    };
    let call = client.upload(tokio_stream::wrappers::ReceiverStream::new(rx));
    let answer = call.await;
    match reader.await {
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
        // The reader does not panic; if it did, this CLI goes down the same way.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    answer.map_err(|status| Error::from_status(url, "take the workspace", &status))?;
    Ok(())
}
