//! Notice doorbells across instances, over `LISTEN/NOTIFY`
//! (docs/design/scale-out.md §6.3).
//!
//! A push to a terminal may commit on one instance while the terminal's
//! listening session is on another. The push's transaction therefore also
//! runs [`notify_terminal`]; PostgreSQL delivers the notification only if
//! it commits. Each instance keeps one connection of its own (outside the
//! pool: a pooled connection is shared and recycled) that ran `LISTEN
//! pickup_notice`, and rings the terminal's local listener, if any, for
//! each notification ([`spawn_notice_listener`]).
//!
//! Notifications sent while that connection is down are lost, so after
//! each `LISTEN` succeeds the task rings every local listener: each session
//! reloads its inbox and finds what it missed (a doorbell rung for nothing
//! costs one empty load).
//!
//! ```text
//!   push (any instance):  … INSERT notice; SELECT pg_notify('pickup_notice', terminal); COMMIT
//!   each instance:        LISTEN pickup_notice ──► Relay::ring_all()
//!                         notification(terminal) ──► Relay::ring(terminal)
//!                         connection lost ──► reconnect with backoff, LISTEN again ──► ring_all
//! ```

use std::sync::Weak;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Config, NoTls, Transaction};

use crate::Relay;

use super::db::{Db, DbError};
use super::handoff::release;

/// The channel pushes notify on; its payload is the terminal's name.
pub(crate) const CHANNEL: &str = "pickup_notice";

/// The first wait before reconnecting; doubled up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Within a push's transaction: when it commits, every instance rings
/// `terminal`'s listener ([`spawn_notice_listener`]). Nothing is delivered
/// if the transaction rolls back, and a push retried after a lost commit
/// may ring twice, which is harmless.
pub(crate) async fn notify_terminal(tx: &Transaction<'_>, terminal: &str) -> Result<(), DbError> {
    tx.execute("SELECT pg_notify('pickup_notice', $1)", &[&terminal])
        .await?;
    Ok(())
}

/// Starts the task that listens on its own connection to `url` (the
/// database `db` is connected to) and rings `relay`'s listeners for the
/// pushes of every instance, until the runtime of `db` stops or `relay` is
/// gone. It reconnects by itself, with backoff, for as long as it takes.
pub(crate) fn spawn_notice_listener(db: &Db, url: &str, relay: Weak<Relay>) -> Result<(), DbError> {
    let config: Config = url.parse().map_err(DbError::Url)?;
    db.handle().spawn(listen(config, relay));
    Ok(())
}

/// Why a connection stopped listening.
enum Ended {
    /// The relay was dropped: nothing is left to ring.
    RelayGone,
    /// The connection failed or closed.
    Lost(Option<tokio_postgres::Error>),
}

async fn listen(config: Config, relay: Weak<Relay>) {
    let mut backoff = RECONNECT_MIN;
    let mut lost = false;
    loop {
        let ended = listen_once(&config, &relay, || {
            if lost {
                tracing::info!("listening for other instances' notices again; woke every listener");
            }
            lost = false;
            backoff = RECONNECT_MIN;
        })
        .await;
        match ended {
            Ended::RelayGone => return,
            Ended::Lost(e) => {
                if !lost {
                    let error = e.map(|e| e.to_string()).unwrap_or_else(|| "closed".into());
                    tracing::warn!(%error, "lost the postgres connection for notices; pushes from other instances wait until it is back");
                    lost = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Connects, listens, and rings until the connection ends;
/// `on_listening` runs once `LISTEN` succeeded.
async fn listen_once(config: &Config, relay: &Weak<Relay>, on_listening: impl FnOnce()) -> Ended {
    if relay.strong_count() == 0 {
        return Ended::RelayGone;
    }
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return Ended::Lost(Some(e)),
    };
    // The connection is driven by a task of its own, so the client's LISTEN
    // can run meanwhile; its notifications ring as they come.
    let for_driver = relay.clone();
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let Some(relay) = for_driver.upgrade() else {
                        return Ended::RelayGone;
                    };
                    relay.ring(n.payload());
                    release(relay);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Lost(Some(e)),
                None => return Ended::Lost(None),
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        driver.abort();
        return Ended::Lost(Some(e));
    }
    // Pushes committed while nobody here listened rang no one: wake all.
    let Some(strong) = relay.upgrade() else {
        driver.abort();
        return Ended::RelayGone;
    };
    strong.ring_all();
    release(strong);
    on_listening();
    let ended = (&mut driver).await;
    drop(client);
    // A driver that panicked lost its connection too.
    ended.unwrap_or(Ended::Lost(None))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pickup_proto::Instant;
    use pickup_test_servers::{require, Postgres};

    use super::*;
    use crate::mailbox::Doorbell;
    use crate::random::SeededRandom;
    use crate::store::memory::MemoryStore;
    use crate::Settings;

    /// A relay with listeners for terminals `a` and `b`.
    fn relay() -> (Arc<Relay>, Arc<Doorbell>, Arc<Doorbell>) {
        let relay = Relay::new(
            Settings::default(),
            Arc::new(MemoryStore::new()),
            Box::new(SeededRandom::new(1)),
            Instant::from_millis(0),
        );
        let (a, b) = (Arc::new(Doorbell::default()), Arc::new(Doorbell::default()));
        relay.listen("a", 1, a.clone());
        relay.listen("b", 2, b.clone());
        (relay, a, b)
    }

    /// Whether `bell` rings within about `secs` (and takes the ring).
    fn rings_within(secs: u64, bell: &Doorbell) -> bool {
        for _ in 0..secs * 20 {
            if bell.rung() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bell.rung()
    }

    fn push(db: &Db, terminal: &str, commit: bool) -> Result<(), DbError> {
        db.block_on(db.transaction(async |tx| {
            notify_terminal(tx, terminal).await?;
            if commit {
                Ok(())
            } else {
                // Not transient: the transaction rolls back, once.
                Err(DbError::Schema("rolled back by the test".into()))
            }
        }))
    }

    #[test]
    fn committed_pushes_ring_and_rolled_back_ones_do_not() {
        let Some(pg) = require("committed_pushes_ring", Postgres::shared()) else {
            return;
        };
        let url = pg.database().unwrap();
        let db = Db::connect(&url, 2).unwrap();
        let (relay, a, b) = relay();
        spawn_notice_listener(&db, &url, Arc::downgrade(&relay)).unwrap();
        // Once listening, it wakes everyone.
        assert!(rings_within(10, &a) && rings_within(10, &b));
        assert!(push(&db, "a", false).is_err());
        push(&db, "b", true).unwrap();
        // Notifications come in commit order: had `a`'s come, it came first.
        assert!(rings_within(10, &b));
        assert!(!a.rung(), "a rolled-back push rang");
        push(&db, "a", true).unwrap();
        assert!(rings_within(10, &a));
        // A terminal nobody here listens for rings no one.
        push(&db, "elsewhere", true).unwrap();
        push(&db, "b", true).unwrap();
        assert!(rings_within(10, &b));
        assert!(!a.rung());
    }

    #[test]
    fn the_listener_reconnects_and_wakes_everyone_after_a_restart() {
        let Some(pg) = require("the_listener_reconnects", Postgres::start()) else {
            return;
        };
        let url = pg.database().unwrap();
        let db = Db::connect(&url, 2).unwrap();
        let (relay, a, b) = relay();
        spawn_notice_listener(&db, &url, Arc::downgrade(&relay)).unwrap();
        assert!(rings_within(10, &a) && rings_within(10, &b));
        pg.restart().unwrap();
        // Listening again, it woke every listener: pushes may have been lost.
        assert!(rings_within(20, &a), "no ring after the restart");
        assert!(rings_within(1, &b));
        push(&db, "b", true).unwrap();
        assert!(rings_within(10, &b));
        assert!(!a.rung());
    }
}
