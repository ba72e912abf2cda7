//! Rounds of the wire transfers, each timed between two SHA-1 passes.
//!
//! Issue 19's targets are ratios against one core's SHA-1 rate, and this
//! machine's speed wanders by a quarter from one second to the next
//! (RESULTS.md): one 1 GiB upload set against the best of three SHA-1
//! passes made earlier says as much about the host as about Pickup. So a
//! round hashes the same bytes again right before and right after each
//! transfer, and sets the transfer against the mean of those two passes;
//! the bench reports the median round beside the lowest and the highest.

use std::io;
use std::time::Instant;

use pickup_proto::Sha1Digest;
use serde_json::{json, Value};

use crate::{client, measure, rate, relay, sha1_fast, tcp, tcp_link, tcp_upload_config, Measured};
use crate::{GIB, MIB};

/// One round: fresh content uploaded, downloaded and uploaded again (linked
/// by proof), with a SHA-1 pass over it before, between and after.
pub struct Round {
    /// The rates (MiB/s) of the SHA-1 passes: before the upload (the
    /// terminal's hash before announcing), after it, after the download
    /// and after the instant upload.
    pub sha1: [f64; 4],
    /// The content's SHA-1 (the first pass: what a terminal hashes before
    /// it announces).
    pub digest: Sha1Digest,
    /// The upload: what the client saw, and its time and CPU.
    pub up: client::Uploaded,
    pub up_m: Measured,
    /// The download of what was uploaded, verified.
    pub down_m: Measured,
    /// The same content uploaded again, linked by proof.
    pub instant_m: Measured,
    /// Whether the instant upload was linked by proof (not sent again).
    pub linked: bool,
}

/// One SHA-1 pass over `data`: its digest and rate (MiB/s).
fn sha1_pass(data: &[u8]) -> (Sha1Digest, f64) {
    let t = Instant::now();
    let digest = sha1_fast(data);
    (digest, rate(data.len(), t.elapsed()))
}

/// Runs round `index` through `relay`. Its first eight bytes make `data`
/// content the relay does not hold yet, so the upload sends every byte.
pub fn run(relay: &relay::Relay, data: &mut Vec<u8>, index: u64) -> io::Result<Round> {
    data[..8].copy_from_slice(&index.to_le_bytes());
    let data: &Vec<u8> = data;
    let (sha1, before) = sha1_pass(data);
    let (up, up_m) = tcp::upload(relay, std::slice::from_ref(data), sha1)?;
    let (_, after_up) = sha1_pass(data);
    let down_m = tcp::download(relay, up.code, data.len())?;
    let (_, after_down) = sha1_pass(data);
    let (again, instant_m) = measure(relay, || {
        let mut link = tcp_link(relay.addr)?;
        client::upload(
            &mut link,
            tcp_upload_config(),
            &["again.bin".into()],
            std::slice::from_ref(data),
            &[sha1],
        )
    })?;
    let (_, after_instant) = sha1_pass(data);
    Ok(Round {
        sha1: [before, after_up, after_down, after_instant],
        digest: sha1,
        up,
        up_m,
        down_m,
        instant_m,
        linked: again.all_linked,
    })
}

impl Round {
    /// The SHA-1 rate beside the upload: the mean of the passes either side.
    pub fn beside_upload(&self) -> f64 {
        (self.sha1[0] + self.sha1[1]) / 2.0
    }
    /// The SHA-1 rate beside the download.
    pub fn beside_download(&self) -> f64 {
        (self.sha1[1] + self.sha1[2]) / 2.0
    }
    /// The SHA-1 rate beside the instant upload.
    pub fn beside_instant(&self) -> f64 {
        (self.sha1[2] + self.sha1[3]) / 2.0
    }
}

/// What `len` bytes cost the relay apart from its SHA-1, measured once in
/// the run: each round's figures for issue 19's targets are set against
/// these and against the SHA-1 passes beside it.
pub struct Floors {
    /// Bytes per transfer.
    pub len: usize,
    /// CPU seconds of the durable write (an fdatasync every 8 MiB, the
    /// cheaper of through the page cache and past it) and of the socket
    /// reads: the relay's upload floor besides its SHA-1.
    pub relay_up_rest: f64,
    /// CPU seconds of reading the file back (the cheaper way) and the
    /// socket writes: the relay's download floor.
    pub relay_down: f64,
}

impl Floors {
    /// Seconds to move `len` bytes at `mib_per_sec`.
    pub fn secs(&self, mib_per_sec: f64) -> f64 {
        self.len as f64 / MIB / mib_per_sec
    }

    /// The upload's rate against the SHA-1 passes beside it.
    pub fn upload_vs_sha1(&self, r: &Round) -> f64 {
        self.secs(r.beside_upload()) / r.up_m.secs
    }
    /// The download's rate against the SHA-1 passes beside it.
    pub fn download_vs_sha1(&self, r: &Round) -> f64 {
        self.secs(r.beside_download()) / r.down_m.secs
    }
    /// The relay's CPU for the upload against one SHA-1 pass at the rate
    /// beside it, the durable write and the socket reads.
    pub fn relay_upload_vs_floor(&self, r: &Round) -> f64 {
        r.up_m.relay_cpu / (self.secs(r.beside_upload()) + self.relay_up_rest)
    }
    /// The relay's CPU for the download against reading the file back and
    /// the socket writes.
    pub fn relay_download_vs_floor(&self, r: &Round) -> f64 {
        r.down_m.relay_cpu / self.relay_down
    }
    /// The instant upload's time against the one SHA-1 pass it needs, at
    /// the rate beside it.
    pub fn instant_vs_sha1_pass(&self, r: &Round) -> f64 {
        r.instant_m.secs / self.secs(r.beside_instant())
    }

    /// Each round's figures, for the report.
    pub fn each(&self, rounds: &[Round]) -> Value {
        rounds
            .iter()
            .map(|r| {
                json!({
                    "sha1_mib_per_sec": r.sha1,
                    "upload_secs": r.up_m.secs,
                    "upload_vs_sha1": self.upload_vs_sha1(r),
                    "relay_upload_cpu_per_gib": r.up_m.relay_cpu * GIB / self.len as f64,
                    "relay_upload_cpu_vs_floor": self.relay_upload_vs_floor(r),
                    "download_secs": r.down_m.secs,
                    "download_vs_sha1": self.download_vs_sha1(r),
                    "relay_download_cpu_vs_floor": self.relay_download_vs_floor(r),
                    "instant_secs": r.instant_m.secs,
                    "instant_vs_sha1_pass": self.instant_vs_sha1_pass(r),
                    "instant_linked": r.linked,
                })
            })
            .collect()
    }
}

/// The round whose `figure` is the median (the lower of the two middle ones
/// for an even count), and the lowest and the highest figure.
pub fn median_by<'a>(rounds: &'a [Round], figure: impl Fn(&Round) -> f64) -> Median<'a> {
    let mut order: Vec<(f64, &Round)> = rounds.iter().map(|r| (figure(r), r)).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (value, round) = order[(order.len() - 1) / 2];
    Median {
        value,
        round,
        low: order[0].0,
        high: order[order.len() - 1].0,
    }
}

/// See [`median_by`].
pub struct Median<'a> {
    /// The median figure, and the round it is from.
    pub value: f64,
    pub round: &'a Round,
    /// The lowest and the highest figure of the rounds.
    pub low: f64,
    pub high: f64,
}

impl Median<'_> {
    /// `[median, lowest, highest]`, for the report.
    pub fn spread(&self) -> [f64; 3] {
        [self.value, self.low, self.high]
    }
}
