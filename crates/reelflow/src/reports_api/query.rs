//! The data statements: the page SQL built from the catalog (identifiers) and the request (bound values), and its result.

use super::*;

/// One output value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Int(n) => s.serialize_i64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

/// What the data statements found.
pub(super) enum Found {
    /// The `{id}` of the path is not in the snapshot.
    NoSuchId,
    Rows(Vec<Vec<Value>>),
}

pub(super) use reelflow_load::quote_ident as q;

/// `%value%` for ILIKE, with the value's own wildcards and escape character taken literally.
pub(super) fn contains_pattern(v: &str) -> String {
    let mut p = String::with_capacity(v.len() + 2);
    p.push('%');
    for c in v.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The page statement: identifiers from the catalog and `schema`, every value a parameter.
pub(super) fn page_sql(ep: &Endpoint, req: &Request, schema: &str) -> (String, Vec<Bind>) {
    let cols: Vec<String> = ep.columns.iter().map(|c| q(c.name)).collect();
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    if let (Some(id), Some(p)) = (req.path_id, &ep.path_id) {
        binds.push(Bind::Int(id));
        conds.push(format!("{} = ${}", q(p.column), binds.len()));
    }
    for (f, v) in &req.filters {
        binds.push(match (f.op, v) {
            (Op::Contains, Bind::Text(t)) => Bind::Text(contains_pattern(t)),
            _ => v.clone(),
        });
        conds.push(format!("{} {} ${}", q(f.column), f.op.sql(), binds.len()));
    }
    let key = ep.sorts[req.sort];
    let key_cols: Vec<String> = key.iter().map(|k| q(k)).collect();
    if let Some(c) = &req.cursor {
        let mut ph = Vec::new();
        for v in &c.key {
            binds.push(Bind::Int(*v));
            ph.push(format!("${}", binds.len()));
        }
        conds.push(format!(
            "({}) {} ({})",
            key_cols.join(", "),
            if req.desc { "<" } else { ">" },
            ph.join(", ")
        ));
    }
    let dir = if req.desc { " DESC" } else { "" };
    let order: Vec<String> = key_cols.iter().map(|k| format!("{k}{dir}")).collect();
    binds.push(Bind::Int(req.limit + 1));
    let sql = format!(
        "SELECT {} FROM {}.{}{}{} ORDER BY {} LIMIT ${}",
        cols.join(", "),
        q(schema),
        q(ep.relation),
        if conds.is_empty() { "" } else { " WHERE " },
        conds.join(" AND "),
        order.join(", "),
        binds.len()
    );
    (sql, binds)
}

pub(super) async fn fetch(
    conn: &mut PgConnection,
    ep: &Endpoint,
    req: &Request,
    schema: &str,
) -> Result<Found, sqlx::Error> {
    if let (Some(id), Some(p)) = (req.path_id, &ep.path_id) {
        let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE id = $1)",
            q(schema),
            q(p.table)
        )))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        if !exists {
            return Ok(Found::NoSuchId);
        }
    }
    let (sql, binds) = page_sql(ep, req, schema);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = match b {
            Bind::Int(n) => query.bind(n),
            Bind::Text(t) => query.bind(t),
        };
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut vals = Vec::with_capacity(ep.columns.len());
        for (i, c) in ep.columns.iter().enumerate() {
            vals.push(
                match c.ty {
                    Ty::Int => row.try_get::<Option<i32>, _>(i)?.map(|v| Value::Int(v.into())),
                    Ty::BigInt => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                    Ty::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
                    Ty::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                }
                .unwrap_or(Value::Null),
            );
        }
        out.push(vals);
    }
    Ok(Found::Rows(out))
}
