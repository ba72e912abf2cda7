//! When the relay may reveal that it holds some content.
//!
//! Instant upload answers an announcement with `Challenge` when the relay
//! holds the content and with `Upload` otherwise, so the plan alone tells
//! anyone who can announce a file whether someone stored it: a letter with
//! a four-digit PIN gives its PIN to 10,000 announcements, with no code
//! and no file bytes (Harnik, Pinkas and Shulman-Peleg, "Side channels in
//! cloud services: deduplication in cloud storage", IEEE S&P 2010). The
//! relay therefore offers a challenge for a held blob only when doing so
//! reveals nothing the announcer did not know:
//!
//! - the announcer's **owner** (its token family,
//!   [`crate::codes::family_owner`]: the first batch of a session starts
//!   one, later batches of that session and every batch resumed by a token
//!   of the family belong to it) already completed or linked a file with
//!   the blob: it learns that the relay still holds what it stored;
//! - in [`DisclosureMode::Threshold`] (the default), at least `t` distinct
//!   owners completed or linked the blob, where `t` is drawn uniformly in
//!   `2..=threshold_max` when the blob is first stored and never shown
//!   (the paper's defence). Popular content then links instantly for
//!   everyone, while a file only its uploader holds is never revealed to
//!   others by its plan; an attacker acting as many owners learns it with
//!   probability `1/(threshold_max - 1)` (PROTOCOL.md §7.1).
//!
//! Otherwise the plan is `Upload{0}`, as for content the relay has never
//! seen; the relay receives the bytes and deduplicates them against the
//! held blob after the full upload ([`crate::store::Store::complete_file`]),
//! which the terminal does not see in any message, and the uploader's
//! owner is then counted. [`DisclosureMode::OwnerOnly`] never reveals
//! cross-owner content; [`DisclosureMode::Open`] is the behaviour of
//! relays before this rule (every held blob is challenged).

use serde::Deserialize;

use crate::random::Random;
use crate::store::{BlobId, Holders, OwnerId, Store};

/// Which held content the relay reveals by challenging it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisclosureMode {
    /// Content of the same owner, and content a random threshold of
    /// distinct owners stored.
    #[default]
    Threshold,
    /// Content of the same owner only.
    OwnerOnly,
    /// Every held content (reveals what the relay holds to anyone).
    Open,
}

/// The disclosure rule and its threshold range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisclosureSettings {
    /// The rule.
    pub mode: DisclosureMode,
    /// The largest threshold drawn (at least 2): thresholds are uniform in
    /// `2..=threshold_max`.
    pub threshold_max: u32,
}

/// The default largest threshold: an attacker who can act as many owners
/// learns whether a file is held with probability 1/19.
pub const DEFAULT_THRESHOLD_MAX: u32 = 20;

impl Default for DisclosureSettings {
    fn default() -> Self {
        DisclosureSettings {
            mode: DisclosureMode::Threshold,
            threshold_max: DEFAULT_THRESHOLD_MAX,
        }
    }
}

/// A fresh blob's threshold, uniform in `2..=threshold_max`; the largest if
/// the random source fails (revealing later is the safe side).
pub fn draw_threshold(settings: &DisclosureSettings, rng: &mut dyn Random) -> u32 {
    let max = settings.threshold_max.max(2);
    let mut bytes = [0u8; 8];
    if !rng.fill(&mut bytes) {
        return max;
    }
    // 2..=max has at most 2^32 values: the modulo bias of a 64-bit draw
    // is below 2^-32.
    let span = u64::from(max - 1);
    2 + (u64::from_le_bytes(bytes) % span) as u32
}

/// Whether a blob with these holders may be challenged for the asking
/// owner.
pub fn discloses(settings: &DisclosureSettings, holders: &Holders) -> bool {
    match settings.mode {
        DisclosureMode::Open => true,
        DisclosureMode::OwnerOnly => holders.owned,
        DisclosureMode::Threshold => {
            // A blob stored before thresholds existed (0) counts as having
            // the largest.
            let t = match holders.threshold {
                0 => settings.threshold_max.max(2),
                t => t,
            };
            holders.owned || holders.owners >= u64::from(t)
        }
    }
}

/// The candidates whose holding `owner` may learn; the others are left
/// out, so the file is uploaded as if they did not exist. A store error
/// leaves a candidate out.
pub fn disclosable(
    store: &dyn Store,
    settings: &DisclosureSettings,
    owner: &OwnerId,
    candidates: Vec<BlobId>,
) -> Vec<BlobId> {
    if settings.mode == DisclosureMode::Open {
        return candidates;
    }
    candidates
        .into_iter()
        .filter(|&blob| match store.holders(blob, owner) {
            Ok(h) => discloses(settings, &h),
            Err(e) => {
                tracing::warn!(blob = blob.0, "holder lookup failed: {e}");
                false
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    fn holders(owned: bool, owners: u64, threshold: u32) -> Holders {
        Holders {
            owned,
            owners,
            threshold,
        }
    }

    #[test]
    fn each_mode_decides_as_documented() {
        let mut s = DisclosureSettings::default();
        // A stranger asking about a file one other owner stored.
        let stranger = holders(false, 1, 2);
        assert!(!discloses(&s, &stranger));
        assert!(discloses(&s, &holders(true, 1, 20)));
        assert!(discloses(&s, &holders(false, 2, 2)));
        assert!(!discloses(&s, &holders(false, 19, 20)));
        assert!(discloses(&s, &holders(false, 20, 20)));
        // Threshold 0 (stored before thresholds) counts as the largest.
        assert!(!discloses(&s, &holders(false, 19, 0)));
        assert!(discloses(&s, &holders(false, 20, 0)));
        s.mode = DisclosureMode::OwnerOnly;
        assert!(!discloses(&s, &holders(false, 1_000, 2)));
        assert!(discloses(&s, &holders(true, 1, 2)));
        s.mode = DisclosureMode::Open;
        assert!(discloses(&s, &stranger));
    }

    #[test]
    fn the_config_names_each_mode_and_refuses_a_threshold_below_2() {
        use crate::config::Config;
        let parse = |text: &str| toml::from_str::<Config>(text).map(|c| c.settings().disclosure);
        assert_eq!(parse("").unwrap(), DisclosureSettings::default());
        for (name, mode) in [
            ("threshold", DisclosureMode::Threshold),
            ("owner-only", DisclosureMode::OwnerOnly),
            ("open", DisclosureMode::Open),
        ] {
            let s = parse(&format!(
                "dedup_disclosure = \"{name}\"\ndedup_threshold_max = 5"
            ))
            .unwrap();
            assert_eq!((s.mode, s.threshold_max), (mode, 5));
        }
        assert!(parse("dedup_disclosure = \"everyone\"").is_err());
        let c: Config = toml::from_str("dedup_threshold_max = 1").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn thresholds_cover_the_range_uniformly() {
        let s = DisclosureSettings {
            mode: DisclosureMode::Threshold,
            threshold_max: 5,
        };
        let mut rng = SeededRandom::new(1);
        let mut seen = [0u32; 6];
        for _ in 0..4_000 {
            let t = draw_threshold(&s, &mut rng);
            assert!((2..=5).contains(&t), "{t}");
            seen[t as usize] += 1;
        }
        // 1,000 expected each; 4 standard deviations is about 110.
        for n in &seen[2..] {
            assert!((880..=1_120).contains(n), "{seen:?}");
        }
        struct Broken;
        impl Random for Broken {
            fn fill(&mut self, _: &mut [u8]) -> bool {
                false
            }
        }
        assert_eq!(draw_threshold(&s, &mut Broken), 5);
    }
}
