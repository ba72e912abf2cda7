//! Pickup codes and their text form.
//!
//! A code is `len` symbols of Crockford base32 (5 bits each), shown in groups
//! separated by hyphens. Groups hold four symbols where the length divides
//! evenly (`7KQ4-M2XD-9RTA`); otherwise the length is split into groups of
//! three to five, longer groups first, so no group is a lone symbol: the
//! default 13 reads `8M80X-5J1X-XP84`, 14 reads `8M80-X5J1-XXP-84Q`.
//! Parsing is forgiving in the ways humans are sloppy and strict about
//! everything else: case is ignored, `O` reads as `0`, `I` and `L` read as
//! `1` (Crockford's own confusables), hyphens and whitespace anywhere are
//! skipped, so any grouping parses back; any other character, or a length
//! outside [`Code::MIN_LEN`]`..=`[`Code::MAX_LEN`], is an error.
//!
//! On the wire a code is its length (one byte) followed by its value as a
//! postcard varint (`u128`), so the relay's choice of length travels with it.

use core::fmt;
use serde::{Deserialize, Serialize};

/// The 32 symbols, in value order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Symbols per group in the display form, when the length allows.
const GROUP: usize = 4;

/// A pickup code: the read-only key to a batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "WireCode", into = "WireCode")]
pub struct Code {
    len: u8,
    value: u128,
}

/// Why a code's text (or wire form) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseCodeError {
    /// Fewer than [`Code::MIN_LEN`] symbols.
    TooShort,
    /// More than [`Code::MAX_LEN`] symbols.
    TooLong,
    /// A character that is neither a Crockford symbol nor a separator
    /// (hyphen or whitespace).
    InvalidChar(char),
    /// The value does not fit in the stated length (wire form only).
    ValueOutOfRange,
}

impl fmt::Display for ParseCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseCodeError::TooShort => {
                write!(f, "too short (fewer than {} symbols)", Code::MIN_LEN)
            }
            ParseCodeError::TooLong => write!(f, "too long (more than {} symbols)", Code::MAX_LEN),
            ParseCodeError::InvalidChar(c) => write!(f, "invalid symbol {c:?}"),
            ParseCodeError::ValueOutOfRange => f.write_str("code value does not fit its length"),
        }
    }
}

impl core::error::Error for ParseCodeError {}

impl Code {
    /// The shortest code accepted (20 bits); relays choose far longer ones.
    pub const MIN_LEN: usize = 4;
    /// The longest code (120 bits), bounded so the value fits a `u128`.
    pub const MAX_LEN: usize = 24;
    /// Longest display form: symbols plus one hyphen between groups.
    pub const MAX_TEXT_LEN: usize = Self::MAX_LEN + Self::MAX_LEN / GROUP;
    /// The length a relay with default settings issues (README.md, "How
    /// hard is a code to guess?"). Relays may choose another, so a client
    /// only uses it to explain an unknown code of another length.
    pub const DEFAULT_LEN: usize = 13;

    /// A code of `len` symbols (clamped to the allowed range) from random
    /// bytes, which the caller draws from a CSPRNG.
    pub fn from_random(random: [u8; 16], len: usize) -> Code {
        let len = len.clamp(Self::MIN_LEN, Self::MAX_LEN);
        let value = u128::from_le_bytes(random) & Self::mask(len);
        Code {
            len: len as u8,
            value,
        }
    }

    /// A code from its length and value, checking that the value fits.
    pub fn from_parts(len: usize, value: u128) -> Result<Code, ParseCodeError> {
        if len < Self::MIN_LEN {
            return Err(ParseCodeError::TooShort);
        }
        if len > Self::MAX_LEN {
            return Err(ParseCodeError::TooLong);
        }
        if value & !Self::mask(len) != 0 {
            return Err(ParseCodeError::ValueOutOfRange);
        }
        Ok(Code {
            len: len as u8,
            value,
        })
    }

    fn mask(len: usize) -> u128 {
        // len <= 24 so 5 * len <= 120 < 128: the shift never overflows.
        (1u128 << (5 * len)) - 1
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a code has at least [`Code::MIN_LEN`] symbols.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The numeric value (5 bits per symbol, first symbol most significant).
    pub fn value(&self) -> u128 {
        self.value
    }

    /// Entropy in bits.
    pub fn bits(&self) -> u32 {
        5 * u32::from(self.len)
    }

    /// Parses the text form (see the module docs for what is accepted).
    pub fn parse(text: &str) -> Result<Code, ParseCodeError> {
        let mut len = 0usize;
        let mut value = 0u128;
        for c in text.chars() {
            // People copy codes with spaces, tabs or line breaks in them.
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let symbol = symbol_value(c).ok_or(ParseCodeError::InvalidChar(c))?;
            len += 1;
            if len > Self::MAX_LEN {
                return Err(ParseCodeError::TooLong);
            }
            value = (value << 5) | u128::from(symbol);
        }
        if len < Self::MIN_LEN {
            return Err(ParseCodeError::TooShort);
        }
        Ok(Code {
            len: len as u8,
            value,
        })
    }

    /// Whether the display form puts a hyphen before symbol `i` (from 0).
    ///
    /// Groups are four symbols where that divides the length evenly or
    /// leaves at least three over; otherwise the length is cut into fewer
    /// groups of three to five, the longer ones first, so that no group is a
    /// dangling symbol or two. Parsing accepts any grouping.
    pub fn hyphen_before(&self, i: usize) -> bool {
        let len = self.len();
        // Rounds len / 4 to nearest, so group sizes stay within 3..=5.
        let groups = ((len + GROUP / 2) / GROUP).max(1);
        let (base, longer) = (len / groups, len % groups);
        if i == 0 || i >= len {
            return false;
        }
        // The first `longer` groups have base + 1 symbols.
        let head = longer * (base + 1);
        if i <= head {
            i % (base + 1) == 0
        } else {
            (i - head) % base == 0
        }
    }

    /// The canonical symbols without hyphens, into `out`; returns them as text.
    pub fn write_symbols<'b>(&self, out: &'b mut [u8; Self::MAX_LEN]) -> &'b str {
        let len = self.len();
        for (i, slot) in out.iter_mut().take(len).enumerate() {
            let shift = 5 * (len - 1 - i);
            *slot = ALPHABET[((self.value >> shift) & 0x1f) as usize];
        }
        // Every byte written above comes from ALPHABET, which is ASCII.
        core::str::from_utf8(&out[..len]).unwrap_or("")
    }
}

fn symbol_value(c: char) -> Option<u8> {
    let upper = c.to_ascii_uppercase();
    let c = match upper {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    if !c.is_ascii() {
        return None;
    }
    ALPHABET.iter().position(|&a| a == c as u8).map(|p| p as u8)
}

impl fmt::Display for Code {
    /// The grouped form, e.g. `7KQ4-M2XD-9RTA` (see [`Code::hyphen_before`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; Self::MAX_LEN];
        let symbols = self.write_symbols(&mut buf);
        let mut start = 0;
        for end in 1..=symbols.len() {
            if end == symbols.len() || self.hyphen_before(end) {
                if start > 0 {
                    f.write_str("-")?;
                }
                f.write_str(&symbols[start..end])?;
                start = end;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Code {
    fn format(&self, f: defmt::Formatter) {
        let mut buf = [0u8; Self::MAX_LEN];
        defmt::write!(f, "{=str}", self.write_symbols(&mut buf))
    }
}

impl core::str::FromStr for Code {
    type Err = ParseCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Code::parse(s)
    }
}

/// The wire form: length, then value.
#[derive(Serialize, Deserialize)]
struct WireCode {
    len: u8,
    value: u128,
}

impl TryFrom<WireCode> for Code {
    type Error = ParseCodeError;
    fn try_from(w: WireCode) -> Result<Self, Self::Error> {
        Code::from_parts(usize::from(w.len), w.value)
    }
}

impl From<Code> for WireCode {
    fn from(c: Code) -> Self {
        WireCode {
            len: c.len,
            value: c.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn display_groups_and_parses_back() {
        let code = Code::from_parts(13, 0x0123_4567_89ab_cdef).unwrap();
        let text = code.to_string();
        assert_eq!(text, "028T5-CY4T-QKFF");
        assert_eq!(Code::parse(&text).unwrap(), code);
        let code = Code::from_parts(12, (1u128 << 60) - 1).unwrap();
        assert_eq!(code.to_string(), "ZZZZ-ZZZZ-ZZZZ");
    }

    #[test]
    fn parsing_forgives_case_lookalikes_and_hyphens() {
        let canonical = Code::parse("0111-ABCD").unwrap();
        for text in [
            "oIlL-abcd",
            "O1L1ABCD",
            "0-1-1-1-a-b-c-d",
            "--0111abcd--",
            "oiLi-AbCd",
            "0111 ABCD",
            " 01 11\tab cd\n",
            "011-1AB-CD",
        ] {
            assert_eq!(Code::parse(text).unwrap(), canonical, "{text}");
        }
    }

    #[test]
    fn parsing_rejects_everything_else() {
        assert_eq!(Code::parse("ABC"), Err(ParseCodeError::TooShort));
        assert_eq!(Code::parse("----"), Err(ParseCodeError::TooShort));
        assert_eq!(Code::parse(""), Err(ParseCodeError::TooShort));
        assert_eq!(Code::parse(&"A".repeat(25)), Err(ParseCodeError::TooLong));
        assert_eq!(Code::parse("ABCU"), Err(ParseCodeError::InvalidChar('U')));
        assert_eq!(Code::parse("ABCD_"), Err(ParseCodeError::InvalidChar('_')));
        assert_eq!(Code::parse("ABÇD"), Err(ParseCodeError::InvalidChar('Ç')));
        assert_eq!(
            Code::parse("AB\u{0}D"),
            Err(ParseCodeError::InvalidChar('\u{0}'))
        );
        assert_eq!(
            Code::parse("ＡＢＣＤ"),
            Err(ParseCodeError::InvalidChar('Ａ'))
        );
    }

    #[test]
    fn groups_never_leave_a_dangling_symbol() {
        let shapes = [
            (4, "ZZZZ"),
            (5, "ZZZZZ"),
            (6, "ZZZ-ZZZ"),
            (7, "ZZZZ-ZZZ"),
            (9, "ZZZZZ-ZZZZ"),
            (12, "ZZZZ-ZZZZ-ZZZZ"),
            (13, "ZZZZZ-ZZZZ-ZZZZ"),
            (14, "ZZZZ-ZZZZ-ZZZ-ZZZ"),
            (15, "ZZZZ-ZZZZ-ZZZZ-ZZZ"),
            (17, "ZZZZZ-ZZZZ-ZZZZ-ZZZZ"),
            (24, "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"),
        ];
        for (len, text) in shapes {
            let code = Code::from_parts(len, Code::mask(len)).unwrap();
            assert_eq!(code.to_string(), text, "length {len}");
        }
        for len in Code::MIN_LEN..=Code::MAX_LEN {
            let code = Code::from_random([0xa5; 16], len);
            let text = code.to_string();
            assert!(text.len() < Code::MAX_TEXT_LEN, "{text}");
            for group in text.split('-') {
                assert!((3..=5).contains(&group.len()) || len < 6, "{text}");
            }
            assert_eq!(Code::parse(&text).unwrap(), code);
            // Any other grouping, spaces included, parses back too.
            let spaced: std::string::String = text
                .chars()
                .filter(|&c| c != '-')
                .enumerate()
                .flat_map(|(i, c)| [if i % 3 == 0 { ' ' } else { '-' }, c])
                .collect();
            assert_eq!(Code::parse(&spaced).unwrap(), code, "{spaced}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            ParseCodeError::TooShort.to_string(),
            "too short (fewer than 4 symbols)"
        );
        assert_eq!(
            ParseCodeError::TooLong.to_string(),
            "too long (more than 24 symbols)"
        );
        assert_eq!(
            ParseCodeError::InvalidChar('U').to_string(),
            "invalid symbol 'U'"
        );
    }

    #[test]
    fn max_length_round_trips() {
        let code = Code::from_random([0xff; 16], Code::MAX_LEN);
        assert_eq!(code.len(), 24);
        assert_eq!(code.bits(), 120);
        assert_eq!(Code::parse(&code.to_string()).unwrap(), code);
        assert_eq!(code.to_string().len(), Code::MAX_TEXT_LEN - 1);
    }

    #[test]
    fn from_random_clamps_length_and_masks_value() {
        let code = Code::from_random([0xff; 16], 2);
        assert_eq!(code.len(), Code::MIN_LEN);
        assert_eq!(code.value(), (1 << 20) - 1);
    }

    #[test]
    fn wire_form_is_checked() {
        let code = Code::parse("7KQ4-M2XD-9RTA").unwrap();
        let bytes = postcard::to_allocvec(&code).unwrap();
        assert_eq!(postcard::from_bytes::<Code>(&bytes).unwrap(), code);
        // A value wider than the stated length is refused.
        let bad = postcard::to_allocvec(&WireCode {
            len: 4,
            value: 1 << 20,
        })
        .unwrap();
        assert!(postcard::from_bytes::<Code>(&bad).is_err());
        let bad = postcard::to_allocvec(&WireCode { len: 30, value: 1 }).unwrap();
        assert!(postcard::from_bytes::<Code>(&bad).is_err());
    }
}
