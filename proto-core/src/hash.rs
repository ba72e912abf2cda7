//! SHA-1 digests and the proof of ownership.
//!
//! SHA-1 names content (it is what terminals announce and what the relay
//! verifies), but it is not trusted to make two files the same: identical
//! prefix collisions exist (SHAttered 2017, Shambles 2020). Instant upload
//! therefore links content only after a [proof of ownership](ProofHasher):
//! a digest over a fresh relay-chosen nonce followed by the whole file. The
//! nonce is drawn after both colliding files were made, so the collision's
//! chaining values no longer line up and the two proofs differ; and a party
//! that knows only the hash cannot compute the proof at all.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A SHA-1 digest (20 bytes, no length prefix on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sha1Digest(#[serde(with = "crate::fixed_bytes")] pub [u8; 20]);

impl Sha1Digest {
    /// SHA-1 of the empty input.
    pub const EMPTY: Sha1Digest = Sha1Digest([
        0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18,
        0x90, 0xaf, 0xd8, 0x07, 0x09,
    ]);

    /// The digest of `data` in one call.
    pub fn of(data: &[u8]) -> Sha1Digest {
        let mut h = Sha1Hasher::new();
        h.update(data);
        h.digest()
    }

    /// Parses 40 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Sha1Digest> {
        let bytes = text.as_bytes();
        if bytes.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Sha1Digest(out))
    }
}

impl fmt::Display for Sha1Digest {
    /// Lower-case hex, as `sha1sum` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1Digest({self})")
    }
}

/// The SHA-1 implementation behind [`Sha1Hasher`]: `sha1_smol` (small, for
/// MCUs) unless the `fast-sha1` feature picks the `sha1` crate, which uses
/// the CPU's SHA instructions where it has them. Both compute the same
/// digests: `tests::fips_vectors_in_any_split` runs under both (CI tests
/// the crate with and without the feature).
#[cfg(not(feature = "fast-sha1"))]
type Backend = sha1_smol::Sha1;
#[cfg(feature = "fast-sha1")]
type Backend = sha1::Sha1;

/// A streaming SHA-1, for callers that see a file in pieces.
#[derive(Clone, Default)]
pub struct Sha1Hasher(Backend);

impl fmt::Debug for Sha1Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha1Hasher")
    }
}

impl Sha1Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Sha1Hasher(Backend::default())
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        #[cfg(not(feature = "fast-sha1"))]
        self.0.update(data);
        #[cfg(feature = "fast-sha1")]
        sha1::Digest::update(&mut self.0, data);
    }

    /// The digest of everything fed so far.
    pub fn digest(&self) -> Sha1Digest {
        #[cfg(not(feature = "fast-sha1"))]
        let bytes = self.0.digest().bytes();
        #[cfg(feature = "fast-sha1")]
        let bytes = sha1::Digest::finalize(self.0.clone()).into();
        Sha1Digest(bytes)
    }
}

/// The relay's challenge nonce: 32 random bytes, fresh per challenge.
pub type Nonce = [u8; 32];

/// Domain separation, so a proof can never be confused with a content hash.
const PROOF_DOMAIN: &[u8] = b"pickup proof of ownership v1\0";

/// Computes a proof of ownership: `SHA-1(PROOF_DOMAIN ‖ nonce ‖ file)`.
///
/// `PROOF_DOMAIN` is the 29 bytes `"pickup proof of ownership v1"` and a NUL.
/// Both sides feed the same bytes; the relay compares the result with the
/// proof the client sent and links the content only on equality.
#[derive(Clone, Debug)]
pub struct ProofHasher(Sha1Hasher);

impl ProofHasher {
    /// Starts a proof over `nonce`.
    pub fn new(nonce: &Nonce) -> Self {
        let mut h = Sha1Hasher::new();
        h.update(PROOF_DOMAIN);
        h.update(nonce);
        ProofHasher(h)
    }

    /// Feeds the next bytes of the file, in order.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The proof.
    pub fn finish(&self) -> Sha1Digest {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn known_digests() {
        assert_eq!(Sha1Digest::of(b""), Sha1Digest::EMPTY);
        assert_eq!(
            Sha1Digest::of(b"abc").to_string(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let parsed = Sha1Digest::from_hex("A9993E364706816ABA3E25717850C26C9CD0D89D").unwrap();
        assert_eq!(parsed, Sha1Digest::of(b"abc"));
        assert!(Sha1Digest::from_hex("a9993e").is_none());
        assert!(Sha1Digest::from_hex(&"g".repeat(40)).is_none());
    }

    /// FIPS 180 vectors, fed whole and in uneven pieces, with a digest taken
    /// midway (which must not disturb the stream).
    #[test]
    fn fips_vectors_in_any_split() {
        let million_a = std::vec![b'a'; 1_000_000];
        let vectors: [(&[u8], &str); 3] = [
            (b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
            ),
            (&million_a, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
        ];
        for (input, hex) in vectors {
            let want = Sha1Digest::from_hex(hex).unwrap();
            assert_eq!(Sha1Digest::of(input), want);
            for piece in [1, 3, 63, 64, 65, 4096] {
                let mut h = Sha1Hasher::new();
                for (i, chunk) in input.chunks(piece).enumerate() {
                    h.update(chunk);
                    if i == 1 {
                        let _midway = h.digest();
                    }
                }
                assert_eq!(h.digest(), want, "{hex} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn proof_vector() {
        let nonce = [7u8; 32];
        let mut p = ProofHasher::new(&nonce);
        p.update(b"hello ");
        p.update(b"world");
        let mut all = std::vec::Vec::new();
        all.extend_from_slice(PROOF_DOMAIN);
        all.extend_from_slice(&nonce);
        all.extend_from_slice(b"hello world");
        assert_eq!(p.finish(), Sha1Digest::of(&all));
        assert_ne!(p.finish(), Sha1Digest::of(b"hello world"));
    }

    /// The SHAttered PDFs share a SHA-1 but never a proof.
    #[test]
    fn collision_pairs_never_share_a_proof() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sha1-collisions/");
        for (a, b) in [
            ("shattered-1.pdf", "shattered-2.pdf"),
            ("sha-mbles-1.bin", "sha-mbles-2.bin"),
        ] {
            let a = std::fs::read(std::format!("{dir}{a}")).unwrap();
            let b = std::fs::read(std::format!("{dir}{b}")).unwrap();
            assert_ne!(a, b);
            assert_eq!(Sha1Digest::of(&a), Sha1Digest::of(&b));
            for seed in 0..4u8 {
                let nonce = [seed; 32];
                let mut pa = ProofHasher::new(&nonce);
                pa.update(&a);
                let mut pb = ProofHasher::new(&nonce);
                pb.update(&b);
                assert_ne!(pa.finish(), pb.finish());
            }
        }
    }
}
