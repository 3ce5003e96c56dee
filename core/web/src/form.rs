//! Form bodies (`application/x-www-form-urlencoded`, or `multipart/form-data` when a form
//! carries files) as a list of fields: repeated names (the inbox's ticket checkboxes) stay,
//! which a struct-based extractor would refuse.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};

use crate::error::WebError;

/// A file of a submitted form.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The file's name as the browser gave it (without any directory).
    pub(crate) filename: String,
    /// Its type as the browser gave it.
    pub(crate) content_type: String,
    pub(crate) bytes: Bytes,
}

/// The fields of a submitted form, in order, and its files.
#[derive(Debug, Default)]
pub(crate) struct Fields(pub(crate) Vec<(String, String)>, pub(crate) Vec<Upload>);

impl Fields {
    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// The first value of `name` as given (not trimmed; text areas keep their spaces).
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
        if multipart {
            return from_multipart(req, state).await;
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| WebError::TooLarge)?;
        let fields = form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Ok(Fields(fields, Vec::new()))
    }
}

async fn from_multipart<S: Send + Sync>(req: Request, state: &S) -> Result<Fields, WebError> {
    let refused = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::TooLarge
        } else {
            WebError::Invalid(format!("the form's body is not readable multipart: {}", e.body_text()))
        }
    };
    let mut parts = Multipart::from_request(req, state).await.map_err(|e| WebError::Invalid(e.body_text()))?;
    let mut out = Fields::default();
    while let Some(field) = parts.next_field().await.map_err(refused)? {
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(filename) => {
                let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
                let bytes = field.bytes().await.map_err(refused)?;
                // A file input left empty sends a part with no name and no bytes.
                if filename.is_empty() && bytes.is_empty() {
                    continue;
                }
                // Some browsers send a path; the name is its last part.
                let filename = filename.rsplit(['/', '\\']).next().unwrap_or_default().to_owned();
                out.1.push(Upload { filename, content_type, bytes });
            }
            None => {
                let value = field.text().await.map_err(refused)?;
                out.0.push((name, value));
            }
        }
    }
    Ok(out)
}
