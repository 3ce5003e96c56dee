//! The pages' static files, compiled into the binary and served under names that carry a
//! hash of their content (`app.3f2a9c1b.css`), so browsers may keep them for a year: a new
//! build with a changed file changes its name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
pub(crate) struct Asset {
    /// The source name (`app.js`).
    pub(crate) name: &'static str,
    /// The served name (`app.1a2b3c4d.js`).
    pub(crate) served: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! embed {
    ($($name:literal => $type:literal),* $(,)?) => {
        [$(($name, $type, include_bytes!(concat!("../assets/", $name)) as &'static [u8])),*]
    };
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    embed![
        "app.css" => "text/css; charset=utf-8",
        "app.js" => "text/javascript; charset=utf-8",
        "keys.js" => "text/javascript; charset=utf-8",
        "live.js" => "text/javascript; charset=utf-8",
        "composer.js" => "text/javascript; charset=utf-8",
        "inbox.js" => "text/javascript; charset=utf-8",
    ]
    .into_iter()
    .map(|(name, content_type, bytes)| {
        let hash = hex::encode(&Sha256::digest(bytes)[..4]);
        let served = match name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{name}.{hash}"),
        };
        Asset { name, served, content_type, bytes }
    })
    .collect()
});

/// The URL of an embedded file by its source name.
pub(crate) fn url(name: &str) -> String {
    ASSETS.iter().find(|a| a.name == name).map(|a| format!("/assets/{}", a.served)).unwrap_or_default()
}

/// The JSON map source name → URL that `app.js` loads its modules through (their names are
/// hashed, so it cannot import them by a fixed name).
pub(crate) fn module_map() -> String {
    let map: serde_json::Map<String, serde_json::Value> = ASSETS
        .iter()
        .filter(|a| a.name.ends_with(".js"))
        .map(|a| (a.name.to_owned(), serde_json::Value::from(format!("/assets/{}", a.served))))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Total bytes of the scripts a page loads (the inbox loads all of them).
#[cfg(test)]
pub(crate) fn script_bytes() -> usize {
    ASSETS.iter().filter(|a| a.name.ends_with(".js")).map(|a| a.bytes.len()).sum()
}

/// `GET /assets/{file}`: the file under its hashed name, cached for a year.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.served == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            a.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_names_carry_the_content_hash() {
        let css = url("app.css");
        assert!(
            css.starts_with("/assets/app.") && css.ends_with(".css") && css.len() == "/assets/app.12345678.css".len()
        );
        let map: serde_json::Value = serde_json::from_str(&module_map()).expect("json");
        assert_eq!(map["keys.js"], url("keys.js"));
        assert_eq!(url("nothing.js"), "");
    }

    #[test]
    fn the_inbox_loads_less_than_100_kb_of_script() {
        assert!(script_bytes() < 100 * 1024, "{} bytes of JS", script_bytes());
    }
}
