//! A small zip of our own making with the seven files of The Movies Dataset and every trap of
//! DESIGN section 2: Python literals (single quotes, `None`, `True`/`False`, an apostrophe name
//! in double quotes), a row broken into two records, a date in the id column, ids repeated two
//! and three times, non-positive ids, budget/revenue 0, a revenue above 2^31, unparsable
//! popularity, a missing release_date, a multi-line overview, UTF-8 titles, CRLF line endings,
//! a BOM, an empty tmdbId, rows for unknown movies, a repeated rating and a bare CR inside an
//! unquoted overview.
//!
//! The expected report rows for it are worked out by hand in `tests/tests/pipeline.rs`.

use std::io::Write;

const HEADER: &str = "adult,belongs_to_collection,budget,genres,homepage,id,imdb_id,original_language,original_title,overview,popularity,poster_path,production_companies,production_countries,release_date,revenue,runtime,spoken_languages,status,tagline,title,video,vote_average,vote_count";

const ACTION: &str = "{'id': 28, 'name': 'Action'}";
const DRAMA: &str = "{'id': 18, 'name': 'Drama'}";
const COMEDY: &str = "{'id': 35, 'name': 'Comedy'}";
const LIONS: &str = "{'name': \"\"Lion's Gate\"\", 'id': 1}";
const ACME: &str = "{'name': 'Acme Pictures', 'id': 2}";

/// One movies_metadata record. `genres` and `companies` are lists of the constants above.
#[allow(clippy::too_many_arguments)]
fn movie(
    id: &str,
    title: &str,
    date: &str,
    budget: &str,
    revenue: &str,
    popularity: &str,
    genres: &[&str],
    companies: &[&str],
    collection: &str,
    overview: &str,
) -> String {
    format!(
        "False,{collection},{budget},\"[{}]\",,{id},tt{id:0>7},en,{title},{overview},{popularity},/p{id}.jpg,\"[{}]\",\"[{{'iso_3166_1': 'US', 'name': 'United States of America'}}]\",{date},{revenue},90.0,\"[{{'iso_639_1': 'en', 'name': 'English'}}]\",Released,,{title},False,6.5,10\n",
        genres.join(", "),
        companies.join(", ")
    )
}

/// movies_metadata.csv of the fixture.
pub fn movies_metadata() -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    // line 2: id 100, a collection, apostrophe company, two genres.
    s += &movie(
        "100",
        "Alpha",
        "2010-05-01",
        "1000",
        "3000",
        "10.0",
        &[ACTION, DRAMA],
        &[LIONS, ACME],
        "\"{'id': 5, 'name': 'Alpha Collection', 'poster_path': None, 'backdrop_path': '/a.jpg'}\"",
        "\"A plain overview.\"",
    );
    // line 3: id 101, budget 0 = unknown.
    s += &movie(
        "101",
        "Beta",
        "2010-07-01",
        "0",
        "5000",
        "4.0",
        &[ACTION],
        &[LIONS],
        "",
        "\"Beta, with a comma\"",
    );
    // line 4: id 102, revenue 0 = unknown, a multi-line overview (lines 4-6).
    s += &movie(
        "102",
        "Gamma",
        "2010-12-31",
        "2000",
        "0",
        "6.0",
        &[DRAMA, COMEDY],
        &[ACME],
        "",
        "\"First line\nsecond line\nthird \"\"quoted\"\" line\"",
    );
    // line 7: id 103, revenue above 2^31.
    s += &movie(
        "103",
        "Avatar Like",
        "2011-01-01",
        "237000000",
        "2787965087",
        "185.07",
        &[ACTION],
        &[LIONS],
        "",
        "\"Big.\"",
    );
    // line 8: id 104 without release_date: out of the reports. Its overview holds a bare CR,
    // unquoted (how the real file's three "broken rows" were written): data, the record stays
    // whole.
    s += &movie(
        "104",
        "Undated",
        "",
        "10",
        "20",
        "1.0",
        &[ACTION],
        &[LIONS],
        "",
        "No\rdate - Written by Someone",
    );
    // line 9: id 100 again: rejected, the first row wins.
    s += &movie(
        "100",
        "Alpha Again",
        "2010-05-01",
        "1",
        "999999",
        "99.0",
        &[COMEDY],
        &[ACME],
        "",
        "\"dup\"",
    );
    // line 10: id 105, popularity unparsable -> NULL; UTF-8 title.
    s += &movie(
        "105",
        "Amélie — 東京",
        "2011-06-15",
        "0",
        "0",
        "Beware Of Frost Bites",
        &[COMEDY],
        &[ACME],
        "",
        "\"Ünïcödé\"",
    );
    // lines 11-12: a row broken in two by a bare line break in its overview.
    s += "False,,0,\"[]\",,106000,tt0106000,en,Broken,Start of an overview\n";
    s += " - Written by Someone,0.065736,/ff9.jpg,\"[]\",,1997-08-20,tt9999999,0.5,/x.jpg,,,Released,Beware,Broken,False\n";
    // line 13: id holds a date but the width is right.
    s += &movie(
        "2012-09-29",
        "Shifted",
        "2012-09-29",
        "0",
        "0",
        "1.0",
        &[ACTION],
        &[ACME],
        "",
        "\"x\"",
    );
    // lines 14-15: non-positive ids.
    s += &movie(
        "0",
        "Zero",
        "2012-01-01",
        "0",
        "0",
        "1.0",
        &[ACTION],
        &[ACME],
        "",
        "\"x\"",
    );
    s += &movie(
        "-7",
        "Negative",
        "2012-01-01",
        "0",
        "0",
        "1.0",
        &[ACTION],
        &[ACME],
        "",
        "\"x\"",
    );
    // line 16: id 106 in 2012, no companies, Drama listed twice; ties with Comedy on popularity.
    s += &movie(
        "106",
        "Delta",
        "2012-03-03",
        "500",
        "400",
        "5.0",
        &[DRAMA, COMEDY, DRAMA],
        &[],
        "",
        "\"Loss.\"",
    );
    // line 17: id 102 a second time and line 18 a third time: both rejected.
    s += &movie(
        "102",
        "Gamma Two",
        "2010-12-31",
        "1",
        "1",
        "1.0",
        &[ACTION],
        &[LIONS],
        "",
        "\"dup\"",
    );
    s += &movie(
        "102",
        "Gamma Three",
        "2010-12-31",
        "1",
        "1",
        "1.0",
        &[ACTION],
        &[LIONS],
        "",
        "\"dup\"",
    );
    // line 19: an unparsable genres literal -> NULL, no genre rows; an impossible date -> NULL.
    s += "False,,7,\"[{'id': 28, 'name': 'Action'\",,107,tt0000107,en,Broken Literal,\"x\",2.0,,\"[]\",\"[]\",2013-02-30,9,,\"[]\",Released,,Broken Literal,True,1.0,1\n";
    s
}

fn credits() -> String {
    let cast = |name: &str| {
        format!("\"[{{'cast_id': 1, 'character': 'Hero', 'credit_id': 'c1', 'gender': 2, 'id': 31, 'name': \"\"{name}\"\", 'order': 0, 'profile_path': None}}]\"")
    };
    let crew = "\"[{'credit_id': 'k1', 'department': 'Directing', 'gender': 0, 'id': 7, 'job': 'Director', 'name': 'Ann Smith', 'profile_path': '/d.jpg'}]\"";
    let mut s = String::from("cast,crew,id\n");
    s += &format!("{},{crew},100\n", cast("Tom O'Hara"));
    s += &format!("{},\"[]\",101\n", cast("Zoë"));
    s += &format!("{},{crew},100\n", cast("Dup"));
    s += &format!("{},{crew},999\n", cast("Unknown Movie"));
    s += "\"[]\",\"[]\",103";
    s
}

fn keywords() -> String {
    let mut s = String::from("id,keywords\n");
    s += "100,\"[{'id': 9, 'name': 'jealousy'}, {'id': 10, 'name': \"\"friend's toy\"\"}]\"\n";
    s += "101,\"[{'id': 9, 'name': 'jealousy'}]\"\n";
    s += "101,\"[]\"\n";
    s += "555,\"[{'id': 11, 'name': 'orphan'}]\"\n";
    s += "abc,\"[]\"\n";
    s
}

fn links(bom: bool) -> String {
    let mut s = String::new();
    if bom {
        s.push('\u{feff}');
    }
    s += "movieId,imdbId,tmdbId\r\n1,0000100,100\r\n2,0000101,101\r\n3,0000003,\r\n2,0000101,101\r\n4,0000103,103\r\n";
    s
}

fn ratings() -> String {
    "userId,movieId,rating,timestamp\r\n1,1,4.0,1260759144\r\n1,2,3.0,1260759179\r\n1,1,1.0,1260759200\r\n2,1,5.0,1260759300\r\n2,3,2.5,1260759400\r\n2,9,0.5,1260759500\r\n".to_string()
}

/// The fixture's seven entries, in the order the real zip lists them.
pub fn entries() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("credits.csv", credits().into_bytes()),
        ("keywords.csv", keywords().into_bytes()),
        ("links.csv", links(false).into_bytes()),
        ("links_small.csv", links(true).into_bytes()),
        ("movies_metadata.csv", movies_metadata().into_bytes()),
        ("ratings.csv", ratings().into_bytes()),
        ("ratings_small.csv", ratings().into_bytes()),
    ]
}

/// Builds a zip (deflated, fixed timestamps so the bytes are stable) from `entries`.
pub fn zip_bytes(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        for (name, data) in entries {
            w.start_file(*name, opts).expect("zip entry");
            w.write_all(data).expect("zip data");
        }
        w.finish().expect("zip finish");
    }
    buf.into_inner()
}

/// The fixture zip.
pub fn zip() -> Vec<u8> {
    zip_bytes(&entries())
}

/// A zip of the real sample files in `../shared/data` when they are there (for checks against an
/// independent computation); `None` on a machine without them.
pub fn real_sample_zip() -> Option<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/the-movies-dataset");
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let links_small = read("links_small.csv")?;
    let ratings_small = read("ratings_small.csv")?;
    Some(zip_bytes(&[
        ("credits.csv", read("credits.csv")?),
        ("keywords.csv", read("keywords.csv")?),
        ("links.csv", links_small.clone()),
        ("links_small.csv", links_small),
        ("movies_metadata.csv", read("movies_metadata.csv")?),
        ("ratings.csv", ratings_small.clone()),
        ("ratings_small.csv", ratings_small),
    ]))
}
