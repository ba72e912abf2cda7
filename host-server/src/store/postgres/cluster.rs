//! What a relay instance shares with the other instances of its cluster
//! besides the store: the failed-lookup budget (`lookup_budget`,
//! docs/design/scale-out.md §6.1) and the notice doorbells (`notices`,
//! §6.3).
//!
//! ```text
//!   serve, backend = postgres:
//!     Cluster::connect(url)        (off any async context, like the store)
//!     cluster.join(&relay)         ──► relay's failed lookups spend the shared budget
//!                                  ──► other instances' pushes ring relay's listeners
//!     keep `cluster` until the relay stops
//! ```

use std::sync::Arc;

use crate::rate_limit::budget_scope;
use crate::Relay;

use super::db::{Db, DbError};
use super::handoff::release;
use super::{lookup_budget, notices};

/// Connections this instance shares limits and doorbells over.
pub struct Cluster {
    /// `None` only while being dropped.
    db: Option<Arc<Db>>,
    url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// Connections of the cluster's own pool: claims and nothing else.
const POOL: usize = 2;

impl Cluster {
    /// Connects to the database at `url` (a libpq key-value string or a
    /// `postgres://` URL) with a small pool and a runtime of its own. Call
    /// it where blocking is allowed (not on a runtime worker, not inside
    /// `block_on`), after the migrations ran. `rate_buckets` must exist;
    /// until it does, lookups are refused.
    pub fn connect(url: &str) -> Result<Cluster, DbError> {
        Ok(Cluster::over(Arc::new(Db::connect(url, POOL)?), url))
    }

    /// Over the pool `db` of the database at `url` (the store's own, say).
    pub(crate) fn over(db: Arc<Db>, url: &str) -> Cluster {
        Cluster {
            db: Some(db),
            url: url.to_owned(),
        }
    }

    /// Joins `relay` to the cluster: from now on its failed lookups spend
    /// tokens claimed from the budget all instances share (the relay's
    /// [`RateSettings`](crate::rate_limit::RateSettings), which should be
    /// the same on every instance), and pushes committed by any instance
    /// ring its listening sessions. Background tasks on the cluster's
    /// runtime do both; they end when the relay or the `Cluster` is
    /// dropped.
    pub fn join(&self, relay: &Arc<Relay>) -> Result<(), DbError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        notices::spawn_notice_listener(db, &self.url, Arc::downgrade(relay))?;
        relay.share_lookup_budget(lookup_budget::start(db, &relay.settings.rate));
        tracing::info!(
            failed_lookups = budget_scope(true),
            "joined the cluster: the failed-lookup budget and notice doorbells are shared"
        );
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Likely dropped inside the relay's async `serve`, where the
        // runtime the `Db` owns may not be dropped.
        if let Some(db) = self.db.take() {
            release(db);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pickup_proto::Instant;
    use pickup_test_servers::{require, Postgres};

    use super::*;
    use crate::mailbox::Doorbell;
    use crate::random::SeededRandom;
    use crate::rate_limit::Peer;
    use crate::store::memory::MemoryStore;
    use crate::store::postgres::migrations::{migrate, SHARED_LIMITS};
    use crate::Settings;

    #[test]
    fn a_joined_relay_shares_the_budget_and_hears_pushes() {
        let Some(pg) = require("a_joined_relay_shares_the_budget", Postgres::shared()) else {
            return;
        };
        let url = pg.database().unwrap();
        let cluster = Cluster::connect(&url).unwrap();
        let db = cluster.db.clone().unwrap();
        db.block_on(migrate(&db, &[SHARED_LIMITS])).unwrap();
        let relay = Relay::new(
            Settings::default(),
            Arc::new(MemoryStore::new()),
            Box::new(SeededRandom::new(1)),
            Instant::from_millis(0),
        );
        let bell = Arc::new(Doorbell::default());
        relay.listen("t", 1, bell.clone());
        assert!(!relay.lookup_budget_is_shared());
        cluster.join(&relay).unwrap();
        assert!(relay.lookup_budget_is_shared());
        let now = Instant::from_millis(0);
        let (mut rung, mut claimed) = (false, false);
        for _ in 0..200 {
            rung |= bell.rung();
            claimed |= relay.check_lookup(&Peer::Sim(1), now).is_ok();
            if rung && claimed {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(rung, "listening did not wake the listener");
        assert!(claimed, "no token was claimed");
        // The main wiring drops it at the end of its async `serve`: the
        // runtime it owns must go elsewhere.
        drop(db);
        let main = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        main.block_on(async move { drop(cluster) });
    }
}
