//! The quality gate: the `validate` task between `load` and `publish`. It judges the snapshot
//! the load built against thresholds of the `[gate]` configuration, stores every check's result
//! with the snapshot (`reelflow.snapshots.gate_checks`) and fails fatally, naming each failed
//! check with its measured value and threshold, when one does not pass. `movies` then keeps
//! what it shows, and the built snapshot is kept while its run is the period's latest (see
//! [`crate::sweep_orphans`]), so `reelflow tasks mark RUN validate success --note ...`
//! publishes it anyway (publish reads only `load`'s output).
//!
//! Checks (name: measured value, passes when):
//! - `rejects:<file>`: rejected / records read, ≤ `max_reject_ratio` (per file in
//!   `reject_ratio_by_file`);
//! - `shrink:<table>`: (rows in `movies` now - rows now built) / rows in `movies` now,
//!   ≤ `max_shrink_ratio` (nothing published: passes), for every table but `rejects`;
//! - `unparsable:<file>:<column>`: values nulled as unparsable / the column's non-empty values
//!   (the loaded non-NULL values plus the unparsable ones; the file's accepted records for a
//!   column not loaded as such), ≤ `max_unparsable_ratio`;
//! - `report_rows:<report>`: rows of each report relation, ≥ 1;
//! - `future_years`: movies released after the current year, ≤ 0;
//! - `money_totals`: the largest of the budget and revenue totals, ≤ 2^63 - 1;
//! - `sql:<name>`: rows returned by an operator's query (`[[gate.sql]]`), ≤ 0.
//!
//! A ratio whose denominator is below `min_rows` passes (a handful of rows says nothing).
//! An unchanged-source rerun (the load reused a published snapshot) passes through unjudged.

use std::collections::BTreeMap;

use reelflow_clean::{CleanOutput, Manifest};
use reelflow_dag::{BoxFuture, Stage, TaskContext, TaskError};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use crate::types::{q, LoadError, LoadOutput};

/// An operator's check: a query over the new snapshot that must return no row. `{schema}` in
/// it is replaced by the quoted snapshot schema, which is also first on the `search_path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    pub name: String,
    pub query: String,
}

/// The `[gate]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// Ratios over fewer rows than this pass.
    pub min_rows: u64,
    /// Rejected share of a file's records, for files not in `reject_ratio_by_file`.
    pub max_reject_ratio: f64,
    /// Rejected share of the records of one file (`movies_metadata.csv`).
    pub reject_ratio_by_file: BTreeMap<String, f64>,
    /// Share of a table's rows in `movies` that the new snapshot may lack.
    pub max_shrink_ratio: f64,
    /// Share of a column's non-empty values nulled as unparsable.
    pub max_unparsable_ratio: f64,
    /// Operator checks.
    pub sql: Vec<SqlCheck>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_rows: 1000,
            max_reject_ratio: 0.05,
            reject_ratio_by_file: [("movies_metadata.csv".to_string(), 0.01)].into(),
            max_shrink_ratio: 0.05,
            max_unparsable_ratio: 0.01,
            sql: vec![],
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// What was measured (NaN, stored as null, when it could not be: an operator query that
    /// failed).
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// The bound: `value <= threshold` passes, or `value >= threshold` for `op` `>=`.
    pub threshold: f64,
    pub op: String,
    pub passed: bool,
    /// The numbers behind a ratio, or why a check passed without being judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Check {
    fn at_most(name: String, value: f64, threshold: f64, detail: Option<String>) -> Check {
        Check {
            passed: value <= threshold,
            name,
            value,
            threshold,
            op: "<=".into(),
            detail,
        }
    }
    fn at_least(name: String, value: f64, threshold: f64, detail: Option<String>) -> Check {
        Check {
            passed: value >= threshold,
            name,
            value,
            threshold,
            op: ">=".into(),
            detail,
        }
    }
    /// A ratio `num / den`, judged only when `den >= min_rows`.
    fn ratio(name: String, num: u64, den: u64, threshold: f64, min_rows: u64, what: &str) -> Check {
        let value = if den == 0 { 0.0 } else { num as f64 / den as f64 };
        let mut c = Check::at_most(name, value, threshold, Some(format!("{num} of {den} {what}")));
        if den < min_rows {
            c.passed = true;
            c.detail = Some(format!(
                "{num} of {den} {what}; not judged below gate.min_rows = {min_rows}"
            ));
        }
        c
    }

    /// `shrink:movies = 0.1 (threshold <= 0.05; 90 rows vs 100 in snapshot 3)`.
    pub fn describe(&self) -> String {
        let detail = self.detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default();
        format!(
            "{} = {} (threshold {} {}{detail})",
            self.name,
            fmt_num(self.value),
            self.op,
            fmt_num(self.threshold)
        )
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e15 {
        format!("{v:e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The diff of the judged snapshot against the one `movies` showed when it was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffSummary {
    pub base_snapshot_id: Option<i64>,
    pub added: i64,
    pub removed: i64,
    pub changed: i64,
    pub unchanged: i64,
}

impl DiffSummary {
    /// `+312 movies, -4, 1,093 changed since snapshot 7`.
    pub fn line(&self) -> String {
        let since = self
            .base_snapshot_id
            .map_or_else(|| "(first snapshot)".to_string(), |b| format!("since snapshot {b}"));
        format!(
            "+{} movies, -{}, {} changed {since}",
            thousands(self.added),
            thousands(self.removed),
            thousands(self.changed)
        )
    }
}

/// `n` with its digits grouped by thousands: `-45,428`.
pub fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The diff summary stored in a snapshot schema, if it has one.
pub async fn diff_summary(pool: &PgPool, schema: &str) -> Result<Option<DiffSummary>, LoadError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'diff_summary')",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .map_err(LoadError::db("looking for the diff summary"))?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT base_snapshot_id, added, removed, changed, unchanged FROM {}.diff_summary",
        q(schema)
    )))
    .fetch_optional(pool)
    .await
    .map_err(LoadError::db("reading the diff summary"))?;
    Ok(row.map(|r| DiffSummary {
        base_snapshot_id: r.get(0),
        added: r.get(1),
        removed: r.get(2),
        changed: r.get(3),
        unchanged: r.get(4),
    }))
}

/// What the `validate` task hands on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateOutput {
    pub snapshot_id: i64,
    /// The load reused a published snapshot: nothing was judged.
    #[serde(default)]
    pub reused: bool,
    pub checks: Vec<Check>,
    #[serde(default)]
    pub diff: Option<DiffSummary>,
}

/// What the `validate` task reads: the snapshot the load built and what the clean counted.
#[derive(Clone, Debug, Deserialize)]
pub struct ValidateInput {
    pub load: LoadOutput,
    pub clean: CleanOutput,
}

/// The `validate` task.
pub struct ValidateTask {
    pub pool: PgPool,
    pub config: GateConfig,
}

/// The table a file of the archive fills, for the unparsable ratio's denominator.
fn table_of(file: &str) -> Option<&'static str> {
    Some(match file {
        "movies_metadata.csv" => "movies",
        "links.csv" => "links",
        "links_small.csv" => "links_small",
        "ratings.csv" => "ratings",
        "ratings_small.csv" => "ratings_small",
        _ => return None,
    })
}

/// Runs every check over the snapshot `schema` (id `snapshot_id`).
pub async fn run_checks(
    pool: &PgPool,
    cfg: &GateConfig,
    snapshot_id: i64,
    schema: &str,
    rows: &BTreeMap<String, u64>,
    manifest: &Manifest,
) -> Result<Vec<Check>, LoadError> {
    let mut checks = Vec::new();
    let s = q(schema);
    for (file, st) in &manifest.files {
        let threshold = cfg
            .reject_ratio_by_file
            .get(file)
            .copied()
            .unwrap_or(cfg.max_reject_ratio);
        checks.push(Check::ratio(
            format!("rejects:{file}"),
            st.total_rejected(),
            st.records,
            threshold,
            cfg.min_rows,
            "records rejected",
        ));
    }

    let published: Option<(i64, Option<serde_json::Value>)> =
        sqlx::query_as("SELECT id, row_counts FROM reelflow.snapshots WHERE state = 'published'")
            .fetch_optional(pool)
            .await
            .map_err(LoadError::db("reading the published snapshot's row counts"))?;
    // Fewer rejected rows is no loss: the rejects table is not compared.
    for (table, &n) in rows.iter().filter(|(t, _)| t.as_str() != "rejects") {
        let name = format!("shrink:{table}");
        let base = published
            .as_ref()
            .filter(|(id, _)| *id != snapshot_id)
            .and_then(|(id, counts)| Some((*id, counts.as_ref()?.get(table)?.as_u64()?)));
        checks.push(match base {
            None => Check::at_most(
                name,
                0.0,
                cfg.max_shrink_ratio,
                Some("nothing published to compare".into()),
            ),
            Some((id, before)) => {
                let lost = before.saturating_sub(n);
                let mut c = Check::ratio(name, lost, before, cfg.max_shrink_ratio, cfg.min_rows, "rows lost");
                c.detail = Some(format!(
                    "{n} rows vs {before} in snapshot {id}{}",
                    if before < cfg.min_rows {
                        format!("; not judged below gate.min_rows = {}", cfg.min_rows)
                    } else {
                        String::new()
                    }
                ));
                c
            }
        });
    }

    for (file, st) in &manifest.files {
        for (column, &bad) in &st.unparsable {
            let table = table_of(file);
            let loaded: Option<i64> = match table {
                Some(t) if reelflow_clean::table(t).is_some_and(|d| d.columns.iter().any(|c| c.name == column)) => {
                    Some(
                        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "SELECT count({}) FROM {s}.{}",
                            q(column),
                            q(t)
                        )))
                        .fetch_one(pool)
                        .await
                        .map_err(LoadError::db(format!("counting {t}.{column}")))?,
                    )
                }
                _ => None,
            };
            let den = loaded.map_or(st.accepted, |l| l as u64 + bad);
            checks.push(Check::ratio(
                format!("unparsable:{file}:{column}"),
                bad,
                den,
                cfg.max_unparsable_ratio,
                cfg.min_rows,
                "non-empty values unparsable",
            ));
        }
    }

    for r in crate::REPORTS {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {s}.{}", q(r.name))))
            .fetch_one(pool)
            .await
            .map_err(LoadError::db(format!("counting the rows of {}", r.name)))?;
        checks.push(Check::at_least(format!("report_rows:{}", r.name), n as f64, 1.0, None));
    }

    let (future, year): (i64, i32) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE extract(year FROM release_date) > extract(year FROM now())),
                extract(year FROM now())::int FROM {s}.movies"
    )))
    .fetch_one(pool)
    .await
    .map_err(LoadError::db("counting movies released in the future"))?;
    checks.push(Check::at_most(
        "future_years".into(),
        future as f64,
        0.0,
        Some(format!("movies released after {year}")),
    ));

    let (budget, revenue): (f64, f64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(budget::numeric), 0)::float8, coalesce(sum(revenue::numeric), 0)::float8 FROM {s}.movies"
    )))
    .fetch_one(pool)
    .await
    .map_err(LoadError::db("summing budgets and revenues"))?;
    let exact_fits: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(budget::numeric), 0) <= 9223372036854775807
            AND coalesce(sum(revenue::numeric), 0) <= 9223372036854775807 FROM {s}.movies"
    )))
    .fetch_one(pool)
    .await
    .map_err(LoadError::db("summing budgets and revenues"))?;
    let mut money = Check::at_most(
        "money_totals".into(),
        budget.max(revenue),
        i64::MAX as f64,
        Some(format!("budget total {budget:e}, revenue total {revenue:e}")),
    );
    money.passed = exact_fits;
    checks.push(money);

    for sc in &cfg.sql {
        let name = format!("sql:{}", sc.name);
        checks.push(match sql_check(pool, schema, &sc.query).await {
            Ok(n) => Check::at_most(name, n as f64, 0.0, Some("rows returned".into())),
            Err(e) => {
                let mut c = Check::at_most(name, f64::NAN, 0.0, Some(format!("the query failed: {e}")));
                c.passed = false;
                c
            }
        });
    }
    Ok(checks)
}

/// Rows an operator's query returns over the snapshot, in a read-only transaction.
async fn sql_check(pool: &PgPool, schema: &str, query: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(q(schema))
        .execute(&mut *tx)
        .await?;
    let sql = query.replace("{schema}", &q(schema));
    let sql = sql.trim().trim_end_matches(';');
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM ({sql}) AS operator_check"
    )))
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(n)
}

/// The message of a failed gate.
pub fn failure_message(run_id: i64, snapshot_id: i64, checks: &[Check]) -> String {
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(Check::describe).collect();
    format!(
        "quality gate failed for snapshot {snapshot_id}: {} of {} checks failed: {}. `movies` is unchanged; \
         the snapshot is kept: look at it, then fix the source or the [gate] thresholds and retry, \
         or publish it anyway with `reelflow tasks mark {run_id} validate success --note WHY`",
        failed.len(),
        checks.len(),
        failed.join("; ")
    )
}

impl Stage for ValidateTask {
    const ID: &'static str = "validate";
    type Input = ValidateInput;
    type Output = GateOutput;

    fn run<'a>(&'a self, ctx: &'a TaskContext, input: ValidateInput) -> BoxFuture<'a, Result<GateOutput, TaskError>> {
        Box::pin(async move {
            let load = input.load;
            let manifest = match input.clean {
                CleanOutput::Cleaned { manifest, .. } if !load.reused => manifest,
                _ => {
                    tracing::info!(
                        snapshot_id = load.snapshot_id,
                        "source unchanged: the gate passes the reused snapshot through"
                    );
                    return Ok(GateOutput {
                        snapshot_id: load.snapshot_id,
                        reused: true,
                        checks: vec![],
                        diff: None,
                    });
                }
            };
            let checks = run_checks(
                &self.pool,
                &self.config,
                load.snapshot_id,
                &load.schema,
                &load.rows,
                &manifest,
            )
            .await?;
            sqlx::query("UPDATE reelflow.snapshots SET gate_checks = $2 WHERE id = $1")
                .bind(load.snapshot_id)
                .bind(sqlx::types::Json(&checks))
                .execute(&self.pool)
                .await
                .map_err(LoadError::db("storing the gate's results"))?;
            if checks.iter().any(|c| !c.passed) {
                return Err(TaskError::fatal(failure_message(ctx.run_id, load.snapshot_id, &checks)));
            }
            let diff = diff_summary(&self.pool, &load.schema).await?;
            Ok(GateOutput {
                snapshot_id: load.snapshot_id,
                reused: false,
                checks,
                diff,
            })
        })
    }

    fn summary(out: &GateOutput) -> Vec<String> {
        if out.reused {
            return vec![];
        }
        let mut lines = vec![format!(
            "validate: {} checks passed for snapshot {}",
            out.checks.len(),
            out.snapshot_id
        )];
        if let Some(d) = &out.diff {
            lines.push(format!("diff: {}", d.line()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_below_min_rows_pass_and_describe_names_the_numbers() {
        let c = Check::ratio("rejects:x.csv".into(), 5, 100, 0.01, 1000, "records rejected");
        assert!(c.passed);
        let c = Check::ratio("rejects:x.csv".into(), 50, 1000, 0.01, 1000, "records rejected");
        assert!(!c.passed);
        assert_eq!(
            c.describe(),
            "rejects:x.csv = 0.05 (threshold <= 0.01; 50 of 1000 records rejected)"
        );
        assert!(Check::ratio("r".into(), 10, 1000, 0.01, 1000, "x").passed);
    }

    #[test]
    fn the_diff_line_groups_thousands() {
        let d = DiffSummary {
            base_snapshot_id: Some(7),
            added: 312,
            removed: 4,
            changed: 1093,
            unchanged: 40_000,
        };
        assert_eq!(d.line(), "+312 movies, -4, 1,093 changed since snapshot 7");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
