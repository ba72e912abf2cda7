//! The drivers build for bare-metal targets without `std` or an allocator:
//! the same check CI makes, kept next to the code that must stay no_std.
//! Needs the targets installed:
//! `rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi`.

use std::process::Command;

fn build_for(target: &str, features: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "pickup-device",
            "--lib",
            "--no-default-features",
            "--features",
            features,
            "--target",
            target,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "no_std build for {target} ({features:?}) failed (is the target installed? \
         rustup target add {target}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test, builds in turn: two nested `cargo build`s at once in the
/// same target directory can trip over each other's dependency files.
/// With `auth` too: a terminal that authenticates stays no_std.
#[test]
fn builds_for_cortex_m4f_and_m0() {
    build_for("thumbv7em-none-eabihf", "");
    build_for("thumbv6m-none-eabi", "");
    build_for("thumbv6m-none-eabi", "auth");
}
