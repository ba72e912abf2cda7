//! The kind byte of a frame, and the kinds this version knows.

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[allow(missing_docs)] // each variant is documented on its message type
pub enum Kind {
    Hello = 0x01,
    Welcome = 0x02,
    Keepalive = 0x03,
    Goodbye = 0x04,
    Error = 0x05,
    BatchOpen = 0x10,
    FileAnnounce = 0x11,
    Grant = 0x12,
    FilePlan = 0x13,
    Proof = 0x14,
    Data = 0x15,
    Ack = 0x16,
    Rewind = 0x17,
    FileVerified = 0x18,
    FileRejected = 0x19,
    BatchComplete = 0x1A,
    Resume = 0x1B,
    Join = 0x1C,
    FileAttrs = 0x1D,
    Fetch = 0x20,
    Manifest = 0x21,
    ManifestEntry = 0x22,
    Read = 0x23,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 23] = [
        Kind::Hello,
        Kind::Welcome,
        Kind::Keepalive,
        Kind::Goodbye,
        Kind::Error,
        Kind::BatchOpen,
        Kind::FileAnnounce,
        Kind::Grant,
        Kind::FilePlan,
        Kind::Proof,
        Kind::Data,
        Kind::Ack,
        Kind::Rewind,
        Kind::FileVerified,
        Kind::FileRejected,
        Kind::BatchComplete,
        Kind::Resume,
        Kind::Join,
        Kind::FileAttrs,
        Kind::Fetch,
        Kind::Manifest,
        Kind::ManifestEntry,
        Kind::Read,
    ];

    /// The kind for a byte, if this version knows it.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == byte)
    }
}
