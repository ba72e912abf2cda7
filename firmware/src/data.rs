//! The batch the example uploads: two files kept in flash.
//!
//! The bytes are computed at compile time from a fixed generator, so a test
//! on the host can compute them too: byte `i` of [`PATTERN`] is the top byte
//! of the `i+1`-th output of the xorshift32 generator (shifts 13, 17, 5)
//! seeded with [`PATTERN_SEED`].

/// Size of the large file: 48 KiB.
pub const PATTERN_LEN: usize = 48 * 1024;

/// Seed of the generator behind [`PATTERN`].
pub const PATTERN_SEED: u32 = 0x9E37_79B9;

/// The large file.
pub static PATTERN: [u8; PATTERN_LEN] = pattern();

/// The one-byte file.
pub static ONE_BYTE: [u8; 1] = *b"!";

/// Names under which the files are announced, in index order.
pub const NAMES: [&str; 2] = ["pattern-48k.bin", "one-byte.txt"];

const fn pattern() -> [u8; PATTERN_LEN] {
    let mut out = [0u8; PATTERN_LEN];
    let mut x = PATTERN_SEED;
    let mut i = 0;
    while i < PATTERN_LEN {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out[i] = (x >> 24) as u8;
        i += 1;
    }
    out
}
