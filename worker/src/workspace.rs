//! Sessions' workspace trees on this worker: each session that names a workspace
//! (`Assign.workspace`) gets a folder of its own, `CACHE/sessions/SESSION/`, materialised from
//! the coordinator's blobs: manifests checked before anything is written ([`tree::check_directory`]),
//! each blob downloaded once into the worker's cache (`CACHE/blobs/`, verified against its
//! digest, kept up to `--cache-size`, least recently used evicted first) and hard-linked into the
//! session's folder (copied where the filesystem cannot link, said once in the log). Links are
//! checked, resolved, to stay inside the folder. A session's folder goes when no test of it has
//! run on this worker for [`IDLE_LIMIT`], when the worker stops, or at the next start.
//!
//! Cached blobs are read-only (0444, 0555 for executables): a hard-linked file is the cache's
//! own, and a test must not change what the next session gets.
//!
//! It must not know frameworks or the slots; the connection asks it for a session's folder.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::client::GridChannel;
use testgrid_proto::tree;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use testgrid_proto::client::{BATCH_BLOB_BYTES, BATCH_BYTES, FIND_MISSING_DIGESTS};

use crate::exec::lock;

/// A session's folder unused this long is removed (longer than a warm runner's idle limit, so
/// that its runner has gone first).
pub const IDLE_LIMIT: Duration = Duration::from_secs(120);

/// The most entries one workspace may have on this worker.
const MAX_ENTRIES: u64 = 2_000_000;

/// The most bytes of one manifest.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// How temporary files in the cache start (left by a worker that stopped mid-download, they
/// are removed at the next start).
const TEMP_PREFIX: &str = ".tmp-";

/// Downloads at once.
const PARALLEL_DOWNLOADS: usize = 8;

/// One session's folder.
struct Tree {
    /// Taken while it is materialised, so that a session's slots wait for one materialisation.
    ready: Arc<tokio::sync::Mutex<Option<Ready>>>,
    /// Whether the session's setup has run in it (reset whenever the folder goes).
    setup: crate::setup::State,
    /// Tests of the session running on it now.
    active: usize,
    last_used: Instant,
    /// The coordinator said the session is over: the folder goes once no test uses it.
    ended: bool,
    dir: PathBuf,
}

impl Tree {
    /// Remove the folder if the session is over and nothing uses it.
    fn remove_if_done(&mut self) {
        if self.ended && self.active == 0 {
            // Locked means a test is materialising it, and then it is in use: never here.
            if let Ok(mut ready) = self.ready.try_lock() {
                *ready = None;
            }
            if let Ok(mut setup) = self.setup.try_lock() {
                *setup = None;
            }
            remove_tree(&self.dir);
        }
    }
}

/// A materialised tree: where it is, and its build folder.
struct Ready {
    root: PathBuf,
    /// Its files as materialised (path → blob).
    files: Arc<crate::builds::Record>,
    /// Held while the tree exists (see [`crate::builds`]).
    build: Option<crate::builds::Lease>,
}

/// Every session's folder on this worker, and the blob cache they are made from.
pub struct Workspaces {
    cache: PathBuf,
    capacity: u64,
    trees: Mutex<HashMap<String, Arc<Mutex<Tree>>>>,
    /// Cached blobs' and kept setup outputs' sizes and when each was last used (for eviction).
    blobs: Mutex<HashMap<String, (u64, Instant)>>,
    copied_once: std::sync::Once,
    builds: Arc<crate::builds::Builds>,
}

/// A session's folder in use: dropped when the test is done with it.
pub struct InUse {
    tree: Arc<Mutex<Tree>>,
    pub root: PathBuf,
    /// Whether the session's setup has run in this folder.
    pub setup: crate::setup::State,
    /// The session's build folder, kept for its project between sessions (see
    /// [`crate::builds`]); `None` when the session names no project.
    pub build_dir: Option<PathBuf>,
    /// The tree's files as materialised (path → blob name, see [`crate::builds::Record`]).
    pub files: Arc<crate::builds::Record>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut tree = lock(&self.tree);
        tree.active = tree.active.saturating_sub(1);
        tree.last_used = Instant::now();
        tree.remove_if_done();
    }
}

impl Workspaces {
    /// The workspaces under `cache` (created if missing); folders a previous run left are
    /// removed, cached blobs counted.
    pub fn open(cache: &Path, capacity: u64) -> std::io::Result<Workspaces> {
        for dir in ["blobs", "sessions", "setup", "builds"] {
            std::fs::create_dir_all(cache.join(dir))?;
        }
        for entry in std::fs::read_dir(cache.join("sessions"))? {
            remove_tree(&entry?.path());
        }
        let mut blobs = HashMap::new();
        let now = Instant::now();
        for shard in std::fs::read_dir(cache.join("blobs"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(blob.path());
                    continue;
                }
                blobs.insert(name, (blob.metadata()?.len(), now));
            }
        }
        for kept in std::fs::read_dir(cache.join("setup"))? {
            let kept = kept?;
            let name = kept.file_name().to_string_lossy().into_owned();
            if name.starts_with(crate::setup::TEMP_PREFIX) {
                remove_tree(&kept.path());
                continue;
            }
            blobs.insert(format!("{SETUP_PREFIX}{name}"), (tree_bytes(&kept.path()), now));
        }
        Ok(Workspaces {
            cache: cache.to_path_buf(),
            capacity,
            trees: Mutex::new(HashMap::new()),
            blobs: Mutex::new(blobs),
            copied_once: std::sync::Once::new(),
            builds: crate::builds::Builds::open(cache.join("builds"))?,
        })
    }

    /// The folder of `session`'s tree `root`, materialised from `channel`'s blobs the first time;
    /// in use until the answer is dropped.
    pub async fn acquire(
        self: &Arc<Self>,
        session: &str,
        root: &pb::Digest,
        channel: &GridChannel,
        project: &str,
    ) -> Result<InUse, String> {
        if session.is_empty() || !session.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("the assignment names no usable session".into());
        }
        let tree = {
            let mut trees = lock(&self.trees);
            let tree = trees.entry(session.to_string()).or_insert_with(|| {
                Arc::new(Mutex::new(Tree {
                    ready: Arc::new(tokio::sync::Mutex::new(None)),
                    setup: Default::default(),
                    active: 0,
                    last_used: Instant::now(),
                    ended: false,
                    dir: self.cache.join("sessions").join(session),
                }))
            });
            lock(tree).active += 1;
            Arc::clone(tree)
        };
        // Counted as in use from here: a folder being made is not swept.
        let (ready, setup) = {
            let tree = lock(&tree);
            (Arc::clone(&tree.ready), Arc::clone(&tree.setup))
        };
        let mut in_use =
            InUse { tree: Arc::clone(&tree), root: PathBuf::new(), setup, build_dir: None, files: Default::default() };
        let dir = self.cache.join("sessions").join(session);
        let ready = self.materialise_once(&ready, &dir, root, channel, session, project).await?;
        (in_use.root, in_use.build_dir, in_use.files) = ready;
        Ok(in_use)
    }

    /// The tree's folder and its build folder, materialised the first time.
    async fn materialise_once(
        self: &Arc<Self>,
        ready: &tokio::sync::Mutex<Option<Ready>>,
        dir: &Path,
        root: &pb::Digest,
        channel: &GridChannel,
        session: &str,
        project: &str,
    ) -> Result<(PathBuf, Option<PathBuf>, Arc<crate::builds::Record>), String> {
        let mut ready = ready.lock().await;
        if let Some(ready) = ready.as_ref() {
            return Ok((ready.root.clone(), ready.build.as_ref().map(|b| b.dir.clone()), Arc::clone(&ready.files)));
        }
        let started = Instant::now();
        remove_tree(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let build = match project {
            "" => None,
            project => {
                Some(self.builds.lease(project, session).map_err(|e| format!("cannot make a build folder: {e}"))?)
            }
        };
        let (stats, files) = match self.materialise(dir, root, channel, build.as_ref()).await {
            Ok(stats) => stats,
            Err(e) => {
                remove_tree(dir);
                return Err(e);
            }
        };
        info!(
            dir = %dir.display(),
            files = stats.0,
            downloaded = stats.1,
            millis = started.elapsed().as_millis() as u64,
            "workspace materialised"
        );
        let build_dir = build.as_ref().map(|b| b.dir.clone());
        let files = Arc::new(files);
        *ready = Some(Ready { root: dir.to_path_buf(), files: Arc::clone(&files), build });
        Ok((dir.to_path_buf(), build_dir, files))
    }

    /// Write the tree `root` into `dir`: (files, blobs downloaded) and each file's blob. Files
    /// that differ from what `build`'s folder last saw are copied, with a fresh modification
    /// time; the tree is then recorded as the one it sees.
    async fn materialise(
        self: &Arc<Self>,
        dir: &Path,
        root: &pb::Digest,
        channel: &GridChannel,
        build: Option<&crate::builds::Lease>,
    ) -> Result<((u64, u64), crate::builds::Record), String> {
        let started = Instant::now();
        let client = testgrid_proto::client::blobs(channel.clone());
        let mut pending = vec![(root.clone(), dir.to_path_buf(), 0usize)];
        let mut files: Vec<(PathBuf, pb::Digest, bool)> = Vec::new();
        let mut links: Vec<PathBuf> = Vec::new();
        let mut entries = 0u64;
        let mut bytes = 0u64;
        // A level of the tree at a time: its manifests come in a few batched calls, not one each.
        while !pending.is_empty() {
            let level = std::mem::take(&mut pending);
            for (digest, _, _) in &level {
                tree::check_digest(digest)?;
                if digest.size_bytes > MAX_MANIFEST_BYTES {
                    return Err(format!("a manifest of {} bytes (at most {MAX_MANIFEST_BYTES})", digest.size_bytes));
                }
            }
            self.ensure_all(&client, level.iter().map(|(d, _, _)| (d.clone(), false))).await?;
            for (digest, path, depth) in level {
                let blob = self.blob_path(&digest, false);
                let data = std::fs::read(&blob).map_err(|e| format!("cannot read the cached manifest: {e}"))?;
                let manifest: pb::Directory = prost::Message::decode(data.as_slice())
                    .map_err(|e| format!("manifest {} is not a Directory: {e}", digest.hash))?;
                tree::check_directory(&manifest, depth)?;
                entries += (manifest.files.len() + manifest.directories.len() + manifest.symlinks.len()) as u64;
                if entries > MAX_ENTRIES {
                    return Err(format!("the workspace has more than {MAX_ENTRIES} entries"));
                }
                for file in manifest.files {
                    // check_directory made sure every file has a digest.
                    let Some(d) = file.digest else { continue };
                    bytes += d.size_bytes;
                    if bytes > self.capacity {
                        return Err(format!(
                            "the workspace's files add up to more than this worker's cache of {} bytes (--cache-size)",
                            self.capacity
                        ));
                    }
                    files.push((path.join(&file.name), d, file.is_executable));
                }
                for link in manifest.symlinks {
                    let at = path.join(&link.name);
                    std::os::unix::fs::symlink(&link.target, &at)
                        .map_err(|e| format!("cannot create the symlink {}: {e}", at.display()))?;
                    links.push(at);
                }
                for sub in manifest.directories {
                    let at = path.join(&sub.name);
                    std::fs::create_dir(&at).map_err(|e| format!("cannot create {}: {e}", at.display()))?;
                    if let Some(d) = sub.digest {
                        pending.push((d, at, depth + 1));
                    }
                }
            }
        }
        let manifests_done = Instant::now();
        // Blobs first, several at once; then the links into the tree.
        let downloaded = self.ensure_all(&client, files.iter().map(|(_, d, x)| (d.clone(), *x))).await?;
        let blobs_done = Instant::now();
        let mut record = crate::builds::Record::new();
        for (at, digest, executable) in &files {
            let blob = self.blob_path(digest, *executable);
            let path = at.strip_prefix(dir).unwrap_or(at).to_string_lossy().into_owned();
            let name = file_name(&blob);
            let changed = build.is_some_and(|b| b.changed(&path, &name));
            record.insert(path, name);
            if changed {
                // A fresh copy, with a fresh time, for the build folder to see it changed.
                std::fs::copy(&blob, at).map_err(|e| format!("cannot write {}: {e}", at.display()))?;
                continue;
            }
            if std::fs::hard_link(&blob, at).is_err() {
                self.copied_once.call_once(|| {
                    warn!("cannot hard-link from the cache into {}: copying files instead", dir.display())
                });
                std::fs::copy(&blob, at).map_err(|e| format!("cannot write {}: {e}", at.display()))?;
            }
        }
        let real = dir.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        for link in &links {
            // A link that resolves must stay inside; a dangling one is the tree's own business.
            if let Ok(to) = link.canonicalize()
                && !to.starts_with(&real)
            {
                let shown = link.strip_prefix(dir).unwrap_or(link).display().to_string();
                return Err(format!("the symlink {shown} leads outside the workspace"));
            }
        }
        if let Some(build) = build {
            build.record(&record);
        }
        self.evict();
        tracing::debug!(
            manifests_ms = (manifests_done - started).as_millis() as u64,
            blobs_ms = (blobs_done - manifests_done).as_millis() as u64,
            links_ms = blobs_done.elapsed().as_millis() as u64,
            "materialised"
        );
        Ok(((files.len() as u64 + links.len() as u64, downloaded), record))
    }

    fn blob_path(&self, digest: &pb::Digest, executable: bool) -> PathBuf {
        let name = if executable { format!("{}.x", digest.hash) } else { digest.hash.clone() };
        self.cache.join("blobs").join(&digest.hash[..2]).join(name)
    }

    /// Make sure every blob is cached: how many were downloaded.
    async fn ensure_all(
        self: &Arc<Self>,
        client: &pb::blob_service_client::BlobServiceClient<GridChannel>,
        wanted: impl Iterator<Item = (pb::Digest, bool)>,
    ) -> Result<u64, String> {
        let mut missing: Vec<(pb::Digest, bool)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (digest, executable) in wanted {
            let path = self.blob_path(&digest, executable);
            if !seen.insert(path.clone()) {
                continue;
            }
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == digest.size_bytes) {
                self.touch(&digest, executable);
            } else {
                missing.push((digest, executable));
            }
        }
        let count = missing.len() as u64;
        // Small blobs several per call, big ones streamed one by one.
        let mut jobs: Vec<Vec<(pb::Digest, bool)>> = Vec::new();
        let mut batch: Vec<(pb::Digest, bool)> = Vec::new();
        let mut batch_bytes = 0;
        for (digest, executable) in missing {
            if digest.size_bytes > BATCH_BLOB_BYTES {
                jobs.push(vec![(digest, executable)]);
                continue;
            }
            if (batch_bytes + digest.size_bytes > BATCH_BYTES || batch.len() >= FIND_MISSING_DIGESTS)
                && !batch.is_empty()
            {
                jobs.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += digest.size_bytes;
            batch.push((digest, executable));
        }
        if !batch.is_empty() {
            jobs.push(batch);
        }
        let queue = Arc::new(Mutex::new(jobs));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..PARALLEL_DOWNLOADS {
            let (queue, mut client, this) = (Arc::clone(&queue), client.clone(), Arc::clone(self));
            workers.spawn(async move {
                loop {
                    let next = lock(&queue).pop();
                    let Some(job) = next else { return Ok::<(), String>(()) };
                    match job.as_slice() {
                        [(digest, executable)] if digest.size_bytes > BATCH_BLOB_BYTES => {
                            this.download(&mut client, digest, *executable).await?
                        }
                        _ => this.download_batch(&mut client, &job).await?,
                    }
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            // The first failure stops the others (dropping the set aborts them).
            done.map_err(|e| format!("a download failed: {e}"))??;
        }
        Ok(count)
    }

    /// Download small blobs in one call into the cache (see [`Workspaces::download`]).
    async fn download_batch(
        &self,
        client: &mut pb::blob_service_client::BlobServiceClient<GridChannel>,
        job: &[(pb::Digest, bool)],
    ) -> Result<(), String> {
        let digests: Vec<pb::Digest> = job.iter().map(|(d, _)| d.clone()).collect();
        let answer = client
            .batch_download(pb::BatchDownloadRequest { digests })
            .await
            .map_err(|s| format!("cannot download the workspace's files: {}", s.message()))?
            .into_inner();
        if answer.blobs.len() != job.len() {
            return Err(format!("asked for {} blobs, the coordinator sent {}", job.len(), answer.blobs.len()));
        }
        for ((digest, executable), blob) in job.iter().zip(answer.blobs) {
            if blob.digest.as_ref() != Some(digest) {
                return Err(format!("the coordinator sent another blob than blob {}", &digest.hash[..12]));
            }
            let mut file = self.temp_file(digest)?;
            if tree::digest_of(&blob.data) != *digest {
                return Err(format!(
                    "blob {} came with other bytes than its digest names: refused",
                    &digest.hash[..12]
                ));
            }
            file.write_all(&blob.data).map_err(|e| format!("cannot write to the cache: {e}"))?;
            self.keep(file, digest, *executable)?;
        }
        Ok(())
    }

    /// A temporary file beside where `digest`'s blob goes: in its own shard folder, since one
    /// folder taking every new file is slow on ext4 (its inode allocator scans recently deleted
    /// inodes of the folder's group: 20 s instead of 2 s for 10,000 files).
    fn temp_file(&self, digest: &pb::Digest) -> Result<tempfile::NamedTempFile, String> {
        let shard = self.cache.join("blobs").join(&digest.hash[..2]);
        std::fs::create_dir_all(&shard).map_err(|e| format!("cannot write to the cache: {e}"))?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(shard)
            .map_err(|e| format!("cannot write to the cache: {e}"))
    }

    /// A verified blob's temporary file made read-only and renamed into the cache.
    fn keep(&self, file: tempfile::NamedTempFile, digest: &pb::Digest, executable: bool) -> Result<(), String> {
        let mode = if executable { 0o555 } else { 0o444 };
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot write to the cache: {e}"))?;
        let path = self.blob_path(digest, executable);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot write to the cache: {e}"))?;
        }
        file.persist(&path).map_err(|e| format!("cannot write to the cache: {}", e.error))?;
        lock(&self.blobs).insert(file_name(&path), (digest.size_bytes, Instant::now()));
        Ok(())
    }

    /// Download one blob into the cache: written to a temporary file, checked against its
    /// digest, made read-only, renamed into place.
    async fn download(
        &self,
        client: &mut pb::blob_service_client::BlobServiceClient<GridChannel>,
        digest: &pb::Digest,
        executable: bool,
    ) -> Result<(), String> {
        tree::check_digest(digest)?;
        let shown = &digest.hash[..12];
        let mut stream = client
            .download(pb::DownloadRequest { digest: Some(digest.clone()) })
            .await
            .map_err(|s| format!("cannot download blob {shown}: {}", s.message()))?
            .into_inner();
        let mut file = self.temp_file(digest)?;
        let mut hasher = tree::Hasher::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| format!("downloading blob {shown} failed: {}", s.message()))?;
            if hasher.size() + chunk.data.len() as u64 > digest.size_bytes {
                return Err(format!("blob {shown} came longer than its digest says"));
            }
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).map_err(|e| format!("cannot write to the cache: {e}"))?;
        }
        if hasher.finish() != *digest {
            return Err(format!("blob {shown} came with other bytes than its digest names: refused"));
        }
        self.keep(file, digest, executable)
    }

    fn touch(&self, digest: &pb::Digest, executable: bool) {
        let name = file_name(&self.blob_path(digest, executable));
        lock(&self.blobs).insert(name, (digest.size_bytes, Instant::now()));
    }

    /// Drop the least recently used blobs until the cache fits its capacity. A blob linked into
    /// a session's folder stays there (the link is the folder's own).
    fn evict(&self) {
        let mut blobs = lock(&self.blobs);
        let mut used: u64 = blobs.values().map(|(size, _)| size).sum();
        if used <= self.capacity {
            return;
        }
        let mut order: Vec<(String, u64, Instant)> = blobs.iter().map(|(n, (s, t))| (n.clone(), *s, *t)).collect();
        order.sort_by_key(|(_, _, t)| *t);
        for (name, size, _) in order {
            if used <= self.capacity {
                break;
            }
            let removed = match name.strip_prefix(SETUP_PREFIX) {
                Some(key) => {
                    let path = self.cache.join("setup").join(key);
                    remove_tree(&path);
                    !path.exists()
                }
                None => {
                    std::fs::remove_file(self.cache.join("blobs").join(&name[..2.min(name.len())]).join(&name)).is_ok()
                }
            };
            if removed {
                used -= size;
                blobs.remove(&name);
            }
        }
    }

    /// The folder of what a setup with `key` produced (`N/` for its `N`th output), if it is kept.
    pub fn setup_output(&self, key: &str) -> Option<PathBuf> {
        let path = self.cache.join("setup").join(key);
        let name = format!("{SETUP_PREFIX}{key}");
        let mut cached = lock(&self.blobs);
        let entry = cached.get_mut(&name)?;
        entry.1 = Instant::now();
        path.is_dir().then_some(path)
    }

    /// Keep what a setup with `key` produced (`outputs`, the session tree's folders; one that does
    /// not exist is not kept): linked into the cache, made read-only, counted in its size.
    pub fn keep_setup_output(&self, key: &str, outputs: &[PathBuf]) -> Result<(), String> {
        let started = Instant::now();
        let setups = self.cache.join("setup");
        let temp = tempfile::Builder::new()
            .prefix(crate::setup::TEMP_PREFIX)
            .tempdir_in(&setups)
            .map_err(|e| format!("cannot write to the cache: {e}"))?;
        let mut bytes = 0;
        for (i, output) in outputs.iter().enumerate() {
            if std::fs::symlink_metadata(output).is_err() {
                continue;
            }
            bytes += crate::setup::link_tree(output, &temp.path().join(i.to_string()))
                .map_err(|e| format!("cannot keep {}: {e}", output.display()))?;
        }
        crate::setup::make_read_only(temp.path()).map_err(|e| format!("cannot keep the outputs: {e}"))?;
        if bytes > self.capacity {
            return Err(format!("its {bytes} bytes do not fit in the cache (--cache-size)"));
        }
        let kept = temp.keep();
        if std::fs::rename(&kept, setups.join(key)).is_err() {
            // Another session with the same key kept it first: theirs stands.
            remove_tree(&kept);
            return Ok(());
        }
        lock(&self.blobs).insert(format!("{SETUP_PREFIX}{key}"), (bytes, Instant::now()));
        info!(
            key = &key[..12.min(key.len())],
            bytes,
            millis = started.elapsed().as_millis() as u64,
            "setup outputs kept for reuse"
        );
        self.evict();
        Ok(())
    }

    /// `session` is over: its folder goes now, or when its last test is done with it.
    pub fn ended(&self, session: &str) {
        let mut trees = lock(&self.trees);
        let Some(tree) = trees.get(session).cloned() else { return };
        let mut tree = lock(&tree);
        tree.ended = true;
        tree.remove_if_done();
        if tree.active == 0 {
            trees.remove(session);
        }
    }

    /// Remove the folders of sessions idle for [`IDLE_LIMIT`] (or all, `everything`).
    pub fn sweep(&self, everything: bool) {
        let mut trees = lock(&self.trees);
        trees.retain(|session, tree| {
            let tree = lock(tree);
            let idle = tree.active == 0 && tree.last_used.elapsed() >= IDLE_LIMIT;
            if everything || idle {
                remove_tree(&self.cache.join("sessions").join(session));
                false
            } else {
                true
            }
        });
    }
}

/// How the cache's size accounting names a kept setup output (blobs are named by their file).
const SETUP_PREFIX: &str = "setup/";

/// The bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            bytes += meta.len();
        }
    }
    bytes
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Remove a session's folder: its read-only files first made removable where needed.
pub fn remove_tree(dir: &Path) {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        let _ = std::fs::remove_file(dir);
        return;
    }
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    // A test may have left a folder read-only: give every folder its write bit back, then retry.
    for entry in walk_dirs(dir) {
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        warn!(dir = %dir.display(), "cannot remove a session's workspace: {e}");
    }
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// The worker's [`Workspaces`], opened when the first session with a workspace comes (a worker
/// that never gets one makes no folder), in `--cache-dir` or a temporary folder of its own.
pub struct Shared {
    dir: Option<PathBuf>,
    capacity: u64,
    /// The setups of sessions that run in the worker's own tree.
    pub own_setups: crate::setup::OwnTree,
    /// Where their stamps go (see [`crate::Config::setup_stamps`]).
    pub stamps: Option<PathBuf>,
    opened: tokio::sync::OnceCell<Result<Arc<Workspaces>, String>>,
    /// The temporary folder, removed with this.
    temp: Mutex<Option<tempfile::TempDir>>,
}

impl Shared {
    pub fn new(dir: Option<PathBuf>, capacity: u64, stamps: Option<PathBuf>) -> Shared {
        let stamps = stamps.or_else(|| dir.as_ref().map(|d| d.join("setup-stamps")));
        Shared {
            dir,
            capacity,
            own_setups: Default::default(),
            stamps,
            opened: tokio::sync::OnceCell::new(),
            temp: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Arc<Workspaces>, String> {
        self.opened
            .get_or_init(|| async {
                let dir = match &self.dir {
                    Some(dir) => dir.clone(),
                    None => {
                        let temp = tempfile::Builder::new()
                            .prefix("testgrid-worker-cache-")
                            .tempdir()
                            .map_err(|e| format!("cannot create a cache folder (set --cache-dir): {e}"))?;
                        let path = temp.path().to_path_buf();
                        *lock(&self.temp) = Some(temp);
                        path
                    }
                };
                let workspaces = Workspaces::open(&dir, self.capacity)
                    .map_err(|e| format!("cannot use the cache folder {} (--cache-dir): {e}", dir.display()))?;
                info!(dir = %dir.display(), "workspace cache opened");
                Ok(Arc::new(workspaces))
            })
            .await
            .clone()
    }

    /// See [`Workspaces::ended`].
    pub fn ended(&self, session: &str) {
        self.own_setups.ended(session);
        if let Some(Ok(workspaces)) = self.opened.get() {
            workspaces.ended(session);
        }
    }

    /// See [`Workspaces::sweep`].
    pub fn sweep(&self, everything: bool) {
        if let Some(Ok(workspaces)) = self.opened.get() {
            workspaces.sweep(everything);
        }
    }
}
