#!/usr/bin/env python3
"""Independent check of reelflow's published reports.

Recomputes company_yearly, company_genre_yearly, genre_yearly and most_popular_genre_yearly
from a raw movies_metadata.csv with Python's csv module and ast.literal_eval (no code shared
with reelflow), reads the published relations with psql, and compares every row.

    scripts/check_reports.py DATABASE_URL path/to/movies_metadata.csv

Exit code 0 when every relation matches, 1 otherwise.
"""
import ast
import csv
import datetime
import io
import subprocess
import sys
from collections import defaultdict


def load_movies(path):
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        seen = set()
        movies = []
        genre_names, company_names = {}, {}
        for rec in reader:
            if len(rec) != len(header):
                continue
            raw_id = rec[col["id"]]
            if not raw_id.isdigit() or int(raw_id) <= 0:
                continue
            mid = int(raw_id)
            if mid in seen:
                continue
            seen.add(mid)

            def num(name, conv):
                try:
                    return conv(rec[col[name]])
                except ValueError:
                    return None

            def literal(name):
                try:
                    v = ast.literal_eval(rec[col[name]])
                    return v if isinstance(v, list) else []
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    return []

            try:
                date = datetime.date.fromisoformat(rec[col["release_date"]])
            except ValueError:
                date = None
            budget = num("budget", int) or None
            revenue = num("revenue", int) or None
            popularity = num("popularity", float)
            genres, companies = [], []
            for g in literal("genres"):
                genre_names.setdefault(g["id"], g["name"])
                if g["id"] not in genres:
                    genres.append(g["id"])
            for c in literal("production_companies"):
                company_names.setdefault(c["id"], c["name"])
                if c["id"] not in companies:
                    companies.append(c["id"])
            movies.append((mid, date, budget, revenue, popularity, genres, companies))
    return movies, genre_names, company_names


def totals(group):
    budgets = [m[2] for m in group if m[2] is not None]
    revenues = [m[3] for m in group if m[3] is not None]
    profits = [m[3] - m[2] for m in group if m[2] is not None and m[3] is not None]
    pops = [m[4] for m in group if m[4] is not None]
    return {
        "movies": len(group),
        "budget_total": sum(budgets) if budgets else None,
        "revenue_total": sum(revenues) if revenues else None,
        "profit_total": sum(profits) if profits else None,
        "movies_with_budget": len(budgets),
        "movies_with_revenue": len(revenues),
        "movies_with_profit": len(profits),
        "avg_popularity": sum(pops) / len(pops) if pops else None,
    }


def expected(path):
    movies, genre_names, company_names = load_movies(path)
    by_company, by_genre, by_cg = defaultdict(list), defaultdict(list), defaultdict(set)
    for m in movies:
        if m[1] is None:
            continue
        year = m[1].year
        for c in m[6]:
            by_company[(c, year)].append(m)
            for g in m[5]:
                by_cg[(c, year, g)].add(m[0])
        for g in m[5]:
            by_genre[(g, year)].append(m)
    company_yearly = {
        (c, y): dict(company_name=company_names[c], **totals(ms)) for (c, y), ms in by_company.items()
    }
    company_genre = {
        k: {"company_name": company_names[k[0]], "genre_name": genre_names[k[2]], "releases": len(v)}
        for k, v in by_cg.items()
    }
    genre_yearly = {(g, y): dict(genre_name=genre_names[g], **totals(ms)) for (g, y), ms in by_genre.items()}
    years = defaultdict(list)
    for (g, y), row in genre_yearly.items():
        years[y].append((g, row))
    most_popular = {}
    for y, rows in years.items():
        rows.sort(key=lambda r: (r[1]["avg_popularity"] is None, -(r[1]["avg_popularity"] or 0), r[1]["genre_name"], r[0]))
        for rank, (g, row) in enumerate(rows, 1):
            row["popularity_rank"] = rank
        g, row = rows[0]
        most_popular[(y,)] = {"genre_id": g, "genre_name": row["genre_name"], "avg_popularity": row["avg_popularity"]}
    return {
        "company_yearly": (["company_id", "year"], company_yearly),
        "company_genre_yearly": (["company_id", "year", "genre_id"], company_genre),
        "genre_yearly": (["genre_id", "year"], genre_yearly),
        "most_popular_genre_yearly": (["year"], most_popular),
    }


def published(url, relation):
    out = subprocess.run(
        ["psql", url, "--csv", "-c", f"SELECT * FROM movies.{relation}"], check=True, capture_output=True, text=True
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


def same(a, b):
    if a is None or b == "":
        return a is None and b == ""
    if isinstance(a, float):
        return abs(a - float(b)) <= 1e-9 * max(1.0, abs(a))
    return str(a) == b


def main():
    url, path = sys.argv[1], sys.argv[2]
    ok = True
    for relation, (keys, want) in expected(path).items():
        got = {tuple(int(r[k]) for k in keys): r for r in published(url, relation)}
        bad = [k for k in want if k not in got] + [k for k in got if k not in want]
        for k, row in want.items():
            if k in got and not all(same(v, got[k][c]) for c, v in row.items()):
                bad.append(k)
        status = "ok" if not bad else f"MISMATCH in {len(bad)} rows, e.g. {bad[:3]}"
        print(f"{relation}: {len(want)} expected rows, {len(got)} published rows: {status}")
        ok = ok and not bad
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
