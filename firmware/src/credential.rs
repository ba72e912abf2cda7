//! Who this terminal is to the relay (feature `auth`): the name and device
//! key the relay's operator registered for it (`pickup-relay terminal add`
//! prints the key). With them every link authenticates by challenge and
//! response before the transfer; the key itself never crosses the link.
//!
//! A constant in flash is for the example only. A real device keeps its
//! key in protected storage, readable by its firmware and nothing else:
//! a one-time-programmable or read-protected flash page, a secure element,
//! or a key slot of the MCU's crypto block, provisioned once per device.
//! Anyone who reads the key out can pose as the terminal until the
//! operator removes it.

use pickup_proto::identity::{Credential, DeviceKey, TerminalIdentity};

/// The terminal's registered name.
const NAME: &str = "qemu-lm3s6965";

/// Its 128-bit device key (example value: register the terminal with it).
const KEY: DeviceKey = DeviceKey([
    0x3c, 0x1f, 0x8a, 0x52, 0xd0, 0x77, 0x0e, 0xb4, 0x91, 0x2d, 0x6a, 0xc3, 0x05, 0xe8, 0x4f, 0x19,
]);

/// The credential both drivers authenticate with.
pub fn terminal() -> Credential<'static> {
    Credential::Terminal(identity())
}

/// The terminal's identity: what a notice listener authenticates as.
pub fn identity() -> TerminalIdentity<'static> {
    TerminalIdentity {
        name: NAME,
        key: KEY,
    }
}
