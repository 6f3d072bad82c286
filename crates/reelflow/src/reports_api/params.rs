//! Query parameters of a report request, validated against the endpoint's entry in the
//! catalog. Every error names the parameter it is about.

use axum::http::{header, HeaderMap, StatusCode};

use super::catalog::{Endpoint, Filter, Op, Ty, DEFAULT_LIMIT, MAX_LIMIT};
use super::cursor::{self, Cursor};
use crate::http::ApiError;

/// A value bound to a SQL parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// The parameters common to every endpoint, as the OpenAPI document lists them.
pub struct CommonParam {
    pub name: &'static str,
    pub doc: &'static str,
}

pub const COMMON: &[CommonParam] = &[
    CommonParam {
        name: "sort",
        doc: "Sort key: one of the listed column lists (the first is the default). Every sort key is unique, \
              so pages never repeat or skip rows.",
    },
    CommonParam {
        name: "order",
        doc: "asc (default) or desc, applied to the whole sort key.",
    },
    CommonParam {
        name: "limit",
        doc: "Rows per page, 1 to 1000 (default 100).",
    },
    CommonParam {
        name: "cursor",
        doc: "next_cursor of the previous page. It pins the snapshot of the first page; repeat the other \
              parameters unchanged (or follow `next`). 410 when that snapshot has been dropped since.",
    },
    CommonParam {
        name: "snapshot",
        doc: "Read this kept snapshot (an id from /api/v1/snapshots) instead of the published one.",
    },
    CommonParam {
        name: "format",
        doc: "json (default) or csv; `Accept: text/csv` also selects CSV.",
    },
];

/// A validated request.
#[derive(Debug)]
pub struct Request {
    pub path_id: Option<i64>,
    /// The filters given, in the catalog's order, with their values.
    pub filters: Vec<(&'static Filter, Bind)>,
    pub sort: usize,
    pub desc: bool,
    pub limit: i64,
    pub limit_given: bool,
    pub cursor: Option<Cursor>,
    pub snapshot: Option<i64>,
    pub format: Format,
    pub format_given: bool,
}

fn bad(param: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{param}: {what}"))
}

fn int(param: &str, v: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == i64::MAX => Err(bad(param, format!("expected an integer of at least {min}, got {v:?}"))),
        _ => Err(bad(
            param,
            format!("expected an integer from {min} to {max}, got {v:?}"),
        )),
    }
}

/// A positive integer id (of a path segment or parameter named `param`).
pub fn parse_id(param: &str, v: &str) -> Result<i64, ApiError> {
    int(param, v, 1, i64::MAX)
}

impl Request {
    /// Validates `raw_query` (and the `{id}` of the path) for `ep`.
    pub fn parse(
        ep: &'static Endpoint,
        path_id: Option<&str>,
        raw_query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Request, ApiError> {
        let path_id = match (path_id, &ep.path_id) {
            (Some(v), Some(_)) => Some(int("id", v, 1, i64::MAX)?),
            _ => None,
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
            if pairs.iter().any(|(p, _)| *p == k) {
                return Err(bad(&k, "given more than once"));
            }
            let known = ep.filters.iter().any(|f| f.param == k) || COMMON.iter().any(|c| c.name == k);
            if !known {
                let mut names: Vec<&str> = ep.filters.iter().map(|f| f.param).collect();
                names.extend(COMMON.iter().map(|c| c.name));
                return Err(bad(
                    &k,
                    format!("unknown parameter; this endpoint takes {}", names.join(", ")),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());

        let mut filters = Vec::new();
        for f in ep.filters {
            let Some(v) = get(f.param) else { continue };
            let value = if f.op == Op::Contains {
                let n = v.chars().count() as i64;
                if n < f.min || n > f.max || v.chars().any(char::is_control) {
                    return Err(bad(
                        f.param,
                        format!("expected {} to {} printable characters", f.min, f.max),
                    ));
                }
                Bind::Text(v.to_string())
            } else {
                debug_assert!(matches!(ep.column(f.column).map(|c| c.ty), Some(Ty::Int | Ty::BigInt)));
                Bind::Int(int(f.param, v, f.min, f.max)?)
            };
            filters.push((f, value));
        }
        if let (Some(Bind::Int(from)), Some(Bind::Int(to))) = (
            filters.iter().find(|(f, _)| f.param == "year_from").map(|(_, v)| v),
            filters.iter().find(|(f, _)| f.param == "year_to").map(|(_, v)| v),
        ) {
            if from > to {
                return Err(bad("year_from", format!("{from} is after year_to {to}")));
            }
        }

        let sort = match get("sort") {
            None => 0,
            Some(v) => ep.sorts.iter().position(|s| s.join(",") == v).ok_or_else(|| {
                let names: Vec<String> = ep.sorts.iter().map(|s| s.join(",")).collect();
                bad("sort", format!("expected one of {}, got {v:?}", names.join(" | ")))
            })?,
        };
        let desc = match get("order") {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(v) => return Err(bad("order", format!("expected asc or desc, got {v:?}"))),
        };
        let limit = match get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => int("limit", v, 1, MAX_LIMIT)?,
        };
        let snapshot = get("snapshot").map(|v| int("snapshot", v, 1, i64::MAX)).transpose()?;
        let format = match get("format") {
            Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(v) => return Err(bad("format", format!("expected json or csv, got {v:?}"))),
            None if accepts_csv(headers) => Format::Csv,
            None => Format::Json,
        };
        let mut req = Request {
            path_id,
            filters,
            sort,
            desc,
            limit,
            limit_given: get("limit").is_some(),
            cursor: None,
            snapshot,
            format,
            format_given: get("format").is_some(),
        };
        if let Some(c) = get("cursor") {
            let c = cursor::decode(c).ok_or_else(|| bad("cursor", "not a cursor this server issued"))?;
            if c.endpoint != ep.id || c.sort >= ep.sorts.len() || c.key.len() != ep.sorts[c.sort].len() {
                return Err(bad("cursor", "it belongs to another endpoint"));
            }
            if c.sort != sort || c.desc != desc || c.scope != req.scope(ep) {
                return Err(bad(
                    "cursor",
                    "the other parameters differ from the ones of the first page; repeat them unchanged",
                ));
            }
            if snapshot.is_some_and(|s| s != c.snapshot) {
                return Err(bad("cursor", "it reads another snapshot than the snapshot parameter"));
            }
            req.cursor = Some(c);
        }
        Ok(req)
    }

    /// A hash of what selects the rows (endpoint, path id, filters): a cursor is only valid
    /// for the same selection.
    pub fn scope(&self, ep: &Endpoint) -> u64 {
        let mut h = Fnv::new();
        h.write(ep.id);
        h.write(&format!("{:?}", self.path_id));
        for (f, v) in &self.filters {
            h.write(f.param);
            match v {
                Bind::Int(n) => h.write(&n.to_string()),
                Bind::Text(s) => h.write(s),
            }
        }
        h.finish()
    }

    /// A hash of everything that decides the bytes of the response for a given snapshot.
    pub fn representation(&self, ep: &Endpoint) -> u64 {
        let mut h = Fnv::new();
        h.write(&self.scope(ep).to_string());
        h.write(&format!(
            "{} {} {} {:?} {:?}",
            self.sort,
            self.desc,
            self.limit,
            self.format,
            self.cursor.as_ref().map(|c| &c.key)
        ));
        h.finish()
    }

    /// The query string of the next page.
    pub fn next_query(&self, ep: &Endpoint, cursor: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (f, v) in &self.filters {
            match v {
                Bind::Int(n) => s.append_pair(f.param, &n.to_string()),
                Bind::Text(t) => s.append_pair(f.param, t),
            };
        }
        if self.sort != 0 {
            s.append_pair("sort", &ep.sorts[self.sort].join(","));
        }
        if self.desc {
            s.append_pair("order", "desc");
        }
        if self.limit_given {
            s.append_pair("limit", &self.limit.to_string());
        }
        if self.format_given {
            s.append_pair(
                "format",
                match self.format {
                    Format::Json => "json",
                    Format::Csv => "csv",
                },
            );
        }
        s.append_pair("cursor", cursor);
        s.finish()
    }
}

/// CSV when `Accept` names text/csv with a higher quality than any JSON type it names.
fn accepts_csv(headers: &HeaderMap) -> bool {
    let (mut csv, mut json) = (0.0f32, 0.0f32);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "text/csv" => csv = csv.max(q),
                "application/json" | "application/*" => json = json.max(q),
                _ => {}
            }
        }
    }
    csv > 0.0 && csv > json
}

/// FNV-1a, 64 bits: stable across builds and processes (ETags and cursors outlive a process).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, s: &str) {
        for b in s.bytes().chain(std::iter::once(0xff)) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}
