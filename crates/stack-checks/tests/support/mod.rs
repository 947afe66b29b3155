//! Shared by the stack checks: where the repository is, and how to find a tool.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/stack-checks is two levels below the root")
        .to_path_buf()
}

/// The path of `tool` (from the environment variable `env_var` if set, else `PATH`), or `None`
/// with a note. Under CI (`FAULTLINE_REQUIRE_EXTERNAL_TESTS` set) a missing tool panics.
pub fn tool(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() {
            panic!(
                "{name} is required (FAULTLINE_REQUIRE_EXTERNAL_TESTS is set) but was not found; set {env_var} or put it on PATH"
            );
        }
        eprintln!("note: {name} not found (set {env_var} or install it); skipping this check");
    }
    found
}
