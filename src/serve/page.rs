//! The web page at `/`: three files compiled into the binary, so the page
//! works with no network beyond this server. The security policy forbids
//! loading anything from elsewhere, which also proves it in a browser.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// Everything from this origin, nothing from anywhere else; blob: for the
/// JSONL download.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob:; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // A new binary may ship a new page: revalidate rather than cache.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub(super) async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offline means no URL to another host anywhere in the page's files.
    #[test]
    fn page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
            ("favicon.svg", FAVICON_SVG),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is a name, not a request.
                let count = text.matches(needle).count()
                    - text.matches("http://www.w3.org/2000/svg").count()
                        * usize::from(needle == "http://");
                assert_eq!(count, 0, "{name} contains {needle}");
            }
        }
        assert!(INDEX_HTML.contains("dir=\"rtl\"") && INDEX_HTML.contains("lang=\"ar\""));
        for asset in ["/app.js", "/style.css", "/favicon.svg"] {
            assert!(
                INDEX_HTML.contains(asset),
                "index.html does not use {asset}"
            );
        }
    }

    /// The legend carries LABELS.md's definitions word for word.
    #[test]
    fn legend_quotes_the_label_definitions() {
        for definition in [
            "the outlet states an event, action or fact in its own voice, neutrally",
            "the main content is what an identifiable source said, stated or announced",
            "the sentence expresses or reports approval, support, praise or welcome for a specific actor, event, decision or initiative",
            "an evaluative, interpretive, speculative, predictive or normative claim by the writer or by vague, unnamed collectives",
        ] {
            assert!(INDEX_HTML.contains(definition), "legend lacks: {definition}");
        }
    }
}
