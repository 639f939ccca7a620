//! The web page: static files compiled into the binary (no CDN, no files at run time).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::AppState;

const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
];

pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for &(path, mime, body) in FILES {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, mime),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
                    .into_response()
            }),
        );
    }
    r
}

/// The page's own files need no token (the page asks for it).
pub fn is_public(path: &str) -> bool {
    FILES.iter().any(|&(p, _, _)| p == path)
}
