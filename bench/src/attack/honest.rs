//! The honest terminal: a 32 MiB upload and its download from 127.0.0.1
//! through the bench's own client (the same machines as `pickup`), bounded
//! in time so that a relay that keeps it waiting gives a figure, not a hang.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::connection::Conn;
use super::HONEST;
use crate::client;

/// A link that fails every read and write once its deadline has passed.
/// The client's own timers would retry a `Busy` relay for ever.
struct Bounded {
    inner: TcpStream,
    deadline: Instant,
    limit: Duration,
}

impl Bounded {
    /// The time left, or the error that ends the transfer.
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!(
                "not done within {} s",
                self.limit.as_secs()
            )));
        }
        Ok(left)
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The link's own 20 ms read timeout bounds the wait past it.
        self.left()?;
        self.inner.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A write the relay does not take must not outlast the deadline.
        let left = self.left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the honest terminal got in one send + get.
pub struct Honest {
    /// Whether the upload and the download both finished and verified.
    pub ok: bool,
    /// Upload + download, or the time until it failed.
    pub secs: f64,
    upload_secs: f64,
    download_secs: f64,
    /// Why it failed.
    error: Option<String>,
    /// After a failure: what the relay answers this address's new batch.
    probe: Option<String>,
}

impl Honest {
    /// As the report has it.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok,
            "secs": self.secs,
            "upload_secs": self.upload_secs,
            "download_secs": self.download_secs,
            "error": self.error,
            "probe": self.probe,
        })
    }
}

fn link(relay: SocketAddr, deadline: Instant, limit: Duration) -> io::Result<Bounded> {
    Ok(Bounded {
        inner: crate::tcp_link(relay)?,
        deadline,
        limit,
    })
}

/// Uploads `len` fresh random bytes (from `seed`, so never held content)
/// and downloads them again, within `limit` in all.
pub fn send_get(relay: SocketAddr, len: usize, seed: u64, limit: Duration) -> Honest {
    let data = crate::random_bytes(len, seed);
    let sha1 = crate::sha1_fast(&data);
    let start = Instant::now();
    let deadline = start + limit;
    let up = link(relay, deadline, limit).and_then(|mut l| {
        client::upload(
            &mut l,
            crate::tcp_upload_config(),
            &["honest.bin".into()],
            std::slice::from_ref(&data),
            &[sha1],
        )
    });
    let upload_secs = start.elapsed().as_secs_f64();
    let got = up.and_then(|up| {
        let mut l = link(relay, deadline, limit)?;
        client::download(&mut l, crate::tcp_download_config(), up.code)
    });
    let secs = start.elapsed().as_secs_f64();
    let error = match got {
        Ok(n) if n == len as u64 => None,
        Ok(n) => Some(format!("downloaded {n} of {len} bytes")),
        Err(e) => Some(e.to_string()),
    };
    let probe = error.as_ref().map(|_| probe(relay));
    Honest {
        ok: error.is_none(),
        secs,
        upload_secs,
        download_secs: secs - upload_secs,
        error,
        probe,
    }
}

/// Announces a one-byte batch from the honest address and says what the
/// relay answers: the reason a stalled upload was kept waiting (the
/// client retries `Busy` and `RateLimited` without a word).
fn probe(relay: SocketAddr) -> String {
    let answer = Conn::open(relay, HONEST).and_then(|mut c| {
        c.announce(&[("probe.bin".into(), 1, crate::sha1_fast(b"p"))])?;
        c.grant_and_plan()
    });
    match answer {
        Ok(Ok(_)) => "a new batch is granted".into(),
        Ok(Err(code)) => format!("a new batch is refused: {code:?}"),
        Err(e) => format!("no answer: {e}"),
    }
}

/// `runs` send + gets one after another (fresh content each, from `seed`
/// on), stopping at the first failure: the figure is the median, because
/// one transfer of 32 MiB is over in a fraction of a second and this
/// machine's speed wanders.
pub fn repeat(relay: SocketAddr, len: usize, seed: u64, limit: Duration, runs: usize) -> Value {
    let mut all = Vec::new();
    for i in 0..runs {
        let h = send_get(relay, len, seed + 1000 * i as u64, limit);
        let failed = !h.ok;
        all.push(h);
        if failed {
            break;
        }
    }
    let failure = all.iter().find(|h| !h.ok);
    let mut secs: Vec<f64> = all.iter().map(|h| h.secs).collect();
    secs.sort_by(f64::total_cmp);
    let median = match failure {
        // A failure's time is how long it took to fail.
        Some(f) => f.secs,
        None => secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN),
    };
    json!({
        "ok": failure.is_none(),
        "secs": median,
        "error": failure.and_then(|f| f.error.clone()),
        "probe": failure.and_then(|f| f.probe.clone()),
        "runs": all.iter().map(Honest::to_json).collect::<Vec<_>>(),
    })
}
