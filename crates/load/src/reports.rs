//! The report relations of DESIGN section 3, built inside a snapshot schema at load time.
//!
//! Semantics: year = calendar year of `release_date` (movies without one are left out);
//! budget and revenue are already NULL when unknown (the cleaner maps 0 to NULL), so `sum`
//! adds known values only and `count(col)` counts the movies behind each total; profit is
//! `revenue - budget`, NULL unless both are known. Totals are NULL when no movie of the group
//! has a known value (SQL `sum`).

/// `(name, statement)` pairs; `{s}` is replaced by the quoted snapshot schema.
pub const REPORTS: &[(&str, &str)] = &[
    (
        "company_yearly",
        r#"CREATE TABLE {s}.company_yearly AS
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
    ),
    (
        "company_genre_yearly",
        r#"CREATE TABLE {s}.company_genre_yearly AS
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
    ),
    (
        "genre_yearly",
        r#"CREATE TABLE {s}.genre_yearly AS
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
    ),
    (
        "most_popular_genre_yearly",
        r#"CREATE TABLE {s}.most_popular_genre_yearly AS
SELECT year, genre_id, genre_name, avg_popularity
FROM {s}.genre_yearly WHERE popularity_rank = 1"#,
    ),
    (
        "movie_ratings",
        r#"CREATE TABLE {s}.movie_ratings AS
SELECT m.id AS movie_id, count(*)::bigint AS ratings, avg(r.rating)::double precision AS avg_rating
FROM {s}.ratings r
JOIN {s}.links l ON l.movie_id = r.movie_id
JOIN {s}.movies m ON m.id = l.tmdb_id
GROUP BY m.id"#,
    ),
];

/// Keys and indexes of the report relations, built after they are filled.
pub const REPORT_INDEXES: &[&str] = &[
    "ALTER TABLE {s}.company_yearly ADD PRIMARY KEY (company_id, year)",
    "CREATE INDEX ON {s}.company_yearly (year)",
    "ALTER TABLE {s}.company_genre_yearly ADD PRIMARY KEY (company_id, year, genre_id)",
    "CREATE INDEX ON {s}.company_genre_yearly (genre_id, year)",
    "ALTER TABLE {s}.genre_yearly ADD PRIMARY KEY (genre_id, year)",
    "CREATE UNIQUE INDEX ON {s}.genre_yearly (year, popularity_rank)",
    "ALTER TABLE {s}.most_popular_genre_yearly ADD PRIMARY KEY (year)",
    "ALTER TABLE {s}.movie_ratings ADD PRIMARY KEY (movie_id)",
];
