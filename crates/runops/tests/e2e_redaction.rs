//! End-to-end redaction: a task prints its secrets in plain, base64 and URL-encoded form
//! on stdout and stderr, and a table of customer e-mails and card numbers. None of it
//! may show up on the CLI's output, in `runops tasks logs`, in the server's SQLite
//! files or in the agent's spool. With `redact=none` the e-mails stay and the secret
//! values still go; `REDACT_INFO_TYPES` narrows the personal data the agent removes.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const DB_PASSWORD: &str = "Zq7#vLm2!pX9 wR4/t";
const API_TOKEN: &str = "tok_live_8f3Kq2Lm9Xw7Vb1N";

/// The target's secret, as the env-var provider reads it.
fn secret_json() -> String {
    format!(r#"{{"DB_PASSWORD": "{DB_PASSWORD}", "API_TOKEN": "{API_TOKEN}"}}"#)
}

const EMAILS: [&str; 3] = [
    "jane.doe@example.com",
    "j.smith@mail.example.org",
    "k.okafor@example.com",
];
const CARDS: [&str; 3] = [
    "4111 1111 1111 1111",
    "5500-0055-5555-5559",
    "3782 822463 10005",
];

/// Builds the customer table from parts, so that the script the server stores holds
/// no complete e-mail address or card number (only the output would).
const TABLE: &str = r#"
a=jane.doe; b=j.smith; c=k.okafor; d=example.com; e=mail.example.org
v=4111; w=1111; m1=5500; m2=0055; m3=5555; m4=5559; x1=3782; x2=822463; x3=10005
echo " id | email                    | card"
echo "----+--------------------------+---------------------"
echo "  1 | $a@$d     | $v $w $w $w"
echo "  2 | $b@$e | $m1-$m2-$m3-$m4"
echo "  3 | $c@$d     | $x1 $x2 $x3"
echo "(3 rows)"
"#;

/// Prints both secrets in every form on stdout and on stderr, then the table, then a
/// marker, then waits for `gate`.
fn leaky_script(gate: &Path) -> String {
    format!(
        r#"
urlenc() {{ local s="$1" i c; for ((i=0; i<${{#s}}; i++)); do c="${{s:i:1}}"; case "$c" in [a-zA-Z0-9.~_-]) printf '%s' "$c" ;; *) printf '%%%02X' "'$c" ;; esac; done; }}
for fd in 1 2; do
  {{
    echo "plain: $DB_PASSWORD and $API_TOKEN"
    echo "base64: $(printf '%s' "$DB_PASSWORD" | base64 -w0) $(printf 'admin:%s' "$DB_PASSWORD" | base64 -w0)"
    echo "base64: $(printf 'user:%s' "$API_TOKEN" | base64 -w0) $(printf 'ab:c%s' "$API_TOKEN" | base64 -w0)"
    echo "url: https://example.com/login?p=$(urlenc "$DB_PASSWORD")&t=$(urlenc "$API_TOKEN")"
  }} >&$fd
done
{TABLE}
printf 'x%.0s' {{1..300}}; echo
echo TABLE-DONE
printf 'y%.0s' {{1..300}}; echo
while [ ! -e '{gate}' ]; do sleep 0.05; done
echo after-gate
"#,
        gate = gate.display()
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the script's `urlenc` prints.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'~' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every spelling of the secrets the script prints, and for the base64 ones embedded
/// after a prefix also the part only the secret decides; all must be gone.
fn secret_spellings() -> Vec<String> {
    let mut forms = vec![DB_PASSWORD.to_string(), API_TOKEN.to_string()];
    forms.push(url_encode(DB_PASSWORD));
    forms.push(url_encode(API_TOKEN));
    for (prefix, value) in [
        ("", DB_PASSWORD),
        ("admin:", DB_PASSWORD),
        ("user:", API_TOKEN),
        ("ab:c", API_TOKEN),
    ] {
        let encoded = base64(format!("{prefix}{value}").as_bytes());
        let core_start = (8 * prefix.len()).div_ceil(6);
        let core_end = 8 * (prefix.len() + value.len()) / 6;
        forms.push(encoded[core_start..core_end].to_string());
        forms.push(encoded);
    }
    forms
}

fn personal_data() -> Vec<String> {
    let mut all: Vec<String> = EMAILS.iter().map(|e| e.to_string()).collect();
    for card in CARDS {
        all.push(card.to_string());
        all.push(card.replace([' ', '-'], ""));
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    !n.is_empty() && hay.windows(n.len()).any(|w| w == n)
}

/// Panics naming the first forbidden string found in `hay`.
fn assert_none_in(place: &str, hay: &[u8], forbidden: &[String]) {
    for f in forbidden {
        assert!(
            !contains(hay, f),
            "{f:?} leaked into {place}:\n{}",
            String::from_utf8_lossy(hay)
        );
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn task_ids(server: &Server) -> Vec<i64> {
    let tasks: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["tasks", "list", "--json"])).unwrap();
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect()
}

#[test]
fn secrets_in_every_spelling_and_customer_data_never_leave_the_agent() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let secret = secret_json();
    let _agent = Agent::start(&sb, "r", &token, None, &[("MY_TARGET", &secret)]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "prod-db",
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
    ]);

    let gate = sb.path("gate");
    let script_file = sb.path("leaky.sh");
    std::fs::write(&script_file, leaky_script(&gate)).unwrap();
    // The CLI waits and streams the output, as a user would run it.
    let cli = server
        .cli_cmd(&[
            "tasks",
            "create",
            "-t",
            "prod-db",
            "-f",
            &script_file.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let id = wait_for("the task to be created", || {
        task_ids(&server).first().copied()
    });
    let spool_dir = sb.path("agent-r").join("spool").join(id.to_string());
    let spool_log = spool_dir.join("log");
    // While the task runs (held on the gate), its output is on disk: redacted only.
    let on_disk = wait_for("the table in the spool", || {
        std::fs::read(&spool_log)
            .ok()
            .filter(|l| contains(l, "TABLE-DONE"))
    });
    assert_eq!(server.task(id)["status"], "running");
    for marker in [
        "[REDACTED:DB_PASSWORD]",
        "[REDACTED:API_TOKEN]",
        "[EMAIL_ADDRESS]",
        "[CREDIT_CARD_NUMBER]",
    ] {
        assert!(
            contains(&on_disk, marker),
            "{marker} missing from the spool:\n{}",
            String::from_utf8_lossy(&on_disk)
        );
    }
    let spool_files = files_under(&sb.path("agent-r").join("spool"));
    assert!(!spool_files.is_empty());
    for file in &spool_files {
        let bytes = std::fs::read(file).unwrap();
        let place = format!("the spool file {}", file.display());
        assert_none_in(&place, &bytes, &secret_spellings());
        assert_none_in(&place, &bytes, &personal_data());
    }

    std::fs::write(&gate, "").unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("after-gate"), "{printed}");
    assert!(printed.contains("[REDACTED:DB_PASSWORD]"), "{printed}");
    assert_none_in("the CLI's stdout", &out.stdout, &secret_spellings());
    assert_none_in("the CLI's stdout", &out.stdout, &personal_data());
    assert_none_in("the CLI's stderr", &out.stderr, &secret_spellings());
    assert_none_in("the CLI's stderr", &out.stderr, &personal_data());

    let task = server.wait_final(id);
    assert_eq!(task["status"], "success");
    assert_eq!(task["redacted"], true, "{task}");
    let logs = server.logs(id);
    // Both streams are in the log, each line redacted.
    assert_eq!(
        logs.matches("plain: [REDACTED:DB_PASSWORD] and [REDACTED:API_TOKEN]")
            .count(),
        2,
        "{logs}"
    );
    assert_eq!(logs.matches("[EMAIL_ADDRESS]").count(), 3, "{logs}");
    assert_eq!(logs.matches("[CREDIT_CARD_NUMBER]").count(), 3, "{logs}");
    assert_none_in("`runops tasks logs`", logs.as_bytes(), &secret_spellings());
    assert_none_in("`runops tasks logs`", logs.as_bytes(), &personal_data());

    // The server's store: the database file and its write-ahead log, as bytes. The log
    // is stored as text there (the marker is found), so the search means something.
    let mut store = Vec::new();
    for name in ["runops.db", "runops.db-wal"] {
        let path = server.data_dir.join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            let place = format!("the server's {}", path.display());
            assert_none_in(&place, &bytes, &secret_spellings());
            assert_none_in(&place, &bytes, &personal_data());
            store.extend_from_slice(&bytes);
        }
    }
    assert!(
        contains(&store, "TABLE-DONE") && contains(&store, "[EMAIL_ADDRESS]"),
        "the task's log was not found in the server's SQLite files"
    );
}

#[test]
fn redact_none_keeps_personal_data_but_still_removes_secret_values() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let secret = secret_json();
    let _agent = Agent::start(&sb, "n", &token, None, &[("MY_TARGET", &secret)]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "raw",
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
        "--redact",
        "none",
    ]);
    let script = format!(
        "{TABLE}\necho \"pw=$DB_PASSWORD b64=$(printf '%s' \"$API_TOKEN\" | base64 -w0)\" >&2\n"
    );
    let out = server.cli(&["tasks", "create", "-t", "raw", "-s", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    for kept in EMAILS.iter().chain(CARDS.iter()) {
        assert!(
            printed.contains(kept),
            "{kept} should stay with redact=none: {printed}"
        );
    }
    assert!(printed.contains("pw=[REDACTED:DB_PASSWORD]"), "{printed}");
    assert_none_in("the CLI's stdout", &out.stdout, &secret_spellings());

    let id = task_ids(&server)[0];
    let task = server.wait_final(id);
    // The engine saw every byte (for the secrets), so the output counts as redacted.
    assert_eq!(task["redacted"], true, "{task}");
    let logs = server.logs(id);
    assert!(logs.contains(EMAILS[0]), "{logs}");
    assert_none_in("`runops tasks logs`", logs.as_bytes(), &secret_spellings());
}

#[test]
fn redact_info_types_on_the_agent_narrows_personal_data_and_unknown_names_stop_it() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);

    let mut bad = Agent::start(
        &sb,
        "bad",
        &server.create_agent_token_for("bad"),
        Some("bad"),
        &[("REDACT_INFO_TYPES", "EMAIL_ADDRESS,PASSPORT")],
    );
    let status = wait_for("the agent with an unknown info type to exit", || {
        bad.child.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = bad.log();
    assert!(
        log.contains("PASSPORT") && log.contains("CREDIT_CARD_NUMBER"),
        "the error should name the unknown type and the valid ones: {log}"
    );

    let secret = secret_json();
    let _agent = Agent::start(
        &sb,
        "e",
        &server.create_agent_token_for("emails"),
        Some("emails"),
        &[
            ("MY_TARGET", &secret),
            ("REDACT_INFO_TYPES", "email_address"),
        ],
    );
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "emails-only",
        "--type",
        "bash",
        "--tags",
        "emails",
        "--secret_path",
        "MY_TARGET",
    ]);
    let script = "u=jane.doe; d=example.com; p1=+44; echo \"$u@$d $p1 20 7946 0958 $API_TOKEN\"";
    let printed = server.cli_ok(&["tasks", "create", "-t", "emails-only", "-s", script]);
    assert_eq!(
        printed.trim(),
        "[EMAIL_ADDRESS] +44 20 7946 0958 [REDACTED:API_TOKEN]"
    );
}

// What tools print by default: wrapped base64, bash's quoting, upper-case `\u` JSON, and
// a secret whose halves reach the log with stderr bytes between them.

/// Quotes, shell metacharacters, a leading `~` (escaped by `printf %q` only there).
const QUOTED: &str = "~s3c'r\"e$t`x\\y z!#&";
/// A control character: bash prints it in the ANSI-C `$'...'` form.
const CTRL: &str = "tab\there'x9";
/// Non-ASCII and HTML-sensitive characters: `\u00E4`-style JSON, C-locale octal.
const UNI: &str = "pässwörd-Ünï<&>";

fn tool_secret_json() -> String {
    let json = serde_json::json!({
        "API_TOKEN": API_TOKEN,
        "DB_PASSWORD": DB_PASSWORD,
        "QUOTED": QUOTED,
        "CTRL": CTRL,
        "UNI": UNI,
    });
    json.to_string()
}

/// Base64 offsets of the token (bytes of `a` before it): across a whole 76-column line.
const WRAP_OFFSETS: std::ops::Range<usize> = 0..60;
/// Offsets of the password in 64-column (PEM-style) base64.
const PEM_OFFSETS: [usize; 4] = [0, 20, 40, 47];
/// How much of the token stdout prints before stderr's progress line.
const TOKEN_SPLIT: usize = 12;

fn tools_script(gate1: &Path, gate2: &Path) -> String {
    format!(
        r#"
export LC_ALL=C.UTF-8
pad=$(printf 'x%.0s' {{1..300}})
for n in $(seq {w0} {w1}); do {{ head -c "$n" /dev/zero | tr '\0' a; printf %s "$API_TOKEN"; }} | base64; done
for n in {pem}; do {{ head -c "$n" /dev/zero | tr '\0' a; printf %s "$DB_PASSWORD"; }} | base64 -w 64; done
( set -x; : "$QUOTED"; : "$CTRL"; : "$UNI" )
printf '%q\n' "$QUOTED" "$CTRL" "$UNI" "x=$QUOTED"
LC_ALL=C printf '%q\n' "$UNI"
declare -p QUOTED CTRL UNI
jsonu() {{
  local s="$1" i c n
  for ((i=0; i<${{#s}}; i++)); do
    c="${{s:i:1}}"; n=$(printf '%d' "'$c")
    case "$c" in
      [\<\>\&\'+\`\"]) printf '\\u%04X' "$n" ;;
      [\\]) printf '%s' '\\' ;;
      *) if [ "$n" -gt 127 ]; then printf '\\u%04X' "$n"; else printf '%s' "$c"; fi ;;
    esac
  done
}}
echo "{{\"password\":\"$(jsonu "$UNI")\",\"quoted\":\"$(jsonu "$QUOTED")\"}}"
printf 'before\n%s\n%s' "$pad" "${{API_TOKEN:0:{split}}}"
while [ ! -e '{gate1}' ]; do sleep 0.05; done
printf 'progress\n%s\n' "$pad" >&2
while [ ! -e '{gate2}' ]; do sleep 0.05; done
printf '%s\n' "${{API_TOKEN:{split}}}"
echo TOOLS-DONE
"#,
        w0 = WRAP_OFFSETS.start,
        w1 = WRAP_OFFSETS.end - 1,
        pem = PEM_OFFSETS.map(|n| n.to_string()).join(" "),
        split = TOKEN_SPLIT,
        gate1 = gate1.display(),
        gate2 = gate2.display(),
    )
}

/// The base64 run that only `value` decides when `prefix_len` bytes precede it.
fn base64_core(prefix_len: usize, value: &str) -> String {
    let mut bytes = vec![b'a'; prefix_len];
    bytes.extend_from_slice(value.as_bytes());
    let encoded = base64(&bytes);
    encoded[(8 * prefix_len).div_ceil(6)..8 * (prefix_len + value.len()) / 6].to_string()
}

/// .NET-style JSON escaping, as the script's `jsonu` does it.
fn json_upper(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '<' | '>' | '&' | '\'' | '+' | '`' | '"' => format!("\\u{:04X}", c as u32),
            '\\' => "\\\\".to_string(),
            c if !c.is_ascii() => format!("\\u{:04X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// Every spelling the script prints: the values, bash's quoted forms, the JSON forms,
/// both halves of the split token.
fn tool_spellings() -> Vec<String> {
    let mut forms: Vec<String> = [API_TOKEN, DB_PASSWORD, QUOTED, CTRL, UNI]
        .iter()
        .map(|s| s.to_string())
        .collect();
    forms.extend([
        // set -x
        QUOTED.replace('\'', r"'\''"),
        CTRL.replace('\'', r"'\''"),
        // printf %q
        r#"\~s3c\'r\"e\$t\`x\\y\ z\!#\&"#.to_string(),
        r#"~s3c\'r\"e\$t\`x\\y\ z\!#\&"#.to_string(),
        r"tab\there\'x9".to_string(),
        r"p\303\244ssw\303\266rd-\303\234n\303\257<&>".to_string(),
        r"p\303\244ssw\303\266rd-\303\234n\303\257\<\&\>".to_string(),
        // declare -p
        r#"~s3c'r\"e\$t\`x\\y z!#&"#.to_string(),
        // JSON
        json_upper(UNI),
        json_upper(QUOTED),
        API_TOKEN[..TOKEN_SPLIT].to_string(),
        API_TOKEN[TOKEN_SPLIT..].to_string(),
    ]);
    forms
}

/// The base64 runs of the wrapped output: looked for with the line breaks removed.
fn wrapped_cores() -> Vec<String> {
    let mut cores: Vec<String> = WRAP_OFFSETS.map(|n| base64_core(n, API_TOKEN)).collect();
    cores.extend(PEM_OFFSETS.map(|n| base64_core(n, DB_PASSWORD)));
    cores
}

fn assert_no_tool_spelling_in(place: &str, hay: &[u8]) {
    assert_none_in(place, hay, &tool_spellings());
    let joined: Vec<u8> = hay.iter().copied().filter(|&b| b != b'\n').collect();
    assert_none_in(
        &format!("{place} (line breaks removed)"),
        &joined,
        &wrapped_cores(),
    );
}

#[test]
fn what_tools_print_by_default_never_leaves_the_agent() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let secret = tool_secret_json();
    let _agent = Agent::start(&sb, "t", &token, None, &[("MY_TARGET", &secret)]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "tools",
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
    ]);
    let (gate1, gate2) = (sb.path("gate1"), sb.path("gate2"));
    let script_file = sb.path("tools.sh");
    std::fs::write(&script_file, tools_script(&gate1, &gate2)).unwrap();
    let cli = server
        .cli_cmd(&[
            "tasks",
            "create",
            "-t",
            "tools",
            "-f",
            &script_file.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for("the task to be created", || {
        task_ids(&server).first().copied()
    });
    let spool_log = sb
        .path("agent-t")
        .join("spool")
        .join(id.to_string())
        .join("log");
    let spool_has = |marker: &str| {
        std::fs::read(&spool_log)
            .ok()
            .filter(|l| contains(l, marker))
    };
    // The reads are ordered by the gates: stdout's first half (after `before` and a
    // line longer than any secret spelling, so `before` is decided), then stderr's
    // progress line, then stdout's second half.
    wait_for("stdout's first half to be read", || spool_has("before\n"));
    std::fs::write(&gate1, "").unwrap();
    let on_disk = wait_for("stderr's progress line", || spool_has("progress\n"));
    assert_no_tool_spelling_in("the spool", &on_disk);
    std::fs::write(&gate2, "").unwrap();

    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("TOOLS-DONE"), "{printed}");
    assert_no_tool_spelling_in("the CLI's stdout", &out.stdout);
    assert_no_tool_spelling_in("the CLI's stderr", &out.stderr);

    let task = server.wait_final(id);
    assert_eq!(task["status"], "success", "{task}");
    let logs = server.logs(id);
    assert_no_tool_spelling_in("`runops tasks logs`", logs.as_bytes());
    for marker in [
        "[REDACTED:API_TOKEN]",
        "[REDACTED:DB_PASSWORD]",
        "[REDACTED:QUOTED]",
        "[REDACTED:CTRL]",
        "[REDACTED:UNI]",
    ] {
        assert!(logs.contains(marker), "{marker} missing:\n{logs}");
    }
    // The split token: the progress lines, then the whole token as one marker.
    assert!(
        logs.contains("xxx\n[REDACTED:API_TOKEN]\nTOOLS-DONE"),
        "the split token should be one marker after the progress line:\n{logs}"
    );
    let mut store = Vec::new();
    for name in ["runops.db", "runops.db-wal"] {
        let path = server.data_dir.join(name);
        if let Ok(bytes) = std::fs::read(&path) {
            assert_no_tool_spelling_in(&format!("the server's {}", path.display()), &bytes);
            store.extend_from_slice(&bytes);
        }
    }
    assert!(
        contains(&store, "TOOLS-DONE"),
        "the task's log was not found in the server's SQLite files"
    );
}
