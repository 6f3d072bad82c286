//! The one declarative table of the report endpoints. Routing, parameter validation, the SQL
//! (every identifier in it comes from here), CSV and JSON output and the OpenAPI document are
//! all generated from [`ENDPOINTS`], so the document cannot drift from what the server does.

/// A column's SQL type as the report relations define it (see `reelflow_load::reports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `integer`
    Int,
    /// `bigint`
    BigInt,
    /// `double precision`
    Float,
    /// `text`
    Text,
}

impl Ty {
    /// The type as `information_schema.columns.data_type` spells it.
    pub fn sql_name(self) -> &'static str {
        match self {
            Ty::Int => "integer",
            Ty::BigInt => "bigint",
            Ty::Float => "double precision",
            Ty::Text => "text",
        }
    }
}

/// One output column.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: Ty,
    pub nullable: bool,
    pub doc: &'static str,
}

/// How a filter compares its column with the parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `column = value`
    Eq,
    /// `column >= value`
    Ge,
    /// `column <= value`
    Le,
    /// `column ILIKE '%value%'`, the value's `%`, `_` and `\` taken literally.
    Contains,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Contains => "ILIKE",
        }
    }
}

/// A query parameter that filters rows. Integer filters accept `min..=max`; `Contains` filters
/// accept 1 to `max` characters.
#[derive(Debug)]
pub struct Filter {
    pub param: &'static str,
    pub column: &'static str,
    pub op: Op,
    pub min: i64,
    pub max: i64,
    pub doc: &'static str,
}

/// The `{id}` of a nested path: it filters `column` and must exist in `table.id` of the
/// snapshot (404 otherwise).
#[derive(Debug)]
pub struct PathId {
    pub column: &'static str,
    pub table: &'static str,
    pub noun: &'static str,
}

/// One GET endpoint over one relation of a snapshot schema.
#[derive(Debug)]
pub struct Endpoint {
    /// The operationId, also written into cursors.
    pub id: &'static str,
    /// The route, with `{id}` when `path_id` is set.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// The relation read, inside the snapshot's schema.
    pub relation: &'static str,
    pub columns: &'static [Column],
    /// Sort orders a client may pick with `sort=`, the first being the default. Each is a key
    /// that is unique among the rows the endpoint can return (cursors rely on it), made of
    /// non-null integer columns, and backed by an index of the relation.
    pub sorts: &'static [&'static [&'static str]],
    pub filters: &'static [Filter],
    pub path_id: Option<PathId>,
}

impl Endpoint {
    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Rows per page unless `limit` says otherwise, and the most a page can hold.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

const fn col(name: &'static str, ty: Ty, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable: false,
        doc,
    }
}

const fn null(name: &'static str, ty: Ty, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable: true,
        doc,
    }
}

const YEAR_FROM: Filter = Filter {
    param: "year_from",
    column: "year",
    op: Op::Ge,
    min: 1,
    max: 9999,
    doc: "Only years from this one on (inclusive).",
};
const YEAR_TO: Filter = Filter {
    param: "year_to",
    column: "year",
    op: Op::Le,
    min: 1,
    max: 9999,
    doc: "Only years up to this one (inclusive).",
};
const COMPANY_ID: Filter = Filter {
    param: "company_id",
    column: "company_id",
    op: Op::Eq,
    min: 1,
    max: i64::MAX,
    doc: "Only this production company (ids from /api/v1/companies).",
};
const GENRE_ID: Filter = Filter {
    param: "genre_id",
    column: "genre_id",
    op: Op::Eq,
    min: 1,
    max: i64::MAX,
    doc: "Only this genre (ids from /api/v1/genres).",
};
const RANK_TO: Filter = Filter {
    param: "rank_to",
    column: "popularity_rank",
    op: Op::Le,
    min: 1,
    max: i64::MAX,
    doc: "Only genres ranked this high or higher within their year (1 = most popular).",
};
const MOVIE_ID: Filter = Filter {
    param: "movie_id",
    column: "movie_id",
    op: Op::Eq,
    min: 1,
    max: i64::MAX,
    doc: "Only this movie (TMDB id).",
};
const NAME_Q: Filter = Filter {
    param: "q",
    column: "name",
    op: Op::Contains,
    min: 1,
    max: 200,
    doc: "Case-insensitive substring of the name; `%` and `_` match themselves.",
};

const COMPANY_YEARLY: &[Column] = &[
    col("company_id", Ty::BigInt, "Production company id."),
    col("company_name", Ty::Text, "Production company name."),
    col("year", Ty::Int, "Calendar year of release_date."),
    col("movies", Ty::BigInt, "Movies of the company released that year."),
    null(
        "budget_total",
        Ty::BigInt,
        "Sum of known budgets; null when none is known.",
    ),
    null(
        "revenue_total",
        Ty::BigInt,
        "Sum of known revenues; null when none is known.",
    ),
    null(
        "profit_total",
        Ty::BigInt,
        "Sum of revenue - budget over movies with both known; null when there is none.",
    ),
    col("movies_with_budget", Ty::BigInt, "Movies behind budget_total."),
    col("movies_with_revenue", Ty::BigInt, "Movies behind revenue_total."),
    col("movies_with_profit", Ty::BigInt, "Movies behind profit_total."),
    null(
        "avg_popularity",
        Ty::Float,
        "Mean popularity of the movies with a known one; null when there is none.",
    ),
];

const COMPANY_GENRE_YEARLY: &[Column] = &[
    col("company_id", Ty::BigInt, "Production company id."),
    col("company_name", Ty::Text, "Production company name."),
    col("year", Ty::Int, "Calendar year of release_date."),
    col("genre_id", Ty::BigInt, "Genre id."),
    col("genre_name", Ty::Text, "Genre name."),
    col(
        "releases",
        Ty::BigInt,
        "Distinct movies of the company in that genre and year.",
    ),
];

const GENRE_YEARLY: &[Column] = &[
    col("genre_id", Ty::BigInt, "Genre id."),
    col("genre_name", Ty::Text, "Genre name."),
    col("year", Ty::Int, "Calendar year of release_date."),
    col("movies", Ty::BigInt, "Movies of the genre released that year."),
    null(
        "avg_popularity",
        Ty::Float,
        "Mean popularity of the movies with a known one; null when there is none.",
    ),
    col(
        "popularity_rank",
        Ty::Int,
        "1 = highest avg_popularity among the genres of that year; ties by genre name.",
    ),
    null(
        "budget_total",
        Ty::BigInt,
        "Sum of known budgets; null when none is known.",
    ),
    null(
        "revenue_total",
        Ty::BigInt,
        "Sum of known revenues; null when none is known.",
    ),
    null(
        "profit_total",
        Ty::BigInt,
        "Sum of revenue - budget over movies with both known; null when there is none.",
    ),
    col("movies_with_budget", Ty::BigInt, "Movies behind budget_total."),
    col("movies_with_revenue", Ty::BigInt, "Movies behind revenue_total."),
    col("movies_with_profit", Ty::BigInt, "Movies behind profit_total."),
];

const MOST_POPULAR_GENRE_YEARLY: &[Column] = &[
    col("year", Ty::Int, "Calendar year of release_date."),
    col(
        "genre_id",
        Ty::BigInt,
        "The year's most popular genre (popularity_rank 1).",
    ),
    col("genre_name", Ty::Text, "Its name."),
    null("avg_popularity", Ty::Float, "Its mean popularity that year."),
];

const MOVIE_RATINGS: &[Column] = &[
    col("movie_id", Ty::BigInt, "TMDB movie id."),
    col("ratings", Ty::BigInt, "MovieLens ratings of the movie (through links)."),
    col("avg_rating", Ty::Float, "Their mean."),
];

const ID_NAME: &[Column] = &[
    col("id", Ty::BigInt, "Id, as in the dataset."),
    null("name", Ty::Text, "Name."),
];

const COMPANY: PathId = PathId {
    column: "company_id",
    table: "companies",
    noun: "company",
};
const GENRE: PathId = PathId {
    column: "genre_id",
    table: "genres",
    noun: "genre",
};

/// Every report endpoint.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        id: "company_yearly",
        path: "/api/v1/reports/company-yearly",
        tag: "reports",
        summary: "Yearly figures per production company",
        description: "One row per company and release year: movies, budget, revenue and profit totals with the \
                      number of movies behind each, and mean popularity.",
        relation: "company_yearly",
        columns: COMPANY_YEARLY,
        sorts: &[&["company_id", "year"], &["year", "company_id"]],
        filters: &[COMPANY_ID, YEAR_FROM, YEAR_TO],
        path_id: None,
    },
    Endpoint {
        id: "company_genre_yearly",
        path: "/api/v1/reports/company-genre-yearly",
        tag: "reports",
        summary: "Releases per production company, genre and year",
        description: "One row per company, release year and genre: the number of distinct movies. A movie with \
                      three genres counts once in each.",
        relation: "company_genre_yearly",
        columns: COMPANY_GENRE_YEARLY,
        sorts: &[&["company_id", "year", "genre_id"], &["genre_id", "year", "company_id"]],
        filters: &[COMPANY_ID, GENRE_ID, YEAR_FROM, YEAR_TO],
        path_id: None,
    },
    Endpoint {
        id: "genre_yearly",
        path: "/api/v1/reports/genre-yearly",
        tag: "reports",
        summary: "Yearly figures per genre, with the genre's popularity rank in its year",
        description: "One row per genre and release year. `sort=year,popularity_rank` with `rank_to=N` gives the \
                      top N genres of every year.",
        relation: "genre_yearly",
        columns: GENRE_YEARLY,
        sorts: &[&["genre_id", "year"], &["year", "popularity_rank"]],
        filters: &[GENRE_ID, YEAR_FROM, YEAR_TO, RANK_TO],
        path_id: None,
    },
    Endpoint {
        id: "most_popular_genre_yearly",
        path: "/api/v1/reports/most-popular-genre-yearly",
        tag: "reports",
        summary: "The most popular genre of every year",
        description: "One row per release year: the genre with the highest mean popularity (ties by genre name).",
        relation: "most_popular_genre_yearly",
        columns: MOST_POPULAR_GENRE_YEARLY,
        sorts: &[&["year"]],
        filters: &[YEAR_FROM, YEAR_TO, GENRE_ID],
        path_id: None,
    },
    Endpoint {
        id: "movie_ratings",
        path: "/api/v1/reports/movie-ratings",
        tag: "reports",
        summary: "MovieLens ratings per movie",
        description: "One row per TMDB movie with ratings: their number and mean.",
        relation: "movie_ratings",
        columns: MOVIE_RATINGS,
        sorts: &[&["movie_id"]],
        filters: &[MOVIE_ID],
        path_id: None,
    },
    Endpoint {
        id: "companies",
        path: "/api/v1/companies",
        tag: "lookup",
        summary: "Production companies, searchable by name",
        description: "Find a company's id by a part of its name with `q=`.",
        relation: "companies",
        columns: ID_NAME,
        sorts: &[&["id"]],
        filters: &[NAME_Q],
        path_id: None,
    },
    Endpoint {
        id: "genres",
        path: "/api/v1/genres",
        tag: "lookup",
        summary: "Genres, searchable by name",
        description: "Find a genre's id by a part of its name with `q=`.",
        relation: "genres",
        columns: ID_NAME,
        sorts: &[&["id"]],
        filters: &[NAME_Q],
        path_id: None,
    },
    Endpoint {
        id: "company_yearly_of_company",
        path: "/api/v1/companies/{id}/yearly",
        tag: "reports",
        summary: "Yearly figures of one production company",
        description: "The company_yearly rows of one company; 404 when the snapshot has no such company (a company \
                      without dated movies has no rows).",
        relation: "company_yearly",
        columns: COMPANY_YEARLY,
        sorts: &[&["year"]],
        filters: &[YEAR_FROM, YEAR_TO],
        path_id: Some(COMPANY),
    },
    Endpoint {
        id: "company_genre_yearly_of_company",
        path: "/api/v1/companies/{id}/genre-yearly",
        tag: "reports",
        summary: "Releases of one production company per genre and year",
        description: "The company_genre_yearly rows of one company; 404 when the snapshot has no such company.",
        relation: "company_genre_yearly",
        columns: COMPANY_GENRE_YEARLY,
        sorts: &[&["year", "genre_id"]],
        filters: &[GENRE_ID, YEAR_FROM, YEAR_TO],
        path_id: Some(COMPANY),
    },
    Endpoint {
        id: "genre_yearly_of_genre",
        path: "/api/v1/genres/{id}/yearly",
        tag: "reports",
        summary: "Yearly figures of one genre",
        description: "The genre_yearly rows of one genre; 404 when the snapshot has no such genre.",
        relation: "genre_yearly",
        columns: GENRE_YEARLY,
        sorts: &[&["year"]],
        filters: &[YEAR_FROM, YEAR_TO],
        path_id: Some(GENRE),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut ids = std::collections::HashSet::new();
        for ep in ENDPOINTS {
            assert!(ids.insert(ep.id), "{}: duplicate id", ep.id);
            assert!(!ep.id.contains('.'), "{}: cursors split on dots", ep.id);
            assert_eq!(ep.path.contains("{id}"), ep.path_id.is_some(), "{}", ep.id);
            assert!(!ep.sorts.is_empty(), "{}", ep.id);
            for key in ep.sorts {
                for k in *key {
                    let c = ep.column(k).unwrap_or_else(|| panic!("{}: sort column {k}", ep.id));
                    assert!(!c.nullable && matches!(c.ty, Ty::Int | Ty::BigInt), "{}: {k}", ep.id);
                }
            }
            let mut params = std::collections::HashSet::new();
            for f in ep.filters {
                assert!(params.insert(f.param), "{}: duplicate {}", ep.id, f.param);
                let c = ep
                    .column(f.column)
                    .unwrap_or_else(|| panic!("{}: filter {}", ep.id, f.param));
                assert_eq!(f.op == Op::Contains, c.ty == Ty::Text, "{}: {}", ep.id, f.param);
            }
            if let Some(p) = &ep.path_id {
                assert!(ep.column(p.column).is_some(), "{}", ep.id);
            }
        }
    }
}
