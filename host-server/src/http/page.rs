//! The HTML pages: a batch's page, and the plain pages that refuse.
//!
//! Rendered on the server, no script, no external font, image or style
//! sheet: one inline `<style>`, which the policy of every response allows
//! and nothing else. Every name is escaped ([`escape`]), so a file named
//! `<script>…` is shown as text. Times are UTC with a relative form beside
//! them: without script the page cannot know the reader's time zone.

use core::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Response;

use super::{html, http_date};
use crate::store::Batch;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:48rem;margin:0 auto;\
padding:1rem;line-height:1.4;color:#222;background:#fff}\
h1{font-size:1.4rem}ul{list-style:none;padding:0}\
li{border-bottom:1px solid #ddd;padding:.6rem 0;overflow-wrap:anywhere}\
.meta{color:#555;font-size:.85rem}.sha{font-family:monospace;font-size:.8rem}\
a.button{display:inline-block;margin:.3rem 0;padding:.45rem .9rem;border-radius:.3rem;\
background:#1a5fb4;color:#fff;text-decoration:none}\
progress{width:100%}";

/// Text as HTML text or attribute value: `& < > " '` escaped.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (HTML already escaped), titled `title`.
pub(super) fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>{} · Pickup</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// The page of a live batch: 200 when ready, with a link per file and one
/// for the ZIP; see [`not_ready`] for a batch still uploading.
pub(super) fn batch_page(batch: &Batch, now_secs: u64) -> Response {
    if !batch.ready() {
        return not_ready(batch);
    }
    let code = batch.code.to_string();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{} file{}, {}</h1><p class=\"meta\">Code {} · expires {}</p>\
<p><a class=\"button\" href=\"{}/zip\" download>Download all as ZIP</a></p><ul>",
        batch.files.len(),
        if batch.files.len() == 1 { "" } else { "s" },
        size(batch.total_size()),
        escape(&code),
        when(batch.expires_at, now_secs),
        escape(&code),
    );
    for (i, f) in batch.files.iter().enumerate() {
        let _ = write!(
            body,
            "<li><strong>{}</strong><br><span class=\"meta\">{}</span><br>\
<span class=\"sha\">SHA-1 {}</span><br>\
<a class=\"button\" href=\"{}/{i}\" download>Download</a></li>",
            escape(&f.name),
            size(f.size),
            f.sha1,
            escape(&code),
        );
    }
    body.push_str("</ul>");
    html(StatusCode::OK, document(&format!("Batch {code}"), &body))
}

/// A batch still uploading: 409 (its files cannot be had yet), with the
/// progress of each file and no download link. Reload to see more.
pub(super) fn not_ready(batch: &Batch) -> Response {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Still uploading</h1><p>{} of {} received. Reload this page to see \
more; the downloads appear when every file is in.</p><ul>",
        size(batch.received()),
        size(batch.total_size()),
    );
    for f in &batch.files {
        let _ = write!(
            body,
            "<li><strong>{}</strong><br><progress max=\"{}\" value=\"{}\"></progress>\
<br><span class=\"meta\">{} of {}</span></li>",
            escape(&f.name),
            f.size.max(1),
            if f.size == 0 { 1 } else { f.received() },
            size(f.received()),
            size(f.size),
        );
    }
    body.push_str("</ul>");
    html(StatusCode::CONFLICT, document("Still uploading", &body))
}

/// A size for people: bytes exactly below 1 KiB, else one decimal.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `at` (Unix seconds) as a UTC date with how far it is from now.
fn when(at: u64, now: u64) -> String {
    let left = at.saturating_sub(now);
    let relative = match left {
        0 => "now".to_owned(),
        s if s < 3600 => format!("in {} min", s.div_ceil(60)),
        s if s < 48 * 3600 => format!("in {} h {} min", s / 3600, s % 3600 / 60),
        s => format!("in {} days", s / 86_400),
    };
    format!("{} ({relative})", http_date(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert(1)</script>.txt"),
            "&lt;script&gt;alert(1)&lt;/script&gt;.txt"
        );
        assert_eq!(
            escape("\"onmouseover=alert(1) 'x' &"),
            "&quot;onmouseover=alert(1) &#39;x&#39; &amp;"
        );
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(when(100, 100), format!("{} (now)", http_date(100)));
        assert!(when(90_000, 0).ends_with("(in 25 h 0 min)"));
        assert!(when(59, 0).ends_with("(in 1 min)"));
        assert!(when(3 * 86_400, 0).ends_with("(in 3 days)"));
    }
}
