//! Pickup codes and resume tokens on the relay: drawing them, hashing them
//! for lookup, and choosing a code length that resists guessing.
//!
//! # How long a code must be
//!
//! An attacker who wants any live batch guesses codes. Every failed lookup
//! spends a token of the relay-wide bucket ([`crate::rate_limit`]), so in a
//! horizon of `T` seconds at most `G = burst + rate * T` guesses fail (a
//! guess that succeeds has already found a batch). With at most `L` live
//! batches among `32^len` codes, each guess hits with probability at most
//! `L / 32^len`, and by the union bound
//!
//! ```text
//!   P(some guess hits within T) <= G * L / 32^len
//! ```
//!
//! [`guess_bound`] computes that for `T` = one year and [`min_code_len`]
//! picks the shortest length that keeps it below [`TARGET_GUESS_BOUND`].

use pickup_proto::message::ResumeToken;
use pickup_proto::Code;
use sha2::{Digest, Sha256};

use crate::random::Random;
use crate::store::{LookupKey, OwnerId};

/// The bound a default code length must meet: one in a million per year.
pub const TARGET_GUESS_BOUND: f64 = 1e-6;

/// The guessing horizon: a Julian year, in seconds.
pub const YEAR_SECS: f64 = 365.25 * 24.0 * 3600.0;

/// The inputs of the guessing bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuessInputs {
    /// Failed lookups the whole relay allows per second (sustained).
    pub global_rate_per_sec: f64,
    /// Failed lookups the relay allows at once (bucket size).
    pub global_burst: u32,
    /// Most batches alive at once.
    pub max_live_batches: u64,
}

impl GuessInputs {
    /// Most failed guesses within one year.
    pub fn guesses_per_year(&self) -> f64 {
        f64::from(self.global_burst) + self.global_rate_per_sec.max(0.0) * YEAR_SECS
    }
}

/// Upper bound on the probability that guessing finds any live code within
/// a year, for codes of `code_len` symbols (5 bits each).
pub fn guess_bound(code_len: usize, inputs: &GuessInputs) -> f64 {
    let space = 2f64.powi(5 * code_len as i32);
    (inputs.guesses_per_year() * inputs.max_live_batches as f64 / space).min(1.0)
}

/// The shortest code length whose [`guess_bound`] is below `target`, or
/// [`Code::MAX_LEN`] if none is.
pub fn min_code_len(inputs: &GuessInputs, target: f64) -> usize {
    (Code::MIN_LEN..=Code::MAX_LEN)
        .find(|&len| guess_bound(len, inputs) < target)
        .unwrap_or(Code::MAX_LEN)
}

fn key(domain: &[u8], bytes: &[u8]) -> LookupKey {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(bytes);
    LookupKey(h.finalize().into())
}

/// The lookup key of a code: SHA-256 over a domain tag, the length and the
/// value. Codes are found by this key, never compared as themselves, so a
/// lookup's timing says nothing about how close a guess came.
pub fn code_key(code: &Code) -> LookupKey {
    let mut bytes = [0u8; 17];
    bytes[0] = code.len() as u8;
    bytes[1..].copy_from_slice(&code.value().to_le_bytes());
    key(b"pickup code key v1\0", &bytes)
}

/// The lookup key of a resume token. Only this is stored.
pub fn token_key(token: &ResumeToken) -> LookupKey {
    key(b"pickup token key v1\0", &token.0)
}

/// The owner of the token family a batch starts (see
/// [`crate::disclosure`]): a key derived from the first token of the
/// family, under its own domain tag, so it never equals a lookup key and
/// says nothing about the token.
pub fn family_owner(token: &ResumeToken) -> OwnerId {
    OwnerId(key(b"pickup token family v1\0", &token.0).0)
}

/// The owner of every batch an authenticated user (or the user's
/// terminals) creates: one family per user, so content the user stored
/// before is linked at once from any session and address, after the
/// proof of ownership (PROTOCOL.md §7.1, §8).
pub fn user_owner(user: &str) -> OwnerId {
    OwnerId(key(b"pickup user family v1\0", user.as_bytes()).0)
}

/// A fresh code of `len` symbols, or `None` if the random source failed.
pub fn random_code(rng: &mut dyn Random, len: usize) -> Option<Code> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).then(|| Code::from_random(bytes, len))
}

/// A fresh resume token, or `None` if the random source failed.
pub fn random_token(rng: &mut dyn Random) -> Option<ResumeToken> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).then_some(ResumeToken(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    fn defaults() -> GuessInputs {
        let c = crate::config::Config::default();
        c.guess_inputs()
    }

    #[test]
    fn bound_by_hand() {
        let inputs = GuessInputs {
            global_rate_per_sec: 10.0,
            global_burst: 100,
            max_live_batches: 100_000,
        };
        // G = 100 + 10 * 31,557,600 = 315,576,100 guesses a year.
        assert_eq!(inputs.guesses_per_year(), 315_576_100.0);
        // 12 symbols = 60 bits: 315,576,100 * 1e5 / 2^60 = 2.74e-5, too weak.
        let p12 = guess_bound(12, &inputs);
        assert!((p12 - 2.737e-5).abs() < 1e-8, "{p12}");
        // 13 symbols = 65 bits: 8.55e-7, below one in a million.
        let p13 = guess_bound(13, &inputs);
        assert!((p13 - 8.554e-7).abs() < 1e-10, "{p13}");
        assert_eq!(min_code_len(&inputs, TARGET_GUESS_BOUND), 13);
    }

    #[test]
    fn default_length_meets_the_target_and_is_minimal() {
        let inputs = defaults();
        let len = min_code_len(&inputs, TARGET_GUESS_BOUND);
        assert!(guess_bound(len, &inputs) < TARGET_GUESS_BOUND);
        assert!(guess_bound(len - 1, &inputs) >= TARGET_GUESS_BOUND);
        assert_eq!(crate::config::Config::default().code_len(), len);
    }

    #[test]
    fn bound_grows_with_rate_and_live_batches() {
        let base = defaults();
        let faster = GuessInputs {
            global_rate_per_sec: base.global_rate_per_sec * 1000.0,
            ..base
        };
        assert!(
            min_code_len(&faster, TARGET_GUESS_BOUND) > min_code_len(&base, TARGET_GUESS_BOUND)
        );
        let bigger = GuessInputs {
            max_live_batches: base.max_live_batches * 1000,
            ..base
        };
        assert!(guess_bound(13, &bigger) > guess_bound(13, &base));
        assert_eq!(guess_bound(4, &bigger), 1.0);
    }

    #[test]
    fn keys_separate_codes_tokens_and_lengths() {
        let a = Code::from_parts(13, 5).unwrap();
        let b = Code::from_parts(14, 5).unwrap();
        assert_ne!(code_key(&a), code_key(&b));
        assert_eq!(
            code_key(&a),
            code_key(&Code::parse(&a.to_string()).unwrap())
        );
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&5u64.to_le_bytes());
        assert_ne!(token_key(&ResumeToken(t)).0, code_key(&a).0);
    }

    #[test]
    fn random_codes_have_the_length_asked_for() {
        let mut rng = SeededRandom::new(1);
        let a = random_code(&mut rng, 13).unwrap();
        let b = random_code(&mut rng, 13).unwrap();
        assert_eq!(a.len(), 13);
        assert_ne!(a, b);
    }
}
