//! S3 and HTTP(S) sources through object_store.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, GetOptions, GetRange, GetResult, ObjectStore, RetryConfig};

use crate::artifact::{self, checkpoint, PartState, PartWriter};
use crate::source::{scrub, SourceKind};
use crate::{Ctx, FetchError, FetchOutput, Progress};

/// Sync the `.part` and record its state after this many new bytes.
const CHECKPOINT_BYTES: u64 = 16 << 20;

/// A failed GET, with the two answers the caller handles itself.
enum ReqError {
    /// 304 to an If-None-Match request.
    NotModified,
    /// 412 to an If-Match request: the object is not the version we started with.
    Changed,
    /// The server cannot serve byte ranges: only a download from zero can work.
    RangeUnsupported,
    Failed(FetchError),
}

pub(crate) async fn fetch_remote(ctx: &Ctx<'_>) -> Result<FetchOutput, FetchError> {
    let (store, path) = build_store(ctx)?;
    let paths = &ctx.paths;
    let prev = artifact::previous_output(paths, &ctx.location).await;
    let part = artifact::read_json::<PartState>(&paths.part_meta)
        .await
        .filter(|p| p.source == ctx.location && p.etag.is_some());

    let mut started: Option<(PartWriter, GetResult)> = None;

    // 1. An earlier attempt left a partial download: continue it if the object is unchanged.
    if let Some(ps) = part {
        // Keep at least the last byte to fetch, so the Range request is never empty.
        let keep = ps.bytes.min(ps.size.saturating_sub(1));
        match PartWriter::reopen(&paths.part, keep).await {
            Ok(Some(w)) if keep > 0 => {
                tracing::info!(bytes = keep, size = ps.size, "resuming an interrupted download");
                let opts = GetOptions {
                    range: Some(GetRange::Offset(keep)),
                    if_match: ps.etag.clone(),
                    ..Default::default()
                };
                match get(ctx, &store, &path, opts).await {
                    Ok(r) if r.meta.e_tag == ps.etag => started = Some((w, r)),
                    Ok(_) | Err(ReqError::Changed) => {
                        tracing::info!("the object changed since the interrupted download; starting over")
                    }
                    Err(ReqError::RangeUnsupported) => {
                        tracing::info!("the server does not serve byte ranges; starting over")
                    }
                    Err(ReqError::NotModified) => return Err(unexpected(ctx, "304 to a Range request")),
                    Err(ReqError::Failed(e)) => return Err(e),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reuse the partial download; starting over"),
        }
    }

    // 2. An earlier fetch succeeded: ask for the object only if it changed.
    if started.is_none() {
        if let Some(prev) = prev.filter(|p| p.etag.is_some()) {
            let opts = GetOptions {
                if_none_match: prev.etag.clone(),
                ..Default::default()
            };
            match get(ctx, &store, &path, opts).await {
                Err(ReqError::NotModified) => {
                    artifact::discard_part(paths).await;
                    return Ok(FetchOutput {
                        path: paths.zip.clone(),
                        reused: true,
                        resumes: 0,
                        object: None,
                        ..prev
                    });
                }
                Ok(r) => {
                    tracing::info!(
                        old_etag = prev.etag.as_deref().unwrap_or("none"),
                        new_etag = r.meta.e_tag.as_deref().unwrap_or("none"),
                        "the object changed since the last fetch"
                    );
                    let w = PartWriter::create(&paths.part).await.map_err(ctx.io(&paths.part))?;
                    started = Some((w, r));
                }
                Err(ReqError::Changed | ReqError::RangeUnsupported) => {
                    return Err(unexpected(ctx, "412 without If-Match"))
                }
                Err(ReqError::Failed(e)) => return Err(e),
            }
        }
    }

    // 3. Otherwise a plain GET.
    let (w, first) = match started {
        Some(s) => s,
        None => {
            let r = match get(ctx, &store, &path, GetOptions::default()).await {
                Ok(r) => r,
                Err(ReqError::Failed(e)) => return Err(e),
                Err(_) => return Err(unexpected(ctx, "a conditional answer to a plain GET")),
            };
            let w = PartWriter::create(&paths.part).await.map_err(ctx.io(&paths.part))?;
            (w, r)
        }
    };
    download(ctx, &store, &path, w, first).await
}

/// Streams the body into the `.part`, resuming after body errors, then publishes the zip.
async fn download(
    ctx: &Ctx<'_>,
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    mut w: PartWriter,
    first: GetResult,
) -> Result<FetchOutput, FetchError> {
    let paths = &ctx.paths;
    let mut state = PartState {
        source: ctx.location.clone(),
        etag: first.meta.e_tag.clone(),
        size: first.meta.size,
        last_modified: fmt_time(first.meta.last_modified),
        bytes: w.written,
    };
    let mut stream = first.into_stream();
    let mut resumes = 0u32;
    let mut progress = Progress::new(w.written, Some(state.size));
    checkpoint(&mut w, &mut state, paths)
        .await
        .map_err(ctx.io(&paths.part_meta))?;

    loop {
        let mut failure = match pump(ctx, &mut stream, &mut w, &mut state, &mut progress).await {
            Ok(()) if w.written == state.size => break,
            Ok(()) => FetchError::Incomplete {
                location: ctx.location.clone(),
                expected: state.size,
                received: w.written,
            },
            Err(e @ FetchError::NotAZip { .. }) => {
                drop(w);
                artifact::discard_part(paths).await;
                return Err(e);
            }
            Err(e) if resumable(&e) => e,
            Err(e) => {
                if e.is_retryable() || e.is_cancelled() {
                    save_for_later(&mut w, &mut state, ctx).await;
                } else {
                    drop(w);
                    artifact::discard_part(paths).await;
                }
                return Err(e);
            }
        };
        drop(stream);

        // Resume: a Range request from what we have, pinned to the same version.
        stream = loop {
            if resumes >= ctx.cfg.max_resumes {
                save_for_later(&mut w, &mut state, ctx).await;
                return Err(failure);
            }
            resumes += 1;
            checkpoint(&mut w, &mut state, paths)
                .await
                .map_err(ctx.io(&paths.part))?;
            tracing::warn!(
                error = %failure,
                at = w.written,
                resume = resumes,
                max_resumes = ctx.cfg.max_resumes,
                "download interrupted; resuming"
            );
            sleep_or_cancel(ctx, backoff(resumes)).await?;

            let mut opts = GetOptions::default();
            match &state.etag {
                Some(etag) if w.written > 0 => {
                    opts.range = Some(GetRange::Offset(w.written));
                    opts.if_match = Some(etag.clone());
                }
                _ => {
                    // Without an ETag a resume could splice two versions: start over.
                    restart(ctx, &mut w, &mut state).await?;
                }
            }
            match get(ctx, store, path, opts).await {
                Ok(r) if w.written > 0 && r.meta.e_tag != state.etag => {
                    // The server ignored If-Match and sent another version.
                    restart(ctx, &mut w, &mut state).await?;
                    failure = FetchError::Changed {
                        location: ctx.location.clone(),
                    };
                }
                Ok(r) => {
                    state.etag = r.meta.e_tag.clone();
                    state.size = r.meta.size;
                    state.last_modified = fmt_time(r.meta.last_modified);
                    progress = Progress::new(w.written, Some(state.size));
                    break r.into_stream();
                }
                Err(ReqError::RangeUnsupported) => {
                    tracing::info!("the server does not serve byte ranges; starting over");
                    restart(ctx, &mut w, &mut state).await?;
                }
                Err(ReqError::Changed) => {
                    tracing::info!("the object changed during the download; starting over");
                    restart(ctx, &mut w, &mut state).await?;
                    failure = FetchError::Changed {
                        location: ctx.location.clone(),
                    };
                }
                Err(ReqError::Failed(e)) if e.is_retryable() && !matches!(e, FetchError::Io { .. }) => {
                    failure = e;
                }
                Err(ReqError::Failed(e)) => {
                    save_for_later(&mut w, &mut state, ctx).await;
                    return Err(e);
                }
                Err(ReqError::NotModified) => return Err(unexpected(ctx, "304 to a Range request")),
            }
        };
    }
    drop(stream);

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
        etag: state.etag,
        last_modified: state.last_modified,
        source: ctx.location.clone(),
        reused: false,
        resumes,
        object: None,
    };
    artifact::commit(paths, &out).await.map_err(ctx.io(&paths.zip))?;
    Ok(out)
}

/// Copies body chunks into the `.part` until the stream ends or fails.
async fn pump(
    ctx: &Ctx<'_>,
    stream: &mut BoxStream<'static, object_store::Result<bytes::Bytes>>,
    w: &mut PartWriter,
    state: &mut PartState,
    progress: &mut Progress,
) -> Result<(), FetchError> {
    let read_timeout = ctx.cfg.read_timeout;
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ctx.cancelled()),
            n = tokio::time::timeout(read_timeout, stream.next()) => n,
        };
        let chunk = match next {
            Err(_) => {
                return Err(FetchError::Timeout {
                    location: ctx.location.clone(),
                    detail: format!("no data for {read_timeout:?} at byte {}", w.written),
                })
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                return Err(match classify(ctx, &e) {
                    FetchError::Network { location, detail } => FetchError::Network {
                        location,
                        detail: format!("{detail} (at byte {})", w.written),
                    },
                    other => other,
                })
            }
            Ok(Some(Ok(b))) => b,
        };
        if let Err(e) = w.write(&chunk).await {
            // A full disk: free what this download wrote so the volume can recover.
            if e.kind() == std::io::ErrorKind::StorageFull {
                artifact::discard_part(&ctx.paths).await;
            }
            return Err(ctx.io(&ctx.paths.part)(e));
        }
        if w.zip_verdict() == Some(false) {
            return Err(ctx.not_a_zip(w));
        }
        if w.written > state.size {
            return Err(unexpected(ctx, "more bytes than the announced size"));
        }
        if w.written - w.synced >= CHECKPOINT_BYTES {
            checkpoint(w, state, &ctx.paths)
                .await
                .map_err(ctx.io(&ctx.paths.part))?;
        }
        progress.tick(w.written);
    }
}

/// Body failures a Range request can get past.
fn resumable(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Network { .. }
            | FetchError::Timeout { .. }
            | FetchError::Incomplete { .. }
            | FetchError::Server { .. }
    )
}

/// Empties the `.part` and forgets its state: the next request downloads from zero.
async fn restart(ctx: &Ctx<'_>, w: &mut PartWriter, state: &mut PartState) -> Result<(), FetchError> {
    w.reset().await.map_err(ctx.io(&ctx.paths.part))?;
    state.etag = None;
    state.bytes = 0;
    match tokio::fs::remove_file(&ctx.paths.part_meta).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ctx.io(&ctx.paths.part_meta)(e)),
        _ => Ok(()),
    }
}

/// Syncs the `.part` and its state so the next attempt can resume (best effort).
async fn save_for_later(w: &mut PartWriter, state: &mut PartState, ctx: &Ctx<'_>) {
    if let Err(e) = checkpoint(w, state, &ctx.paths).await {
        tracing::warn!(error = %e, "could not save the partial download");
    }
}

fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(8_000))
}

async fn sleep_or_cancel(ctx: &Ctx<'_>, d: Duration) -> Result<(), FetchError> {
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(ctx.cancelled()),
        () = tokio::time::sleep(d) => Ok(()),
    }
}

/// One GET, bounded by connect + read timeout for the response headers, and cancellable.
async fn get(
    ctx: &Ctx<'_>,
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    opts: GetOptions,
) -> Result<GetResult, ReqError> {
    let limit = ctx.cfg.connect_timeout + ctx.cfg.read_timeout;
    let ranged = opts.range.is_some();
    let r = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => return Err(ReqError::Failed(ctx.cancelled())),
        r = tokio::time::timeout(limit, store.get_opts(path, opts)) => r,
    };
    match r {
        Err(_) => Err(ReqError::Failed(FetchError::Timeout {
            location: ctx.location.clone(),
            detail: format!("no response within {limit:?}"),
        })),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(object_store::Error::NotModified { .. })) => Err(ReqError::NotModified),
        Ok(Err(object_store::Error::Precondition { .. })) => Err(ReqError::Changed),
        // HTTP: "Range request not supported"; S3: "Received non-partial response when range
        // requested".
        Ok(Err(e))
            if ranged
                && (matches!(e, object_store::Error::NotSupported { .. })
                    || e.to_string().contains("non-partial response")) =>
        {
            Err(ReqError::RangeUnsupported)
        }
        Ok(Err(e)) => Err(ReqError::Failed(classify(ctx, &e))),
    }
}

fn unexpected(ctx: &Ctx<'_>, what: &str) -> FetchError {
    FetchError::Protocol {
        location: ctx.location.clone(),
        detail: what.to_string(),
    }
}

fn fmt_time(t: chrono::DateTime<chrono::Utc>) -> Option<String> {
    (t.timestamp() != 0).then(|| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Maps an object_store error to what it means for the fetch.
fn classify(ctx: &Ctx<'_>, e: &object_store::Error) -> FetchError {
    let location = ctx.location.clone();
    let text = scrub(&e.to_string(), ctx.source);
    let status = status_in(e);
    let status_detail = || {
        let mut d = status.map_or_else(|| "no status".to_string(), |s| s.to_string());
        if let Some(code) = s3_code(&text) {
            d.push_str(": ");
            d.push_str(code);
        }
        d
    };
    match e {
        object_store::Error::NotFound { .. } => return FetchError::NotFound { location },
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            return FetchError::AccessDenied {
                location,
                detail: status_detail(),
            }
        }
        _ => {}
    }
    if let Some(kind) = http_error_kind(e) {
        return match kind {
            HttpErrorKind::Timeout => FetchError::Timeout {
                location,
                detail: short(&text),
            },
            _ => FetchError::Network {
                location,
                detail: short(&text),
            },
        };
    }
    match status {
        Some(401 | 403) => FetchError::AccessDenied {
            location,
            detail: status_detail(),
        },
        Some(404 | 410) => FetchError::NotFound { location },
        Some(s @ (408 | 429 | 500..=599)) => FetchError::Server {
            location,
            status: s,
            detail: reason_phrase(&text).unwrap_or_else(|| short(&text)),
        },
        _ if text.contains("Server returned error response") => {
            // S3 may report InternalError/SlowDown in the body of a 200.
            FetchError::Network {
                location,
                detail: short(&text),
            }
        }
        _ => FetchError::Protocol {
            location,
            detail: short(&text),
        },
    }
}

fn chain<'a>(e: &'a object_store::Error) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let first: &'a (dyn StdError + 'static) = e;
    std::iter::successors(Some(first), |c: &&'a (dyn StdError + 'static)| (*c).source())
}

fn http_error_kind(e: &object_store::Error) -> Option<HttpErrorKind> {
    chain(e)
        .find_map(|c| c.downcast_ref::<HttpError>())
        .map(HttpError::kind)
}

/// The HTTP status in object_store's "status code: 503 Service Unavailable" text (its error
/// types that carry the status are not public).
fn status_in(e: &object_store::Error) -> Option<u16> {
    chain(e).find_map(|c| {
        let text = c.to_string();
        let at = text.find("status code: ")? + "status code: ".len();
        text.get(at..at + 3)?.parse().ok()
    })
}

/// `Service Unavailable` (and the S3 error code, if any) from object_store's "status code: 503
/// Service Unavailable: <body>" text, instead of its whole wrapping.
fn reason_phrase(text: &str) -> Option<String> {
    let at = text.find("status code: ")? + "status code: ".len() + 3;
    let rest = text.get(at..)?.trim_start();
    let phrase = rest.split(':').next()?.trim();
    let mut d = if phrase.is_empty() {
        "no reason given".to_string()
    } else {
        short(phrase)
    };
    if let Some(code) = s3_code(text) {
        d.push_str(" (");
        d.push_str(code);
        d.push(')');
    }
    Some(d)
}

/// The S3 error code (`<Code>SignatureDoesNotMatch</Code>`) in an error body.
fn s3_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len]).filter(|c| c.len() < 64)
}

fn short(text: &str) -> String {
    const MAX: usize = 400;
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // An empty response body leaves "…503 Service Unavailable: " behind.
    let one_line = one_line.trim_end_matches([':', ' ', '-']).to_string();
    if one_line.len() <= MAX {
        return one_line;
    }
    let mut end = MAX;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

fn client_options(ctx: &Ctx<'_>) -> ClientOptions {
    // No overall request timeout: a large body takes as long as it takes; stalls are caught by
    // the read timeout around each chunk.
    ClientOptions::new()
        .with_connect_timeout(ctx.cfg.connect_timeout)
        .with_timeout_disabled()
}

/// Retries are ours (resumes counted, If-Match pinned); object_store's would hide body errors.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

fn build_store(ctx: &Ctx<'_>) -> Result<(Arc<dyn ObjectStore>, ObjPath), FetchError> {
    let config_err = |e: object_store::Error| FetchError::Config {
        location: ctx.location.clone(),
        detail: scrub(&e.to_string(), ctx.source),
    };
    match &ctx.source.kind {
        SourceKind::S3 { bucket, key } => {
            // The endpoint, region and addressing rules are shared with the artifact store.
            let b = AmazonS3Builder::new()
                .with_client_options(client_options(ctx))
                .with_retry(no_retries());
            let mut b = reelflow_artifacts::s3_builder(b, bucket, &ctx.cfg.s3_settings());
            b = match ctx.cfg.s3_credentials.resolve() {
                Some((id, secret, token)) => {
                    let b = b.with_access_key_id(id).with_secret_access_key(secret);
                    match token {
                        Some(t) => b.with_token(t),
                        None => b,
                    }
                }
                None => b.with_skip_signature(true),
            };
            let store = b.build().map_err(config_err)?;
            let path = ObjPath::parse(key).unwrap_or_else(|_| ObjPath::from(key.as_str()));
            Ok((Arc::new(store), path))
        }
        SourceKind::Http { url } => {
            // The store's base URL is the whole URL and the object path is empty, so the request
            // goes to exactly the URL given (query included).
            let options = client_options(ctx).with_allow_http(url.scheme() == "http");
            let store = HttpBuilder::new()
                .with_url(url.as_str())
                .with_client_options(options)
                .with_retry(no_retries())
                .build()
                .map_err(config_err)?;
            Ok((Arc::new(store), ObjPath::default()))
        }
        SourceKind::File { .. } => unreachable!("file sources are read by crate::local"),
    }
}
