//! The web console (`web/`, built into static files) served under a configurable path such as
//! `/console/`: files are read from the build directory on each request, only from inside it,
//! with their content type, a strict Content-Security-Policy (same-origin scripts, styles and
//! connections, nothing from elsewhere), and long caching for the content-hashed `assets/`.

use std::path::{Path, PathBuf};

use mesh_contracts::ErrorCode;
use poem::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::problem::ApiError;

/// Where the console is served and from which directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// URL path, one segment such as `/console` (the pages live under `/console/`).
    pub path: String,
    /// The build output (`web/dist`): `index.html` and `assets/`.
    pub dir: PathBuf,
}

/// Paths the edge serves itself, which the console may not take.
const RESERVED: &[&str] = &[
    "v1",
    "docs",
    "metrics",
    "healthz",
    "readyz",
    "openapi.json",
    "asyncapi.json",
];

impl ConsoleConfig {
    /// Checks `path` (`/name`: lowercase letters, digits, `-`, `_`; not one of the edge's own).
    pub fn new(path: &str, dir: PathBuf) -> Result<Self, String> {
        let name = path.trim_end_matches('/').strip_prefix('/').unwrap_or("");
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !well_formed || RESERVED.contains(&name) {
            return Err(format!(
                "{path:?} must be one path segment such as /console (lowercase letters, digits, - and _), \
                 not one of the edge's own paths"
            ));
        }
        Ok(Self {
            path: format!("/{name}"),
            dir,
        })
    }
}

/// The policy of console pages: everything from this origin only, no inline scripts, no
/// framing. `connect-src 'self'` covers the same-origin WebSocket and event stream.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Serves the console directory; mounted at `ConsoleConfig::path` with `Route::nest`.
pub struct Console {
    mount: String,
    dir: PathBuf,
}

impl Console {
    pub fn new(config: &ConsoleConfig) -> Self {
        Self {
            mount: config.path.clone(),
            dir: config.dir.clone(),
        }
    }
}

impl Endpoint for Console {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "the console's files are only read (GET, HEAD)",
            )
            .into_response());
        }
        let rest = req.uri().path().to_owned();
        if req.original_uri().path() == self.mount {
            // `/console` itself: the pages use relative URLs, so they must be under `/console/`.
            return Ok(Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(LOCATION, format!("{}/", self.mount))
                .finish());
        }
        let Some(relative) = safe_relative(&rest) else {
            return Ok(not_found());
        };
        let file = if relative.as_os_str().is_empty() {
            self.dir.join("index.html")
        } else {
            self.dir.join(&relative)
        };
        match tokio::fs::read(&file).await {
            Ok(bytes) => Ok(page(&file, bytes)),
            Err(_) if !self.dir.join("index.html").is_file() => Ok(ApiError::new(
                ErrorCode::NotFound,
                "the console is not built: run scripts/web-build.sh",
            )
            .into_response()),
            Err(_) => Ok(not_found()),
        }
    }
}

fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "no such console file").into_response()
}

/// The request path below the mount as a relative file path, or `None` when any segment could
/// leave the directory or name a hidden file.
fn safe_relative(rest: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let allowed = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !allowed || segment.starts_with('.') {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

fn page(file: &Path, bytes: Vec<u8>) -> Response {
    let hashed_asset = file
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|dir| dir == "assets");
    let cache = if hashed_asset {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(file)));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(
            safe_relative("/assets/index-Ab_1.js"),
            Some(PathBuf::from("assets/index-Ab_1.js"))
        );
        for bad in [
            "/../Cargo.toml",
            "/assets/../../x",
            "/.env",
            "/a%2e%2e/b",
            "/a\\b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_mount_is_one_free_segment() {
        let dir = PathBuf::from("web/dist");
        assert_eq!(
            ConsoleConfig::new("/console/", dir.clone()).unwrap().path,
            "/console"
        );
        for bad in [
            "",
            "/",
            "console",
            "/v1",
            "/docs",
            "/a/b",
            "/Console",
            "/con sole",
        ] {
            assert!(ConsoleConfig::new(bad, dir.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_and_caching() {
        let js = page(Path::new("dist/assets/index-1.js"), vec![]);
        assert_eq!(js.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(
            js.headers()[CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let html = page(Path::new("dist/index.html"), vec![]);
        assert_eq!(html.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(html.headers()[CACHE_CONTROL], "no-cache");
        assert!(
            html.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
    }
}
