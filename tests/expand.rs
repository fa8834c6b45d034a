//! Expansion snapshots: what `#[consumer]` and `routing!` generate, compared with the
//! reviewed `tests/expand/*.expanded.rs` (regenerate with `MACROTEST=overwrite`).
//!
//! Needs `cargo expand` (`cargo install --locked cargo-expand --version 1.0.127`); without it
//! the test says so and passes, except under `CI=true`, where `.ci/run` installs it.

use std::process::Command;

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "expansion snapshots include std macro internals of rustc 1.95; regenerate with MACROTEST=overwrite"
)]
#[test]
fn expansions_match_snapshots() {
    let installed = Command::new("cargo").args(["expand", "--version"]).output().is_ok_and(|out| out.status.success());
    if !installed {
        assert!(std::env::var_os("CI").is_none(), "CI=true but cargo-expand is not installed (.ci/run installs it)");
        eprintln!("SKIPPED expansions_match_snapshots: cargo-expand is not installed");
        return;
    }
    if std::env::var_os("MACROTEST").is_some_and(|value| value == "overwrite") {
        // Writes missing or changed snapshots; review them in the diff.
        macrotest::expand("tests/expand/*.rs");
    } else {
        macrotest::expand_without_refresh("tests/expand/*.rs");
    }
}
