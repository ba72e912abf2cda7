//! What proofs of ownership and resumes may cost the relay (issue 20,
//! item 4): challenges are charged to the file and the peer, a wrong proof
//! is a failed lookup, and a resume hashes only past the SHA-1 state
//! recorded with the durable prefix.

use super::*;
use crate::proof_budget::ProofSettings;
use crate::rate_limit::RateSettings;
use crate::store::FileContent;

/// The plan of file 0 in `replies`.
fn plan_of(replies: &[Reply]) -> Plan {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Plan(p) if p.index == 0 => Some(p.plan),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no plan in {replies:?}"))
}

fn resume(s: &mut Session, w: &World, token: ResumeToken) -> Vec<Reply> {
    send(s, w.now(), Message::Resume(Resume { token }));
    drain(s)
}

/// Stores `content` under a first batch, from peer 1.
fn held(w: &mut World, content: &[u8]) {
    let mut s = open(w, 1);
    upload(w, &mut s, &["first"], &[content.to_vec()], None, |_| false);
}

#[test]
fn resumes_draw_fresh_challenges_only_while_the_file_has_some_left() {
    let settings = Settings {
        proof: ProofSettings {
            challenges_per_file: 3,
            ..ProofSettings::default()
        },
        ..open_disclosure()
    };
    let mut w = World::new(settings);
    let content = bytes(50_000, 3);
    held(&mut w, &content);
    let mut s = open(&w, 3);
    let replies = announce(
        &mut s,
        w.now(),
        &[("x", content.len() as u64, Sha1Digest::of(&content))],
    );
    let token = grant_of(&replies).token;
    let mut nonces = vec![match plan_of(&replies) {
        Plan::Challenge { nonce } => nonce,
        other => panic!("{other:?}"),
    }];
    for _ in 0..2 {
        match plan_of(&resume(&mut s, &w, token)) {
            Plan::Challenge { nonce } => nonces.push(nonce),
            other => panic!("{other:?}"),
        }
    }
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "each challenge has a fresh nonce");
    // The fourth resume, from a new session of another peer too: the file
    // is uploaded instead, and stays so.
    let mut other = open(&w, 4);
    assert_eq!(
        plan_of(&resume(&mut other, &w, token)),
        Plan::Upload { offset: 0 }
    );
    assert_eq!(
        plan_of(&resume(&mut other, &w, token)),
        Plan::Upload { offset: 0 }
    );
}

#[test]
fn a_peer_pays_for_the_bytes_its_challenges_make_the_relay_hash() {
    let settings = Settings {
        proof: ProofSettings {
            peer_burst_bytes: 120_000,
            peer_bytes_per_sec: 1_000,
            ..ProofSettings::default()
        },
        ..open_disclosure()
    };
    let mut w = World::new(settings);
    let content = bytes(50_000, 4);
    held(&mut w, &content);
    // Each announcement under another name is a batch of its own.
    let mut batches = 0;
    let mut new_batch = |s: &mut Session, w: &World| {
        batches += 1;
        let name = format!("x{batches}");
        let announced = [(
            name.as_str(),
            content.len() as u64,
            Sha1Digest::of(&content),
        )];
        plan_of(&announce(s, w.now(), &announced))
    };
    let mut s = open(&w, 3);
    for _ in 0..2 {
        assert!(matches!(new_batch(&mut s, &w), Plan::Challenge { .. }));
    }
    // 100,000 of 120,000 bytes spent: a third challenge is refused ...
    assert_eq!(new_batch(&mut s, &w), Plan::Upload { offset: 0 });
    // ... not to another peer ...
    let mut other = open(&w, 4);
    assert!(matches!(new_batch(&mut other, &w), Plan::Challenge { .. }));
    // ... and to this one again once 30,000 bytes have grown back.
    w.now += 30_000;
    assert!(matches!(new_batch(&mut s, &w), Plan::Challenge { .. }));
}

#[test]
fn wrong_proofs_count_as_failed_lookups() {
    let settings = Settings {
        rate: RateSettings {
            peer_burst: 2,
            peer_per_sec: 0.001,
            ..RateSettings::default()
        },
        ..open_disclosure()
    };
    let mut w = World::new(settings);
    let content = bytes(20_000, 5);
    held(&mut w, &content);
    let mut s = open(&w, 3);
    let mut token = None;
    for (name, guess) in [("x", b"one".as_slice()), ("y", b"two")] {
        let replies = announce(
            &mut s,
            w.now(),
            &[(name, content.len() as u64, Sha1Digest::of(&content))],
        );
        assert!(
            matches!(plan_of(&replies), Plan::Challenge { .. }),
            "{replies:?}"
        );
        token = Some(grant_of(&replies).token);
        send(
            &mut s,
            w.now(),
            Message::Proof(Proof {
                index: 0,
                proof: Sha1Digest::of(guess),
            }),
        );
        assert_eq!(plan_of(&drain(&mut s)), Plan::Upload { offset: 0 });
    }
    // Two wrong proofs spent the peer's failed-lookup burst: the peer's
    // next lookup (from another connection: this one's own upload is
    // answered without one) is refused.
    let mut other = open(&w, 3);
    assert!(matches!(
        resume(&mut other, &w, token.unwrap()).as_slice(),
        [Reply::Error(ErrorCode::RateLimited, _)]
    ));
}

/// After a crash, the first 64 bytes of the stored partial are replaced by
/// junk behind the relay's back. A relay that re-hashed the durable prefix
/// would see the junk and reject the file; one that goes on from the SHA-1
/// state recorded with the prefix never reads those bytes again, and
/// verifies it.
#[test]
fn a_resumed_upload_hashes_only_past_the_state_recorded_with_its_prefix() {
    let mut w = World::new(Settings::default());
    let data = vec![bytes(12 << 20, 11)];
    let mut s = open(&w, 1);
    let (grant, _, _) = upload(&mut w, &mut s, &["big"], &data, None, |acked| {
        acked >= 6 << 20
    });
    let grant = grant.unwrap();
    drop(s);
    w.crash();
    let batch = match w
        .store
        .find_by_code(&crate::codes::code_key(&grant.code), T0 / 1000)
        .unwrap()
    {
        Lookup::Live(b) => b,
        other => panic!("{other:?}"),
    };
    let FileContent::Partial { id, durable } = batch.files[0].content else {
        panic!("{:?}", batch.files[0].content);
    };
    let state = w.store.partial_hash_state(id).unwrap().unwrap();
    assert!(
        state.len >= 64 && state.len <= durable,
        "state {} of {durable} durable bytes",
        state.len
    );
    w.store.write_partial(id, 0, &[0xA5; 64]).unwrap();
    w.store.sync_partial(id, durable, None).unwrap();
    let mut s = open(&w, 1);
    let (_, events, _) = upload(&mut w, &mut s, &["big"], &data, Some(grant.token), |_| {
        false
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, upload::Event::Complete { .. })),
        "{events:?}"
    );
}
