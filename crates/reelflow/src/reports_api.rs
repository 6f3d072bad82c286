//! Read-only report endpoints for data consumers, served from the published snapshot.

use std::sync::Arc;

use axum::Router;

use crate::api::AppState;

/// The report routes, merged into [`crate::api::router`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
