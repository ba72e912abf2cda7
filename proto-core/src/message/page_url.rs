//! The rule every page link's base URL must pass ([`PageLink`](super::PageLink)).
//!
//! A terminal prints the URL for a person to open, so it must be inert
//! on a terminal: no escape sequence, no line break, no bidirectional
//! override that would show one address and open another. Printable
//! ASCII alone rules all of them out; a real URL needs nothing else
//! (international host names travel as punycode, other bytes
//! percent-encoded).

/// The longest base URL a [`PageLink`](super::PageLink) carries, in bytes:
/// what a terminal keeps for it (a fixed buffer), and short enough that
/// the link with its `/c/CODE` stays on one line of a terminal.
pub const MAX_PAGE_URL_LEN: usize = 128;

/// Why a base URL is refused ([`validate_page_url`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PageUrlError {
    /// Longer than [`MAX_PAGE_URL_LEN`] bytes.
    TooLong,
    /// Does not start with `http://` or `https://`, or has no host after it.
    Scheme,
    /// Holds a byte outside printable ASCII (a space, a control character,
    /// anything non-ASCII).
    Unprintable,
    /// Ends with `/`: the link for a code appends `/c/CODE` itself.
    TrailingSlash,
}

impl core::fmt::Display for PageUrlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PageUrlError::TooLong => "longer than 128 bytes",
            PageUrlError::Scheme => "must start with http:// or https:// and name a host",
            PageUrlError::Unprintable => {
                "may hold only printable ASCII (no space, control or non-ASCII character)"
            }
            PageUrlError::TrailingSlash => "must not end with '/'",
        })
    }
}

impl core::error::Error for PageUrlError {}

/// Checks a page link's base URL: at most [`MAX_PAGE_URL_LEN`] bytes,
/// `http://` or `https://` followed by at least one byte, every byte
/// printable ASCII (`0x21..=0x7E`), and no trailing `/`. The decoder
/// refuses a [`PageLink`](super::PageLink) breaking it, and the relay a
/// configuration that does.
pub fn validate_page_url(url: &str) -> Result<(), PageUrlError> {
    if url.len() > MAX_PAGE_URL_LEN {
        return Err(PageUrlError::TooLong);
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(PageUrlError::Scheme)?;
    if rest.is_empty() {
        return Err(PageUrlError::Scheme);
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PageUrlError::Unprintable);
    }
    if url.ends_with('/') {
        return Err(PageUrlError::TrailingSlash);
    }
    Ok(())
}
