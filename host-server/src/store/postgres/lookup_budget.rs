//! The relay-wide failed-lookup budget, shared by every instance of a
//! cluster (docs/design/scale-out.md §6.1).
//!
//! Each part of the relay's bucket (shared, reserved: see
//! [`crate::rate_limit`]) is a row of `rate_buckets`, refilled by the
//! database's clock. An instance claims `k = max(1, burst / 8)` tokens at a
//! time into its local [`Stock`], which the
//! [`RateLimiter`](crate::rate_limit::RateLimiter) spends in memory; a task
//! on the store's runtime claims again when a part's stock is under `k / 2`,
//! at most every [`TOP_UP_EVERY`].
//!
//! Tokens are only ever taken from the rows, never given back, so however
//! many instances claim, failed lookups stay within `burst + rate · T`
//! (plus lookups in flight): the guessing bound holds for any number of
//! instances. Tokens held by an instance that dies are lost, which only
//! lowers guessing. Without the database nothing is claimed, the stock
//! runs dry and lookups are refused: the limit fails closed.
//!
//! ```text
//!   task, every 50 ms:  stock[part] < k/2 ?  claim k from rate_buckets ──► stock[part] += k
//!   check / failed (in memory, any thread):  stock[part] ≥ 1 ?  ──► stock[part] − 1
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::rate_limit::{Part, RateSettings, Stock};

use super::db::{Db, DbError};
use super::handoff::release;

/// How often the task looks at the stock, and so claims at most.
pub(crate) const TOP_UP_EVERY: Duration = Duration::from_millis(50);

/// How long one claim may take (a stopped server, a lost connection)
/// before the task gives up on it and tries again on a later turn.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// Takes `k` tokens from bucket `$1` (burst `$2`, refilled at `$3` a
/// second by the database's clock), if it holds them; a row that does not
/// exist yet is a full bucket. A clock stepped back refills nothing and
/// does not move the row's time back.
const CLAIM: &str = "
    INSERT INTO rate_buckets AS b (name, tokens, refilled_at)
    SELECT $1::text, $2::float8 - $4::float8, extract(epoch FROM clock_timestamp())::float8
    WHERE $2::float8 >= $4::float8
    ON CONFLICT (name) DO UPDATE
    SET tokens = LEAST($2::float8, b.tokens
                     + $3::float8 * GREATEST(0, EXCLUDED.refilled_at - b.refilled_at)) - $4::float8,
        refilled_at = GREATEST(b.refilled_at, EXCLUDED.refilled_at)
    WHERE LEAST($2::float8, b.tokens
               + $3::float8 * GREATEST(0, EXCLUDED.refilled_at - b.refilled_at)) >= $4::float8
    RETURNING b.tokens";

/// Tokens claimed at a time from a part of burst `burst`: small enough
/// that stock held by idle instances leaves most of the burst to the
/// others, large enough that a burst needs few round trips.
pub(crate) fn claim_size(burst: u32) -> u32 {
    (burst / 8).max(1)
}

/// One part of the relay's bucket, as a row.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    part: Part,
    name: &'static str,
    burst: u32,
    per_sec: f64,
}

impl Bucket {
    fn both(settings: &RateSettings) -> [Bucket; 2] {
        let ((shared, shared_rate), (reserved, reserved_rate)) =
            (settings.shared(), settings.reserved());
        [
            Bucket {
                part: Part::Shared,
                name: "lookups.shared",
                burst: shared,
                per_sec: shared_rate,
            },
            Bucket {
                part: Part::Reserved,
                name: "lookups.reserved",
                burst: reserved,
                per_sec: reserved_rate,
            },
        ]
    }
}

/// Takes `k` tokens from row `name` (burst `burst`, `per_sec` a second):
/// `false` if it does not hold them now. A claim whose answer was lost may
/// have taken them: they are lost, which errs on the side of fewer
/// lookups.
pub(crate) async fn claim(
    db: &Db,
    name: &str,
    burst: u32,
    per_sec: f64,
    k: u32,
) -> Result<bool, DbError> {
    let (burst, k) = (f64::from(burst), f64::from(k));
    let name = name.to_owned();
    db.transaction(async move |tx| {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&name, &burst, &per_sec, &k];
        Ok(tx.query_opt(CLAIM, &params).await?.is_some())
    })
    .await
}

/// Starts claiming tokens of the relay's bucket (as `settings` splits it)
/// from the database of `db` into a new [`Stock`], and returns the stock,
/// empty until the first claims succeed: hand it to
/// [`Relay::share_lookup_budget`](crate::Relay::share_lookup_budget).
///
/// The task runs on the store's runtime and holds neither the stock nor
/// the `Db`: it ends when either is dropped. `rate_buckets` must exist
/// ([`SHARED_LIMITS`](super::migrations::SHARED_LIMITS) applied); until it
/// does, claims fail and lookups are refused.
pub(crate) fn start(db: &Arc<Db>, settings: &RateSettings) -> Arc<Stock> {
    let stock = Arc::new(Stock::default());
    db.handle().spawn(top_up(
        Arc::downgrade(db),
        Arc::downgrade(&stock),
        Bucket::both(settings),
    ));
    stock
}

async fn top_up(db: Weak<Db>, stock: Weak<Stock>, buckets: [Bucket; 2]) {
    let mut tick = tokio::time::interval(TOP_UP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let (Some(stock), Some(db)) = (stock.upgrade(), db.upgrade()) else {
            return;
        };
        for b in buckets {
            let k = claim_size(b.burst);
            if b.burst == 0 || 2 * stock.available(b.part) >= i64::from(k) {
                continue;
            }
            let claimed =
                tokio::time::timeout(CLAIM_WAIT, claim(&db, b.name, b.burst, b.per_sec, k));
            match claimed.await {
                Ok(Ok(got)) => {
                    if got {
                        stock.add(b.part, k);
                    }
                    if failing {
                        tracing::info!("claiming failed lookups from postgres again");
                        failing = false;
                    }
                }
                Ok(Err(e)) if !failing => {
                    tracing::warn!(error = %e, "cannot claim failed lookups from postgres: once this instance's stock is spent, lookups are refused");
                    failing = true;
                }
                Err(_) if !failing => {
                    tracing::warn!("claiming failed lookups from postgres timed out: once this instance's stock is spent, lookups are refused");
                    failing = true;
                }
                Ok(Err(_)) | Err(_) => {}
            }
        }
        release(db);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant as WallClock;

    use pickup_proto::Instant;
    use pickup_test_servers::{require, Postgres};

    use super::*;
    use crate::rate_limit::{Peer, RateLimiter};
    use crate::relay::lock;
    use crate::store::postgres::migrations::{migrate, SHARED_LIMITS};

    /// Waits (at most ~`secs`) for `done`.
    fn wait_for(secs: u64, mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..secs * 20 {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done()
    }

    fn db_at(url: &str) -> Arc<Db> {
        let db = Db::connect(url, 2).expect("connect");
        db.block_on(migrate(&db, &[SHARED_LIMITS]))
            .expect("migrate");
        Arc::new(db)
    }

    /// One instance's limiter in shared mode over `db`.
    fn instance(db: &Arc<Db>, s: RateSettings) -> (Arc<Stock>, Mutex<RateLimiter>) {
        let stock = start(db, &s);
        let mut limiter = RateLimiter::new(s, Instant::from_millis(0));
        limiter.share(stock.clone());
        (stock, Mutex::new(limiter))
    }

    /// Peers that are never limited by their own bucket, so the relay's
    /// alone decides.
    fn settings(burst: u32, per_sec: f64, reserved_share: f64) -> RateSettings {
        RateSettings {
            peer_burst: 1000,
            peer_per_sec: 1000.0,
            global_burst: burst,
            global_per_sec: per_sec,
            reserved_share,
            suspect_secs: 60,
        }
    }

    #[test]
    fn claims_take_whole_chunks_while_the_bucket_holds_them() {
        let Some(pg) = require("claims_take_whole_chunks", Postgres::shared()) else {
            return;
        };
        let db = db_at(&pg.database().unwrap());
        // A bucket of 5 that never refills: two claims of 2, then none.
        let got: Vec<bool> = (0..3)
            .map(|_| db.block_on(claim(&db, "t", 5, 0.0, 2)).unwrap())
            .collect();
        assert_eq!(got, [true, true, false]);
        // A part of burst 0 (no reserve) has nothing to claim.
        assert!(!db.block_on(claim(&db, "empty", 0, 10.0, 1)).unwrap());
        assert_eq!(claim_size(0), 1);
        assert_eq!(claim_size(80), 10);
    }

    /// Two instances on one database spend together at most what one
    /// relay's bucket allows: burst + rate · T.
    #[test]
    fn two_instances_never_exceed_one_budget() {
        let Some(pg) = require("two_instances_never_exceed_one_budget", Postgres::shared()) else {
            return;
        };
        let url = pg.database().unwrap();
        let s = settings(64, 40.0, 0.25);
        let started = WallClock::now();
        let dbs = [db_at(&url), db_at(&url)];
        let instances: Vec<_> = dbs.iter().map(|db| instance(db, s)).collect();
        // Both instances hold their first claims of each part.
        let k = [claim_size(s.shared().0), claim_size(s.reserved().0)];
        assert!(wait_for(10, || instances.iter().all(|(stock, _)| {
            stock.available(Part::Shared) >= i64::from(k[0])
                && stock.available(Part::Reserved) >= i64::from(k[1])
        })));
        // The run's length counts from here: connecting may have been slow.
        let run_until = started.elapsed() + Duration::from_millis(1500);
        let granted: Vec<u64> = std::thread::scope(|scope| {
            let runs: Vec<_> = instances
                .iter()
                .enumerate()
                .map(|(i, (_, limiter))| {
                    scope.spawn(move || {
                        let mut granted = 0u64;
                        // Each lookup by a fresh (clean) peer, so both parts are spent.
                        for n in 0..200_000u64 {
                            let elapsed = started.elapsed();
                            if elapsed >= run_until {
                                break;
                            }
                            let now = Instant::from_millis(elapsed.as_millis() as u64);
                            let peer = Peer::Sim(i as u64 * 1_000_000 + n);
                            let mut l = lock(limiter);
                            if l.check(&peer, now).is_ok() {
                                l.failed(&peer, now);
                                granted += 1;
                            } else {
                                drop(l);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                        granted
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let secs = started.elapsed().as_secs_f64();
        let total: u64 = granted.iter().sum();
        // One token of slack for the database's clock against ours.
        let bound = f64::from(s.global_burst) + s.global_per_sec * secs + 1.0;
        assert!(
            total as f64 <= bound,
            "{granted:?} failed lookups in {secs:.3} s, more than {bound:.1}"
        );
        // Each spent at least the claims it held before the run.
        assert!(
            granted.iter().all(|&g| g >= u64::from(k[0] + k[1])),
            "{granted:?}"
        );
    }

    /// Without the database the stock runs dry and lookups are refused;
    /// once it is back, claims resume.
    #[test]
    fn the_stock_runs_dry_without_the_database_and_recovers() {
        let Some(pg) = require("the_stock_runs_dry_without_the_database", Postgres::start()) else {
            return;
        };
        let db = db_at(&pg.database().unwrap());
        let s = settings(16, 4.0, 0.0);
        let (stock, limiter) = instance(&db, s);
        let mut next = 0u64;
        let mut lookup = || {
            next += 1;
            let now = Instant::from_millis(0);
            let mut l = lock(&limiter);
            let ok = l.check(&Peer::Sim(next), now).is_ok();
            if ok {
                l.failed(&Peer::Sim(next), now);
            }
            ok
        };
        // Topped up, so no claim is under way when the server stops.
        let k = u64::from(claim_size(16));
        assert!(wait_for(10, || 2 * stock.available(Part::Shared) >= k as i64));
        pg.stop().unwrap();
        // Spend what is on hand: less than k / 2 + k.
        let spent = (0..=3 * k).take_while(|_| lookup()).count() as u64;
        assert!(
            spent <= 2 * k,
            "{spent} lookups on a stock of at most {}",
            2 * k
        );
        // It stays dry for several turns of the claiming task.
        for _ in 0..6 {
            std::thread::sleep(TOP_UP_EVERY);
            assert!(!lookup(), "a lookup was let in without the database");
        }
        pg.resume().unwrap();
        assert!(wait_for(20, &mut lookup), "claims did not resume");
    }
}
