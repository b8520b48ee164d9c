//! Builds the signaling wasm component so that `cargo run -p origin` gives a
//! self-contained `tern` binary with the component embedded.
//!
//! The component is built by a nested cargo into its own target directory
//! (sharing the outer one would deadlock on cargo's build lock). Set
//! `TERN_COMPONENT_WASM` to a prebuilt component to skip the nested build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=TERN_COMPONENT_WASM");
    for dir in [
        "sdk/demo",
        "sdk/js",
        "common/src",
        "edge-signaling/src",
        "edge-signaling/component/src",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("edge-signaling/Cargo.toml").display()
    );

    let wasm = match std::env::var("TERN_COMPONENT_WASM") {
        Ok(p) => PathBuf::from(p),
        Err(_) => build_component(&root),
    };
    std::fs::copy(&wasm, out.join("signaling.wasm")).unwrap_or_else(|e| {
        panic!("copying component {}: {e}", wasm.display());
    });
}

fn build_component(root: &std::path::Path) -> PathBuf {
    let target_dir = root.join("target").join("component");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "-p",
            "signaling-component",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "component",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not leak the outer build's settings (host rustflags, jobserver,
    // profile) into the wasm build.
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
        {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().expect("running cargo for the wasm component");
    assert!(
        status.success(),
        "building the signaling component failed; is the target installed? \
         (rustup target add wasm32-wasip2)"
    );
    target_dir.join("wasm32-wasip2/component/signaling_component.wasm")
}
