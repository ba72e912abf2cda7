//! Puts `memory.x` where the linker finds it and links with cortex-m-rt's
//! `link.x` (here rather than in `.cargo/config.toml`'s rustflags, which a
//! `RUSTFLAGS` variable in the environment would silently replace).

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
