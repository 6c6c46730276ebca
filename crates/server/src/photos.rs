//! Photos a responder takes on scene, attached to the alert.
//!
//! `POST /api/v1/alerts/{id}/photos` takes the image itself as the body (`image/jpeg`,
//! `image/png` or `image/webp`, checked by its first bytes, at most 10 MB) and answers
//! `201 {"id", "url", …}`; `GET` on that url gives it back to whoever sees the alert, and
//! the read is audited. Files live under `DATA/photos/ALERT/`, written whole (temporary
//! file, fsync, rename) before the alert records them.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Body, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError};

/// The largest photo taken.
const MAX_BYTES: usize = 10 * 1024 * 1024;

/// The photo routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/alerts/{id}/photos", post(add))
        .route("/api/v1/alerts/{id}/photos/{photo}", get(read))
}

/// The image type of `bytes` by its signature, with the file extension.
fn image_type(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("image/jpeg", "jpg"))
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(("image/png", "png"))
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("image/webp", "webp"))
    } else {
        None
    }
}

fn dir_of(node: &Node, alert: &str) -> PathBuf {
    node.config().node.data_dir.join("photos").join(alert)
}

/// Alert and photo ids name files: only letters, digits, `-` and `_`.
fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn add(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    if body.len() > MAX_BYTES {
        return Err(NodeError::TooLarge(format!("the photo is {} bytes; at most {MAX_BYTES} are taken — send a smaller one", body.len())).into());
    }
    let (content_type, ext) = image_type(&body).ok_or_else(|| {
        NodeError::Invalid("the body is not a JPEG, PNG or WebP image; send the image file itself as the body".into())
    })?;
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !declared.is_empty() && declared != content_type {
        return Err(NodeError::Invalid(format!("Content-Type says `{declared}` but the body is {content_type}")).into());
    }
    if !safe_id(&id) {
        return Err(NodeError::NotFound(format!("alert `{id}` does not exist in your jurisdiction")).into());
    }
    let answer = blocking(move || {
        // Seen first: nobody learns of an alert they may not see by adding to it.
        node.desk().visible(&user, &id)?;
        let photo = format!("p{}", crate::auth::random_hex(8)?);
        let dir = dir_of(&node, &id);
        let file = dir.join(format!("{photo}.{ext}"));
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = file.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &file)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        written.map_err(|e| NodeError::Internal(format!("cannot store the photo in {}: {e}; check the disk", dir.display())))?;
        let meta = json!({
            "id": photo,
            "url": format!("/api/v1/alerts/{id}/photos/{photo}"),
            "content_type": content_type,
            "bytes": body.len(),
            "by": user.username,
            "at": cityward_model::format_time(&chrono::Utc::now()),
        });
        node.desk().add_photo(&user, &id, meta).inspect_err(|_| {
            let _ = std::fs::remove_file(&file);
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn read(State(node): State<Arc<Node>>, Caller(user): Caller, Path((id, photo)): Path<(String, String)>) -> Result<Response, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let missing = || NodeError::NotFound(format!("alert `{id}` has no photo `{photo}` you may see"));
    if !safe_id(&id) || !safe_id(&photo) {
        return Err(missing().into());
    }
    let (bytes, content_type) = blocking({
        let (id, photo) = (id.clone(), photo.clone());
        move || {
            let row = node.desk().visible(&user, &id)?;
            let listed = row.body["photos"].as_array().and_then(|l| l.iter().find(|p| p["id"] == photo.as_str())).cloned();
            let Some(meta) = listed else { return Err(NodeError::NotFound(format!("alert `{id}` has no photo `{photo}`"))) };
            let content_type = meta["content_type"].as_str().unwrap_or("application/octet-stream").to_string();
            let ext = image_type_ext(&content_type);
            let path = dir_of(&node, &id).join(format!("{photo}.{ext}"));
            let bytes = std::fs::read(&path).map_err(|e| NodeError::Internal(format!("photo {} cannot be read: {e}", path.display())))?;
            node.desk().audit(&user.username, "alert.photo.view", &id, json!({"photo": photo}));
            Ok((bytes, content_type))
        }
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

fn image_type_ext(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/webp" => "webp",
        _ => "jpg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_known_by_their_first_bytes() {
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(("image/jpeg", "jpg")));
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some(("image/png", "png")));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some(("image/webp", "webp")));
        assert_eq!(image_type(b"<svg onload=alert(1)>"), None);
    }

    #[test]
    fn ids_cannot_climb_out_of_the_photo_directory() {
        assert!(safe_id("a0123456789abcdef"));
        assert!(!safe_id("../state"));
        assert!(!safe_id("a/b"));
        assert!(!safe_id(""));
    }
}
