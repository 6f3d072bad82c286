//! The rules of links.csv and links_small.csv.

use super::*;

// links.csv, links_small.csv

pub(super) const LINKS_COLS: &[&str] = &["movieId", "imdbId", "tmdbId"];
pub(super) const LINK_MOVIE: usize = 0;
pub(super) const LINK_IMDB: usize = 1;
pub(super) const LINK_TMDB: usize = 2;

pub(super) fn links_record(
    row: &Row<'_>,
    w: &mut CopyWriter,
    u: &mut [u64],
    seen: &mut IdSet,
) -> Result<Option<RejectReason>, CleanError> {
    let Some(movie) = parse_positive_id(row.get(LINK_MOVIE)) else {
        return Ok(Some(RejectReason::BadKey));
    };
    if !seen.insert(movie) {
        return Ok(Some(RejectReason::DuplicateKey));
    }
    w.int(movie);
    text(w, row.get(LINK_IMDB), u, LINK_IMDB);
    let tmdb = row.get(LINK_TMDB);
    if tmdb.is_empty() {
        w.null();
    } else if let Some(v) = parse_positive_id(tmdb) {
        w.int(v);
    } else {
        u[LINK_TMDB] += 1;
        w.null();
    }
    end(w)?;
    Ok(None)
}
