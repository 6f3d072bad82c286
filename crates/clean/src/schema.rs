//! The typed tables the cleaner writes: the contract with the loader and the report SQL.

/// One output table: its columns in file order, keys and indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Table name, also the file stem (`<name>.tsv`).
    pub name: &'static str,
    /// Columns in the order they appear in the file.
    pub columns: &'static [ColumnDef],
    /// Primary key columns.
    pub primary_key: &'static [&'static str],
    /// Foreign keys (the referenced tables come earlier in [`TABLES`]).
    pub foreign_keys: &'static [ForeignKey],
    /// Secondary indexes worth creating after the load, each a list of columns.
    pub indexes: &'static [&'static [&'static str]],
}

/// One column of a [`TableDef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: &'static str,
    /// PostgreSQL type: `bigint`, `integer`, `smallint`, `text`, `double precision`, `real`,
    /// `date` or `boolean`.
    pub sql_type: &'static str,
    /// Whether the cleaner guarantees a value (it never writes `\N` there).
    pub not_null: bool,
}

/// A foreign key of a [`TableDef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignKey {
    /// Referencing columns in this table.
    pub columns: &'static [&'static str],
    /// Referenced table.
    pub ref_table: &'static str,
    /// Referenced columns, in the same order.
    pub ref_columns: &'static [&'static str],
}

const fn col(name: &'static str, sql_type: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        sql_type,
        not_null: false,
    }
}

const fn key(name: &'static str, sql_type: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        sql_type,
        not_null: true,
    }
}

const fn fk(
    columns: &'static [&'static str],
    ref_table: &'static str,
    ref_columns: &'static [&'static str],
) -> ForeignKey {
    ForeignKey {
        columns,
        ref_table,
        ref_columns,
    }
}

const MOVIE_FK: ForeignKey = fk(&["movie_id"], "movies", &["id"]);

const RATINGS_COLUMNS: &[ColumnDef] = &[
    key("user_id", "bigint"),
    key("movie_id", "bigint"),
    col("rating", "real"),
    col("rated_at_unix", "bigint"),
];

const LINKS_COLUMNS: &[ColumnDef] = &[
    key("movie_id", "bigint"),
    col("imdb_id", "text"),
    col("tmdb_id", "bigint"),
];

/// Every table, in load order: a referenced table comes before the tables referencing it.
///
/// Text columns hold NULL where the CSV field was empty (CSV cannot tell an empty string from
/// a missing value). `movies.budget` and `movies.revenue` hold NULL for the dataset's `0`
/// ("unknown"). `ratings.movie_id` is a MovieLens id, mapped to `movies.id` through
/// `links.tmdb_id`, so ratings carry no foreign key.
pub static TABLES: &[TableDef] = &[
    TableDef {
        name: "collections",
        columns: &[
            key("id", "bigint"),
            col("name", "text"),
            col("poster_path", "text"),
            col("backdrop_path", "text"),
        ],
        primary_key: &["id"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movies",
        columns: &[
            key("id", "bigint"),
            col("imdb_id", "text"),
            col("title", "text"),
            col("original_title", "text"),
            col("original_language", "text"),
            col("overview", "text"),
            col("tagline", "text"),
            col("homepage", "text"),
            col("poster_path", "text"),
            col("status", "text"),
            col("adult", "boolean"),
            col("video", "boolean"),
            col("budget", "bigint"),
            col("revenue", "bigint"),
            col("popularity", "double precision"),
            col("runtime", "double precision"),
            col("release_date", "date"),
            col("vote_average", "double precision"),
            col("vote_count", "bigint"),
            col("collection_id", "bigint"),
        ],
        primary_key: &["id"],
        foreign_keys: &[fk(&["collection_id"], "collections", &["id"])],
        indexes: &[&["collection_id"], &["release_date"]],
    },
    TableDef {
        name: "genres",
        columns: &[key("id", "bigint"), col("name", "text")],
        primary_key: &["id"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movie_genres",
        columns: &[key("movie_id", "bigint"), key("genre_id", "bigint")],
        primary_key: &["movie_id", "genre_id"],
        foreign_keys: &[MOVIE_FK, fk(&["genre_id"], "genres", &["id"])],
        indexes: &[&["genre_id"]],
    },
    TableDef {
        name: "companies",
        columns: &[key("id", "bigint"), col("name", "text")],
        primary_key: &["id"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movie_companies",
        columns: &[key("movie_id", "bigint"), key("company_id", "bigint")],
        primary_key: &["movie_id", "company_id"],
        foreign_keys: &[MOVIE_FK, fk(&["company_id"], "companies", &["id"])],
        indexes: &[&["company_id"]],
    },
    TableDef {
        name: "countries",
        columns: &[key("iso_3166_1", "text"), col("name", "text")],
        primary_key: &["iso_3166_1"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movie_countries",
        columns: &[key("movie_id", "bigint"), key("iso_3166_1", "text")],
        primary_key: &["movie_id", "iso_3166_1"],
        foreign_keys: &[MOVIE_FK, fk(&["iso_3166_1"], "countries", &["iso_3166_1"])],
        indexes: &[&["iso_3166_1"]],
    },
    TableDef {
        name: "languages",
        columns: &[key("iso_639_1", "text"), col("name", "text")],
        primary_key: &["iso_639_1"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movie_languages",
        columns: &[key("movie_id", "bigint"), key("iso_639_1", "text")],
        primary_key: &["movie_id", "iso_639_1"],
        foreign_keys: &[MOVIE_FK, fk(&["iso_639_1"], "languages", &["iso_639_1"])],
        indexes: &[&["iso_639_1"]],
    },
    TableDef {
        name: "keywords",
        columns: &[key("id", "bigint"), col("name", "text")],
        primary_key: &["id"],
        foreign_keys: &[],
        indexes: &[],
    },
    TableDef {
        name: "movie_keywords",
        columns: &[key("movie_id", "bigint"), key("keyword_id", "bigint")],
        primary_key: &["movie_id", "keyword_id"],
        foreign_keys: &[MOVIE_FK, fk(&["keyword_id"], "keywords", &["id"])],
        indexes: &[&["keyword_id"]],
    },
    TableDef {
        name: "cast_members",
        columns: &[
            key("movie_id", "bigint"),
            key("ord", "integer"),
            col("cast_id", "integer"),
            col("credit_id", "text"),
            col("person_id", "bigint"),
            col("name", "text"),
            col("character", "text"),
            col("gender", "smallint"),
            col("profile_path", "text"),
        ],
        primary_key: &["movie_id", "ord"],
        foreign_keys: &[MOVIE_FK],
        indexes: &[&["person_id"]],
    },
    TableDef {
        name: "crew_members",
        columns: &[
            key("movie_id", "bigint"),
            key("ord", "integer"),
            col("credit_id", "text"),
            col("person_id", "bigint"),
            col("name", "text"),
            col("department", "text"),
            col("job", "text"),
            col("gender", "smallint"),
            col("profile_path", "text"),
        ],
        primary_key: &["movie_id", "ord"],
        foreign_keys: &[MOVIE_FK],
        indexes: &[&["person_id"]],
    },
    TableDef {
        name: "links",
        columns: LINKS_COLUMNS,
        primary_key: &["movie_id"],
        foreign_keys: &[],
        indexes: &[&["tmdb_id"]],
    },
    TableDef {
        name: "links_small",
        columns: LINKS_COLUMNS,
        primary_key: &["movie_id"],
        foreign_keys: &[],
        indexes: &[&["tmdb_id"]],
    },
    TableDef {
        name: "ratings",
        columns: RATINGS_COLUMNS,
        primary_key: &["user_id", "movie_id"],
        foreign_keys: &[],
        indexes: &[&["movie_id"]],
    },
    TableDef {
        name: "ratings_small",
        columns: RATINGS_COLUMNS,
        primary_key: &["user_id", "movie_id"],
        foreign_keys: &[],
        indexes: &[&["movie_id"]],
    },
    // Totals of `ratings` per MovieLens id, summed by the clean stage from exactly the rows it
    // writes to `ratings` (one pass, nothing parsed twice); the `movie_ratings` report is built
    // from them, and the load checks that they add up to the rows of `ratings`.
    TableDef {
        name: "ratings_per_movie",
        columns: &[
            key("movie_id", "bigint"),
            key("ratings", "bigint"),
            key("rated", "bigint"),
            key("rating_sum", "double precision"),
        ],
        primary_key: &["movie_id"],
        foreign_keys: &[],
        indexes: &[],
    },
];

/// Looks a table up by name in [`TABLES`].
pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

/// Index of each table in [`TABLES`]; the cleaner's writers use the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum T {
    Collections,
    Movies,
    Genres,
    MovieGenres,
    Companies,
    MovieCompanies,
    Countries,
    MovieCountries,
    Languages,
    MovieLanguages,
    Keywords,
    MovieKeywords,
    CastMembers,
    CrewMembers,
    Links,
    LinksSmall,
    Ratings,
    RatingsSmall,
    RatingsPerMovie,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn writer_indexes_match_table_order() {
        let named = [
            (T::Collections, "collections"),
            (T::Movies, "movies"),
            (T::Genres, "genres"),
            (T::MovieGenres, "movie_genres"),
            (T::Companies, "companies"),
            (T::MovieCompanies, "movie_companies"),
            (T::Countries, "countries"),
            (T::MovieCountries, "movie_countries"),
            (T::Languages, "languages"),
            (T::MovieLanguages, "movie_languages"),
            (T::Keywords, "keywords"),
            (T::MovieKeywords, "movie_keywords"),
            (T::CastMembers, "cast_members"),
            (T::CrewMembers, "crew_members"),
            (T::Links, "links"),
            (T::LinksSmall, "links_small"),
            (T::Ratings, "ratings"),
            (T::RatingsSmall, "ratings_small"),
            (T::RatingsPerMovie, "ratings_per_movie"),
        ];
        assert_eq!(named.len(), TABLES.len());
        for (t, name) in named {
            assert_eq!(TABLES[t as usize].name, name);
        }
    }

    #[test]
    fn keys_and_references_are_consistent() {
        let types = [
            "bigint",
            "integer",
            "smallint",
            "text",
            "double precision",
            "real",
            "date",
            "boolean",
        ];
        let mut seen: HashSet<&str> = HashSet::new();
        for t in TABLES {
            let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
            for c in t.columns {
                assert!(types.contains(&c.sql_type), "{}.{}", t.name, c.name);
            }
            for k in t.primary_key {
                let c = t.columns.iter().find(|c| c.name == *k).expect("pk column");
                assert!(c.not_null, "{}.{k} is a key but nullable", t.name);
            }
            for idx in t.indexes {
                assert!(idx.iter().all(|c| cols.contains(c)), "{} index {idx:?}", t.name);
            }
            for f in t.foreign_keys {
                assert!(
                    seen.contains(f.ref_table),
                    "{} references {} before it",
                    t.name,
                    f.ref_table
                );
                let r = table(f.ref_table).expect("referenced table");
                assert_eq!(r.primary_key, f.ref_columns, "{} -> {}", t.name, f.ref_table);
                assert!(f.columns.iter().all(|c| cols.contains(c)));
            }
            assert!(seen.insert(t.name), "table {} twice", t.name);
        }
    }
}
