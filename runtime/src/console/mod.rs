//! The web console: one dependency-free page at `/` (also `/_/`) and its script and
//! style under `/_/`, compiled into the binary so there is nothing to build or
//! install. The page talks to the MCM API with the token the user pastes (kept in
//! session storage, sent as `Authorization: Bearer`, never as a cookie) and its
//! `Content-Security-Policy` lets only its own script and style run.

use crate::http::body::{full, json_error, Body};
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Only the page's own files may load; nothing inline, no framing, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether `path` belongs to the console (`/_` and below; `/` is decided by the
/// caller, since a mim may serve at base path `/`).
pub fn owns(path: &str) -> bool {
    path == "/_" || path.starts_with("/_/")
}

/// Answers a console path: the page, its script or its style; 404 for anything else.
pub fn serve(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = json_error(405, "the console's files are read with GET");
        resp.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let (body, kind) = match path {
        "/" | "/_" | "/_/" | "/_/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/_/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/_/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return json_error(404, &format!("the console has no file {path}")),
    };
    let body = if method == Method::HEAD { "" } else { body };
    let mut resp = Response::new(full(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(INDEX.contains("src=\"/_/console.js\""));
        assert!(!INDEX.contains("style="), "no inline style");
        let resp = serve(&Method::GET, "/");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
        assert_eq!(serve(&Method::GET, "/_/nope").status(), 404);
        assert_eq!(serve(&Method::POST, "/").status(), 405);
        assert!(owns("/_/console.js") && owns("/_") && !owns("/_x") && !owns("/"));
    }
}
