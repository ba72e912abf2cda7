//! What instant upload reveals (issue 20, item 6): a stranger's
//! announcement of held content is answered as if the relay did not hold
//! it, the same token family links its own content at once, and content
//! a threshold of owners stored links for anyone ([`crate::disclosure`]).

use super::*;
use pickup_proto::message::Join;

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

fn letter(pin: u32) -> Vec<u8> {
    format!("Dear customer, your new card's PIN is {pin:04}. Kind regards, the bank.").into_bytes()
}

fn with_mode(mode: DisclosureMode, threshold_max: u32) -> Settings {
    Settings {
        disclosure: DisclosureSettings {
            mode,
            threshold_max,
        },
        ..Settings::default()
    }
}

/// Announces `content` in a fresh session of `peer` and returns its plan.
fn probe(w: &World, peer: u64, content: &[u8]) -> Plan {
    let mut s = open(w, peer);
    let replies = announce(
        &mut s,
        w.now(),
        &[("letter", content.len() as u64, Sha1Digest::of(content))],
    );
    plan_of(&replies)
}

/// Uploads `content` whole in a fresh session of `peer`; the events.
fn upload_fresh(w: &mut World, peer: u64, content: &[u8]) -> Vec<upload::Event> {
    let mut s = open(w, peer);
    let (_, events, _) = upload(w, &mut s, &["letter"], &[content.to_vec()], None, |_| false);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, upload::Event::Complete { .. })),
        "{events:?}"
    );
    events
}

#[test]
fn a_stranger_probing_pins_learns_nothing_by_default_and_everything_when_open() {
    for (settings, challenged) in [
        (Settings::default(), 0),
        (with_mode(DisclosureMode::OwnerOnly, 20), 0),
        (with_mode(DisclosureMode::Open, 20), 1),
    ] {
        let mode = settings.disclosure.mode;
        let mut w = World::new(settings);
        upload_fresh(&mut w, 1, &letter(1234));
        // Each probe from its own peer: one peer may hold only a few
        // incomplete batches (an attacker has many addresses).
        let seen = (1220..1252u32)
            .filter(|&pin| {
                matches!(
                    probe(&w, 100 + u64::from(pin), &letter(pin)),
                    Plan::Challenge { .. }
                )
            })
            .count();
        assert_eq!(seen, challenged, "{mode:?}");
    }
}

#[test]
fn a_strangers_full_upload_is_deduplicated_without_a_sign() {
    let mut w = World::new(Settings::default());
    let content = letter(1234);
    upload_fresh(&mut w, 1, &content);
    let events = upload_fresh(&mut w, 2, &content);
    assert!(
        !events.contains(&upload::Event::Linked { file: 0 }),
        "{events:?}"
    );
    // The relay keeps one copy all the same.
    assert_eq!(w.store.blob_count(), 1);
}

#[test]
fn the_same_token_family_sends_its_content_again_instantly() {
    let mut w = World::new(Settings::default());
    let content = bytes(70_000, 5);
    let mut s = open(&w, 1);
    let (grant, _, _) = upload(
        &mut w,
        &mut s,
        &["a"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    let token = grant.expect("a grant").token;
    // A later batch of the same session joins its family: linked.
    let (_, events, _) = upload(
        &mut w,
        &mut s,
        &["b"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    assert!(
        events.contains(&upload::Event::Linked { file: 0 }),
        "{events:?}"
    );
    // So does a batch of a new session that first resumed the family's token.
    let mut s2 = open(&w, 3);
    send(&mut s2, w.now(), Message::Resume(Resume { token }));
    assert!(drain(&mut s2).iter().any(|r| matches!(r, Reply::Grant(_))));
    let replies = announce(
        &mut s2,
        w.now(),
        &[("c", content.len() as u64, Sha1Digest::of(&content))],
    );
    assert!(matches!(plan_of(&replies), Plan::Challenge { .. }));
    // A new session alone is a stranger.
    assert_eq!(probe(&w, 1, &content), Plan::Upload { offset: 0 });
}

#[test]
fn content_a_threshold_of_owners_stored_is_challenged_for_anyone() {
    // threshold_max 2: every blob's threshold is 2.
    let mut w = World::new(with_mode(DisclosureMode::Threshold, 2));
    let content = bytes(40_000, 8);
    upload_fresh(&mut w, 1, &content);
    assert_eq!(probe(&w, 2, &content), Plan::Upload { offset: 0 });
    upload_fresh(&mut w, 2, &content);
    assert!(matches!(probe(&w, 3, &content), Plan::Challenge { .. }));
    let events = upload_fresh(&mut w, 3, &content);
    assert!(
        events.contains(&upload::Event::Linked { file: 0 }),
        "{events:?}"
    );
    // Owner-only never does.
    let mut w = World::new(with_mode(DisclosureMode::OwnerOnly, 2));
    for peer in 1..=4 {
        upload_fresh(&mut w, peer, &content);
    }
    assert_eq!(probe(&w, 5, &content), Plan::Upload { offset: 0 });
}

#[test]
fn thresholds_are_drawn_per_content_within_the_range() {
    // With threshold_max 4, each content links for strangers after 2, 3 or
    // 4 owners; over 24 contents each count shows up.
    let mut w = World::new(with_mode(DisclosureMode::Threshold, 4));
    let mut seen = [0u32; 5];
    for c in 0..24u8 {
        let content = bytes(2_000, c);
        let mut owners = 0;
        loop {
            let prober = 100 + u64::from(c) * 8 + owners as u64;
            if matches!(probe(&w, prober, &content), Plan::Challenge { .. }) {
                break;
            }
            owners += 1;
            assert!(owners <= 4, "past the largest threshold");
            upload_fresh(&mut w, owners as u64, &content);
        }
        seen[owners] += 1;
    }
    assert_eq!(seen[..2], [0, 0]);
    assert!(seen[2..].iter().all(|&n| n > 0), "{seen:?}");
}

#[test]
fn a_join_with_a_token_of_the_family_makes_a_new_session_its_owner() {
    let mut w = World::new(Settings::default());
    let content = bytes(30_000, 6);
    let mut s = open(&w, 1);
    let (grant, _, _) = upload(
        &mut w,
        &mut s,
        &["a"],
        std::slice::from_ref(&content),
        None,
        |_| false,
    );
    let token = grant.expect("a grant").token;
    let announce_after_join = |w: &World, token: ResumeToken| {
        let mut s = open(w, 2);
        send(&mut s, w.now(), Message::Join(Join { token }));
        // No reply to a Join.
        assert_eq!(drain(&mut s), []);
        let replies = announce(
            &mut s,
            w.now(),
            &[("b", content.len() as u64, Sha1Digest::of(&content))],
        );
        plan_of(&replies)
    };
    assert!(matches!(
        announce_after_join(&w, token),
        Plan::Challenge { .. }
    ));
    // A token the relay does not know joins nothing.
    assert_eq!(
        announce_after_join(&w, ResumeToken([7; 16])),
        Plan::Upload { offset: 0 }
    );
}
