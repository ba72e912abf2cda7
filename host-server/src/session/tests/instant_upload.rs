//! Instant upload: held content is linked on a right proof and uploaded on
//! a wrong one, SHA-1 collision pairs never alias, and the relay computes
//! the proof it expects while the terminal computes its own.

use super::*;

fn collision_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sha1-collisions/");
    let read = |n: &str| std::fs::read(format!("{dir}{n}")).unwrap();
    match name {
        "shattered" => (read("shattered-1.pdf"), read("shattered-2.pdf")),
        _ => (read("sha-mbles-1.bin"), read("sha-mbles-2.bin")),
    }
}

fn instant_upload_case() {
    let mut w = World::new(open_disclosure());
    let content = bytes(100_000, 9);
    let mut s = open(&w, 1);
    upload(
        &mut w,
        &mut s,
        &["first"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    assert_eq!(w.store.blob_count(), 1);
    // The same content again: challenged, proven, linked.
    let mut s = open(&w, 1);
    let (g, events, _) = upload(
        &mut w,
        &mut s,
        &["again"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    assert!(
        events.contains(&upload::Event::Linked { file: 0 }),
        "{events:?}"
    );
    assert_eq!(w.store.blob_count(), 1);
    let mut d = w.session(2, Link::TCP);
    assert_eq!(
        download(&mut w, &mut d, g.unwrap().code).unwrap().files,
        std::slice::from_ref(&content)
    );
    // A wrong proof by hand: the relay asks for the bytes instead.
    let mut s = open(&w, 3);
    let replies = announce(
        &mut s,
        w.now(),
        &[("x", content.len() as u64, Sha1Digest::of(&content))],
    );
    let nonce = match replies[1] {
        Reply::Plan(FilePlan {
            plan: Plan::Challenge { nonce },
            ..
        }) => nonce,
        ref other => panic!("{other:?}"),
    };
    send(
        &mut s,
        w.now(),
        Message::Proof(Proof {
            index: 0,
            proof: Sha1Digest::of(b"guess"),
        }),
    );
    assert_eq!(
        drain(&mut s),
        [Reply::Plan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 }
        })]
    );
    // The right proof for a stale nonce is not accepted either: one proof per challenge.
    let mut p = ProofHasher::new(&nonce);
    p.update(&content);
    send(
        &mut s,
        w.now(),
        Message::Proof(Proof {
            index: 0,
            proof: p.finish(),
        }),
    );
    assert_eq!(
        drain(&mut s),
        [Reply::Plan(FilePlan {
            index: 0,
            plan: Plan::Upload { offset: 0 }
        })]
    );
    for (i, chunk) in content.chunks(60_000).enumerate() {
        send(
            &mut s,
            w.now(),
            Message::Data(Data {
                file: 0,
                offset: i as u64 * 60_000,
                bytes: chunk,
            }),
        );
    }
    let replies = drain(&mut s);
    assert!(
        replies.contains(&Reply::Verified(0)) && replies.contains(&Reply::Complete),
        "{replies:?}"
    );
    assert_eq!(
        w.store.blob_count(),
        1,
        "same bytes: deduplicated after upload"
    );
}

#[test]
fn instant_upload_links_on_a_right_proof_and_uploads_on_a_wrong_one() {
    instant_upload_case();
}

fn collision_case() {
    for pair in ["shattered", "shambles"] {
        let (a, b) = collision_pair(pair);
        assert_eq!(Sha1Digest::of(&a), Sha1Digest::of(&b));
        for (first, second) in [(&a, &b), (&b, &a)] {
            let mut w = World::new(open_disclosure());
            let mut s = open(&w, 1);
            let (g1, _, _) = upload(
                &mut w,
                &mut s,
                &["one"],
                std::slice::from_ref(first),
                None,
                |_| false,
            );
            let mut s = open(&w, 1);
            let (g2, events, _) = upload(
                &mut w,
                &mut s,
                &["two"],
                std::slice::from_ref(second),
                None,
                |_| false,
            );
            assert!(
                !events.contains(&upload::Event::Linked { file: 0 }),
                "{pair}: aliased"
            );
            assert!(events
                .iter()
                .any(|e| matches!(e, upload::Event::Complete { .. })));
            assert_eq!(w.store.blob_count(), 2, "{pair}: two blobs");
            let mut d = w.session(2, Link::TCP);
            assert_eq!(
                download(&mut w, &mut d, g1.unwrap().code).unwrap().files[0],
                *first
            );
            let mut d = w.session(2, Link::TCP);
            assert_eq!(
                download(&mut w, &mut d, g2.unwrap().code).unwrap().files[0],
                *second
            );
        }
        // Both in one batch.
        let mut w = World::new(Settings::default());
        let mut s = open(&w, 1);
        let (g, _, _) = upload(
            &mut w,
            &mut s,
            &["a", "b"],
            &[a.clone(), b.clone()],
            None,
            |_| false,
        );
        let mut d = w.session(2, Link::TCP);
        assert_eq!(
            download(&mut w, &mut d, g.unwrap().code).unwrap().files,
            [a, b]
        );
    }
}

#[test]
fn sha1_collision_pairs_never_alias_in_either_order() {
    collision_case();
}

#[test]
fn a_challenge_computes_the_proof_it_expects_before_the_proof_arrives() {
    let mut w = World::new(open_disclosure());
    let content = bytes(100_000, 7);
    let mut s = open(&w, 1);
    upload(
        &mut w,
        &mut s,
        &["first"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    let mut s = w.session(2, Link::TCP);
    send(&mut s, w.now(), hello(CAP_INSTANT_UPLOAD));
    assert_eq!(drain(&mut s), [Reply::Welcome]);
    let size = content.len() as u64;
    send_only(
        &mut s,
        w.now(),
        Message::BatchOpen(BatchOpen {
            files: 1,
            total_size: size,
        }),
    );
    send_only(
        &mut s,
        w.now(),
        Message::FileAnnounce(FileAnnounce {
            index: 0,
            size,
            sha1: Sha1Digest::of(&content),
            name: "again",
        }),
    );
    let create = s.poll_job().expect("the batch's creation");
    assert_eq!(create.name(), "create-batch");
    run_all(&w, &mut s, vec![create]);
    // The challenge goes out, and so does the job computing its proof.
    let nonce = match drain_only(&mut s).as_slice() {
        [Reply::Grant(_), Reply::Plan(FilePlan {
            plan: Plan::Challenge { nonce },
            ..
        })] => *nonce,
        other => panic!("{other:?}"),
    };
    let expect = s.poll_job().expect("the expected proof");
    assert_eq!(expect.name(), "expect-proof");
    assert!(s.wants_input(), "computing it does not hold input back");
    let mut p = ProofHasher::new(&nonce);
    p.update(&content);
    send_only(
        &mut s,
        w.now(),
        Message::Proof(Proof {
            index: 0,
            proof: p.finish(),
        }),
    );
    assert!(s.poll_job().is_none(), "the check waits for it");
    run_all(&w, &mut s, vec![expect]);
    let check = s.poll_job().expect("the check");
    match &check.work {
        crate::jobs::Work::CheckProof(c) => {
            assert!(c.expected.is_some(), "it compares digests")
        }
        other => panic!("{other:?}"),
    }
    run_all(&w, &mut s, vec![check]);
    assert_eq!(
        drain(&mut s),
        [
            Reply::Plan(FilePlan {
                index: 0,
                plan: Plan::Held
            }),
            Reply::Complete
        ]
    );
    assert_eq!(w.store.blob_count(), 1);
}
