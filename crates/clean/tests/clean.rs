//! End-to-end tests of `clean_zip` on fixture archives built here (no database).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use reelflow_clean::{clean_zip, CleanConfig, CleanError, Manifest, TABLES};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

// ---------------------------------------------------------------------------------------------
// Fixture helpers

/// Entries of a zip to build: name and bytes.
type Entries = Vec<(String, Vec<u8>)>;

fn write_zip(path: &Path, entries: &Entries, method: CompressionMethod) {
    let mut zw = ZipWriter::new(fs::File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        zw.start_file(name.as_str(), opts).unwrap();
        zw.write_all(data).unwrap();
    }
    zw.finish().unwrap();
}

/// A CSV field, quoted when needed.
fn field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// The movies header, deliberately not in the original column order (`id` and `title` first).
const MOVIES_HEADER: &[&str] = &[
    "id",
    "title",
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
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
    "video",
    "vote_average",
    "vote_count",
];

/// One movies line from (column, value) pairs; other columns are empty.
fn movie(values: &[(&str, &str)]) -> String {
    for (k, _) in values {
        assert!(MOVIES_HEADER.contains(k), "unknown column {k}");
    }
    let fields: Vec<String> = MOVIES_HEADER
        .iter()
        .map(|c| {
            values
                .iter()
                .find(|(k, _)| k == c)
                .map_or(String::new(), |(_, v)| field(v))
        })
        .collect();
    fields.join(",")
}

fn movies_csv() -> Vec<u8> {
    let toy_story = movie(&[
        ("id", "862"),
        ("title", "Toy Story"),
        ("adult", "False"),
        ("video", "False"),
        (
            "belongs_to_collection",
            "{'id': 10194, 'name': 'Toy Story Collection', 'poster_path': '/p.jpg', 'backdrop_path': None}",
        ),
        ("budget", "30000000"),
        ("revenue", "373554033"),
        (
            "genres",
            "[{'id': 16, 'name': 'Animation'}, {'id': 35, 'name': 'Comedy'}, {'id': 16, 'name': 'Animation'}]",
        ),
        (
            "production_companies",
            "[{'name': \"Lion's Gate\", 'id': 1}, {'name': 'Pixar', 'id': 3}]",
        ),
        (
            "production_countries",
            "[{'iso_3166_1': 'US', 'name': 'United States of America'}]",
        ),
        (
            "spoken_languages",
            "[{'iso_639_1': 'en', 'name': 'English'}, {'iso_639_1': 'en', 'name': 'English'}]",
        ),
        ("imdb_id", "tt0114709"),
        ("original_language", "en"),
        ("original_title", "Toy Story"),
        ("overview", "Led by Woody,\nAndy's toys\tlive \"happily\"."),
        ("tagline", "C:\\toys"),
        ("popularity", "21.946943"),
        ("runtime", "81.0"),
        ("release_date", "1995-10-30"),
        ("status", "Released"),
        ("vote_average", "7.7"),
        ("vote_count", "5415"),
    ]);
    let avatar = movie(&[
        ("id", "19995"),
        ("title", "Avatar – 阿凡达"),
        ("adult", "False"),
        ("budget", "0"),
        ("revenue", "2787965087"),
        (
            "genres",
            "[{'id': 28, 'name': 'Action'}, {'id': 35, 'name': 'Komödie'}]",
        ),
        (
            "spoken_languages",
            "[{'iso_639_1': 'en', 'name': 'Anglais'}, {'iso_639_1': 'es', 'name': 'Español'}]",
        ),
        ("popularity", "8.2e-05"),
        ("vote_count", "0"),
    ]);
    let toy_story_again = movie(&[("id", "862"), ("title", "Toy Story (duplicate)")]);
    // The broken-row shape: an overview tail starts a new record, columns shift, `id` holds a
    // date and the width is wrong.
    let broken = "1997-08-20, - Written by Ørnås,0.065736,/ff9qCepilowshEtG2GYWwzt2bs4.jpg,,,,Beware Of Frost Bites,Released,,,,,";
    let date_id = movie(&[("id", "2012-09-29"), ("title", "Date in id")]);
    let promise = |t: &str| movie(&[("id", "105045"), ("title", t), ("release_date", "2016-01-01")]);
    let junk = movie(&[
        ("id", "500"),
        ("title", "Junk values"),
        ("adult", "maybe"),
        ("popularity", "Beware Of Frost Bites"),
        ("release_date", "1995-02-29"),
        ("genres", "[{'id': 1, 'name': 'Broken'"),
        ("production_companies", "[{'name': 'No id'}, {'name': 'Good', 'id': 7}]"),
        ("budget", "/ff9q.jpg"),
        // A fractional part: not an integer (`12.0` would be 12).
        ("vote_count", "12.5"),
        ("runtime", "1e999"),
        ("belongs_to_collection", "None"),
    ]);
    let nul_title = movie(&[("id", "700"), ("title", "bad\0title"), ("original_title", "ok")]);

    let mut out = Vec::new();
    out.extend_from_slice(MOVIES_HEADER.join(",").as_bytes());
    out.push(b'\n');
    for line in [&toy_story, &avatar, &toy_story_again, broken, &date_id] {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    for t in ["The Promise", "The Promise (2nd)", "The Promise (3rd)"] {
        out.extend_from_slice(promise(t).as_bytes());
        out.push(b'\n');
    }
    for line in [&junk, &nul_title] {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    // Invalid UTF-8 in a title.
    out.extend_from_slice(
        movie(&[("id", "800"), ("title", "XX")])
            .replace("XX", "\u{1}")
            .as_bytes(),
    );
    let at = out.len() - 1 - (MOVIES_HEADER.len() - 2);
    assert_eq!(out[at], 1);
    out[at] = 0xFF;
    out.push(b'\n');
    // A bare CR inside an unquoted overview (what broke the real file's 3 rows for readers
    // that end records at CR): kept as data, the record stays whole.
    let cr = movie(&[("id", "900"), ("title", "Midnight Man"), ("overview", "OVERVIEW")])
        .replace("OVERVIEW", "He hunts.\r - Written by Ørnås");
    out.extend_from_slice(cr.as_bytes());
    out.push(b'\n');
    out
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn credits_csv() -> Vec<u8> {
    let cast = "[{'cast_id': 14, 'character': 'Woody (voice)', 'credit_id': '52fe4284', 'gender': 2, 'id': 31, 'name': 'Tom Hanks', 'order': 0, 'profile_path': '/a.jpg'}, {'cast_id': 15, 'character': \"Buzz's pal\", 'credit_id': 'x2', 'gender': 0, 'id': 12898, 'name': 'Tim Allen', 'order': 1, 'profile_path': None}]";
    let crew = "[{'credit_id': 'c1', 'department': 'Directing', 'gender': 2, 'id': 7879, 'job': 'Director', 'name': 'John Lasseter', 'profile_path': None}]";
    let mut s = String::from("cast,crew,id\n");
    s += &format!("{},{},862\n", field(cast), field(crew));
    s += &format!("{},[],999999\n", field(cast));
    s += "[],[],862\n";
    s += "[],[],abc\n";
    s += "[{'cast_id': 1,[],19995\n";
    let mut out = b"\xEF\xBB\xBF".to_vec();
    out.extend(crlf(&s));
    out
}

fn keywords_csv() -> Vec<u8> {
    // LF, no final newline.
    "id,keywords\n\
     862,\"[{'id': 931, 'name': 'jealousy'}, {'id': 4290, 'name': 'toy'}, {'id': 931, 'name': 'jealousy'}]\"\n\
     19995,\"[{'id': 4290, 'name': 'toy again'}]\"\n\
     424242,[]"
        .as_bytes()
        .to_vec()
}

fn links_csv() -> Vec<u8> {
    // Reordered header, CRLF.
    crlf("tmdbId,movieId,imdbId\n862,1,0114709\n,2,0113497\n3,0,0000001\n99,1,0000002\nx,4,0000004\n")
}

fn ratings_csv() -> Vec<u8> {
    crlf(
        "userId,movieId,rating,timestamp\n\
         1,31,2.5,1260759144\n\
         1,1029,3.0,1260759179\n\
         1,31,4.0,1260759999\n\
         \n\
         2,31,5.0,1260760000\n\
         2,abc,1.0,1\n\
         2,50,high,1\n\
         1,31,3.0,1\n",
    )
}

fn fixture_entries() -> Entries {
    vec![
        ("movies_metadata.csv".into(), movies_csv()),
        ("credits.csv".into(), credits_csv()),
        ("keywords.csv".into(), keywords_csv()),
        ("links.csv".into(), links_csv()),
        // CRLF after a quoted last field.
        (
            "links_small.csv".into(),
            b"movieId,imdbId,\"tmdbId\"\r\n1,\"0114709\",\"862\"\r\n".to_vec(),
        ),
        ("ratings.csv".into(), ratings_csv()),
        (
            "ratings_small.csv".into(),
            b"userId,movieId,rating,timestamp\n1,1,5.0,100\n".to_vec(),
        ),
        ("README.txt".into(), b"not a table".to_vec()),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(entries: &Entries) -> Fixture {
        Self::with_method(entries, CompressionMethod::Deflated)
    }
    fn with_method(entries: &Entries, method: CompressionMethod) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_zip(&dir.path().join("in.zip"), entries, method);
        Fixture { dir }
    }
    fn zip(&self) -> PathBuf {
        self.dir.path().join("in.zip")
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    fn clean(&self) -> Result<Manifest, CleanError> {
        clean_zip(&self.zip(), &self.out(), &CleanConfig::default())
    }
    fn lines(&self, file: &str) -> Vec<String> {
        let text = fs::read_to_string(self.out().join(file)).unwrap();
        text.lines().map(str::to_string).collect()
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

// ---------------------------------------------------------------------------------------------
// The fixture archive

#[test]
fn fixture_archive_is_cleaned() {
    let fx = Fixture::new(&fixture_entries());
    let m = fx.clean().expect("clean");

    // Manifest: per file.
    let mm = &m.files["movies_metadata.csv"];
    assert_eq!((mm.records, mm.accepted), (12, 6), "{mm:?}");
    assert_eq!(
        mm.rejected,
        counts(&[
            ("bad_id", 1),
            ("duplicate_id", 3),
            ("field_count", 1),
            ("invalid_utf8", 1)
        ])
    );
    assert_eq!(
        mm.unparsable,
        counts(&[
            ("adult", 1),
            ("budget", 1),
            ("genres", 1),
            ("popularity", 1),
            ("production_companies", 1),
            ("release_date", 1),
            ("runtime", 1),
            ("title", 1),
            ("vote_count", 1),
        ])
    );
    let cr = &m.files["credits.csv"];
    assert_eq!((cr.records, cr.accepted), (5, 2));
    assert_eq!(
        cr.rejected,
        counts(&[("bad_id", 1), ("duplicate_id", 1), ("unknown_movie", 1)])
    );
    assert_eq!(cr.unparsable, counts(&[("cast", 1)]));
    let kw = &m.files["keywords.csv"];
    assert_eq!((kw.records, kw.accepted), (3, 2));
    assert_eq!(kw.rejected, counts(&[("unknown_movie", 1)]));
    let li = &m.files["links.csv"];
    assert_eq!((li.records, li.accepted), (5, 3));
    assert_eq!(li.rejected, counts(&[("bad_key", 1), ("duplicate_key", 1)]));
    assert_eq!(li.unparsable, counts(&[("tmdbId", 1)]));
    let ra = &m.files["ratings.csv"];
    assert_eq!((ra.records, ra.accepted), (7, 4));
    assert_eq!(ra.rejected, counts(&[("bad_key", 1), ("duplicate_rating", 2)]));
    assert_eq!(ra.unparsable, counts(&[("rating", 1)]));
    assert_eq!(m.files["ratings_small.csv"].accepted, 1);
    assert_eq!(m.files["links_small.csv"].accepted, 1);
    assert_eq!(m.ignored_entries, vec!["README.txt".to_string()]);
    assert_eq!(m.total_rejected(), 6 + 3 + 1 + 2 + 3);
    assert_eq!(m.rejects.rows, m.total_rejected());
    assert_eq!(m.rejected_by_reason()["duplicate_id"], 4);
    for f in m.files.values() {
        assert_eq!(f.records, f.accepted + f.total_rejected());
    }
    assert_eq!(m.source_sha256.len(), 64);

    // Manifest: per table, and it matches the files.
    assert_eq!(m.tables.len(), TABLES.len());
    for t in TABLES {
        let out = &m.tables[t.name];
        assert_eq!(out.file, format!("{}.tsv", t.name));
        let lines = fx.lines(&out.file);
        assert_eq!(lines.len() as u64, out.rows, "{}", t.name);
        for l in &lines {
            assert_eq!(l.split('\t').count(), t.columns.len(), "{}: {l}", t.name);
        }
    }
    let on_disk: Manifest = serde_json::from_slice(&fs::read(fx.out().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, m);

    // Movies: accepted ids in file order, typed values, escapes, NULLs.
    let movies = fx.lines("movies.tsv");
    let ids: Vec<&str> = movies.iter().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(ids, ["862", "19995", "105045", "500", "700", "900"]);
    assert!(
        movies[5].contains("\tHe hunts.\\r - Written by Ørnås\t"),
        "{}",
        movies[5]
    );
    assert_eq!(
        movies[0],
        "862\ttt0114709\tToy Story\tToy Story\ten\tLed by Woody,\\nAndy's toys\\tlive \"happily\".\t\
         C:\\\\toys\t\\N\t\\N\tReleased\tf\tf\t30000000\t373554033\t21.946943\t81.0\t1995-10-30\t7.7\t5415\t10194"
    );
    assert_eq!(
        movies[1],
        "19995\t\\N\tAvatar – 阿凡达\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\tf\t\\N\t\\N\t2787965087\t8.2e-05\t\\N\t\\N\t\\N\t0\t\\N"
    );
    assert!(
        movies[2].contains("\tThe Promise\t"),
        "first of three wins: {}",
        movies[2]
    );
    assert_eq!(
        movies[3],
        "500\t\\N\tJunk values\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N"
    );
    assert!(movies[4].starts_with("700\t\\N\t\\N\tok\t"), "{}", movies[4]);

    // Dimensions: first name wins, deduplicated; links: deduplicated per movie.
    assert_eq!(
        fx.lines("collections.tsv"),
        ["10194\tToy Story Collection\t/p.jpg\t\\N"]
    );
    assert_eq!(fx.lines("genres.tsv"), ["16\tAnimation", "35\tComedy", "28\tAction"]);
    assert_eq!(
        fx.lines("movie_genres.tsv"),
        ["862\t16", "862\t35", "19995\t28", "19995\t35"]
    );
    assert_eq!(fx.lines("companies.tsv"), ["1\tLion's Gate", "3\tPixar", "7\tGood"]);
    assert_eq!(fx.lines("movie_companies.tsv"), ["862\t1", "862\t3", "500\t7"]);
    assert_eq!(fx.lines("countries.tsv"), ["US\tUnited States of America"]);
    assert_eq!(fx.lines("movie_countries.tsv"), ["862\tUS"]);
    assert_eq!(fx.lines("languages.tsv"), ["en\tEnglish", "es\tEspañol"]);
    assert_eq!(fx.lines("movie_languages.tsv"), ["862\ten", "19995\ten", "19995\tes"]);
    assert_eq!(fx.lines("keywords.tsv"), ["931\tjealousy", "4290\ttoy"]);
    assert_eq!(fx.lines("movie_keywords.tsv"), ["862\t931", "862\t4290", "19995\t4290"]);

    // Credits: ord is the list position; None is NULL; apostrophes survive.
    assert_eq!(
        fx.lines("cast_members.tsv"),
        [
            "862\t0\t14\t52fe4284\t31\tTom Hanks\tWoody (voice)\t2\t/a.jpg",
            "862\t1\t15\tx2\t12898\tTim Allen\tBuzz's pal\t0\t\\N",
        ]
    );
    assert_eq!(
        fx.lines("crew_members.tsv"),
        ["862\t0\tc1\t7879\tJohn Lasseter\tDirecting\tDirector\t2\t\\N"]
    );

    // Links keep the zero padding; empty tmdbId is NULL.
    assert_eq!(
        fx.lines("links.tsv"),
        ["1\t0114709\t862", "2\t0113497\t\\N", "4\t0000004\t\\N"]
    );
    assert_eq!(fx.lines("links_small.tsv"), ["1\t0114709\t862"]);
    assert_eq!(
        fx.lines("ratings.tsv"),
        [
            "1\t31\t2.5\t1260759144",
            "1\t1029\t3.0\t1260759179",
            "2\t31\t5.0\t1260760000",
            "2\t50\t\\N\t1",
            // The last row, (1, 31) again after user 2's rows, is rejected: the first wins.
        ]
    );

    // Rejects: file, 1-based line where the record starts, reason, raw text.
    let rejects = fx.lines("rejects.tsv");
    let short: Vec<(String, String, String)> = rejects
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    let want: Vec<(&str, &str, &str)> = vec![
        ("movies_metadata.csv", "5", "duplicate_id"),
        ("movies_metadata.csv", "6", "field_count"),
        ("movies_metadata.csv", "7", "bad_id"),
        ("movies_metadata.csv", "9", "duplicate_id"),
        ("movies_metadata.csv", "10", "duplicate_id"),
        ("movies_metadata.csv", "13", "invalid_utf8"),
        ("credits.csv", "3", "unknown_movie"),
        ("credits.csv", "4", "duplicate_id"),
        ("credits.csv", "5", "bad_id"),
        ("keywords.csv", "4", "unknown_movie"),
        ("links.csv", "4", "bad_key"),
        ("links.csv", "5", "duplicate_key"),
        ("ratings.csv", "4", "duplicate_rating"),
        ("ratings.csv", "7", "bad_key"), // after a blank CRLF line
        // Far from the first (1, 31), after another user's rows: settled at the end of the file.
        ("ratings.csv", "9", "duplicate_rating"),
    ];
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(a, b, c)| (a.into(), b.into(), c.into()))
        .collect();
    assert_eq!(short, want);
    // Exact raw text, without the line terminator.
    assert!(rejects.contains(&format!(
        "movies_metadata.csv\t6\tfield_count\t{}",
        "1997-08-20, - Written by Ørnås,0.065736,/ff9qCepilowshEtG2GYWwzt2bs4.jpg,,,,Beware Of Frost Bites,Released,,,,,"
    )));
    assert!(rejects.contains(&"credits.csv\t4\tduplicate_id\t[],[],862".to_string()));
    assert!(rejects.contains(&"keywords.csv\t4\tunknown_movie\t424242,[]".to_string()));
    assert!(rejects.contains(&"ratings.csv\t4\tduplicate_rating\t1,31,4.0,1260759999".to_string()));
    assert!(rejects.contains(&"ratings.csv\t9\tduplicate_rating\t1,31,3.0,1".to_string()));
    assert!(rejects.contains(&"links.csv\t4\tbad_key\t3,0,0000001".to_string()));
    let utf8 = rejects.iter().find(|l| l.contains("invalid_utf8")).unwrap();
    assert!(
        utf8.starts_with("movies_metadata.csv\t13\tinvalid_utf8\t800,\u{FFFD},"),
        "{utf8}"
    );
}

/// A ratings file where users come back after other users' rows (repeats far apart, one
/// within a revisit, users out of order), and the rows a first-wins rule keeps, worked out
/// here with a set of every pair.
fn scattered_ratings() -> (String, Vec<String>, Vec<(u64, String)>) {
    let mut rows: Vec<(u64, u64, &str)> = Vec::new();
    for user in 1..=300 {
        for movie in 1..=10 {
            rows.push((user, movie, if (user + movie) % 2 == 0 { "4.0" } else { "2.5" }));
        }
    }
    rows.extend([
        (5, 3, "1.0"),    // repeat of a row 2,950 rows earlier
        (5, 11, "3.5"),   // new
        (5, 11, "0.5"),   // repeat within the revisit
        (400, 1, "5.0"),  // a new user, in order
        (150, 10, "1.0"), // a repeat too
        (150, 20, "4.5"),
        (5, 12, "3.0"),
        (5, 3, "2.0"),   // a third (5, 3)
        (350, 1, "1.5"), // a new user out of order
        (350, 1, "1.5"),
        (401, 2, "2.0"),
        (350, 2, "3.0"), // user 350 revisited
        (350, 1, "3.0"),
        (400, 1, "4.0"),
    ]);
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    let mut seen = std::collections::HashSet::new();
    let (mut kept, mut dups) = (Vec::new(), Vec::new());
    for (i, (u, m, r)) in rows.iter().enumerate() {
        let text = format!("{u},{m},{r},{}", 1_000_000 + i);
        csv += &text;
        csv.push('\n');
        if seen.insert((*u, *m)) {
            kept.push(text.replace(',', "\t"));
        } else {
            dups.push((i as u64 + 2, text));
        }
    }
    (csv, kept, dups)
}

#[test]
fn far_apart_duplicate_ratings_are_rejected_and_the_first_wins() {
    let (csv, kept, dups) = scattered_ratings();
    assert_eq!(dups.len(), 7);
    let mut entries = fixture_entries();
    for (name, data) in &mut entries {
        if name == "ratings.csv" || name == "ratings_small.csv" {
            *data = csv.clone().into_bytes();
        }
    }
    let fx = Fixture::new(&entries);
    let m = fx.clean().unwrap();
    for file in ["ratings.csv", "ratings_small.csv"] {
        let f = &m.files[file];
        assert_eq!((f.records, f.accepted), (3014, kept.len() as u64), "{file}");
        assert_eq!(f.rejected, counts(&[("duplicate_rating", 7)]), "{file}");
        assert_eq!(f.unparsable, BTreeMap::new());
    }
    for table in ["ratings.tsv", "ratings_small.tsv"] {
        let mut got = fx.lines(table);
        got.sort();
        let mut want = kept.clone();
        want.sort();
        assert_eq!(got, want, "{table}: every first occurrence, no repeat");
    }
    // The rejects name each repeat with its line and raw text.
    let rejects = fx.lines("rejects.tsv");
    for (line, raw) in &dups {
        for file in ["ratings.csv", "ratings_small.csv"] {
            let r = format!("{file}\t{line}\tduplicate_rating\t{raw}");
            assert!(rejects.contains(&r), "{r} missing from {rejects:?}");
        }
    }
    // The totals count only the kept rows (ratings are multiples of 0.5: exact sums).
    let mut totals: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for row in &kept {
        let f: Vec<&str> = row.split('\t').collect();
        let t = totals.entry(f[1].parse().unwrap()).or_default();
        t.0 += 1;
        t.1 += f64::from(f[2].parse::<f32>().unwrap());
    }
    let want: Vec<String> = totals
        .iter()
        .map(|(movie, (n, sum))| format!("{movie}\t{n}\t{n}\t{sum:?}"))
        .collect();
    assert_eq!(fx.lines("ratings_per_movie.tsv"), want);
    // The spill files are gone, and a rerun gives the same bytes.
    let names: Vec<String> = fs::read_dir(fx.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    let first = read_dir(&fx.out());
    fx.clean().unwrap();
    assert_eq!(read_dir(&fx.out()), first);
}

/// Rewrites a CSV file the way pandas re-saves a frame whose integer columns held a missing
/// value: every plain integer of the named columns gets `.0` (and one in three an exponent
/// form instead: `1.5E2`-style). Keeps a BOM, CRLF line ends and the field layout.
fn pandas_style(data: &[u8], int_cols: &[&str]) -> Vec<u8> {
    let (bom, body) = match data.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(body);
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut wtr = csv::WriterBuilder::new().flexible(true).from_writer(&mut out);
    let mut targets: Vec<usize> = Vec::new();
    let mut n = 0usize;
    for (i, rec) in rdr.byte_records().enumerate() {
        let rec = rec.unwrap();
        let mut fields: Vec<Vec<u8>> = rec.iter().map(<[u8]>::to_vec).collect();
        let crlf = fields.last_mut().is_some_and(|f| f.last() == Some(&b'\r'));
        if crlf {
            fields.last_mut().unwrap().pop();
        }
        if fields == [Vec::<u8>::new()] {
            continue; // a blank line
        }
        if i == 0 {
            targets = int_cols
                .iter()
                .map(|c| fields.iter().position(|f| f == c.as_bytes()).expect("column"))
                .collect();
        } else {
            for &t in &targets {
                let Some(f) = fields.get_mut(t) else { continue };
                let digits = f.strip_prefix(b"-").unwrap_or(f);
                if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                    n += 1;
                    if n.is_multiple_of(3) && digits.len() > 1 {
                        // 1234 -> 1.234E3
                        let neg = f.len() != digits.len();
                        let mut e = if neg { b"-".to_vec() } else { Vec::new() };
                        e.push(digits[0]);
                        e.push(b'.');
                        e.extend_from_slice(&digits[1..]);
                        e.extend_from_slice(format!("E{}", digits.len() - 1).as_bytes());
                        *f = e;
                    } else {
                        f.extend_from_slice(b".0");
                    }
                }
            }
        }
        wtr.write_record(&fields).unwrap();
    }
    drop(wtr);
    out
}

#[test]
fn a_pandas_style_archive_cleans_to_the_same_rows() {
    let plain = fixture_entries();
    let pandas: Entries = plain
        .iter()
        .map(|(name, data)| {
            let cols: &[&str] = match name.as_str() {
                "movies_metadata.csv" => &["id", "budget", "revenue", "vote_count"],
                "credits.csv" | "keywords.csv" => &["id"],
                "links.csv" | "links_small.csv" => &["movieId", "tmdbId"],
                "ratings.csv" | "ratings_small.csv" => &["userId", "movieId", "timestamp"],
                _ => return (name.clone(), data.clone()),
            };
            let out = pandas_style(data, cols);
            assert_ne!(&out, data, "{name} was rewritten");
            (name.clone(), out)
        })
        .collect();
    let text = String::from_utf8_lossy(&pandas[0].1).into_owned();
    assert!(
        text.contains(",373554033.0,") || text.contains(",3.73554033E8,"),
        "{text}"
    );
    let (a, b) = (Fixture::new(&plain), Fixture::new(&pandas));
    let (ma, mb) = (a.clean().unwrap(), b.clean().unwrap());
    for t in TABLES {
        let file = format!("{}.tsv", t.name);
        assert_eq!(a.lines(&file), b.lines(&file), "{file}");
    }
    for (name, fa) in &ma.files {
        let fb = &mb.files[name];
        assert_eq!(
            (fa.accepted, &fa.rejected, &fa.unparsable),
            (fb.accepted, &fb.rejected, &fb.unparsable),
            "{name}"
        );
    }
    // Fractional values stay unparsable, in every integer column.
    let mut entries = plain.clone();
    entries[0].1 = (MOVIES_HEADER.join(",")
        + "\n"
        + &movie(&[
            ("id", "1"),
            ("budget", "10.5"),
            ("revenue", "1e-1"),
            ("vote_count", "3.25"),
        ])
        + "\n"
        + &movie(&[("id", "2.5"), ("title", "Fraction")])
        + "\n")
        .into_bytes();
    entries[5].1 = b"userId,movieId,rating,timestamp\n1,1.5,4.0,1\n1,2,4.0,1.5\n".to_vec();
    let fx = Fixture::new(&entries);
    let m = fx.clean().unwrap();
    let mm = &m.files["movies_metadata.csv"];
    assert_eq!(mm.rejected, counts(&[("bad_id", 1)]));
    assert_eq!(
        mm.unparsable,
        counts(&[("budget", 1), ("revenue", 1), ("vote_count", 1)])
    );
    let ra = &m.files["ratings.csv"];
    assert_eq!(ra.rejected, counts(&[("bad_key", 1)]));
    assert_eq!(ra.unparsable, counts(&[("timestamp", 1)]));
    assert_eq!(fx.lines("ratings.tsv"), ["1\t2\t4.0\t\\N"]);
}

#[test]
fn multi_line_reject_keeps_raw_text_and_start_line() {
    let mut entries = fixture_entries();
    let mut movies = MOVIES_HEADER.join(",") + "\n";
    movies += &movie(&[("id", "1"), ("title", "One")]);
    movies += "\n";
    movies += &movie(&[
        ("id", "1"),
        ("title", "Again"),
        ("overview", "two\nlines\r\nand a tab\t"),
    ]);
    movies += "\n";
    entries[0].1 = movies.into_bytes();
    let fx = Fixture::new(&entries);
    fx.clean().unwrap();
    let rejects = fx.lines("rejects.tsv");
    assert_eq!(
        rejects[0],
        format!(
            "movies_metadata.csv\t3\tduplicate_id\t1,Again,,,,,,,,,\"two\\nlines\\r\\nand a tab\\t\"{}",
            ",".repeat(13)
        )
    );
}

#[test]
fn identical_output_on_rerun_and_replaces_out_dir() {
    let fx = Fixture::new(&fixture_entries());
    let m1 = fx.clean().unwrap();
    let snapshot = read_dir(&fx.out());
    // A stray file in out_dir must not survive a rerun: the folder is replaced whole.
    fs::write(fx.out().join("stray.txt"), "x").unwrap();
    let m2 = fx.clean().unwrap();
    assert_eq!(m1, m2);
    assert_eq!(read_dir(&fx.out()), snapshot);
    // Another output folder from the same zip: byte-identical too.
    let other = fx.dir.path().join("nested/other");
    clean_zip(&fx.zip(), &other, &CleanConfig::default()).unwrap();
    assert_eq!(read_dir(&other), snapshot);
    // No temporary folders left beside it.
    let names: Vec<String> = fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

fn read_dir(p: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn manifest_json_shape() {
    let fx = Fixture::new(&fixture_entries());
    fx.clean().unwrap();
    let text = fs::read_to_string(fx.out().join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["tables"]["movies"]["file"], "movies.tsv");
    assert_eq!(v["tables"]["movies"]["rows"], 6);
    assert_eq!(v["files"]["links.csv"]["unparsable"]["tmdbId"], 1);
    assert_eq!(v["rejects"]["file"], "rejects.tsv");
    assert_eq!(v["ignored_entries"][0], "README.txt");
    assert!(
        text.starts_with("{\n  \"format\": 1,\n  \"source_sha256\": \""),
        "{text:.80}"
    );
}

// ---------------------------------------------------------------------------------------------
// Archive-level failures

fn clean_entries(entries: &Entries) -> Result<Manifest, CleanError> {
    Fixture::new(entries).clean()
}

#[test]
fn zip_slip_names_are_refused() {
    for bad in [
        "../evil.csv",
        "/abs.csv",
        "sub/../../evil.csv",
        "C:\\evil.csv",
        "..\\evil.csv",
    ] {
        let mut entries = fixture_entries();
        entries.push((bad.to_string(), b"x".to_vec()));
        match clean_entries(&entries) {
            Err(CleanError::UnsafeEntryName { name }) => assert_eq!(name, bad),
            other => panic!("{bad}: expected UnsafeEntryName, got {other:?}"),
        }
    }
}

#[test]
fn symlink_entry_is_refused() {
    let fx = Fixture::new(&fixture_entries());
    let path = fx.dir.path().join("link.zip");
    let mut zw = ZipWriter::new(fs::File::create(&path).unwrap());
    for (name, data) in fixture_entries() {
        zw.start_file(name.as_str(), SimpleFileOptions::default()).unwrap();
        zw.write_all(&data).unwrap();
    }
    zw.add_symlink("passwd.csv", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    zw.finish().unwrap();
    let err = clean_zip(&path, &fx.out(), &CleanConfig::default()).unwrap_err();
    assert!(
        matches!(&err, CleanError::SymlinkEntry { name } if name == "passwd.csv"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn missing_entry_and_missing_column() {
    let mut entries = fixture_entries();
    entries.retain(|(n, _)| n != "keywords.csv");
    let err = clean_entries(&entries).unwrap_err();
    assert!(
        matches!(&err, CleanError::MissingEntry { name } if name == "keywords.csv"),
        "{err:?}"
    );

    // In a subfolder is not at the root.
    let mut entries = fixture_entries();
    entries[2].0 = "data/keywords.csv".into();
    assert!(matches!(clean_entries(&entries), Err(CleanError::MissingEntry { .. })));

    let mut entries = fixture_entries();
    entries[3].1 = b"movieId,tmdb\n1,2\n".to_vec();
    match clean_entries(&entries) {
        Err(CleanError::BadHeader { file, missing }) => {
            assert_eq!(file, "links.csv");
            assert_eq!(missing, ["imdbId", "tmdbId"]);
        }
        other => panic!("expected BadHeader, got {other:?}"),
    }

    let mut entries = fixture_entries();
    entries[5].1 = Vec::new();
    assert!(matches!(clean_entries(&entries), Err(CleanError::BadHeader { file, .. }) if file == "ratings.csv"));
}

#[test]
fn zip_bomb_is_refused() {
    let mut entries = fixture_entries();
    let mut big = b"userId,movieId,rating,timestamp\n".to_vec();
    big.resize(50 << 20, b'0');
    entries[6].1 = big;
    let fx = Fixture::new(&entries);
    let cfg = CleanConfig {
        max_entry_bytes: 1 << 20,
        ..CleanConfig::default()
    };
    let err = clean_zip(&fx.zip(), &fx.out(), &cfg).unwrap_err();
    match &err {
        CleanError::EntryTooLarge { name, limit } => {
            assert_eq!(name, "ratings_small.csv");
            assert_eq!(*limit, 1 << 20);
        }
        other => panic!("expected EntryTooLarge, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!fx.out().exists(), "nothing published on failure");
}

/// The size in the headers lies (says 64 bytes): the real count must still stop it.
#[test]
fn zip_bomb_with_lying_header_is_refused() {
    let mut entries = fixture_entries();
    let mut big = b"userId,movieId,rating,timestamp\n".to_vec();
    big.resize(50 << 20, b'0');
    entries[6].1 = big;
    let fx = Fixture::new(&entries);
    let mut bytes = fs::read(fx.zip()).unwrap();
    let real = (50u32 << 20).to_le_bytes();
    let fake = 64u32.to_le_bytes();
    let mut patched = 0;
    // Local header (signature PK\3\4): uncompressed size at +22; central header (PK\1\2): +24.
    for i in 0..bytes.len().saturating_sub(30) {
        let sig = &bytes[i..i + 4];
        let off = if sig == b"PK\x03\x04" {
            22
        } else if sig == b"PK\x01\x02" {
            24
        } else {
            continue;
        };
        if bytes[i + off..i + off + 4] == real {
            bytes[i + off..i + off + 4].copy_from_slice(&fake);
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "both headers patched");
    fs::write(fx.zip(), &bytes).unwrap();
    let cfg = CleanConfig {
        max_entry_bytes: 1 << 20,
        ..CleanConfig::default()
    };
    let err = clean_zip(&fx.zip(), &fx.out(), &cfg).unwrap_err();
    eprintln!("lying header: {err}");
    assert!(
        matches!(&err, CleanError::EntryTooLarge { name, .. } | CleanError::Corrupt { entry: name, .. } if name == "ratings_small.csv"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn crc_mismatch_is_a_clear_error() {
    let fx = Fixture::with_method(&fixture_entries(), CompressionMethod::Stored);
    let mut bytes = fs::read(fx.zip()).unwrap();
    // Change one digit inside the stored ratings data: same length, wrong CRC.
    let needle = b"1,1029,3.0,1260759179";
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    bytes[at + 2] = b'2';
    fs::write(fx.zip(), &bytes).unwrap();
    let err = fx.clean().unwrap_err();
    match &err {
        CleanError::Corrupt { entry, detail } => {
            assert_eq!(entry, "ratings.csv");
            assert!(detail.to_lowercase().contains("checksum"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!fx.out().exists());
}

#[test]
fn truncated_or_garbage_archive_is_an_error() {
    let fx = Fixture::new(&fixture_entries());
    let bytes = fs::read(fx.zip()).unwrap();
    fs::write(fx.zip(), &bytes[..bytes.len() / 2]).unwrap();
    let err = fx.clean().unwrap_err();
    assert!(matches!(err, CleanError::Zip { .. }), "{err:?}");
    assert!(!err.is_retryable());

    fs::write(fx.zip(), b"this is not a zip").unwrap();
    assert!(matches!(fx.clean(), Err(CleanError::Zip { .. })));

    fs::remove_file(fx.zip()).unwrap();
    let err = fx.clean().unwrap_err();
    assert!(matches!(err, CleanError::Io { .. }), "{err:?}");
}

#[test]
fn cancellation_stops_and_leaves_nothing() {
    let mut entries = fixture_entries();
    let mut ratings = b"userId,movieId,rating,timestamp\n".to_vec();
    for i in 1..=70_000 {
        ratings.extend_from_slice(format!("{},{},4.0,1\n", i / 100 + 1, i).as_bytes());
    }
    entries[5].1 = ratings;
    let fx = Fixture::new(&entries);
    let err = reelflow_clean::clean_zip_with_cancel(&fx.zip(), &fx.out(), &CleanConfig::default(), &|| true, None)
        .unwrap_err();
    assert!(matches!(err, CleanError::Cancelled), "{err:?}");
    assert!(!fx.out().exists());
    let m = fx.clean().unwrap();
    assert_eq!(m.files["ratings.csv"].accepted, 70_000);
}

// ---------------------------------------------------------------------------------------------
// The DAG task

#[test]
fn clean_task_reads_fetch_output() {
    use reelflow_clean::{CleanRecord, CleanTask};
    use reelflow_dag::{Cancel, ErrorKind, Outputs, Period, Task, TaskContext};

    let fx = Fixture::new(&fixture_entries());
    let store = reelflow_artifacts::Artifacts::local(&fx.dir.path().join("store")).unwrap();
    let ctx = TaskContext {
        dag_id: "movies_monthly".into(),
        run_id: 1,
        period: Period::new(2026, 11).unwrap(),
        try_number: 1,
        attempt_id: 3,
        scratch_dir: fx.dir.path().join("scratch"),
        artifacts: store.clone(),
        cancel: Cancel::never(),
    };
    let task = CleanTask::default();
    assert_eq!(task.id(), "clean");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The fetch task's output, as the engine stores it: the zip in the artifact store.
    let zip = rt
        .block_on(store.put_file(
            "movies_monthly/2026-11/run-1/fetch/attempt-2/source.zip",
            &fx.zip(),
            &|| false,
        ))
        .unwrap();
    let fetch_output = |path: &std::path::Path, object: Option<&reelflow_artifacts::ObjectRef>| {
        serde_json::json!({
            "path": path, "size": 1, "sha256": "00", "etag": null, "last_modified": null,
            "source": "file:///x.zip", "reused": false, "resumes": 0, "object": object
        })
    };

    let mut inputs = Outputs::new();
    inputs.insert(
        "fetch".into(),
        fetch_output(&fx.dir.path().join("not-read.zip"), Some(&zip)),
    );
    let out = rt.block_on(task.run(&ctx, &inputs)).unwrap();
    assert_eq!(out["manifest"]["tables"]["movies"]["rows"], 6);
    // Every file and the record under this attempt's keys; the record names exactly the files.
    let prefix = "movies_monthly/2026-11/run-1/clean/attempt-3";
    assert_eq!(out["files"]["movies.tsv"]["key"], format!("{prefix}/movies.tsv"));
    assert_eq!(out["record"]["key"], format!("{prefix}/manifest.json"));
    let record_ref: reelflow_artifacts::ObjectRef = serde_json::from_value(out["record"].clone()).unwrap();
    let record: CleanRecord = serde_json::from_slice(&rt.block_on(store.get_bytes(&record_ref)).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&record.files).unwrap(), out["files"]);
    assert_eq!(record.files.len(), record.manifest.tables.len() + 1);
    assert!(fx.dir.path().join("store").join(prefix).join("movies.tsv").exists());
    let m: Manifest = serde_json::from_value(out["manifest"].clone()).unwrap();
    assert_eq!(m.files["movies_metadata.csv"].accepted, 6);
    // The scratch copy of the zip and the local output are gone.
    assert!(!ctx.scratch_dir.join("run-1/clean/attempt-3").exists());
    // The same attempt cannot write its record twice.
    let err = rt.block_on(task.run(&ctx, &inputs)).unwrap_err();
    assert!(err.message.contains("already exists"), "{err}");

    let err = rt.block_on(task.run(&ctx, &Outputs::new())).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal);

    let mut inputs = Outputs::new();
    inputs.insert("fetch".into(), fetch_output(&fx.dir.path().join("missing.zip"), None));
    let err = rt.block_on(task.run(&ctx, &inputs)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
}

// ---------------------------------------------------------------------------------------------
// The real sample files (skipped when ../shared is absent)

#[test]
fn real_sample_files() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/the-movies-dataset");
    if !data.exists() {
        let why = format!("skipping: {} is absent", data.display());
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    }
    let read = |f: &str| fs::read(data.join(f)).unwrap();
    let entries: Entries = vec![
        ("movies_metadata.csv".into(), read("movies_metadata.csv")),
        ("credits.csv".into(), read("credits.csv")),
        ("keywords.csv".into(), read("keywords.csv")),
        ("links.csv".into(), read("links_small.csv")),
        ("links_small.csv".into(), read("links_small.csv")),
        ("ratings.csv".into(), read("ratings_small.csv")),
        ("ratings_small.csv".into(), read("ratings_small.csv")),
    ];
    let fx = Fixture::new(&entries);
    let m = fx.clean().unwrap();
    let mm = &m.files["movies_metadata.csv"];
    assert_eq!(mm.records, 5000);
    // 105045 occurs twice in the first 5,000 rows.
    assert_eq!(mm.rejected, counts(&[("duplicate_id", 1)]), "{mm:?}");
    assert_eq!(mm.accepted, 4999);
    assert_eq!(m.tables["movies"].rows, 4999);
    assert_eq!(m.files["credits.csv"].accepted, 99);
    assert_eq!(m.files["keywords.csv"].accepted, 99);
    assert_eq!(m.files["links.csv"].accepted, 9125);
    assert_eq!(m.files["ratings.csv"].accepted, 100_004);
    assert_eq!(m.files["ratings_small.csv"].accepted, 100_004);
    assert!(m.tables["cast_members"].rows > 1000);
    assert!(m.tables["crew_members"].rows > 1000);
    assert_eq!(m.files["links.csv"].unparsable, BTreeMap::new());
    // 13 empty tmdbId in links_small.
    let null_tmdb = fx.lines("links.tsv").iter().filter(|l| l.ends_with("\t\\N")).count();
    assert_eq!(null_tmdb, 13);
    // Toy Story: collection, first genres, Python literal companies.
    let toy = fx
        .lines("movies.tsv")
        .into_iter()
        .find(|l| l.starts_with("862\t"))
        .unwrap();
    assert!(toy.ends_with("\t1995-10-30\t7.7\t5415\t10194"), "{toy}");
    // The apostrophe name written in double quotes in the literal.
    assert!(fx
        .lines("companies.tsv")
        .iter()
        .any(|l| l.ends_with("\tD'Artagnan Productions Limited")));
    eprintln!("{}", serde_json::to_string_pretty(&m.files).unwrap());
}
