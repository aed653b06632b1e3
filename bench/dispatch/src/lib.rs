//! What the coordinator benchmarks share: a coordinator process started for real, a channel to
//! it, a task that ends with its owner.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::client::GridChannel;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running coordinator process and its gRPC address.
pub struct Coordinator {
    pub child: Child,
    pub url: String,
}

impl Coordinator {
    /// Start it on `data` and wait until it answers `List` (it serves once its store is
    /// loaded); returns it and how long that took.
    pub async fn start(binary: &Path, data: &Path, args: &[&str]) -> Result<(Coordinator, Duration), Error> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("TESTGRID_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .ok_or_else(|| format!("no grpc= in {line:?}"))?
            .to_string();
        let url = format!("http://{grpc}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(channel) = channel(&url).await
                && testgrid_proto::client::sessions(channel).list(pb::ListRequest::default()).await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("the coordinator did not answer within 2 minutes".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok((Coordinator { child, url }, started.elapsed()))
    }

    /// Its peak resident memory so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Coordinator {
    /// A run that fails half-way leaves no coordinator behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn channel(url: &str) -> Result<GridChannel, Error> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?.connect().await?;
    Ok(testgrid_proto::client::Target::new(url, std::time::Duration::from_secs(10)).authorized(channel))
}

pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The bytes of the files directly in `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}
