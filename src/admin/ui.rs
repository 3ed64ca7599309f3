//! The token dashboard: a small static page over the `/api/v1` token API, embedded in
//! the binary and served by the admin listener at `/` and `/ui/…`.
//!
//! The page is plain HTML, CSS and JavaScript from this origin only; every answer carries a strict
//! Content-Security-Policy (no inline code, no other origin, no framing, no form posts), and the
//! page keeps the manager token in the tab's `sessionStorage` only (never a cookie, never the URL).

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy of every dashboard answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
    base-uri 'none'";

/// One embedded file: its body, content type and (lazily computed) strong validator.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A strong ETag from the bytes (FNV-1a, 64 bits, and the length): the embedded files never
    /// change while the process runs, so a revalidation (`Cache-Control: no-cache`) is a 304.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in self.body {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            HeaderValue::from_str(&format!("\"{h:016x}-{:x}\"", self.body.len()))
                .expect("hex digits are a valid header value")
        })
    }
}

static INDEX: Asset = Asset::new(include_bytes!("ui/index.html"), "text/html; charset=utf-8");
static APP_JS: Asset = Asset::new(
    include_bytes!("ui/app.js"),
    "text/javascript; charset=utf-8",
);
static APP_CSS: Asset = Asset::new(include_bytes!("ui/app.css"), "text/css; charset=utf-8");
static FAVICON: Asset = Asset::new(include_bytes!("ui/favicon.svg"), "image/svg+xml");

/// The dashboard routes; merged into the admin router (no state of their own).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = |asset: &'static Asset| get(move |h: HeaderMap| async move { serve(asset, &h) });
    Router::new()
        .route("/", page(&INDEX))
        .route("/ui", page(&INDEX))
        .route("/ui/", page(&INDEX))
        .route("/ui/index.html", page(&INDEX))
        .route("/ui/app.js", page(&APP_JS))
        .route("/ui/app.css", page(&APP_CSS))
        .route("/ui/favicon.svg", page(&FAVICON))
}

/// Security headers every dashboard answer carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let tag = asset.etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag)
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, tag.clone());
    secure(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_own_etag() {
        let tags: std::collections::HashSet<_> = [&INDEX, &APP_JS, &APP_CSS, &FAVICON]
            .into_iter()
            .map(|a| a.etag().clone())
            .collect();
        assert_eq!(tags.len(), 4);
    }

    #[test]
    fn headers_and_revalidation() {
        let r = serve(&APP_JS, &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, h[header::ETAG].clone());
        let r = serve(&APP_JS, &again);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let mut stale = HeaderMap::new();
        stale.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert_eq!(serve(&INDEX, &stale).status(), StatusCode::OK);
    }

    #[test]
    fn page_has_no_inline_code_and_only_local_assets() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        let lower = html.to_ascii_lowercase();
        for (i, _) in lower.match_indices(" on") {
            let rest = &lower[i + 3..];
            let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            assert!(
                letters == 0 || !rest[letters..].starts_with('='),
                "inline event handler at byte {i}"
            );
        }
        assert!(html.contains("<script src=\"/ui/app.js\" defer></script>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
