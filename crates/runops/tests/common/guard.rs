//! The one guard for tests that need something from the machine (a database, a tool,
//! root). Under CI (`CI` set to anything but `false`/`0`, as `.ci/run` does) a missing
//! requirement fails the test: a skipped test must never report `ok` there. Elsewhere
//! it prints `SKIPPED: ...` with what to do, and the test returns early.
//!
//! Shared by every test crate of the workspace (`#[path]`-included where there is no
//! `common` module), so there is exactly one rule.

/// True when the tests run under CI.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// True when `available`; otherwise panics under CI, or prints why the test (or the
/// part of it that needs `what`) is skipped and returns false.
#[track_caller]
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if under_ci() {
        panic!("{what} is not available under CI; scripts/test.sh must set it up");
    }
    eprintln!("SKIPPED: {what} is not available here (run scripts/test.sh to set it up)");
    false
}
