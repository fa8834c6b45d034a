//! Compile-time behaviour of the macros: `pass/` cases compile, `fail/` cases fail with the
//! reviewed messages in their `.stderr` files.
//!
//! The `.stderr` files were generated on rustc 1.95 (`TRYBUILD=overwrite cargo test --test ui`)
//! and reviewed; other compilers word diagnostics differently, so there this test is ignored
//! with a reason instead of failing on cosmetic differences. When the toolchain moves,
//! regenerate in one commit.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "macro UI snapshots are for rustc 1.95; regenerate them with TRYBUILD=overwrite on this toolchain"
)]
#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
