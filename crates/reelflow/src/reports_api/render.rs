//! Responses: JSON pages, CSV, conditional requests (ETag, Last-Modified, 304) and the headers that say which snapshot a response comes from.

use super::*;

pub(super) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `If-None-Match` (weak comparison; `*` matches), else `If-Modified-Since`.
pub(super) fn not_modified(headers: &HeaderMap, etag: &str, last_modified: Option<DateTime<Utc>>) -> bool {
    let inm: Vec<&str> = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !inm.is_empty() {
        let ours = etag.trim_start_matches("W/");
        return inm
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    let ims = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok());
    match (ims, last_modified) {
        (Some(ims), Some(lm)) => lm.timestamp() <= ims.timestamp(),
        _ => false,
    }
}

/// What every response (200 and 304) says about where it comes from.
pub(super) struct Meta<'a> {
    pub(super) snap: &'a Snap,
    pub(super) etag: String,
    pub(super) current: bool,
}

impl Meta<'_> {
    pub(super) fn headers(&self, h: &mut HeaderMap) {
        let mut set = |name: HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(HeaderName::from_static(SNAPSHOT_HEADER), &self.snap.id.to_string());
        set(HeaderName::from_static(PERIOD_HEADER), &self.snap.period);
        set(header::ETAG, &self.etag);
        if let Some(t) = self.snap.last_modified() {
            set(header::LAST_MODIFIED, &http_date(t));
        }
        set(header::CACHE_CONTROL, "no-cache");
        set(header::VARY, "Accept");
    }
}

#[derive(Serialize)]
pub(super) struct SnapshotOut<'a> {
    pub(super) id: i64,
    pub(super) period: &'a str,
    pub(super) published_at: Option<DateTime<Utc>>,
    /// Whether this is the published snapshot (false when a cursor or `snapshot=` reads a
    /// retired one).
    pub(super) current: bool,
}

pub(super) struct Rows<'a> {
    pub(super) ep: &'a Endpoint,
    pub(super) rows: &'a [Vec<Value>],
}

pub(super) struct RowOut<'a> {
    pub(super) ep: &'a Endpoint,
    pub(super) vals: &'a [Value],
}

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for vals in self.rows {
            seq.serialize_element(&RowOut { ep: self.ep, vals })?;
        }
        seq.end()
    }
}

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.vals.len()))?;
        for (c, v) in self.ep.columns.iter().zip(self.vals) {
            map.serialize_entry(c.name, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
pub(super) struct Page<'a> {
    pub(super) snapshot: SnapshotOut<'a>,
    pub(super) sort: &'static [&'static str],
    pub(super) order: &'static str,
    pub(super) limit: i64,
    pub(super) rows: Rows<'a>,
    pub(super) next_cursor: Option<&'a str>,
    pub(super) next: Option<&'a str>,
}

pub(super) fn csv_field(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Float(f) if f.is_finite() => out.push_str(&f.to_string()),
        Value::Float(_) => {}
        Value::Text(t) if t.contains([',', '"', '\n', '\r']) => {
            out.push('"');
            out.push_str(&t.replace('"', "\"\""));
            out.push('"');
        }
        Value::Text(t) => out.push_str(t),
    }
}

pub(super) fn render(
    ep: &Endpoint,
    req: &Request,
    path_id: Option<&str>,
    meta: Meta<'_>,
    mut rows: Vec<Vec<Value>>,
) -> Response {
    let more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let key = ep.sorts[req.sort];
    let next_cursor = match rows.last() {
        Some(last) if more => {
            let key_vals = key
                .iter()
                .map(|k| {
                    let i = ep
                        .columns
                        .iter()
                        .position(|c| c.name == *k)
                        .expect("sort columns are columns");
                    match last[i] {
                        Value::Int(n) => n,
                        _ => unreachable!("sort columns are non-null integers"),
                    }
                })
                .collect();
            Some(cursor::encode(&Cursor {
                snapshot: meta.snap.id,
                endpoint: ep.id.to_string(),
                sort: req.sort,
                desc: req.desc,
                scope: req.scope(ep),
                key: key_vals,
            }))
        }
        _ => None,
    };
    let next = next_cursor.as_ref().map(|c| {
        let path = match path_id {
            Some(id) => ep.path.replace("{id}", id),
            None => ep.path.to_string(),
        };
        format!("{path}?{}", req.next_query(ep, c))
    });

    let (content_type, body) = match req.format {
        Format::Json => {
            let page = Page {
                snapshot: SnapshotOut {
                    id: meta.snap.id,
                    period: &meta.snap.period,
                    published_at: meta.snap.published_at,
                    current: meta.current,
                },
                sort: key,
                order: if req.desc { "desc" } else { "asc" },
                limit: req.limit,
                rows: Rows { ep, rows: &rows },
                next_cursor: next_cursor.as_deref(),
                next: next.as_deref(),
            };
            (
                "application/json",
                serde_json::to_string(&page).expect("pages serialise"),
            )
        }
        Format::Csv => {
            let mut out = String::with_capacity(64 * (rows.len() + 1));
            let names: Vec<&str> = ep.columns.iter().map(|c| c.name).collect();
            out.push_str(&names.join(","));
            out.push_str("\r\n");
            for r in &rows {
                for (i, v) in r.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    csv_field(&mut out, v);
                }
                out.push_str("\r\n");
            }
            ("text/csv; charset=utf-8; header=present", out)
        }
    };
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    meta.headers(r.headers_mut());
    if let (Some(c), Some(n)) = (&next_cursor, &next) {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(c) {
            h.insert(HeaderName::from_static(NEXT_CURSOR_HEADER), v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")) {
            h.insert(header::LINK, v);
        }
    }
    r
}
