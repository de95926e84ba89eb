//! Throughput of the redactor on one core, as a stream fed 64 KiB chunks.
//!
//! `cargo run --release -p runops-redact --example redact_bench [MiB] [CASE]`
//! (`CASE`: run only the cases whose name contains it, e.g. `"all info types, clean"`,
//! handy under a profiler).
//!
//! Four cases with 100 secret values: secrets only and all info types, each on clean
//! output (the committed clean corpus, repeated: nothing to redact) and on output dense
//! with matches (secrets in plain, base64 and URL-encoded form on every line; the planted
//! corpus for personal data). Prints MB/s (10^6 bytes per second of this thread's CPU
//! time, and of wall-clock time), the most bytes a stream held back, and the peak
//! resident memory of the process.

use std::time::Instant;

use base64::Engine;
use runops_redact::{RedactConfig, Redactor};

/// Size of each chunk fed to the stream: what the agent reads from a pipe at once.
const CHUNK: usize = 64 * 1024;

/// Secret values, as the brief's goal is stated for.
const SECRETS: usize = 100;

const CLEAN: &[&str] = &[
    include_str!("../tests/corpus/clean/app_log.txt"),
    include_str!("../tests/corpus/clean/ops_output.txt"),
    include_str!("../tests/corpus/clean/psql_orders.txt"),
];

const PLANTED: &[&str] = &[
    include_str!("../tests/corpus/planted/customers_psql.txt"),
    include_str!("../tests/corpus/planted/support_log.txt"),
    include_str!("../tests/corpus/planted/config_dump.txt"),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn secrets(rng: &mut Rng) -> Vec<(String, String)> {
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%&*+-=?@^_~";
    (0..SECRETS)
        .map(|i| {
            let len = 12 + rng.below(29);
            let value: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
                .collect();
            let key = if i % 2 == 0 {
                format!("DB_PASSWORD_{i}")
            } else {
                format!("API_TOKEN_{i}")
            };
            (key, value)
        })
        .collect()
}

fn repeat_to(parts: &[&str], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64 * 1024);
    while out.len() < size {
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
    }
    out.truncate(size);
    out
}

/// Log lines each carrying a secret in plain, base64 or URL-encoded form.
fn dense_secrets(rng: &mut Rng, secrets: &[(String, String)], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    let mut n = 0u64;
    while out.len() < size {
        let (_, v) = &secrets[rng.below(secrets.len())];
        let form = match n % 3 {
            0 => v.clone(),
            1 => base64::engine::general_purpose::STANDARD.encode(format!("user:{v}")),
            _ => v
                .replace('%', "%25")
                .replace('#', "%23")
                .replace('&', "%26"),
        };
        out.extend_from_slice(
            format!(
                "2024-03-01T12:34:56.{n:03}Z INFO [conn] attempt {n} with credential {form} ok\n"
            )
            .as_bytes(),
        );
        n += 1;
    }
    out.truncate(size);
    out
}

struct Run {
    mb_per_s: f64,
    /// Per second of CPU time of this thread: what one core does, however busy the
    /// machine is (wall-clock figures drop when other processes share the cores).
    mb_per_cpu_s: Option<f64>,
    max_held_back: usize,
    output_len: usize,
}

fn run(r: &Redactor, input: &[u8], passes: usize) -> Run {
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut max_held_back = 0;
    let mut output_len = 0;
    let started = Instant::now();
    let cpu_started = thread_cpu_ns();
    for _ in 0..passes {
        let mut s = r.stream();
        for chunk in input.chunks(CHUNK) {
            out.clear();
            s.push(chunk, &mut out);
            output_len += out.len();
            max_held_back = max_held_back.max(s.held_back());
        }
        out.clear();
        s.finish(&mut out);
        output_len += out.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = match (cpu_started, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    let bytes = (input.len() * passes) as f64;
    Run {
        mb_per_s: bytes / secs / 1e6,
        mb_per_cpu_s: cpu_secs.map(|s| bytes / s / 1e6),
        max_held_back,
        output_len: output_len / passes,
    }
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let size = mib * 1024 * 1024;
    let mut rng = Rng(0x5EED_2024);
    let secrets = secrets(&mut rng);
    let clean = repeat_to(CLEAN, size);
    let dense_s = dense_secrets(&mut rng, &secrets, size);
    let dense_p = {
        let mut v = repeat_to(PLANTED, size / 2);
        v.extend_from_slice(&dense_secrets(&mut rng, &secrets, size / 2));
        v
    };

    let secrets_only = Redactor::new(&RedactConfig {
        secrets: secrets.clone(),
        personal_data: false,
        ..Default::default()
    });
    let all_types = Redactor::new(&RedactConfig {
        secrets,
        personal_data: true,
        ..Default::default()
    });
    println!(
        "{SECRETS} secret values -> {} literal patterns; input {mib} MiB per case, {} KiB chunks",
        secrets_only.secret_pattern_count(),
        CHUNK / 1024
    );
    println!(
        "| case | MB/s (CPU time) | MB/s (wall clock) | output/input | most bytes held back (bound) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let cases: [(&str, &Redactor, &[u8]); 4] = [
        ("secrets only, clean", &secrets_only, &clean),
        ("secrets only, dense", &secrets_only, &dense_s),
        ("all info types, clean", &all_types, &clean),
        ("all info types, dense", &all_types, &dense_p),
    ];
    let only = std::env::args().nth(2).unwrap_or_default();
    for (name, r, input) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        run(r, &input[..input.len().min(4 * 1024 * 1024)], 1); // warm up
        let res = run(r, input, 3);
        let cpu = res
            .mb_per_cpu_s
            .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"));
        println!(
            "| {name} | {cpu} | {:.0} | {:.3} | {} ({}) |",
            res.mb_per_s,
            res.output_len as f64 / input.len() as f64,
            res.max_held_back,
            r.max_held_back()
        );
    }
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak resident memory {:.1} MiB (of which inputs {:.1} MiB)",
            kib as f64 / 1024.0,
            (3 * size) as f64 / 1024.0 / 1024.0
        );
    }
}
