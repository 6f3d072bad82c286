#!/bin/sh
# The "bare psql script" baseline of `cargo xtask bench` (issue 16): what a data engineer would
# write instead of reelflow. It unzips four files of The Movies Dataset and loads them with psql:
# ratings as a typed 4-column table plus its primary key; credits, keywords and links as tables
# of text columns. No cleaning, no other index, no foreign key, no report, no atomic publish.
#
#   bench/bare-psql.sh ZIP DATABASE_URL [WORKDIR]
#
# The CSVs are unzipped into WORKDIR (default: a new temporary folder, removed at the end).
# The tables are created in the database's default schema (dropped first if they exist).
# Each step's wall time goes to stderr as `bare-psql: STEP SECONDS [ROWS rows]`; `load` is
# everything after the unzip (the tables, the COPYs and the primary key), `total` all of it.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 ZIP DATABASE_URL [WORKDIR]" >&2
    exit 2
fi
zip=$1
url=$2
if [ $# -eq 3 ]; then
    work=$3
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
case $work in
*"'"*)
    echo "$0: the folder $work has a quote in its name" >&2
    exit 2
    ;;
esac

now() { date +%s.%N; }
# report STEP START [ROWS]
report() {
    awk -v step="$1" -v a="$2" -v b="$(now)" -v rows="${3:-}" 'BEGIN {
        printf "bare-psql: %s %.3f%s\n", step, b - a, (rows == "" ? "" : " " rows " rows")
    }' >&2
}
sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"; }
# copy TABLE FILE: \copy with the CSV header, prints psql's row count.
copy() {
    psql -X -v ON_ERROR_STOP=1 -d "$url" -c "\\copy $1 FROM '$work/$2' CSV HEADER" | sed -n 's/^COPY //p'
}

start=$(now)
t=$start
unzip -o -q "$zip" ratings.csv credits.csv keywords.csv links.csv -d "$work"
report unzip "$t"

loaded=$(now)
t=$loaded
sql <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS ratings, credits, keywords, links;
CREATE TABLE ratings (userId integer, movieId integer, rating real, timestamp bigint);
CREATE TABLE credits ("cast" text, crew text, id text);
CREATE TABLE keywords (id text, keywords text);
CREATE TABLE links (movieId text, imdbId text, tmdbId text);
SQL
report create "$t"

t=$(now)
rows=$(copy ratings ratings.csv)
report "copy ratings" "$t" "$rows"

t=$(now)
sql -c 'ALTER TABLE ratings ADD PRIMARY KEY (userId, movieId)'
report "ratings primary key" "$t"

for table in credits keywords links; do
    t=$(now)
    rows=$(copy "$table" "$table.csv")
    report "copy $table" "$t" "$rows"
done

report load "$loaded"
report total "$start"
