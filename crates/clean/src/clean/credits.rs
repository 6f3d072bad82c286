//! The rules of credits.csv and keywords.csv (rows of known movies only).

use super::*;

// credits.csv and keywords.csv

pub(super) const CREDITS_COLS: &[&str] = &["cast", "crew", "id"];
pub(super) const CAST: usize = 0;
pub(super) const CREW: usize = 1;
pub(super) const CREDITS_ID: usize = 2;

pub(super) const KEYWORDS_COLS: &[&str] = &["id", "keywords"];
pub(super) const KEYWORDS_ID: usize = 0;
pub(super) const KEYWORDS: usize = 1;

/// The shared checks of a file keyed by movie id: a positive id, of an accepted movie, seen
/// once in this file.
#[inline]
pub(super) fn movie_key(b: &[u8], movies: &IdSet, seen: &mut IdSet) -> Result<i64, RejectReason> {
    let id = parse_positive_id(b).ok_or(RejectReason::BadId)?;
    if !movies.contains(&id) {
        return Err(RejectReason::UnknownMovie);
    }
    if !seen.insert(id) {
        return Err(RejectReason::DuplicateId);
    }
    Ok(id)
}

pub(super) fn credits_record(
    row: &Row<'_>,
    t: &mut [CopyWriter],
    u: &mut [u64],
    movies: &IdSet,
    seen: &mut IdSet,
    doc: &mut Document,
) -> Result<Option<RejectReason>, CleanError> {
    let id = match movie_key(row.get(CREDITS_ID), movies, seen) {
        Ok(id) => id,
        Err(reason) => return Ok(Some(reason)),
    };
    let [cast_w, crew_w] = pick(t, [T::CastMembers, T::CrewMembers]);
    people(doc, row.get(CAST), id, cast_w, u, CAST, true)?;
    people(doc, row.get(CREW), id, crew_w, u, CREW, false)?;
    Ok(None)
}

pub(super) const I32: (i64, i64) = (i32::MIN as i64, i32::MAX as i64);
pub(super) const I16: (i64, i64) = (i16::MIN as i64, i16::MAX as i64);

/// The `cast` or `crew` list: one row per element, `ord` = its position in the list.
pub(super) fn people(
    doc: &mut Document,
    cell: &[u8],
    movie_id: i64,
    w: &mut CopyWriter,
    u: &mut [u64],
    c: usize,
    cast: bool,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    for (ord, item) in items.enumerate() {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        w.int(movie_id);
        w.int(ord as i64);
        if cast {
            let [cast_id, credit_id, person, name, character, gender, profile] = item.fields([
                "cast_id",
                "credit_id",
                "id",
                "name",
                "character",
                "gender",
                "profile_path",
            ]);
            lit_int(w, cast_id, I32.0, I32.1, &mut bad);
            lit_text(w, credit_id, &mut bad);
            lit_int(w, person, i64::MIN, i64::MAX, &mut bad);
            lit_text(w, name, &mut bad);
            lit_text(w, character, &mut bad);
            lit_int(w, gender, I16.0, I16.1, &mut bad);
            lit_text(w, profile, &mut bad);
        } else {
            let [credit_id, person, name, department, job, gender, profile] =
                item.fields(["credit_id", "id", "name", "department", "job", "gender", "profile_path"]);
            lit_text(w, credit_id, &mut bad);
            lit_int(w, person, i64::MIN, i64::MAX, &mut bad);
            lit_text(w, name, &mut bad);
            lit_text(w, department, &mut bad);
            lit_text(w, job, &mut bad);
            lit_int(w, gender, I16.0, I16.1, &mut bad);
            lit_text(w, profile, &mut bad);
        }
        end(w)?;
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn keywords_record(
    row: &Row<'_>,
    t: &mut [CopyWriter],
    u: &mut [u64],
    movies: &IdSet,
    seen: &mut IdSet,
    dim_seen: &mut IdSet,
    scratch: &mut Vec<i64>,
    doc: &mut Document,
) -> Result<Option<RejectReason>, CleanError> {
    let id = match movie_key(row.get(KEYWORDS_ID), movies, seen) {
        Ok(id) => id,
        Err(reason) => return Ok(Some(reason)),
    };
    let [dim, link] = pick(t, [T::Keywords, T::MovieKeywords]);
    id_name_list(doc, row.get(KEYWORDS), id, dim, link, dim_seen, scratch, u, KEYWORDS)?;
    Ok(None)
}
