//! One file of a batch as a download: its headers, the conditional and
//! range answers shared with the ZIP ([`ranged`]), and the name table
//! that gives a `Content-Type`.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::range::{self, Ranged};
use super::{blob_body, http_date, HttpState};
use crate::store::{Batch, FileContent};

/// What a download is, besides its bytes.
pub(super) struct Representation {
    /// Its size in bytes.
    pub(super) len: u64,
    /// A strong entity tag, quoted.
    pub(super) etag: String,
    /// `Last-Modified`, an HTTP date.
    pub(super) last_modified: String,
    /// `Content-Type`.
    pub(super) content_type: &'static str,
    /// The file name a browser saves it as.
    pub(super) file_name: String,
}

/// File `index` of the ready `batch`.
pub(super) fn download(
    state: &HttpState,
    batch: &Batch,
    index: usize,
    headers: &HeaderMap,
) -> Response {
    let Some(file) = batch.files.get(index) else {
        return super::plain(
            StatusCode::NOT_FOUND,
            "No such file",
            "This batch has no such file.",
        );
    };
    let FileContent::Blob(blob) = file.content else {
        return super::page::not_ready(batch);
    };
    let base = file.name.rsplit('/').next().unwrap_or(&file.name);
    let rep = Representation {
        len: file.size,
        etag: format!("\"{}\"", file.sha1),
        last_modified: http_date(batch.created_at),
        content_type: content_type(base),
        file_name: base.to_owned(),
    };
    let relay = state.relay.clone();
    ranged(&rep, headers, move |start, end| {
        blob_body(relay, blob, start, end - start)
    })
}

/// The answer to a GET of `rep`: 304 if `If-None-Match` matches, else the
/// part its `Range` selects (206, 416) or the whole (200), with the body
/// of bytes `start..end` made by `body`.
pub(super) fn ranged(
    rep: &Representation,
    headers: &HeaderMap,
    body: impl FnOnce(u64, u64) -> Body,
) -> Response {
    let get = |name: HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    let mut r = Response::new(Body::empty());
    set(&mut r, header::ETAG, &rep.etag);
    set(&mut r, header::LAST_MODIFIED, &rep.last_modified);
    set(&mut r, header::ACCEPT_RANGES, "bytes");
    set(&mut r, header::CACHE_CONTROL, "private, no-cache");
    if range::none_match(get(header::IF_NONE_MATCH), &rep.etag) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let selected = if range::if_range_holds(get(header::IF_RANGE), &rep.etag, &rep.last_modified) {
        range::parse(get(header::RANGE), rep.len)
    } else {
        Ranged::Full
    };
    let (start, end) = match selected {
        Ranged::Full => (0, rep.len),
        Ranged::Part { start, end } => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                &mut r,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{}/{}", end - 1, rep.len),
            );
            (start, end)
        }
        Ranged::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            set(
                &mut r,
                header::CONTENT_RANGE,
                &format!("bytes */{}", rep.len),
            );
            set(&mut r, header::CONTENT_LENGTH, "0");
            return r;
        }
    };
    set(&mut r, header::CONTENT_TYPE, rep.content_type);
    set(
        &mut r,
        header::CONTENT_DISPOSITION,
        &disposition(&rep.file_name),
    );
    set(&mut r, header::CONTENT_LENGTH, &(end - start).to_string());
    *r.body_mut() = body(start, end);
    r
}

fn set(r: &mut Response, name: HeaderName, value: &str) {
    // Every value here is made of visible ASCII (names are percent-encoded).
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// `attachment` with the name twice (RFC 6266 §4.3): `filename*` in UTF-8,
/// percent-encoded (RFC 8187), for every browser of the last decade, and
/// `filename` in ASCII with anything else as `_`, for the rest.
pub(super) fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' && c != '%' => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~".
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The `Content-Type` of a file by the extension of its name; what the
/// table does not know is `application/octet-stream`. Downloads are
/// attachments served with `nosniff` and a policy that runs no script,
/// so even `text/html` is only ever saved, never run.
pub(super) fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "log" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_encode_any_name() {
        assert_eq!(
            disposition("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        assert_eq!(
            disposition("été \"x\".pdf"),
            "attachment; filename=\"_t_ _x_.pdf\"; filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22.pdf"
        );
        assert!(HeaderValue::from_str(&disposition("<script>;\\%\u{1F600}")).is_ok());
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type("a.TXT"), "text/plain; charset=utf-8");
        assert_eq!(content_type("photo.jpeg"), "image/jpeg");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }
}
