//! Binding the relay's TCP listeners (wire, TLS, HTTP, metrics) with a
//! backlog of its own.
//!
//! `tokio::net::TcpListener::bind` asks the kernel for a queue of 128
//! connections, the standard library's number. A fleet of terminals that
//! wakes at once overflows it: Linux then drops the SYNs past the queue and
//! each of those terminals waits for its SYN to be sent again, a second
//! later. In `pickup-bench`'s 1,000 concurrent uploads this one-second wait
//! was the p99 (bench/RESULTS.md, session 21).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections queued for each listener by default before the relay
/// accepts them ([`crate::config::Limits::listen_backlog`]); Linux caps it
/// at `net.core.somaxconn` (4,096 by default since 5.4).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// A listener on `addr` whose kernel queue holds `backlog` connections
/// not yet accepted (at most what the kernel allows). Like
/// `TcpListener::bind`, it sets `SO_REUSEADDR`, so a restarted relay binds
/// its port while the old one's connections are in `TIME_WAIT`.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The kernel's cap on any listener's queue.
    fn somaxconn() -> u32 {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(128)
    }

    /// More connections than the standard library's backlog of 128 reach
    /// the queue of a listener that accepts none of them. (Bound with a
    /// backlog of 128, the connects past the queue never complete: the
    /// kernel drops each SYN sent again too while nothing is accepted, and
    /// the deadline ends the test.)
    #[tokio::test]
    async fn connections_past_128_are_queued_before_any_accept() {
        let n = somaxconn().min(300).saturating_sub(8) as usize;
        let listener = bind("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..n {
            connects.spawn(tokio::net::TcpStream::connect(addr));
        }
        let mut streams = Vec::with_capacity(n);
        // Not a speed check: a dropped connect never completes while
        // nothing is accepted, so any deadline tells the two apart.
        let all = async {
            while let Some(done) = connects.join_next().await {
                streams.push(done.expect("connect task").expect("connect"));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every connect completes before anything is accepted");
        assert_eq!(streams.len(), n);
        drop(listener);
    }

    #[tokio::test]
    async fn an_ipv6_listener_binds_where_the_host_has_ipv6() {
        match bind("[::1]:0".parse().unwrap(), 16) {
            Ok(l) => assert!(l.local_addr().unwrap().is_ipv6()),
            // A host without IPv6 says so; nothing else may fail.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}"),
        }
    }
}
