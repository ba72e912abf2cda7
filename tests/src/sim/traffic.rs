//! How much of a batch each connection moved, per direction and link class.
//!
//! A connection's share is the progress its terminal made while it was up:
//! bytes the relay made durable (upload) or bytes written in order
//! (download), beyond the most the terminal had ever reached before (so
//! bytes a restarted terminal finds on its own disk again are not counted
//! twice). A download's connections count once its batch is complete
//! (before, it can only wait). Uploads and downloads of one seed share its link, so their
//! bytes per connection compare the two directions of the protocol on the
//! same faults, speed and cuts.

use std::collections::BTreeMap;
use std::fmt;

/// Bytes moved and connections made by the terminals of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Connections the terminals opened.
    pub connections: u64,
    /// File bytes those connections moved.
    pub bytes: u64,
}

impl Traffic {
    /// Bytes per connection (0 without connections).
    pub fn per_connection(&self) -> u64 {
        self.bytes.checked_div(self.connections).unwrap_or(0)
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: Traffic) {
        self.connections += other.connections;
        self.bytes += other.bytes;
    }
}

/// Connections each direction of a seed needs before its ratio means
/// something: with fewer, one lucky or unlucky link decides it.
pub const MIN_CONNECTIONS: u64 = 20;

/// A download's bytes per connection over its upload's on the same link,
/// if both made at least [`MIN_CONNECTIONS`] connections.
pub fn down_over_up(up: Traffic, down: Traffic) -> Option<f64> {
    if up.connections < MIN_CONNECTIONS || down.connections < MIN_CONNECTIONS {
        return None;
    }
    let up = up.bytes as f64 / up.connections as f64;
    let down = down.bytes as f64 / down.connections as f64;
    (up > 0.0).then(|| down / up)
}

/// Upload and download traffic summed by link class (bytes per
/// millisecond, 0 for an unlimited link).
#[derive(Debug, Clone, Default)]
pub struct ByLink(pub BTreeMap<u64, (Traffic, Traffic)>);

impl ByLink {
    /// Adds one seed's traffic on a link of `bytes_per_ms`.
    pub fn add(&mut self, bytes_per_ms: u64, up: Traffic, down: Traffic) {
        let e = self.0.entry(bytes_per_ms).or_default();
        e.0.add(up);
        e.1.add(down);
    }
}

impl fmt::Display for ByLink {
    /// `1 B/ms up 812 down 640 B/conn; …` (`∞` for an unlimited link).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (speed, (up, down))) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            match speed {
                0 => f.write_str("∞ B/ms")?,
                s => write!(f, "{s} B/ms")?,
            }
            write!(
                f,
                " up {} down {} B/conn",
                up.per_connection(),
                down.per_connection()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_link_class_and_prints_bytes_per_connection() {
        let mut by = ByLink::default();
        let t = |connections, bytes| Traffic { connections, bytes };
        by.add(1, t(2, 100), t(4, 100));
        by.add(1, t(2, 100), t(0, 0));
        by.add(0, t(1, 7), t(0, 0));
        assert_eq!(
            by.to_string(),
            "∞ B/ms up 7 down 0 B/conn; 1 B/ms up 50 down 25 B/conn"
        );
    }
}
