//! The artifact folder: `source.zip` (the object), `source.json` (its [`FetchOutput`]), and
//! while downloading `source.zip.part` plus `source.zip.part.json` (how much of which object
//! version it holds, so a later attempt can resume it).

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::FetchOutput;

const WRITE_BUFFER: usize = 1 << 20;

pub(crate) struct Paths {
    pub zip: PathBuf,
    pub part: PathBuf,
    pub part_meta: PathBuf,
    pub meta: PathBuf,
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Paths {
        Paths {
            zip: dir.join("source.zip"),
            part: dir.join("source.zip.part"),
            part_meta: dir.join("source.zip.part.json"),
            meta: dir.join("source.json"),
            dir: dir.to_path_buf(),
        }
    }
}

/// What `source.zip.part` holds: the first `bytes` bytes (synced to disk) of the object version
/// `etag` of `source`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PartState {
    pub source: String,
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: Option<String>,
    pub bytes: u64,
}

/// Reads a JSON file; a missing or unreadable one is `None` (it is only ever a hint).
pub(crate) async fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file");
            None
        }
    }
}

/// Writes a JSON file atomically (temp file, fsync, rename).
pub(crate) async fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut f = File::create(&tmp).await?;
    f.write_all(&data).await?;
    f.sync_all().await?;
    drop(f);
    fs::rename(&tmp, path).await
}

/// The previous successful output for `location`, if its zip is still there with the recorded
/// size.
pub(crate) async fn previous_output(paths: &Paths, location: &str) -> Option<FetchOutput> {
    let prev: FetchOutput = read_json(&paths.meta).await?;
    if prev.source != location {
        return None;
    }
    let md = fs::metadata(&paths.zip).await.ok()?;
    (md.is_file() && md.len() == prev.size).then_some(prev)
}

async fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes the partial download and its state.
pub(crate) async fn discard_part(paths: &Paths) {
    for p in [&paths.part, &paths.part_meta] {
        if let Err(e) = remove_if_exists(p).await {
            tracing::warn!(path = %p.display(), error = %e, "could not delete partial download");
        }
    }
}

/// Publishes a finished, synced `.part` as `source.zip` with its `source.json`. `source.json`
/// goes first so a crash in between never pairs the new zip with the old description.
pub(crate) async fn commit(paths: &Paths, out: &FetchOutput) -> io::Result<()> {
    reelflow_dag::failpoint("fetch.before_commit");
    remove_if_exists(&paths.meta).await?;
    fs::rename(&paths.part, &paths.zip).await?;
    sync_dir(&paths.dir).await;
    write_json(&paths.meta, out).await?;
    remove_if_exists(&paths.part_meta).await?;
    sync_dir(&paths.dir).await;
    Ok(())
}

async fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

/// `PK\x03\x04` (a local file header) or `PK\x05\x06` (the end record of an empty archive).
pub(crate) fn is_zip_magic(head: &[u8]) -> bool {
    head.len() >= 4 && (head[..4] == *b"PK\x03\x04" || head[..4] == *b"PK\x05\x06")
}

/// Writes the `.part` file, hashing as it goes.
pub(crate) struct PartWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    pub written: u64,
    pub synced: u64,
    head: Vec<u8>,
}

impl PartWriter {
    /// A new, empty `.part` (truncating any old one).
    pub async fn create(path: &Path) -> io::Result<PartWriter> {
        let file = File::create(path).await?;
        Ok(PartWriter::from_file(file))
    }

    fn from_file(file: File) -> PartWriter {
        PartWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            hasher: Sha256::new(),
            written: 0,
            synced: 0,
            head: Vec::with_capacity(4),
        }
    }

    /// Reopens an existing `.part`, keeps its first `keep` bytes (dropping anything after) and
    /// hashes them. `None` when the file is missing or shorter than `keep`.
    pub async fn reopen(path: &Path, keep: u64) -> io::Result<Option<PartWriter>> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if file.metadata().await?.len() < keep {
            return Ok(None);
        }
        file.set_len(keep).await?;
        file.seek(SeekFrom::Start(0)).await?;
        let mut w = PartWriter::from_file(file);
        let mut buf = vec![0u8; WRITE_BUFFER];
        while w.written < keep {
            let n = w.file.get_mut().read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            w.account(&buf[..n]);
        }
        w.file.get_mut().seek(SeekFrom::Start(keep)).await?;
        w.synced = keep;
        Ok(Some(w))
    }

    fn account(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if self.head.len() < 4 {
            let n = (4 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        self.written += data.len() as u64;
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await?;
        // Mid-body, once a checkpoint has recorded a resumable state: the next attempt can
        // continue with a Range request.
        if self.synced > 0 && self.written > self.synced {
            reelflow_dag::failpoint("fetch.mid_body");
        }
        self.account(data);
        Ok(())
    }

    /// `Some(false)` once the first bytes show this is not a zip archive.
    pub fn zip_verdict(&self) -> Option<bool> {
        (self.head.len() >= 4).then(|| is_zip_magic(&self.head))
    }

    pub fn head_hex(&self) -> String {
        if self.head.is_empty() {
            return "nothing: the body is empty".into();
        }
        self.head
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Empties the file and the hash: the download starts over.
    pub async fn reset(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        let f = self.file.get_mut();
        f.set_len(0).await?;
        f.seek(SeekFrom::Start(0)).await?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.synced = 0;
        self.head.clear();
        Ok(())
    }

    /// Flushes and syncs the data written so far.
    pub async fn sync(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.get_mut().sync_data().await?;
        self.synced = self.written;
        Ok(())
    }

    /// Flushes, syncs and closes the file; returns the hex sha256 of everything written.
    pub async fn finish(mut self) -> io::Result<String> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// Syncs the `.part` and records what it holds, so a later attempt can resume it. Only for
/// objects with an ETag: without one a resume could not be pinned to the same version.
pub(crate) async fn checkpoint(w: &mut PartWriter, state: &mut PartState, paths: &Paths) -> io::Result<()> {
    w.sync().await?;
    if state.etag.is_some() {
        state.bytes = w.written;
        write_json(&paths.part_meta, state).await?;
    }
    Ok(())
}
