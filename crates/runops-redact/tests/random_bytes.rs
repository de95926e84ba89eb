//! Randomized robustness: arbitrary bytes, arbitrary chunkings. The redactor must not
//! panic, must give the one-shot result whatever the chunking, and must keep (and emit
//! in pieces that are) valid UTF-8 whenever the input is valid UTF-8.
//!
//! The short run is always on. The long run is ignored by default:
//! `REDACT_FUZZ_SECS=600 cargo test -p runops-redact --test random_bytes -- --ignored`
//! (`REDACT_FUZZ_SEED` replays a seed printed by a failure).

use std::time::{Duration, Instant};

use runops_redact::{RedactConfig, Redactor};

/// Small, fast, reproducible generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that steer random input toward the detectors' edge cases.
const FRAGMENTS: &[&str] = &[
    "@",
    ".",
    "-",
    " ",
    "\n",
    ":",
    "::",
    "/",
    "+",
    "(",
    ")",
    "=",
    "%",
    "\\",
    "eyJ",
    "AKIA",
    "ASIA",
    "aws",
    "secret",
    "://",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
    "-----BEGIN ",
    "PRIVATE KEY-----",
    "GB82",
    "DE89",
    "4111",
    "1111",
    "555",
    "0132",
    "415",
    "+44",
    "20",
    "7946",
    "192.168.",
    "10.0.",
    "2001:db8:",
    "a@b.co",
    "user:pw@",
    "é",
    "€",
    "😀",
    "\u{feff}",
    "\r\n",
];

fn random_input(rng: &mut Rng, utf8: bool) -> Vec<u8> {
    let len = rng.below(4096);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.below(10) {
            0..=3 => out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes()),
            4..=6 => out.push(b"0123456789"[rng.below(10)]),
            7 | 8 => out.push(b'A' + rng.below(58) as u8),
            _ if utf8 => out.push(rng.below(128) as u8),
            _ => out.push(rng.next() as u8),
        }
    }
    if utf8 {
        out = String::from_utf8_lossy(&out).into_owned().into_bytes();
    }
    out
}

fn random_redactor(rng: &mut Rng) -> Redactor {
    let mut secrets = Vec::new();
    for i in 0..rng.below(4) {
        let raw = random_input(rng, true);
        let len = 3 + rng.below(20);
        let value: String = String::from_utf8_lossy(&raw).chars().take(len).collect();
        let key = if rng.below(2) == 0 { "TOKEN" } else { "NAME" };
        secrets.push((format!("{key}_{i}"), value));
    }
    Redactor::new(&RedactConfig {
        secrets,
        personal_data: rng.below(4) != 0,
        ..Default::default()
    })
}

/// One case: redact `input` whole and in random chunks; compare and check UTF-8.
fn check_case(rng: &mut Rng, seed: u64) {
    let utf8 = rng.below(2) == 0;
    let input = random_input(rng, utf8);
    let r = random_redactor(rng);
    let whole = r.redact(&input);
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + 1 + rng.below(64.min(input.len()))).min(input.len());
        let before = out.len();
        s.push(&input[at..end], &mut out);
        if utf8 {
            assert!(
                std::str::from_utf8(&out[before..]).is_ok(),
                "seed {seed}: an emitted chunk is not valid UTF-8"
            );
        }
        assert!(
            s.held_back() <= r.max_held_back(),
            "seed {seed}: held back too much"
        );
        at = end;
    }
    s.finish(&mut out);
    assert_eq!(
        out, whole,
        "seed {seed}: chunked output differs from one-shot"
    );
    if utf8 {
        assert!(
            std::str::from_utf8(&whole).is_ok(),
            "seed {seed}: output is not UTF-8"
        );
    }
}

fn run_for(cases: Option<usize>, duration: Duration, seed: u64) -> usize {
    let started = Instant::now();
    let mut done = 0;
    while cases.is_none_or(|c| done < c) && started.elapsed() < duration {
        let case_seed = seed.wrapping_add(done as u64).max(1);
        let mut rng = Rng(case_seed);
        check_case(&mut rng, case_seed);
        done += 1;
    }
    done
}

fn seed_from_env() -> u64 {
    std::env::var("REDACT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1234)
}

#[test]
fn random_bytes_never_panic_and_keep_utf8_short_run() {
    let done = run_for(Some(400), Duration::from_secs(60), seed_from_env());
    assert!(done > 0);
}

#[test]
#[ignore = "long-running; set REDACT_FUZZ_SECS and run with --ignored"]
fn random_bytes_never_panic_and_keep_utf8_long_run() {
    let secs = std::env::var("REDACT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("REDACT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let done = run_for(None, Duration::from_secs(secs), seed);
    println!("{done} random cases passed in {secs} s (seed {seed})");
}
