//! Serde for fixed-size byte arrays (digests, tokens, nonces) as a plain
//! run of N bytes, the same wire form as serde's own array impls.
//!
//! Why not serde's impls: they are generated per length with one
//! `next_element` call per byte, unrolled, which costs a few hundred bytes
//! of flash for every array type a terminal decodes. This visitor loops.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{Error, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Serializes `bytes` as a tuple of N `u8`.
pub fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut tuple = serializer.serialize_tuple(N)?;
    for b in bytes {
        tuple.serialize_element(b)?;
    }
    tuple.end()
}

/// Deserializes a tuple of N `u8`.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    struct Bytes<const N: usize>(PhantomData<[u8; N]>);

    impl<'de, const N: usize> Visitor<'de> for Bytes<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    deserializer.deserialize_tuple(N, Bytes::<N>(PhantomData))
}
