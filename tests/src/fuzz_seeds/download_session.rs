//! Seeds of the `download_session` target: the fake relay's side of
//! downloads (manifests and data), ready, waiting and manifest-only.

use super::{seed, welcome, Seed};
use crate::fuzz_proto::{self, Script, DOWNLOAD_MANIFEST_ONLY, DOWNLOAD_WAIT};
use pickup_proto::hash::Sha1Digest;
use pickup_proto::message::{Data, Error, Manifest, ManifestEntry, Message};
use pickup_proto::ErrorCode;

type DownloadScript = Script<4096>;

fn manifest(s: &mut DownloadScript, ready: bool) {
    s.message(&Message::Manifest(Manifest {
        code: fuzz_proto::code(),
        expires_at: 1_800_000_000,
        files: 3,
        total_size: 706,
        received: if ready { 706 } else { 100 },
        ready,
    }));
    for (i, c) in fuzz_proto::CONTENTS.iter().enumerate() {
        s.message(&Message::ManifestEntry(ManifestEntry {
            index: i as u16,
            size: c.len() as u64,
            sha1: Sha1Digest::of(c),
            received: c.len() as u64,
            name: fuzz_proto::NAMES[i],
        }));
    }
}

fn data(s: &mut DownloadScript, file: u16, from: usize, to: usize) {
    let content = fuzz_proto::CONTENTS[usize::from(file)];
    let mut at = from;
    while at < to {
        let end = (at + 200).min(to);
        s.message(&Message::Data(Data {
            file,
            offset: at as u64,
            bytes: &content[at..end],
        }));
        at = end;
    }
}

fn download_start(setup: u8, prefill: u8, ready: bool) -> DownloadScript {
    let mut s = DownloadScript::new(&[setup, prefill]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    manifest(&mut s, ready);
    s
}

pub(super) fn download_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();

    let mut s = download_start(2, 0, true);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    s.events().transmit();
    seeds.push(seed(
        "download_session",
        "three-files-complete",
        s.as_bytes().to_vec(),
    ));

    // Half of file 0 on disk but corrupt, half of file 1 intact.
    let mut s = download_start(2, 0b0110, true);
    s.transmit();
    data(&mut s, 0, 350, 700);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 3, 6);
    s.events();
    seeds.push(seed(
        "download_session",
        "refetch-corrupt-prefix",
        s.as_bytes().to_vec(),
    ));

    // Window of 64 bytes: acks, a gap, a restarted read.
    let mut s = download_start(0, 0, true);
    s.transmit();
    data(&mut s, 0, 0, 40);
    s.transmit();
    data(&mut s, 0, 80, 100);
    s.transmit();
    data(&mut s, 0, 40, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    s.events();
    seeds.push(seed(
        "download_session",
        "small-window-gap",
        s.as_bytes().to_vec(),
    ));

    // Not ready yet: wait, poll again, then read.
    let mut s = download_start(2 | DOWNLOAD_WAIT, 0, false);
    for _ in 0..3 {
        s.advance(3_000).settle();
        manifest(&mut s, false);
    }
    manifest(&mut s, true);
    s.transmit();
    data(&mut s, 0, 0, 700);
    s.transmit();
    data(&mut s, 1, 0, 6);
    seeds.push(seed(
        "download_session",
        "wait-until-ready",
        s.as_bytes().to_vec(),
    ));

    // Manifest only, and an unknown code.
    let mut s = download_start(DOWNLOAD_MANIFEST_ONLY, 0, true);
    s.events().transmit();
    seeds.push(seed(
        "download_session",
        "manifest-only",
        s.as_bytes().to_vec(),
    ));
    let mut s = DownloadScript::new(&[2, 0]);
    s.connect().transmit().message(&welcome(1024, 0)).transmit();
    s.message(&Message::Error(Error {
        code: ErrorCode::UnknownCode,
        kind: 0x20,
        retry_after_ms: 0,
    }));
    s.events();
    seeds.push(seed(
        "download_session",
        "unknown-code",
        s.as_bytes().to_vec(),
    ));
    seeds
}
