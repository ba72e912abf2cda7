//! Links over a serial port (a UART, a USB CDC device, a pseudo-terminal).

use std::io;

use super::io::StdLink;

/// Opens the port afresh for every link, so a device that was unplugged and
/// plugged back in is picked up again.
pub(crate) struct SerialConnector {
    path: String,
    baud: u32,
}

/// How long one read may wait: the drivers' timer resolution.
const READ_TIMEOUT: core::time::Duration = core::time::Duration::from_millis(50);
/// How long one write may wait before the link counts as lost.
const WRITE_PATIENCE: core::time::Duration = core::time::Duration::from_secs(30);

impl SerialConnector {
    pub fn new(path: String, baud: u32) -> SerialConnector {
        SerialConnector { path, baud }
    }

    pub fn connect(&mut self) -> io::Result<StdLink> {
        let port = serialport::new(&self.path, self.baud)
            .timeout(READ_TIMEOUT)
            .open()
            .map_err(io::Error::from)?;
        Ok(StdLink::new(Box::new(port), WRITE_PATIENCE))
    }
}
