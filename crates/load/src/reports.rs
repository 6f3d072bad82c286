//! The report relations of DESIGN section 3, built inside a snapshot schema at load time.
//!
//! Semantics: year = calendar year of `release_date` (movies without one are left out);
//! budget and revenue are already NULL when unknown (the cleaner maps 0 to NULL), so `sum`
//! adds known values only and `count(col)` counts the movies behind each total; profit is
//! `revenue - budget`, NULL unless both are known. Totals are NULL when no movie of the group
//! has a known value (SQL `sum`).

/// One report relation: how it is built, what it reads, and its keys.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub name: &'static str,
    /// `CREATE TABLE {s}.name AS ...`; `{s}` is replaced by the quoted snapshot schema.
    pub sql: &'static str,
    /// Snapshot tables or earlier reports it reads; it is built once they are loaded and keyed.
    pub reads: &'static [&'static str],
    /// Keys and indexes, built after it is filled.
    pub indexes: &'static [&'static str],
}

/// The reports, in an order where each one comes after the reports it reads.
pub const REPORTS: &[Report] = &[
    Report {
        name: "company_yearly",
        sql: r#"CREATE TABLE {s}.company_yearly AS
WITH m AS (
    SELECT id, extract(year FROM release_date)::integer AS year, budget, revenue,
           revenue - budget AS profit, popularity
    FROM {s}.movies WHERE release_date IS NOT NULL
)
SELECT c.id AS company_id, c.name AS company_name, m.year,
       count(*)::bigint             AS movies,
       sum(m.budget)::bigint        AS budget_total,
       sum(m.revenue)::bigint       AS revenue_total,
       sum(m.profit)::bigint        AS profit_total,
       count(m.budget)::bigint      AS movies_with_budget,
       count(m.revenue)::bigint     AS movies_with_revenue,
       count(m.profit)::bigint      AS movies_with_profit,
       avg(m.popularity)            AS avg_popularity
FROM m
JOIN {s}.movie_companies mc ON mc.movie_id = m.id
JOIN {s}.companies c ON c.id = mc.company_id
GROUP BY c.id, c.name, m.year"#,
        reads: &["movies", "movie_companies", "companies"],
        indexes: &[
            "ALTER TABLE {s}.company_yearly ADD PRIMARY KEY (company_id, year)",
            "CREATE INDEX ON {s}.company_yearly (year)",
        ],
    },
    Report {
        name: "company_genre_yearly",
        sql: r#"CREATE TABLE {s}.company_genre_yearly AS
SELECT c.id AS company_id, c.name AS company_name,
       extract(year FROM m.release_date)::integer AS year,
       g.id AS genre_id, g.name AS genre_name,
       count(DISTINCT m.id)::bigint AS releases
FROM {s}.movies m
JOIN {s}.movie_companies mc ON mc.movie_id = m.id
JOIN {s}.companies c ON c.id = mc.company_id
JOIN {s}.movie_genres mg ON mg.movie_id = m.id
JOIN {s}.genres g ON g.id = mg.genre_id
WHERE m.release_date IS NOT NULL
GROUP BY c.id, c.name, extract(year FROM m.release_date)::integer, g.id, g.name"#,
        reads: &["movies", "movie_companies", "companies", "movie_genres", "genres"],
        indexes: &[
            "ALTER TABLE {s}.company_genre_yearly ADD PRIMARY KEY (company_id, year, genre_id)",
            "CREATE INDEX ON {s}.company_genre_yearly (genre_id, year)",
        ],
    },
    Report {
        name: "genre_yearly",
        sql: r#"CREATE TABLE {s}.genre_yearly AS
WITH m AS (
    SELECT id, extract(year FROM release_date)::integer AS year, budget, revenue,
           revenue - budget AS profit, popularity
    FROM {s}.movies WHERE release_date IS NOT NULL
), agg AS (
    SELECT g.id AS genre_id, g.name AS genre_name, m.year,
           count(*)::bigint             AS movies,
           avg(m.popularity)            AS avg_popularity,
           sum(m.budget)::bigint        AS budget_total,
           sum(m.revenue)::bigint       AS revenue_total,
           sum(m.profit)::bigint        AS profit_total,
           count(m.budget)::bigint      AS movies_with_budget,
           count(m.revenue)::bigint     AS movies_with_revenue,
           count(m.profit)::bigint      AS movies_with_profit
    FROM m
    JOIN {s}.movie_genres mg ON mg.movie_id = m.id
    JOIN {s}.genres g ON g.id = mg.genre_id
    GROUP BY g.id, g.name, m.year
)
SELECT genre_id, genre_name, year, movies, avg_popularity,
       row_number() OVER (PARTITION BY year
                          ORDER BY avg_popularity DESC NULLS LAST, genre_name, genre_id)::integer
           AS popularity_rank,
       budget_total, revenue_total, profit_total,
       movies_with_budget, movies_with_revenue, movies_with_profit
FROM agg"#,
        reads: &["movies", "movie_genres", "genres"],
        indexes: &[
            "ALTER TABLE {s}.genre_yearly ADD PRIMARY KEY (genre_id, year)",
            "CREATE UNIQUE INDEX ON {s}.genre_yearly (year, popularity_rank)",
        ],
    },
    Report {
        name: "most_popular_genre_yearly",
        sql: r#"CREATE TABLE {s}.most_popular_genre_yearly AS
SELECT year, genre_id, genre_name, avg_popularity
FROM {s}.genre_yearly WHERE popularity_rank = 1"#,
        reads: &["genre_yearly"],
        indexes: &["ALTER TABLE {s}.most_popular_genre_yearly ADD PRIMARY KEY (year)"],
    },
    Report {
        name: "movie_ratings",
        // From the clean stage's totals per MovieLens id (checked against `ratings` at load):
        // the same as joining the 26 M ratings, in a fraction of the time. The mean is over
        // the ratings with a value, as avg() is.
        sql: r#"CREATE TABLE {s}.movie_ratings AS
SELECT m.id AS movie_id, sum(p.ratings)::bigint AS ratings,
       sum(p.rating_sum) / nullif(sum(p.rated), 0)::double precision AS avg_rating
FROM {s}.ratings_per_movie p
JOIN {s}.links l ON l.movie_id = p.movie_id
JOIN {s}.movies m ON m.id = l.tmdb_id
GROUP BY m.id"#,
        reads: &["ratings_per_movie", "links", "movies"],
        indexes: &["ALTER TABLE {s}.movie_ratings ADD PRIMARY KEY (movie_id)"],
    },
];
