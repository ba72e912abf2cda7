//! Dropping what may own the store's runtime, from a task on that runtime.
//!
//! A [`Db`](super::db::Db) owns the runtime its tasks run on, and tokio
//! panics when a runtime is dropped on one of its own workers (or inside
//! any async context). A task that upgraded a weak reference to a `Db`, or
//! to something holding one (the `Relay`, through its store), must not be
//! the one to drop it last.

use std::sync::Arc;

/// Drops `arc`; if it was the last reference, on a thread of its own.
pub(crate) fn release<T: Send + 'static>(arc: Arc<T>) {
    // `into_inner` is `Some` for exactly one of the holders that call it,
    // and `None` leaves the value to a holder still to drop it.
    if let Some(last) = Arc::into_inner(arc) {
        let dropped = std::thread::Builder::new()
            .name("store-release".into())
            .spawn(move || drop(last));
        if let Err(e) = dropped {
            // The closure, and the value, were dropped by the failed spawn:
            // only a process out of threads gets here.
            tracing::error!("cannot start a thread to release the store: {e}");
        }
    }
}
