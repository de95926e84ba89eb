//! How the `runops` binary is laid out by the linker (x86-64 Linux with glibc).
//!
//! One binary holds the server, the agent and the CLI, so the code an agent or a CLI
//! command runs is scattered among code it never runs. The kernel maps a binary's pages
//! 64 KiB at a time around each page fault, so an idle agent held 10 MiB of the
//! binary's text resident for about 2 MiB of functions it ran. Two linker options fix
//! the layout without changing any code (BENCHMARKS.md, "The binary's layout"):
//!
//! - `--symbol-ordering-file=link/hot-symbols.txt`: the functions the agent and the CLI
//!   run (recorded by `scripts/link-order.sh` under callgrind) are placed first and
//!   together. A name the build does not have (the list is older than the code) is
//!   skipped; a stale list costs memory, never correctness.
//! - `-z pack-relative-relocs`: the 53,000 relative relocations of a position-
//!   independent binary are stored as a compact bitmap (DT_RELR) instead of 1.3 MB
//!   that the dynamic loader reads on every start. Needs glibc 2.36 at run time, so
//!   it is used only when the building machine has it (a binary built here runs here).
//!
//! Both are linker options of LLD (Rust's default linker on x86_64-unknown-linux-gnu
//! since 1.90). They are left out when the build targets anything else, when RUSTFLAGS
//! choose another linker, or with `RUNOPS_PLAIN_LINK=1`.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=RUNOPS_PLAIN_LINK");
    if env::var_os("RUNOPS_PLAIN_LINK").is_some_and(|v| v != "0") {
        return;
    }
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || host != target || !default_linker() {
        return;
    }
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("link")
        .join("hot-symbols.txt");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=runops=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=runops=-Wl,--no-warn-symbol-ordering");
    }
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=runops=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether rustc links with its own LLD: nothing in RUSTFLAGS picks another linker.
fn default_linker() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    !["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
        && env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
}

/// The building machine's glibc, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}
