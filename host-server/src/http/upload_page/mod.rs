//! The upload page: `GET /` lets a person with a browser and no `pickup`
//! CLI send files, through the relay's tus endpoint (`/tus/`).
//!
//! ```text
//!   GET /            index.html   the form: choose or drop files, progress, the code
//!   GET /upload.js   upload.js    the tus client: create, PATCH in chunks, resume, close
//!   GET /upload.css  upload.css   its look (also at phone width)
//! ```
//!
//! The three files are compiled into the binary and served as they are:
//! no template, no build step, nothing fetched from elsewhere. These routes
//! alone answer with [`PAGE_POLICY`], which lets the page run its own
//! script and talk to its own origin; every other response keeps the
//! stricter policy the HTTP face sets (`http::secure`). Served only when
//! `[http] upload_page` is on (the default); off, `GET /` falls through to
//! the 404 of every unknown path.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The content security policy of the page and its assets: script, style
/// and requests from this origin only; no inline script, no other site.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self'";

const INDEX_HTML: &str = include_str!("index.html");
const UPLOAD_JS: &str = include_str!("upload.js");
const UPLOAD_CSS: &str = include_str!("upload.css");

/// The page's routes, to be merged beside [`super::router`]'s.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/upload.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOAD_JS) }),
        )
        .route(
            "/upload.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOAD_CSS) }),
        )
        .layer(axum::middleware::map_response(page_headers))
}

/// One of the compiled-in files. `no-cache`: a browser may keep it but asks
/// again, so a relay upgraded to a new page never runs an old script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The headers of every HTTP response, with [`PAGE_POLICY`] in place of
/// the default policy.
async fn page_headers(response: Response) -> Response {
    let mut response = super::secure(response).await;
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower_service::Service;

    use super::*;

    async fn get(path: &str) -> Response {
        let mut router = router();
        let request = Request::get(path).body(Body::empty()).unwrap();
        router.call(request).await.unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn upload_page_and_assets_are_served_with_their_own_policy() {
        for (path, kind, body) in [
            ("/", "text/html", INDEX_HTML),
            ("/upload.js", "text/javascript", UPLOAD_JS),
            ("/upload.css", "text/css", UPLOAD_CSS),
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], PAGE_POLICY, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(text(r).await, body);
        }
        assert_eq!(get("/upload.json").await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn upload_page_loads_only_its_own_assets() {
        // The policy forbids inline script and other origins: the page
        // must not need them.
        assert!(INDEX_HTML.contains(r#"<script src="/upload.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"<link rel="stylesheet" href="/upload.css">"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1, "inline script");
        assert!(!INDEX_HTML.contains("style="), "inline style");
        let handler = INDEX_HTML.split(" on").skip(1).find(|rest| {
            let word = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            word.len() < rest.len() && word.starts_with('=')
        });
        assert_eq!(handler, None, "an inline handler");
        for file in [INDEX_HTML, UPLOAD_JS, UPLOAD_CSS] {
            assert!(!file.contains("http://") && !file.contains("https://"));
        }
    }
}
