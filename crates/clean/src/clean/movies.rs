//! The rules of movies_metadata.csv: the movie row and its dimension tables.

use super::*;

// movies_metadata.csv

pub(super) const MM_COLS: &[&str] = &[
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
    "id",
    "imdb_id",
    "original_language",
    "original_title",
    "overview",
    "popularity",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "title",
    "video",
    "vote_average",
    "vote_count",
];
pub(super) const ADULT: usize = 0;
pub(super) const COLLECTION: usize = 1;
pub(super) const BUDGET: usize = 2;
pub(super) const GENRES: usize = 3;
pub(super) const HOMEPAGE: usize = 4;
pub(super) const ID: usize = 5;
pub(super) const IMDB_ID: usize = 6;
pub(super) const ORIGINAL_LANGUAGE: usize = 7;
pub(super) const ORIGINAL_TITLE: usize = 8;
pub(super) const OVERVIEW: usize = 9;
pub(super) const POPULARITY: usize = 10;
pub(super) const POSTER_PATH: usize = 11;
pub(super) const COMPANIES: usize = 12;
pub(super) const COUNTRIES: usize = 13;
pub(super) const RELEASE_DATE: usize = 14;
pub(super) const REVENUE: usize = 15;
pub(super) const RUNTIME: usize = 16;
pub(super) const LANGUAGES: usize = 17;
pub(super) const STATUS: usize = 18;
pub(super) const TAGLINE: usize = 19;
pub(super) const TITLE: usize = 20;
pub(super) const VIDEO: usize = 21;
pub(super) const VOTE_AVERAGE: usize = 22;
pub(super) const VOTE_COUNT: usize = 23;

/// Ids (or codes) of the dimension rows already written: the first one seen wins.
#[derive(Default)]
pub(super) struct Dims {
    pub(super) collections: IdSet,
    pub(super) genres: IdSet,
    pub(super) companies: IdSet,
    pub(super) countries: HashSet<String>,
    pub(super) languages: HashSet<String>,
    pub(super) keywords: IdSet,
}

pub(super) struct MoviesFile<'d> {
    pub(super) ids: IdSet,
    pub(super) dims: &'d mut Dims,
    pub(super) scratch: Vec<i64>,
    pub(super) doc: Document,
}

impl MoviesFile<'_> {
    pub(super) fn record(
        &mut self,
        row: &Row<'_>,
        t: &mut [CopyWriter],
        u: &mut [u64],
    ) -> Result<Option<RejectReason>, CleanError> {
        let Some(id) = parse_positive_id(row.get(ID)) else {
            return Ok(Some(RejectReason::BadId));
        };
        if !self.ids.insert(id) {
            return Ok(Some(RejectReason::DuplicateId));
        }
        let collection_id = collection(
            &mut self.doc,
            row.get(COLLECTION),
            &mut t[T::Collections as usize],
            u,
            &mut self.dims.collections,
        )?;

        let w = &mut t[T::Movies as usize];
        w.int(id);
        text(w, row.get(IMDB_ID), u, IMDB_ID);
        text(w, row.get(TITLE), u, TITLE);
        text(w, row.get(ORIGINAL_TITLE), u, ORIGINAL_TITLE);
        text(w, row.get(ORIGINAL_LANGUAGE), u, ORIGINAL_LANGUAGE);
        text(w, row.get(OVERVIEW), u, OVERVIEW);
        text(w, row.get(TAGLINE), u, TAGLINE);
        text(w, row.get(HOMEPAGE), u, HOMEPAGE);
        text(w, row.get(POSTER_PATH), u, POSTER_PATH);
        text(w, row.get(STATUS), u, STATUS);
        boolean(w, row.get(ADULT), u, ADULT);
        boolean(w, row.get(VIDEO), u, VIDEO);
        bigint(w, row.get(BUDGET), u, BUDGET, true);
        bigint(w, row.get(REVENUE), u, REVENUE, true);
        checked(w, row.get(POPULARITY), u, POPULARITY, is_f64);
        checked(w, row.get(RUNTIME), u, RUNTIME, is_f64);
        checked(w, row.get(RELEASE_DATE), u, RELEASE_DATE, is_date);
        checked(w, row.get(VOTE_AVERAGE), u, VOTE_AVERAGE, is_f64);
        bigint(w, row.get(VOTE_COUNT), u, VOTE_COUNT, false);
        match collection_id {
            Some(c) => w.int(c),
            None => w.null(),
        }
        end(w)?;

        let (dims, scratch, doc) = (&mut *self.dims, &mut self.scratch, &mut self.doc);
        let [genres, movie_genres, companies, movie_companies, countries, movie_countries, languages, movie_languages] =
            pick(
                t,
                [
                    T::Genres,
                    T::MovieGenres,
                    T::Companies,
                    T::MovieCompanies,
                    T::Countries,
                    T::MovieCountries,
                    T::Languages,
                    T::MovieLanguages,
                ],
            );
        id_name_list(
            doc,
            row.get(GENRES),
            id,
            genres,
            movie_genres,
            &mut dims.genres,
            scratch,
            u,
            GENRES,
        )?;
        id_name_list(
            doc,
            row.get(COMPANIES),
            id,
            companies,
            movie_companies,
            &mut dims.companies,
            scratch,
            u,
            COMPANIES,
        )?;
        code_name_list(
            doc,
            row.get(COUNTRIES),
            "iso_3166_1",
            id,
            countries,
            movie_countries,
            &mut dims.countries,
            u,
            COUNTRIES,
        )?;
        code_name_list(
            doc,
            row.get(LANGUAGES),
            "iso_639_1",
            id,
            languages,
            movie_languages,
            &mut dims.languages,
            u,
            LANGUAGES,
        )?;
        Ok(None)
    }
}

/// Mutable references to distinct writers.
pub(super) fn pick<const N: usize>(t: &mut [CopyWriter], which: [T; N]) -> [&mut CopyWriter; N] {
    let mut out: [Option<&mut CopyWriter>; N] = [const { None }; N];
    for (i, w) in t.iter_mut().enumerate() {
        if let Some(k) = which.iter().position(|x| *x as usize == i) {
            out[k] = Some(w);
        }
    }
    out.map(|w| w.expect("distinct table indexes"))
}

/// `belongs_to_collection`: a dict (or empty / `None`). Writes the collection row the first
/// time its id is seen and returns the id.
pub(super) fn collection(
    doc: &mut Document,
    cell: &[u8],
    w: &mut CopyWriter,
    u: &mut [u64],
    seen: &mut IdSet,
) -> Result<Option<i64>, CleanError> {
    let v = match literal_cell(doc, cell) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(()) => {
            u[COLLECTION] += 1;
            return Ok(None);
        }
    };
    if v.pairs().is_none() {
        if !v.is_none() {
            u[COLLECTION] += 1;
        }
        return Ok(None);
    }
    let [id, name, poster, backdrop] = v.fields(["id", "name", "poster_path", "backdrop_path"]);
    let Some(id) = positive(id) else {
        u[COLLECTION] += 1;
        return Ok(None);
    };
    let mut bad = false;
    if seen.insert(id) {
        w.int(id);
        lit_text(w, name, &mut bad);
        lit_text(w, poster, &mut bad);
        lit_text(w, backdrop, &mut bad);
        end(w)?;
    }
    if bad {
        u[COLLECTION] += 1;
    }
    Ok(Some(id))
}

/// A list of `{'id': int, 'name': str}` (genres, companies, keywords): a dimension row per new
/// id and one link row per distinct id of this movie. A malformed element is skipped and
/// makes the cell count as unparsable once.
#[allow(clippy::too_many_arguments)]
pub(super) fn id_name_list(
    doc: &mut Document,
    cell: &[u8],
    movie_id: i64,
    dim: &mut CopyWriter,
    link: &mut CopyWriter,
    seen: &mut IdSet,
    scratch: &mut Vec<i64>,
    u: &mut [u64],
    c: usize,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    scratch.clear();
    for item in items {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        let [id, name] = item.fields(["id", "name"]);
        let Some(id) = positive(id) else {
            bad = true;
            continue;
        };
        if seen.insert(id) {
            dim.int(id);
            lit_text(dim, name, &mut bad);
            end(dim)?;
        }
        if !scratch.contains(&id) {
            scratch.push(id);
            link.int(movie_id);
            link.int(id);
            end(link)?;
        }
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}

/// A list of `{'<code>': str, 'name': str}` (countries, languages), as [`id_name_list`].
#[allow(clippy::too_many_arguments)]
pub(super) fn code_name_list(
    doc: &mut Document,
    cell: &[u8],
    code_key: &str,
    movie_id: i64,
    dim: &mut CopyWriter,
    link: &mut CopyWriter,
    seen: &mut HashSet<String>,
    u: &mut [u64],
    c: usize,
) -> Result<(), CleanError> {
    let Some(items) = literal_list(doc, cell, u, c) else {
        return Ok(());
    };
    let mut bad = false;
    for (i, item) in items.clone().enumerate() {
        if item.pairs().is_none() {
            bad = true;
            continue;
        }
        let [code, name] = item.fields([code_key, "name"]);
        let Some(code) = code
            .and_then(Lit::as_str)
            .filter(|s| !s.is_empty() && !s.contains('\0'))
        else {
            bad = true;
            continue;
        };
        if !seen.contains(code) {
            seen.insert(code.to_string());
            dim.text(code.as_bytes());
            lit_text(dim, name, &mut bad);
            end(dim)?;
        }
        let repeated = items
            .clone()
            .take(i)
            .any(|prev| prev.get(code_key).and_then(Lit::as_str) == Some(code));
        if !repeated {
            link.int(movie_id);
            link.text(code.as_bytes());
            end(link)?;
        }
    }
    if bad {
        u[c] += 1;
    }
    Ok(())
}
