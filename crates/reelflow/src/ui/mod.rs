//! The operators' page: server-rendered HTML (maud) at `/` of the serve port, with its CSS and
//! a small script embedded in the binary. Airflow's Grid view for reelflow: runs × tasks, a
//! panel per run and per task instance with every attempt and its log, the snapshots, the
//! rejected rows, and every operator action behind a dry-run preview.
//!
//! Security (see `auth.rs`): reading needs no token unless `ui.require_token_to_read`; actions
//! need a session, got once by posting the admin token to `/ui/login`; every POST must be
//! same-origin; every response carries a strict Content-Security-Policy (no inline script or
//! style), and every value shown is escaped by maud.

pub mod actions;
pub mod assets;
pub mod auth;
pub mod diff;
pub mod grid;
pub mod panels;
pub mod snapshots;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup, DOCTYPE};
use subtle::ConstantTimeEq;

use crate::http::AppState;

/// Settings of the page (`[ui]` in the configuration).
#[derive(Debug, Clone)]
pub struct UiSettings {
    pub require_token_to_read: bool,
    pub session_secs: i64,
    pub grid_runs: i64,
}

impl Default for UiSettings {
    fn default() -> UiSettings {
        UiSettings {
            require_token_to_read: false,
            session_secs: 8 * 3600,
            grid_runs: 25,
        }
    }
}

impl UiSettings {
    pub fn from_config(c: &crate::config::UiSection) -> UiSettings {
        UiSettings {
            require_token_to_read: c.require_token_to_read,
            session_secs: (c.session_minutes.clamp(1, 7 * 24 * 60) * 60) as i64,
            grid_runs: c.grid_runs.clamp(1, 100) as i64,
        }
    }
}

/// The page's own state next to [`AppState`].
pub struct Ui {
    pub settings: UiSettings,
    /// The session signing key; None when no admin token is configured (no login possible).
    key: Option<[u8; 32]>,
}

impl Ui {
    fn session_ok(&self, headers: &HeaderMap) -> bool {
        match (&self.key, auth::cookie(headers, auth::COOKIE)) {
            (Some(k), Some(v)) => auth::verify(k, v, chrono::Utc::now().timestamp()),
            _ => false,
        }
    }
}

/// Whether the request carries a valid session (set by the guard for every handler).
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub admin: bool,
}

/// An error shown as an HTML page; the message is escaped like everything else.
#[derive(Debug)]
pub struct UiError(pub StatusCode, pub String);

impl UiError {
    pub fn bad_request(m: impl Into<String>) -> UiError {
        UiError(StatusCode::BAD_REQUEST, m.into())
    }
    pub fn not_found(m: impl Into<String>) -> UiError {
        UiError(StatusCode::NOT_FOUND, m.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let sess = Session { admin: false };
        let body = layout(
            "Error",
            &sess,
            html! { section.error { h2 { (self.0.as_u16()) " " (self.0.canonical_reason().unwrap_or("")) } p { (self.1) } } },
        );
        (self.0, page(body)).into_response()
    }
}

impl From<reelflow_store::runs::RunError> for UiError {
    fn from(e: reelflow_store::runs::RunError) -> UiError {
        use reelflow_store::runs::RunError;
        match &e {
            _ if e.is_not_found() => UiError(StatusCode::NOT_FOUND, e.to_string()),
            RunError::Conflict(m) => UiError(StatusCode::CONFLICT, m.clone()),
            _ => {
                tracing::error!(error = %e, "page request failed");
                UiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again".into(),
                )
            }
        }
    }
}

impl From<sqlx::Error> for UiError {
    fn from(e: sqlx::Error) -> UiError {
        reelflow_store::runs::RunError::Db(e).into()
    }
}

impl From<anyhow::Error> for UiError {
    fn from(e: anyhow::Error) -> UiError {
        // A request `ops` refuses (a month that has not ended, a backfill past the cap) is the
        // operator's to fix, as the JSON API answers it: 400 with the reason.
        if let Some(r) = e.downcast_ref::<crate::ops::Refused>() {
            return UiError::bad_request(r.0.clone());
        }
        if let Some(re) = e.downcast_ref::<reelflow_store::runs::RunError>() {
            if let reelflow_store::runs::RunError::Conflict(m) = re {
                return UiError(StatusCode::CONFLICT, m.clone());
            }
            if re.is_not_found() {
                return UiError(StatusCode::NOT_FOUND, re.to_string());
            }
        }
        if let Some(le) = e
            .downcast_ref::<reelflow_load::LoadError>()
            .filter(|le| le.is_conflict())
        {
            return UiError(StatusCode::CONFLICT, le.to_string());
        }
        tracing::error!(error = %e, "page request failed");
        UiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log".into(),
        )
    }
}

pub type UiResult = Result<Response, UiError>;

/// An HTML response that is never cached by the browser without asking.
pub fn page(m: Markup) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        m.into_string(),
    )
        .into_response()
}

/// The frame of every page: header, navigation, login state.
pub fn layout(title: &str, sess: &Session, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · reelflow" }
                link rel="stylesheet" href="/ui/static/ui.css";
                script src="/ui/static/ui.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "reelflow" }
                    nav {
                        a href="/" { "Grid" }
                        a href="/ui/snapshots" { "Snapshots" }
                    }
                    div.who {
                        @if sess.admin {
                            span.badge { "signed in" }
                            form method="post" action="/ui/logout" { button type="submit" { "Log out" } }
                        } @else {
                            a #login-link href="/ui/login" { "Log in to act" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A value for a URL query string.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A short human duration.
pub fn dur(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

pub fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// Seconds between `a` and `b` (or now while it runs).
pub fn span_secs(a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>) -> Option<f64> {
    let a = a?;
    let b = b.unwrap_or_else(chrono::Utc::now);
    Some(((b - a).num_milliseconds().max(0) as f64) / 1000.0)
}

/// Checks sessions, same-origin POSTs and (optionally) the token for reading, and hardens
/// every response.
async fn guard(State(ui): State<Arc<Ui>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = path.starts_with("/ui/static/") || path == "/ui/login";
    let admin = ui.session_ok(req.headers());
    req.extensions_mut().insert(Session { admin });
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    let mut resp = if !reading {
        if let Err(why) = auth::same_origin(req.headers()) {
            UiError(StatusCode::FORBIDDEN, why.into()).into_response()
        } else if !public && !admin {
            login_response(
                &path,
                StatusCode::UNAUTHORIZED,
                Some("log in first: your session is missing or expired"),
            )
        } else {
            next.run(req).await
        }
    } else if ui.settings.require_token_to_read && !public && !admin {
        login_response(&path, StatusCode::UNAUTHORIZED, None)
    } else {
        next.run(req).await
    };
    auth::harden(resp.headers_mut());
    resp
}

/// A local path to go back to after logging in; anything else (another site, `//host`, a
/// backslash, spaces or control characters that browsers strip) becomes `/`.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        next
    } else {
        "/"
    }
}

fn login_response(next: &str, status: StatusCode, message: Option<&str>) -> Response {
    let sess = Session { admin: false };
    let body = layout(
        "Log in",
        &sess,
        html! {
            section.login {
                h2 { "Log in" }
                @if let Some(m) = message { p.error #login-error { (m) } }
                p { "Paste the admin token once; the page keeps a session cookie (HttpOnly, SameSite=Strict) instead of the token." }
                form method="post" action="/ui/login" {
                    input type="hidden" name="next" value=(safe_next(next));
                    label { "Admin token " input #token type="password" name="token" autocomplete="current-password" required; }
                    button #login-submit type="submit" { "Log in" }
                }
            }
        },
    );
    (status, page(body)).into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(q: axum::extract::Query<LoginQuery>) -> Response {
    login_response(q.next.as_deref().unwrap_or("/"), StatusCode::OK, None)
}

/// The fields of a form-encoded body.
pub fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

pub fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn login(
    State(s): State<Arc<AppState>>,
    Extension(ui): Extension<Arc<Ui>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let f = form(&body);
    let next = safe_next(field(&f, "next").unwrap_or("/")).to_string();
    let (Some(expected), Some(key)) = (&s.token, &ui.key) else {
        return login_response(
            &next,
            StatusCode::FORBIDDEN,
            Some("actions are disabled: no admin token is configured"),
        );
    };
    let given = field(&f, "token").unwrap_or("").trim();
    if given.is_empty() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!("page login refused: wrong token");
        return login_response(&next, StatusCode::UNAUTHORIZED, Some("wrong token"));
    }
    let expires = chrono::Utc::now().timestamp() + ui.settings.session_secs;
    let cookie = auth::set_cookie(
        &auth::issue(key, expires),
        ui.settings.session_secs,
        auth::is_https(&headers),
    );
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

async fn logout(headers: HeaderMap) -> Response {
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, auth::set_cookie("", 0, auth::is_https(&headers)));
    resp
}

/// The page's routes, to merge into the API router.
pub fn routes(state: &AppState, settings: UiSettings) -> Router<Arc<AppState>> {
    let ui = Arc::new(Ui {
        key: state.token.as_deref().map(auth::session_key),
        settings,
    });
    Router::new()
        .route("/", get(grid::index))
        .route("/ui/grid", get(grid::fragment))
        .route("/ui/runs/{id}", get(panels::run))
        .route("/ui/runs/{id}/tasks/{task}", get(panels::task))
        .route("/ui/attempts/{id}/log.txt", get(panels::log_txt))
        .route("/ui/snapshots", get(snapshots::index))
        .route("/ui/snapshots/{id}/rejects", get(snapshots::rejects_page))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/actions/preview", post(actions::preview))
        .route("/ui/actions/perform", post(actions::perform))
        .route("/ui/static/{file}", get(assets::serve))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .layer(Extension(ui))
}
