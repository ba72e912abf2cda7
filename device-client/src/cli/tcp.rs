//! Links over TCP.

use core::net::SocketAddr;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};

use super::io::StdLink;

/// Dials `host:port` afresh for every link.
pub(crate) struct TcpConnector {
    addr: String,
}

/// How long one read may wait: the drivers' timer resolution.
const READ_TIMEOUT: core::time::Duration = core::time::Duration::from_millis(50);
/// How long one write may wait before the link counts as lost.
pub(crate) const WRITE_PATIENCE: core::time::Duration = core::time::Duration::from_secs(30);
const CONNECT_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(5);

impl TcpConnector {
    pub fn new(addr: String) -> TcpConnector {
        TcpConnector { addr }
    }

    pub fn connect(&mut self) -> io::Result<StdLink> {
        let stream = self.socket()?;
        link_timeouts(&stream)?;
        Ok(StdLink::new(Box::new(stream), WRITE_PATIENCE))
    }

    /// A connected socket (the first address of the host that answers),
    /// without the link's timeouts: TLS handshakes on it first.
    pub fn socket(&mut self) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = self.addr.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for host");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The timeouts the drivers expect of a link's reads and writes.
pub(crate) fn link_timeouts(stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))
}
