//! Admission: reservations, their release and the per-owner limits.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

const MIB: u64 = 1 << 20;

fn settings() -> QuotaSettings {
    QuotaSettings {
        disk_quota: 8 * MIB,
        max_reserved_per_peer: 4 * MIB,
        reservation_timeout_secs: 10,
        max_incomplete_batches_per_peer: 3,
        new_batch_burst_per_peer: 5,
        new_batches_per_hour_per_peer: 3600,
        incomplete_ttl_secs: 100,
    }
}

fn owner(n: u8) -> Owner {
    Owner::Peer(Peer::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))))
}

fn at(secs: u64) -> Instant {
    Instant::from_millis(secs * 1000)
}

fn create(q: &mut Quotas, who: u8, bytes: u64, id: u64, now: Instant) -> Result<(), ErrorCode> {
    let t = q.admit(&owner(who), bytes, 0, now).map_err(|r| r.code)?;
    q.bind(t, BatchId(id), now);
    Ok(())
}

#[test]
fn one_owner_reserves_at_most_its_share_and_others_still_get_in() {
    let mut q = Quotas::new(settings());
    create(&mut q, 1, 2 * MIB, 1, at(0)).unwrap();
    create(&mut q, 1, 2 * MIB, 2, at(0)).unwrap();
    assert_eq!(create(&mut q, 1, MIB, 3, at(0)), Err(ErrorCode::PeerQuota));
    // Another owner gets the rest of the quota, and no more.
    create(&mut q, 2, 4 * MIB, 4, at(0)).unwrap();
    assert_eq!(create(&mut q, 3, 1, 5, at(0)), Err(ErrorCode::Quota));
    assert_eq!(q.reserved(), 8 * MIB);
}

#[test]
fn stored_bytes_and_reservations_share_the_quota_exactly() {
    let mut q = Quotas::new(settings());
    let t = q.admit(&owner(1), 4 * MIB, 4 * MIB, at(0)).unwrap();
    // A concurrent admission sees the first one's reservation before its
    // batch exists.
    let r = q.admit(&owner(2), 1, 4 * MIB, at(0)).unwrap_err();
    assert_eq!(r.code, ErrorCode::Quota);
    assert!(r.retry_after_ms > 0, "reservations may be released");
    q.cancel(t);
    assert_eq!(q.reserved(), 0);
    let r = q.admit(&owner(2), 4 * MIB, 5 * MIB, at(0)).unwrap_err();
    assert_eq!((r.code, r.retry_after_ms), (ErrorCode::Quota, 0));
}

#[test]
fn progress_shrinks_the_reservation_and_completion_frees_the_slot() {
    let mut q = Quotas::new(settings());
    create(&mut q, 1, 4 * MIB, 1, at(0)).unwrap();
    q.progress(BatchId(1), MIB, at(1));
    assert_eq!(q.reserved_by(&owner(1)), MIB);
    q.finished(BatchId(1));
    assert_eq!(q.reserved(), 0);
    create(&mut q, 1, 4 * MIB, 2, at(1)).unwrap();
}

#[test]
fn a_stalled_reservation_is_released_and_taken_again_on_resume() {
    let mut q = Quotas::new(settings());
    create(&mut q, 1, 4 * MIB, 1, at(0)).unwrap();
    assert!(q.touch(BatchId(1), at(5)));
    assert_eq!(q.sweep(at(14)), 0, "progress at 5 s keeps it until 15 s");
    assert_eq!(q.sweep(at(15)), 4 * MIB);
    assert_eq!(q.reserved(), 0);
    assert!(!q.touch(BatchId(1), at(16)), "no reservation any more");
    // Meanwhile another owner takes most of the quota ...
    create(&mut q, 2, 4 * MIB, 2, at(16)).unwrap();
    create(&mut q, 3, 3 * MIB, 3, at(16)).unwrap();
    // ... so the stalled upload may not resume with 4 MiB to go.
    let r = q.resume(&owner(1), BatchId(1), 4 * MIB, 0, at(17));
    assert_eq!(r.map_err(|r| r.code), Err(ErrorCode::Quota));
    q.resume(&owner(1), BatchId(1), MIB, 0, at(17)).unwrap();
    assert!(q.touch(BatchId(1), at(18)));
}

#[test]
fn incomplete_batches_and_the_creation_rate_are_limited_per_owner() {
    let mut q = Quotas::new(settings());
    for id in 0..3 {
        create(&mut q, 1, 1, id, at(0)).unwrap();
    }
    assert_eq!(
        create(&mut q, 1, 1, 9, at(0)),
        Err(ErrorCode::TooManyIncomplete)
    );
    create(&mut q, 2, 1, 10, at(0)).unwrap();
    q.finished(BatchId(0));
    q.finished(BatchId(1));
    q.finished(BatchId(2));
    // Five at once, then one a second.
    create(&mut q, 1, 1, 11, at(0)).unwrap();
    create(&mut q, 1, 1, 12, at(0)).unwrap();
    let r = q.admit(&owner(1), 1, 0, at(0)).unwrap_err();
    assert_eq!(r.code, ErrorCode::RateLimited);
    assert_eq!(r.retry_after_ms, 1000);
    q.finished(BatchId(11));
    create(&mut q, 1, 1, 13, at(1)).unwrap();
}

#[test]
fn batches_without_progress_are_forgotten_after_the_incomplete_ttl() {
    let mut q = Quotas::new(settings());
    for id in 0..3 {
        create(&mut q, 1, 1, id, at(0)).unwrap();
    }
    q.sweep(at(99));
    assert_eq!(
        create(&mut q, 1, 1, 5, at(99)),
        Err(ErrorCode::TooManyIncomplete)
    );
    q.sweep(at(100));
    create(&mut q, 1, 1, 5, at(100)).unwrap();
}
