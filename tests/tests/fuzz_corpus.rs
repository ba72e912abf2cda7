//! The committed fuzz seeds and dictionary are what `pickup_tests::fuzz_seeds`
//! makes, and each seed reaches what its name promises.
//!
//! After changing the seeds: `PICKUP_WRITE_FUZZ_SEEDS=1 cargo test -p pickup-tests --test fuzz_corpus`.

use std::path::{Path, PathBuf};

use pickup_tests::fuzz_proto;
use pickup_tests::fuzz_relay::drive_relay;
use pickup_tests::fuzz_seeds::{self, Seed};
use pickup_tests::samples;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn writing() -> bool {
    std::env::var_os("PICKUP_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1")
}

/// Writes `bytes` to `path` when asked to, else checks the file holds them.
fn check_file(path: &Path, bytes: &[u8]) {
    if writing() {
        std::fs::create_dir_all(path.parent().expect("a parent directory"))
            .expect("create the corpus directory");
        std::fs::write(path, bytes).expect("write a seed");
        return;
    }
    let on_disk = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with PICKUP_WRITE_FUZZ_SEEDS=1 cargo test -p pickup-tests --test fuzz_corpus",
            path.display()
        )
    });
    assert!(
        on_disk == bytes,
        "{} is stale; regenerate with PICKUP_WRITE_FUZZ_SEEDS=1 cargo test -p pickup-tests --test fuzz_corpus",
        path.display()
    );
}

fn check_seeds(seeds: &[Seed]) {
    for s in seeds {
        check_file(
            &fuzz_dir().join("corpus").join(s.target).join(&s.name),
            &s.bytes,
        );
    }
}

#[test]
fn proto_seeds_are_committed_and_reach_their_goal() {
    let seeds = fuzz_seeds::proto_seeds();
    check_seeds(&seeds);
    let mut per_target = std::collections::BTreeMap::<&str, usize>::new();
    for s in &seeds {
        *per_target.entry(s.target).or_default() += 1;
        let name = s.name.as_str();
        match s.target {
            "frame_decoder" => {
                let frames = fuzz_proto::decode_stream(&s.bytes);
                let expected = match name {
                    "every-kind-whole"
                    | "every-kind-bytewise"
                    | "prefixed-every-kind-whole"
                    | "prefixed-every-kind-bytewise" => samples::every_kind().len() as u64,
                    "noise-and-cut-frame" => 2,
                    "switch-at-marker" => 2,
                    _ => 1,
                };
                assert_eq!(frames, expected, "{name}");
            }
            "message_decode" => assert!(fuzz_proto::decode_message(&s.bytes), "{name}"),
            "upload_session" => {
                let summary = fuzz_proto::drive_upload(&s.bytes);
                match name {
                    "busy-then-rejected" => assert!(summary.failed, "{name}: {summary:?}"),
                    "link-lost-and-resumed"
                    | "resume-from-237"
                    | "three-files-complete"
                    | "challenge-proof-held" => {
                        assert!(summary.completed, "{name}: {summary:?}")
                    }
                    _ => panic!("no expectation for {name}"),
                }
            }
            "download_session" => {
                let summary = fuzz_proto::drive_download(&s.bytes);
                match name {
                    "unknown-code" => assert!(summary.failed, "{name}: {summary:?}"),
                    _ => assert!(summary.completed, "{name}: {summary:?}"),
                }
            }
            "notice_session" => {
                let summary = fuzz_proto::drive_notice(&s.bytes);
                // data_bytes counts notices handed out (a listener) or
                // deliveries reported (a sender).
                let expected = match name {
                    "inbox-confirm-refuse" => 2,
                    "remembered-and-policy" => 0,
                    "small-ledger-relink" => 3,
                    "tiny-timers" => 1,
                    "sender-push-status-allow" => 3,
                    _ => panic!("no expectation for {name}"),
                };
                assert!(!summary.failed, "{name}: {summary:?}");
                assert_eq!(summary.data_bytes, expected, "{name}: {summary:?}");
            }
            other => panic!("unknown target {other}"),
        }
    }
    for target in [
        "frame_decoder",
        "message_decode",
        "upload_session",
        "download_session",
        "notice_session",
    ] {
        assert!(
            per_target.get(target).copied().unwrap_or(0) >= 2,
            "{target} has seeds"
        );
    }
}

#[test]
fn relay_seeds_are_committed_and_reach_their_goal() {
    let seeds = fuzz_seeds::all_relay_seeds();
    check_seeds(&seeds);
    for s in &seeds {
        let summary = drive_relay(&s.bytes);
        let name = s.name.as_str();
        match name {
            "upload-then-download" => {
                assert_eq!(
                    (summary.verified, summary.served),
                    (1, 700),
                    "{name}: {summary:?}"
                )
            }
            // The read asks for 256 bytes: the relay stops at the credit.
            "small-frames" => {
                assert_eq!(
                    (summary.verified, summary.served),
                    (1, 256),
                    "{name}: {summary:?}"
                )
            }
            "instant-upload-proof" | "same-family-challenged" => assert_eq!(
                (summary.grants, summary.challenges),
                (2, 1),
                "{name}: {summary:?}"
            ),
            "stranger-not-challenged" => assert_eq!(
                (summary.grants, summary.challenges),
                (2, 0),
                "{name}: {summary:?}"
            ),
            "crash-and-resume" => {
                assert_eq!(
                    (summary.crashes, summary.verified),
                    (1, 1),
                    "{name}: {summary:?}"
                )
            }
            "deferred-syncs-crash" => assert_eq!(
                (summary.crashes, summary.verified),
                (1, 1),
                "{name}: {summary:?}"
            ),
            "expired-code" => assert_eq!(summary.served, 0, "{name}: {summary:?}"),
            "limits-and-guesses" => assert_eq!(summary.verified, 0, "{name}: {summary:?}"),
            "terminal-named-put-fetch" => assert_eq!(
                (
                    summary.authenticated,
                    summary.verified,
                    summary.named_served
                ),
                (1, 1, 700),
                "{name}: {summary:?}"
            ),
            "login-share-fetch" => assert_eq!(
                (
                    summary.authenticated,
                    summary.named_manifests,
                    summary.named_served
                ),
                (2, 1, 700),
                "{name}: {summary:?}"
            ),
            "wrong-passwords-rate-limited" => assert_eq!(
                (
                    summary.authenticated,
                    summary.auth_failed,
                    summary.rate_limited
                ),
                (0, 5, 2),
                "{name}: {summary:?}"
            ),
            "peer-authenticates-then-uploads" => assert_eq!(
                (summary.authenticated, summary.grants, summary.verified),
                (1, 1, 1),
                "{name}: {summary:?}"
            ),
            "peer-and-terminal-keys-do-not-cross" => assert_eq!(
                (
                    summary.authenticated,
                    summary.auth_failed,
                    summary.rate_limited
                ),
                (0, 5, 0),
                "{name}: {summary:?}"
            ),
            // Accepted, a status once, a watch's first status and a
            // retry's; bob's watch and retry are refused.
            "forward-request-watch" => {
                assert_eq!(summary.forward_answers, 4, "{name}: {summary:?}")
            }
            "push-wake-receipt" => assert_eq!(
                (
                    summary.inboxes,
                    summary.notices,
                    summary.settled,
                    summary.deliveries
                ),
                (1, 1, 1, 2),
                "{name}: {summary:?}"
            ),
            "allowed-sender-takeover-forged" => assert_eq!(
                (
                    summary.inboxes,
                    summary.notices,
                    summary.settled,
                    summary.deliveries
                ),
                (2, 3, 3, 5),
                "{name}: {summary:?}"
            ),
            // ada's login, r1 and t1 authenticate; alice@r1's push and
            // its retry are answered, bob@r1's refused (ada allowed her
            // relay's bob); t1 is noticed once and confirms.
            "peer-authenticates-uploads-then-pushes" => assert_eq!(
                (
                    summary.authenticated,
                    summary.deliveries,
                    summary.inboxes,
                    summary.notices,
                    summary.settled
                ),
                (3, 2, 1, 1, 1),
                "{name}: {summary:?}"
            ),
            "offline-then-expired" => assert_eq!(
                (
                    summary.inboxes,
                    summary.notices,
                    summary.settled,
                    summary.deliveries
                ),
                (2, 1, 1, 2),
                "{name}: {summary:?}"
            ),
            "regression-inbox-lists-expired-before-sweep" => assert_eq!(
                (summary.inboxes, summary.notices),
                (1, 0),
                "{name}: {summary:?}"
            ),
            other => panic!("no expectation for {other}"),
        }
    }
}

#[test]
fn frames_dictionary_is_committed() {
    check_file(
        &fuzz_dir().join("dict/frames.dict"),
        fuzz_seeds::frames_dict().as_bytes(),
    );
}
