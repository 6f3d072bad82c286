//! `file://` and plain-path sources: copied into the artifact folder with the same semantics as
//! a download (hash, zip check, `source.json`, reuse when size and mtime are unchanged).

use std::io;
use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::artifact::{self, PartWriter};
use crate::{Ctx, FetchError, FetchOutput, Progress};

const CHUNK: usize = 1 << 20;

pub(crate) async fn fetch_file(ctx: &Ctx<'_>, src: &Path) -> Result<FetchOutput, FetchError> {
    let paths = &ctx.paths;
    let source_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => FetchError::NotFound {
            location: ctx.location.clone(),
        },
        io::ErrorKind::PermissionDenied => FetchError::AccessDenied {
            location: ctx.location.clone(),
            detail: e.to_string(),
        },
        _ => FetchError::Io {
            location: ctx.location.clone(),
            path: src.to_path_buf(),
            source: e,
        },
    };
    let md = tokio::fs::metadata(src).await.map_err(source_err)?;
    if !md.is_file() {
        return Err(FetchError::NotFound {
            location: ctx.location.clone(),
        });
    }
    let mtime = md
        .modified()
        .ok()
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));

    if let Some(prev) = artifact::previous_output(paths, &ctx.location).await {
        if prev.size == md.len() && mtime.is_some() && prev.last_modified == mtime {
            artifact::discard_part(paths).await;
            return Ok(FetchOutput {
                path: paths.zip.clone(),
                reused: true,
                resumes: 0,
                object: None,
                ..prev
            });
        }
    }

    let mut file = tokio::fs::File::open(src).await.map_err(source_err)?;
    // A copy is cheap to redo: no resume state for files.
    artifact::discard_part(paths).await;
    let mut w = PartWriter::create(&paths.part).await.map_err(ctx.io(&paths.part))?;
    let mut progress = Progress::new(0, Some(md.len()));
    let mut buf = vec![0u8; CHUNK];
    loop {
        if ctx.cancel.is_cancelled() {
            drop(w);
            artifact::discard_part(paths).await;
            return Err(ctx.cancelled());
        }
        let n = file.read(&mut buf).await.map_err(source_err)?;
        if n == 0 {
            break;
        }
        if let Err(e) = w.write(&buf[..n]).await {
            if e.kind() == std::io::ErrorKind::StorageFull {
                artifact::discard_part(paths).await;
            }
            return Err(ctx.io(&paths.part)(e));
        }
        if w.zip_verdict() == Some(false) {
            break;
        }
        progress.tick(w.written);
    }
    if w.zip_verdict() != Some(true) {
        let e = ctx.not_a_zip(&w);
        drop(w);
        artifact::discard_part(paths).await;
        return Err(e);
    }
    let size = w.written;
    let sha256 = w.finish().await.map_err(ctx.io(&paths.part))?;
    let out = FetchOutput {
        path: paths.zip.clone(),
        size,
        sha256,
        etag: None,
        last_modified: mtime,
        source: ctx.location.clone(),
        reused: false,
        resumes: 0,
        object: None,
    };
    artifact::commit(paths, &out).await.map_err(ctx.io(&paths.zip))?;
    Ok(out)
}
