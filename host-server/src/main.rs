//! `pickup-relay` binary (work in progress).
fn main() {}
