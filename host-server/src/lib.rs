//! The Pickup relay (work in progress).
