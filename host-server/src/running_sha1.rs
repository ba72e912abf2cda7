//! A SHA-1 whose state can be saved with a partial upload and taken up
//! again, so resuming an upload does not re-hash the prefix already stored.
//!
//! The `sha1` crate's hashers keep their chaining value private; its block
//! function ([`sha1::compress`]) is public. This type keeps the chaining
//! value itself, feeds whole 64-byte blocks to that function (with the
//! CPU's SHA instructions where it has them) and does the final padding of
//! FIPS 180-4 §5.1.1. Its state after a whole number of blocks, a
//! [`Midstate`], is 28 bytes: the relay stores it beside a partial upload's
//! durable offset.

use pickup_proto::Sha1Digest;
use sha1::digest::generic_array::GenericArray;

/// SHA-1's block size.
const BLOCK: usize = 64;

/// The initial chaining value (FIPS 180-4 §5.3.1).
const INITIAL: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// The state of a SHA-1 after the first `len` bytes of its input, `len` a
/// multiple of 64: enough to go on hashing from byte `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Midstate {
    /// The chaining value.
    pub words: [u32; 5],
    /// Bytes hashed, a multiple of 64.
    pub len: u64,
}

impl Midstate {
    /// The state before any byte.
    pub const START: Midstate = Midstate {
        words: INITIAL,
        len: 0,
    };

    /// The 28-byte stored form: the five words, then `len`, big-endian.
    pub fn to_bytes(&self) -> [u8; 28] {
        let mut out = [0u8; 28];
        for (dst, w) in out.chunks_exact_mut(4).zip(self.words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        out[20..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads the stored form; `None` if it is not 28 bytes or `len` is
    /// not a multiple of 64 (a damaged row: the prefix is re-hashed).
    pub fn from_bytes(bytes: &[u8]) -> Option<Midstate> {
        let bytes: &[u8; 28] = bytes.try_into().ok()?;
        let mut words = [0u32; 5];
        for (w, src) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_be_bytes(src.try_into().ok()?);
        }
        let len = u64::from_be_bytes(bytes[20..].try_into().ok()?);
        (len % BLOCK as u64 == 0).then_some(Midstate { words, len })
    }
}

/// A streaming SHA-1 that can report its [`Midstate`].
#[derive(Clone)]
pub struct RunningSha1 {
    words: [u32; 5],
    /// Bytes fed to the block function.
    blocks_len: u64,
    /// The bytes of an unfinished block.
    tail: [u8; BLOCK],
    tail_len: usize,
}

impl core::fmt::Debug for RunningSha1 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RunningSha1({} bytes)", self.len())
    }
}

impl Default for RunningSha1 {
    fn default() -> Self {
        RunningSha1::from_midstate(Midstate::START)
    }
}

impl RunningSha1 {
    /// A fresh hasher.
    pub fn new() -> Self {
        RunningSha1::default()
    }

    /// A hasher that goes on from `m`: it has seen `m.len` bytes.
    pub fn from_midstate(m: Midstate) -> Self {
        RunningSha1 {
            words: m.words,
            blocks_len: m.len,
            tail: [0; BLOCK],
            tail_len: 0,
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.blocks_len + self.tail_len as u64
    }

    /// Whether no byte was fed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state after the whole blocks fed so far (the bytes of an
    /// unfinished block are not in it: hash them again from `len`).
    pub fn midstate(&self) -> Midstate {
        Midstate {
            words: self.words,
            len: self.blocks_len,
        }
    }

    fn compress(&mut self, block: &[u8]) {
        sha1::compress(
            &mut self.words,
            core::slice::from_ref(GenericArray::from_slice(block)),
        );
        self.blocks_len += BLOCK as u64;
    }

    /// Feeds more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        if self.tail_len > 0 {
            let take = (BLOCK - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < BLOCK {
                return;
            }
            let block = self.tail;
            self.compress(&block);
            self.tail_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            self.compress(block);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The digest of everything fed so far.
    pub fn digest(&self) -> Sha1Digest {
        let bits = self.len().wrapping_mul(8);
        let mut h = self.clone();
        // 0x80, zeros up to 56 mod 64, then the length in bits.
        let pad_len = if self.tail_len < 56 {
            56 - self.tail_len
        } else {
            120 - self.tail_len
        };
        let mut pad = [0u8; 128];
        pad[0] = 0x80;
        h.update(&pad[..pad_len]);
        h.update(&bits.to_be_bytes());
        debug_assert_eq!(h.tail_len, 0);
        let mut out = [0u8; 20];
        for (dst, w) in out.chunks_exact_mut(4).zip(h.words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        Sha1Digest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickup_proto::Sha1Digest;
    fn sha1(data: &[u8]) -> Sha1Digest {
        Sha1Digest::of(data)
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn digests_match_the_reference_at_every_length_around_the_padding_edges() {
        for n in (0..200).chain([1000, 4095, 4096, 4097, 65_536 + 55]) {
            let data = bytes(n);
            let mut h = RunningSha1::default();
            h.update(&data);
            assert_eq!(h.digest(), sha1(&data), "length {n}");
        }
    }

    #[test]
    fn any_split_gives_the_same_digest() {
        let data = bytes(1000);
        for split in [1, 7, 63, 64, 65, 129, 999] {
            let mut h = RunningSha1::default();
            for piece in data.chunks(split) {
                h.update(piece);
            }
            assert_eq!(h.digest(), sha1(&data), "pieces of {split}");
        }
    }

    #[test]
    fn a_saved_midstate_goes_on_to_the_same_digest() {
        let data = bytes(10_000);
        let mut h = RunningSha1::default();
        h.update(&data[..3_001]);
        let m = h.midstate();
        assert_eq!(m.len, 2_944);
        let stored = Midstate::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(stored, m);
        let mut again = RunningSha1::from_midstate(stored);
        again.update(&data[m.len as usize..]);
        assert_eq!(again.digest(), sha1(&data));
    }

    #[test]
    fn damaged_stored_states_are_refused() {
        let mut b = Midstate::START.to_bytes();
        assert_eq!(Midstate::from_bytes(&b), Some(Midstate::START));
        b[27] = 1;
        assert_eq!(Midstate::from_bytes(&b), None);
        assert_eq!(Midstate::from_bytes(&b[..27]), None);
    }
}
