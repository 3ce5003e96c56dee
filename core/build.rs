//! Builds the bundled channel plugins (`plugins/`, a workspace of its own) for
//! `wasm32-wasip2` and embeds the components in the binary, so `plugdesk serve` starts with
//! them and nothing else to install.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("core/ has a parent").to_path_buf();
    for watched in ["plugins", "sdk"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("wasm");
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("plugins").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's wrappers and flags are for the host, not for the plugins.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the bundled plugins");
    assert!(status.success(), "building the bundled plugins in plugins/ failed (see above)");
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut entries = String::from(
        "/// The plugins built from `plugins/`: (file name, component bytes).\npub(super) static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for member in members(&root.join("plugins").join("Cargo.toml")) {
        let wasm = out_dir.join(format!("{}.wasm", member.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        entries.push_str(&format!("    ({member:?}, include_bytes!({:?})),\n", wasm.display().to_string()));
    }
    entries.push_str("];\n");
    let generated = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs");
    std::fs::write(generated, entries).expect("write bundled.rs");
    bundle_templates(&root.join("templates"));
}

/// Embeds the default response templates (`templates/`, the layout `plugdesk-template` loads)
/// as (path in the directory, contents).
fn bundle_templates(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    for (folder, extension) in [("", ".hbs"), ("partials/", ".hbs"), ("helpers/", ".rhai")] {
        // A watched path that does not exist makes cargo rerun this script on every build
        // (and recompile the crate): watch only folders that are there. `templates/` itself
        // is watched above, so a folder created later is noticed.
        let Ok(entries) = std::fs::read_dir(dir.join(folder)) else { continue };
        println!("cargo:rerun-if-changed={}", dir.join(folder).display());
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(extension) && !name.starts_with('.') {
                files.push((format!("{folder}{name}"), entry.path()));
            }
        }
    }
    files.sort();
    let mut out = String::from(
        "/// The default templates from `templates/`: (path, contents).\npub(crate) static BUNDLED_TEMPLATES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in files {
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push_str("];\n");
    let generated = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("templates.rs");
    std::fs::write(generated, out).expect("write templates.rs");
}

/// The workspace members of `plugins/Cargo.toml` (one per line, quoted).
fn members(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read plugins/Cargo.toml");
    let list = text.split("members = [").nth(1).and_then(|s| s.split(']').next()).unwrap_or_default();
    list.split(',').map(|m| m.trim().trim_matches('"').to_owned()).filter(|m| !m.is_empty()).collect()
}

/// rust-toolchain.toml lists the target, but rustup adds it only when it installs the
/// toolchain; a toolchain installed earlier lacks it.
fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if let Ok(out) = installed
        && !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")
    {
        let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    }
}
