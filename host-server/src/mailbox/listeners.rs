//! Which session listens for each terminal's notices, and how a push wakes
//! it.
//!
//! A session stays sans-IO: a push only rings the listening session's
//! [`Doorbell`]; the session's driver, woken by it, calls
//! [`Session::handle_wake`](crate::session::Session::handle_wake), and the
//! session loads the notices it has not sent yet by a job, like any
//! store work. The TCP and TLS drivers `select!` on [`Doorbell::wait`];
//! the serial driver checks [`Doorbell::rung`] on every turn of its loop
//! (which reads with a short timeout anyway); the simulator decides when.
//!
//! ```text
//!   Listen (session 7, terminal t) ──► Listeners: t → (7, bell₇)   (a newer Listen replaces it)
//!   push to t committed (any session's job) ──► bell₇.ring()
//!   driver of 7: bell₇ rung ──► session.handle_wake(now) ──► job: notices above the last sent
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::relay::lock;

/// Wakes one session's driver: something for the session to load.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Doorbell {
    /// Rings: the next [`rung`](Self::rung) is `true` and a waiter wakes
    /// (or the next [`wait`](Self::wait) returns at once).
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether it rang since the last call (which answers `true` once).
    pub fn rung(&self) -> bool {
        self.rung.swap(false, Ordering::AcqRel)
    }

    /// Returns once it rang (at once if it rang while nobody waited);
    /// cancel-safe, for `select!`.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// The live listener of each terminal on this relay.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    by_terminal: Mutex<HashMap<String, (u64, Arc<Doorbell>)>>,
}

impl Listeners {
    /// Session `session` listens for `terminal` from now on, in place of
    /// any earlier one.
    pub(crate) fn listen(&self, terminal: &str, session: u64, bell: Arc<Doorbell>) {
        lock(&self.by_terminal).insert(terminal.to_owned(), (session, bell));
    }

    /// Session `session` no longer listens for `terminal` (if it still did).
    pub(crate) fn stop(&self, terminal: &str, session: u64) {
        let mut map = lock(&self.by_terminal);
        if map.get(terminal).is_some_and(|(s, _)| *s == session) {
            map.remove(terminal);
        }
    }

    /// Whether `session` is `terminal`'s live listener.
    pub(crate) fn is_listening(&self, terminal: &str, session: u64) -> bool {
        lock(&self.by_terminal)
            .get(terminal)
            .is_some_and(|(s, _)| *s == session)
    }

    /// Wakes `terminal`'s listener, if it has one on this relay.
    pub(crate) fn ring(&self, terminal: &str) {
        if let Some((_, bell)) = lock(&self.by_terminal).get(terminal) {
            bell.ring();
        }
    }

    /// Wakes every listener on this relay: pushes may have been missed
    /// (another instance's doorbells were lost while the relay was not
    /// listening to them), and a session woken for nothing loads nothing.
    pub(crate) fn ring_all(&self) {
        for (_, bell) in lock(&self.by_terminal).values() {
            bell.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_all_wakes_every_listener_once() {
        let listeners = Listeners::default();
        let bells: Vec<Arc<Doorbell>> = (0..3).map(|_| Arc::default()).collect();
        for (i, bell) in bells.iter().enumerate() {
            listeners.listen(&format!("t{i}"), i as u64, bell.clone());
        }
        listeners.stop("t2", 2);
        listeners.ring_all();
        assert!(bells[0].rung() && bells[1].rung());
        assert!(!bells[2].rung(), "no longer listening");
        assert!(!bells[0].rung(), "rung once");
    }
}
