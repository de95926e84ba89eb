//! End-to-end: the database targets through the real `runops` binary (server, agent,
//! CLI) against the PostgreSQL and MariaDB of this machine, and `mongosh` against the
//! `nx-27017` stand-in server.
//!
//! The core proof is differential: the same scripts go through `psql -X -A -F<TAB>
//! -v ON_ERROR_STOP=1 -f` / `mysql --batch` and through Runops, and stdout must match
//! byte for byte. Each test works in its own schema / tables (random names), so the
//! tests run in parallel against the shared `test` databases, and cleans up.
//!
//! Services: PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust), MariaDB on
//! 127.0.0.1:3306 (`root`, no password), `scripts/test.sh` starts them. Under CI
//! (`CI=true`) a missing service fails the test; locally it is skipped with a reason.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------------------------------
// Services and the real clients.

fn postgres_up() -> bool {
    require(
        "PostgreSQL on 127.0.0.1:5432 with `psql`",
        psql_cmd(&["-Atc", "select 1"])
            .output()
            .is_ok_and(|o| o.status.success()),
    )
}

fn mariadb_up() -> bool {
    require(
        "MariaDB on 127.0.0.1:3306 with `mysql`",
        mysql_cmd()
            .arg("-e")
            .arg("select 1")
            .output()
            .is_ok_and(|o| o.status.success()),
    )
}

fn psql_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-d", "test"])
        .args(args)
        .env("PGCLIENTENCODING", "UTF8")
        .env_remove("PGTZ")
        .env_remove("PGOPTIONS");
    c
}

fn mysql_cmd() -> Command {
    let mut c = Command::new("mysql");
    c.args(["--batch", "-h", "127.0.0.1", "-P", "3306", "-uroot", "test"]);
    c
}

/// Runs `script` through `psql -X -A -F<TAB> -v ON_ERROR_STOP=1 -f <file>`.
fn psql_file(sb: &Sandbox, script: &str) -> Output {
    let file = sb.path(&format!("script-{}.sql", unique("f")));
    std::fs::write(&file, script).unwrap();
    psql_cmd(&["-A", "-F\t", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&file)
        .output()
        .expect("run psql")
}

/// Runs SQL as the postgres superuser; panics on failure.
fn psql_admin(sql: &str) -> String {
    let out = psql_cmd(&["-Atc", sql]).output().expect("run psql");
    assert!(out.status.success(), "psql -c {sql:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs `script` through `mysql --batch` (script on stdin, as users pipe files).
fn mysql_batch(script: &str) -> Output {
    let mut child = mysql_cmd()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mysql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn mysql_admin(sql: &str) -> String {
    let out = mysql_cmd()
        .arg("-N")
        .arg("-e")
        .arg(sql)
        .output()
        .expect("run mysql");
    assert!(out.status.success(), "mysql -e {sql:?}: {}", stderr(&out));
    stdout(&out)
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}_{}_{hex}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// A server, one agent holding the targets' secrets, and the targets.

struct Env {
    sb: Sandbox,
    server: Server,
    agent: Agent,
}

/// Secrets of the agent: `(env var, JSON)`.
fn start(secrets: &[(&str, String)], targets: &[&[&str]]) -> Env {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let agent = Agent::start(&sb, "db", &token, None, &env);
    for t in targets {
        let mut args = vec!["targets", "create"];
        args.extend_from_slice(t);
        server.cli_ok(&args);
    }
    Env { sb, server, agent }
}

fn pg_secret() -> String {
    r#"{"PG_HOST": "127.0.0.1", "PG_USER": "postgres", "PG_PASS": "trust-auth-ignores-it", "PG_DB": "test", "PGSSLMODE": "disable"}"#.to_string()
}

/// The MariaDB user the tests connect as (root has no password, and a target needs one).
const MYSQL_TEST_USER: &str = "rt_runops";
const MYSQL_TEST_PASS: &str = "rt-Runops-pw-1";

fn mysql_secret() -> String {
    static USER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        for host in ["127.0.0.1", "localhost"] {
            mysql_admin(&format!(
                "create user if not exists '{MYSQL_TEST_USER}'@'{host}' identified by '{MYSQL_TEST_PASS}'; \
                 alter user '{MYSQL_TEST_USER}'@'{host}' identified by '{MYSQL_TEST_PASS}'; \
                 grant all on test.* to '{MYSQL_TEST_USER}'@'{host}'"
            ));
        }
    });
    format!(
        r#"{{"MYSQL_HOST": "127.0.0.1", "MYSQL_USER": "{MYSQL_TEST_USER}", "MYSQL_PASS": "{MYSQL_TEST_PASS}", "MYSQL_DB": "test"}}"#
    )
}

/// `runops tasks create -t <target> -s <script>`: (exit status success, stdout).
fn runops_task(env: &Env, target: &str, script: &str) -> Output {
    env.server
        .cli(&["tasks", "create", "-t", target, "-s", script])
}

/// Asserts the two outputs are equal, showing both in full when they differ.
fn assert_same_bytes(case: &str, ours: &str, theirs: &str) {
    assert!(
        ours == theirs,
        "case `{case}`: Runops and the reference client differ\n--- runops ---\n{ours}--- reference ---\n{theirs}---"
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL.

/// Scripts run against both psql and Runops; `SCHEMA` is replaced by a fresh schema.
const PG_CORPUS: &[(&str, &str)] = &[
    (
        "numbers and booleans",
        "select 1::int as i, 9223372036854775807::bigint as big, 12345.678900::numeric as num, \
         1.5::float8 as f, 1e100::float8 as huge, true as t, false as f2, null::int as n;",
    ),
    (
        "text with tabs newlines backslashes unicode",
        "select E'tab\\there' as tabbed, E'new\\nline' as nl, E'back\\\\slash' as bs, \
         'ünïcødé ✓ 日本語 🚀' as uni, '' as empty, 'it''s' as quote, '\"dq\"' as dq;",
    ),
    (
        "dates and times",
        "set timezone = 'Europe/Paris';\n\
         select '2024-01-02 03:04:05.123456'::timestamp as ts, '2024-01-02 03:04:05+02'::timestamptz as tstz, \
         '2024-02-29'::date as d, '1 year 2 mons 3 days 04:05:06.7'::interval as iv, '12:34:56'::time as tm, \
         'infinity'::timestamp as inf;",
    ),
    (
        "json arrays bytea uuid",
        "select '{\"a\": [1, 2, {\"b\": null}]}'::json as j, '{\"b\": 2, \"a\": \"x\\ty\"}'::jsonb as jb, \
         array[1,2,3] as arr, array['a b', null, 'c\"d', ''] as tarr, '{{1,2},{3,4}}'::int[] as matrix, \
         '\\xdeadbeef00'::bytea as by, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u, \
         '192.168.0.0/16'::cidr as net, point(1.5, 2) as pt, 'a & b'::tsquery as q;",
    ),
    (
        "ddl dml tags and result sets",
        "create table SCHEMA.t (id int primary key, name text, note text);\n\
         select * from SCHEMA.t;\n\
         insert into SCHEMA.t values (1, 'one', null);\n\
         insert into SCHEMA.t values (2, E'two\\tcols', 'x'), (3, E'multi\\nline', null);\n\
         insert into SCHEMA.t values (4, 'four', null) returning id, name;\n\
         update SCHEMA.t set note = 'n' where id > 1;\n\
         delete from SCHEMA.t where id = 4;\n\
         select * from SCHEMA.t order by id;\n\
         select count(*) from SCHEMA.t where false;\n\
         create index t_name on SCHEMA.t (name);\n\
         alter table SCHEMA.t add column extra int;\n\
         create view SCHEMA.v as select id from SCHEMA.t;\n\
         create table SCHEMA.t2 as select * from SCHEMA.t;\n\
         select id into SCHEMA.t3 from SCHEMA.t;\n\
         truncate SCHEMA.t2;\n\
         drop view SCHEMA.v;\n",
    ),
    (
        "several statements per line, comments and dollar quotes",
        "select 1 as a; select 2 as b; -- trailing comment; not a statement\n\
         /* block ; comment */ select 'x;y' as c;\n\
         do $$ begin perform 1; end $$;\n\
         create function SCHEMA.f(x int) returns int language sql as $fn$ select x + 1; $fn$;\n\
         select SCHEMA.f(41) as answer;\n\
         select $tag$dollar;quoted$tag$ as d\n;",
    ),
    (
        "transactions",
        "begin;\ncreate table SCHEMA.tx (a int);\ninsert into SCHEMA.tx values (1);\nrollback;\n\
         start transaction;\ncreate table SCHEMA.tx2 (a int);\ncommit;\n\
         set search_path = SCHEMA;\nselect count(*) from tx2;\nshow search_path;",
    ),
    (
        "empty results and wide rows",
        "select * from generate_series(1, 0) as g;\n\
         select g, g * 2 as double, repeat('x', g) as xs from generate_series(1, 25) as g;\n\
         select null as only_null;",
    ),
];

/// Scripts that stop at an error: stdout must match up to the error, the error is
/// printed, and the statements after it never ran.
const PG_ERROR_CORPUS: &[(&str, &str)] = &[
    (
        "missing table midway",
        "create table SCHEMA.e (a int);\ninsert into SCHEMA.e values (1);\n\
         select * from SCHEMA.nope;\ninsert into SCHEMA.e values (2);\nselect 'never' as n;",
    ),
    (
        "syntax error",
        "select 1 as ok;\nselect from where;\ncreate table SCHEMA.never (a int);",
    ),
    (
        "division by zero at run time",
        "create table SCHEMA.e (a int);\nselect 1/0;\ninsert into SCHEMA.e values (3);",
    ),
];

fn pg_env() -> Env {
    start(
        &[("PG_T", pg_secret())],
        &[
            &[
                "--name",
                "pg",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
            ],
            &[
                "--name",
                "pg-none",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
                "--redact",
                "none",
            ],
        ],
    )
}

#[test]
fn postgres_output_matches_psql_byte_for_byte() {
    if !postgres_up() {
        return;
    }
    let env = pg_env();
    for (case, script) in PG_CORPUS {
        let schema = unique("rt_pg");
        psql_admin(&format!("create schema {schema}"));
        let script = script.replace("SCHEMA", &schema);
        let reference = psql_file(&env.sb, &script);
        assert!(
            reference.status.success(),
            "psql failed on `{case}`: {}",
            stderr(&reference)
        );
        // The SCHEMA objects are created by the script: run it again on a fresh schema.
        psql_admin(&format!(
            "drop schema {schema} cascade; create schema {schema}"
        ));
        let ours = runops_task(&env, "pg-none", &script);
        psql_admin(&format!("drop schema {schema} cascade"));
        assert!(
            ours.status.success(),
            "`{case}` failed in Runops: {}{}",
            stdout(&ours),
            stderr(&ours)
        );
        assert_same_bytes(case, &stdout(&ours), &stdout(&reference));
    }
}

#[test]
fn postgres_errors_stop_the_script_like_psql_and_later_statements_never_run() {
    if !postgres_up() {
        return;
    }
    let env = pg_env();
    for (case, script) in PG_ERROR_CORPUS {
        let schema = unique("rt_pge");
        psql_admin(&format!("create schema {schema}"));
        let script = script.replace("SCHEMA", &schema);
        let reference = psql_file(&env.sb, &script);
        assert_eq!(
            reference.status.code(),
            Some(3),
            "psql on `{case}`: {}",
            stderr(&reference)
        );
        let psql_rows = psql_admin(&format!(
            "select coalesce(string_agg(table_name || ':' || (xpath('/row/c/text()', \
             query_to_xml('select count(*) as c from {schema}.' || table_name, false, true, '')))[1]::text, ','), '') \
             from information_schema.tables where table_schema = '{schema}'"
        ));
        psql_admin(&format!(
            "drop schema {schema} cascade; create schema {schema}"
        ));

        let ours = runops_task(&env, "pg-none", &script);
        assert_eq!(
            ours.status.code(),
            Some(3),
            "`{case}`: exit code like psql's: {}",
            stderr(&ours)
        );
        let ours_out = stdout(&ours);
        let reference_out = stdout(&reference);
        assert!(
            ours_out.starts_with(&reference_out),
            "`{case}`: output before the error differs\n--- runops ---\n{ours_out}--- psql ---\n{reference_out}"
        );
        // psql prints `psql:<file>:<line>: ERROR:  <message>`; Runops `ERROR:  <message>`.
        let psql_err = stderr(&reference);
        let message = psql_err
            .lines()
            .find_map(|l| l.split_once("ERROR:  ").map(|(_, m)| m.to_string()))
            .expect("psql printed an error");
        let rest = &ours_out[reference_out.len()..];
        assert!(
            rest.starts_with(&format!("ERROR:  {message}\nLINE ")),
            "`{case}`: {rest}"
        );
        // The database holds exactly what psql left: nothing after the error ran.
        let our_rows = psql_admin(&format!(
            "select coalesce(string_agg(table_name || ':' || (xpath('/row/c/text()', \
             query_to_xml('select count(*) as c from {schema}.' || table_name, false, true, '')))[1]::text, ','), '') \
             from information_schema.tables where table_schema = '{schema}'"
        ));
        psql_admin(&format!("drop schema {schema} cascade"));
        assert_eq!(
            our_rows, psql_rows,
            "`{case}`: tables and row counts after the error"
        );
    }
}

#[test]
fn postgres_error_names_the_line_of_the_script() {
    if !postgres_up() {
        return;
    }
    let env = pg_env();
    let out = runops_task(
        &env,
        "pg-none",
        "select 1 as a;\n\nselect *\n  from rt_no_such_table_x;\n",
    );
    assert_eq!(out.status.code(), Some(3));
    let caret = " ".repeat("LINE 4:   from ".len());
    assert_eq!(
        stdout(&out),
        format!(
            "a\n1\n(1 row)\nERROR:  relation \"rt_no_such_table_x\" does not exist\n\
             LINE 4:   from rt_no_such_table_x\n{caret}^\n"
        )
    );
}

#[test]
fn postgres_csv_matches_psql_csv_with_any_separator() {
    if !postgres_up() {
        return;
    }
    let env = start(
        &[
            ("PG_T", pg_secret()),
            (
                "PG_SEMI",
                pg_secret().replace("}", r#", "FIELD_SEPARATOR": ";"}"#),
            ),
            (
                "PG_MULTI",
                pg_secret().replace("}", r#", "FIELD_SEPARATOR": "||"}"#),
            ),
        ],
        &[
            &[
                "--name",
                "csv",
                "--type",
                "postgres-csv",
                "--secret_path",
                "PG_T",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "csv-semi",
                "--type",
                "postgres-csv",
                "--secret_path",
                "PG_SEMI",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "csv-multi",
                "--type",
                "postgres-csv",
                "--secret_path",
                "PG_MULTI",
                "--redact",
                "none",
            ],
        ],
    );
    let script = "select 1 as id, 'plain' as t, null as n, '' as e, 'a,b;c' as seps, 'say \"hi\"' as q, \
                  E'two\\nlines' as nl, E'cr\\rhere' as cr, 'x||y' as pipes \
                  union all select 2, 'ü', 'v', 'w', 'x', 'y', 'z', '', '' order by id;\n\
                  select * from generate_series(1, 0) as empty;";
    for (target, sep) in [("csv", ","), ("csv-semi", ";")] {
        let file = env.sb.path("csv.sql");
        std::fs::write(&file, script).unwrap();
        let reference = psql_cmd(&[
            "--csv",
            "-P",
            &format!("csv_fieldsep={sep}"),
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
        assert!(reference.status.success(), "{}", stderr(&reference));
        let ours = runops_task(&env, target, script);
        assert!(ours.status.success(), "{}", stderr(&ours));
        assert_same_bytes(target, &stdout(&ours), &stdout(&reference));
    }
    // psql --csv takes one-character separators only; a longer one quotes what holds it.
    let ours = runops_task(
        &env,
        "csv-multi",
        "select 'x||y' as a, 'x|y' as b, 'p' as c;",
    );
    assert_eq!(stdout(&ours), "a||b||c\n\"x||y\"||x|y||p\n");
    // No footer and no command tags inside the CSV.
    let ours = runops_task(
        &env,
        "csv",
        "create temp table t (a int); insert into t values (1); select a from t;",
    );
    assert_eq!(stdout(&ours), "a\n1\n");
}

#[test]
fn docs_walkthrough_postgres_select_1_with_a_password_user() {
    if !postgres_up() {
        return;
    }
    let user = unique("rt_pguser");
    let pass = format!("Pw-{}", unique("x"));
    psql_admin(&format!("create role {user} login password '{pass}'"));
    let secret = format!(
        r#""PG_HOSTNAME": "127.0.0.1",
"PG_DB": "test",
"PG_USER": "{user}",
"PG_PASS": "{pass}","#
    );
    let env = start(
        &[("MY_TARGET", secret)],
        &[&[
            "--name",
            "demo-pg",
            "--type",
            "postgres",
            "--secret_path",
            "MY_TARGET",
            "--secret_mapping",
            r#"{"PG_HOST": "PG_HOSTNAME"}"#,
        ]],
    );
    let out = env
        .server
        .cli(&["tasks", "create", "-t", "demo-pg", "-s", "select 1"]);
    let printed = stdout(&out);
    let log = env.agent.log();
    psql_admin(&format!("drop role {user}"));
    assert!(
        out.status.success(),
        "{printed}{}\nagent log:\n{log}",
        stderr(&out)
    );
    assert_eq!(printed, "?column?\n1\n(1 row)\n");
}

#[test]
fn postgres_failures_are_clear_and_fast() {
    if !postgres_up() {
        return;
    }
    let closed_port = free_port();
    let env = start(
        &[
            ("PG_T", pg_secret()),
            (
                "PG_PARTIAL",
                r#"{"PG_HOST": "127.0.0.1", "PG_DB": "test"}"#.to_string(),
            ),
            (
                "PG_CLOSED",
                pg_secret().replace("}", &format!(r#", "PG_PORT": "{closed_port}"}}"#)),
            ),
            (
                "PG_NODB",
                pg_secret().replace(r#""PG_DB": "test""#, r#""PG_DB": "rt_no_such_db""#),
            ),
            ("PG_BADMODE", pg_secret().replace("disable", "sometimes")),
        ],
        &[
            &[
                "--name",
                "pg",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
            ],
            &[
                "--name",
                "partial",
                "--type",
                "postgres",
                "--secret_path",
                "PG_PARTIAL",
            ],
            &[
                "--name",
                "closed",
                "--type",
                "postgres",
                "--secret_path",
                "PG_CLOSED",
            ],
            &[
                "--name",
                "nodb",
                "--type",
                "postgres",
                "--secret_path",
                "PG_NODB",
            ],
            &[
                "--name",
                "badmode",
                "--type",
                "postgres",
                "--secret_path",
                "PG_BADMODE",
            ],
        ],
    );
    // Missing keys: named, before connecting.
    let id = env.server.submit("partial", "select 1");
    let t = env.server.wait_final(id);
    assert_eq!(t["failure_reason"], "secrets", "{t}");
    let msg = t["failure_message"].as_str().unwrap();
    assert!(msg.contains("PG_USER") && msg.contains("PG_PASS"), "{msg}");

    // Nothing listens: fails at once, naming the port and the database.
    let out = runops_task(&env, "closed", "select 1");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!(":{closed_port} as user")), "{text}");
    assert!(text.contains("cannot connect to PostgreSQL"), "{text}");
    assert!(text.contains("refused"), "{text}");

    // Unknown database: the server's message, with the database's name (a connection
    // setting, not a secret: `PG_DB` is shown).
    let out = runops_task(&env, "nodb", "select 1");
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("cannot connect to PostgreSQL at "), "{text}");
    assert!(
        text.contains("FATAL: database \"rt_no_such_db\" does not exist"),
        "{text}"
    );

    // COPY over the connection is refused with a clear error, before reaching the server.
    let out = runops_task(
        &env,
        "pg",
        "select 1 as a;\ncopy (select 1) to stdout;\nselect 2;",
    );
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.starts_with("a\n1\n(1 row)\nERROR:  COPY ... FROM STDIN / TO STDOUT is not supported"),
        "{text}"
    );
    assert!(text.contains("LINE 2: copy (select 1) to stdout"), "{text}");

    // A bad PGSSLMODE is a configuration error.
    let id = env.server.submit("badmode", "select 1");
    let t = env.server.wait_final(id);
    assert_eq!(t["failure_reason"], "invalid-config", "{t}");
    // (The value itself is a secret value of 6+ characters: the redactor hides it.)
    let msg = t["failure_message"].as_str().unwrap();
    assert!(
        msg.contains("PGSSLMODE `") && msg.contains("is not one of disable, prefer"),
        "{t}"
    );

    // TLS: the local server has TLS; `require` works, `verify-full` rejects its
    // self-signed certificate with a clear message.
    let env2 = start(
        &[
            ("PG_TLS", pg_secret().replace("disable", "require")),
            ("PG_FULL", pg_secret().replace("disable", "verify-full")),
        ],
        &[
            &[
                "--name",
                "tls",
                "--type",
                "postgres",
                "--secret_path",
                "PG_TLS",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "full",
                "--type",
                "postgres",
                "--secret_path",
                "PG_FULL",
                "--redact",
                "none",
            ],
        ],
    );
    if psql_admin("show ssl").trim() == "on" {
        let out = runops_task(
            &env2,
            "tls",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        );
        assert_eq!(stdout(&out), "ssl\nt\n(1 row)\n", "{}", stderr(&out));
        let out = runops_task(&env2, "full", "select 1");
        assert_eq!(out.status.code(), Some(2));
        assert!(stdout(&out).contains("certificate"), "{}", stdout(&out));
    }
}

#[test]
fn postgres_tls_verification_uses_the_root_certificate_from_the_secret() {
    if !postgres_up() {
        return;
    }
    // Debian's server presents the self-signed "snakeoil" certificate for `localhost`.
    let cert_file = psql_admin("show ssl_cert_file");
    let pem = std::fs::read(cert_file.trim());
    if !require(
        "the PostgreSQL server's certificate file (Debian's snakeoil)",
        pem.is_ok(),
    ) || !require(
        "TLS on the PostgreSQL server (`show ssl` = on)",
        psql_admin("show ssl").trim() == "on",
    ) {
        return;
    }
    let pem = pem.unwrap();
    let root = base64_encode(&pem);
    let secret = |host: &str, mode: &str| {
        format!(
            r#"{{"PG_HOST": "{host}", "PG_USER": "postgres", "PG_PASS": "trust-auth-ignores-it", "PG_DB": "test", "PGSSLMODE": "{mode}", "PGSSLROOTCERT": "{root}"}}"#
        )
    };
    let env = start(
        &[
            ("CA_IP", secret("127.0.0.1", "verify-ca")),
            ("FULL_IP", secret("127.0.0.1", "verify-full")),
            ("FULL_NAME", secret("localhost", "verify-full")),
        ],
        &[
            &[
                "--name",
                "ca-ip",
                "--type",
                "postgres",
                "--secret_path",
                "CA_IP",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "full-ip",
                "--type",
                "postgres",
                "--secret_path",
                "FULL_IP",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "full-name",
                "--type",
                "postgres",
                "--secret_path",
                "FULL_NAME",
                "--redact",
                "none",
            ],
        ],
    );
    let q = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    // verify-ca: the chain is checked, the name is not.
    let out = runops_task(&env, "ca-ip", q);
    assert_eq!(stdout(&out), "ssl\nt\n(1 row)\n", "{}", stderr(&out));
    // verify-full: the certificate names `localhost`, not 127.0.0.1.
    let out = runops_task(&env, "full-ip", q);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("certificate not valid for name"),
        "{}",
        stdout(&out)
    );
    let out = runops_task(&env, "full-name", q);
    assert_eq!(stdout(&out), "ssl\nt\n(1 row)\n", "{}", stderr(&out));
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// True while a backend runs a query containing `marker`.
fn pg_backend_running(marker: &str) -> bool {
    let n = psql_admin(&format!(
        "select count(*) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid() and state = 'active'"
    ));
    n.trim() != "0"
}

#[test]
fn postgres_kill_and_timeout_cancel_the_query_on_the_server() {
    if !postgres_up() {
        return;
    }
    let env = start(
        &[("PG_T", pg_secret())],
        &[
            &[
                "--name",
                "pg",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
            ],
            &[
                "--name",
                "pg-short",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
                "--timeout",
                "2",
            ],
        ],
    );
    // Kill.
    let marker = unique("rt_kill");
    let id = env
        .server
        .submit("pg", &format!("select pg_sleep(600) as {marker}"));
    wait_for("the query to run on the server", || {
        pg_backend_running(&marker).then_some(())
    });
    env.server.cli_ok(&["tasks", "kill", &id.to_string()]);
    let t = env.server.wait_final(id);
    assert_eq!(t["failure_reason"], "cancelled", "{t}");
    wait_for("the backend to stop running the killed query", || {
        (!pg_backend_running(&marker)).then_some(())
    });

    // Timeout.
    let marker = unique("rt_timeout");
    let id = env
        .server
        .submit("pg-short", &format!("select pg_sleep(600) as {marker}"));
    let t = env.server.wait_final(id);
    assert_eq!(t["failure_reason"], "timeout", "{t}");
    wait_for("the backend to stop running the timed-out query", || {
        (!pg_backend_running(&marker)).then_some(())
    });
}

fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn postgres_large_result_streams_with_bounded_agent_memory() {
    if !postgres_up() {
        return;
    }
    let env = start(
        &[("PG_T", pg_secret())],
        &[&[
            "--name",
            "pg",
            "--type",
            "postgres",
            "--secret_path",
            "PG_T",
            "--redact",
            "none",
        ]],
    );
    let rows: u64 = 5_000_000;
    let id = env
        .server
        .submit("pg", &format!("select generate_series(1, {rows}) as n"));
    let t = env.server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    // "n\n" + every number + "\n" + "(N rows)\n".
    let digits: u64 = (1..=rows).map(|n| n.to_string().len() as u64 + 1).sum();
    let expected = 2 + digits + format!("({rows} rows)\n").len() as u64;
    assert_eq!(t["log_size"].as_u64(), Some(expected), "{t}");
    let hwm_mib = vm_hwm_kib(env.agent.pid()) / 1024;
    // The result is ~39 MB; buffering it (or its rows as objects) would show.
    assert!(
        hwm_mib < 64,
        "agent peak memory {hwm_mib} MiB for a {expected}-byte result"
    );
}

// ---------------------------------------------------------------------------------------
// MariaDB.

const MYSQL_CORPUS: &[(&str, &str)] = &[
    (
        "numbers nulls and text escapes",
        "select 1 as i, 9223372036854775807 as big, 12345.678900 as num, 1.5e100 as f, null as n, \
         true as t, 'tab\\there' as tabbed, 'new\\nline' as nl, 'back\\\\slash' as bs, \
         'ünïcødé ✓ 日本語 🚀' as uni, '' as empty, 'nul\\0byte' as nul, 'it''s' as q;",
    ),
    (
        "dates json and binary",
        "select date '2024-02-29' as d, timestamp '2024-01-02 03:04:05.123456' as ts, \
         time '12:34:56' as tm, json_object('a', 1, 'b', json_array(1, null)) as j, \
         cast('2024-01-02' as datetime) as dt, x'414243' as bin, cast(1 as unsigned) as u, \
         uuid() is not null as has_uuid, 0.1 + 0.2 as sum;",
    ),
    (
        "ddl dml and result sets",
        "create table TBL (id int primary key, name varchar(50), note text);\n\
         select * from TBL;\n\
         insert into TBL values (1, 'one', null), (2, 'two\\tcols', 'x'), (3, 'multi\\nline', null);\n\
         update TBL set note = 'n' where id > 1;\n\
         delete from TBL where id = 3;\n\
         select * from TBL order by id;\n\
         select count(*) from TBL where false;\n\
         alter table TBL add column extra int;\n\
         select id, extra from TBL order by id;\n\
         drop table TBL;",
    ),
    (
        "several statements per line and comments",
        "select 1 as a; select 2 as b; # hash comment; not a statement\n\
         -- dash comment;\n/* block; */ select 'x;y' as c;\nselect \"dq;\" as `weird;name`;",
    ),
];

fn mysql_env() -> Env {
    start(
        &[("MY_T", mysql_secret())],
        &[
            &[
                "--name",
                "my",
                "--type",
                "mysql",
                "--secret_path",
                "MY_T",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "my-csv",
                "--type",
                "mysql-csv",
                "--secret_path",
                "MY_T",
                "--redact",
                "none",
            ],
        ],
    )
}

#[test]
fn mysql_output_matches_mysql_batch_byte_for_byte() {
    if !mariadb_up() {
        return;
    }
    let env = mysql_env();
    for (case, script) in MYSQL_CORPUS {
        let script = script.replace("TBL", &unique("rt_my"));
        let reference = mysql_batch(&script);
        assert!(
            reference.status.success(),
            "mysql failed on `{case}`: {}",
            stderr(&reference)
        );
        let ours = runops_task(&env, "my", &script);
        assert!(
            ours.status.success(),
            "`{case}` failed in Runops: {}{}",
            stdout(&ours),
            stderr(&ours)
        );
        assert_same_bytes(case, &stdout(&ours), &stdout(&reference));
    }
}

#[test]
fn mysql_errors_stop_the_script_like_the_client() {
    if !mariadb_up() {
        return;
    }
    let env = mysql_env();
    let table = unique("rt_mye");
    let script = format!(
        "create table {table} (a int);\ninsert into {table} values (1);\nselect a from {table};\n\
         select * from rt_no_such_table;\ninsert into {table} values (2);\nselect 'never';"
    );
    let reference = mysql_batch(&script);
    assert_eq!(reference.status.code(), Some(1));
    let after_reference = mysql_admin(&format!("select count(*) from {table}"));
    mysql_admin(&format!("drop table {table}"));

    let ours = runops_task(&env, "my", &script);
    assert_eq!(ours.status.code(), Some(1), "{}", stderr(&ours));
    let after_ours = mysql_admin(&format!("select count(*) from {table}"));
    mysql_admin(&format!("drop table {table}"));
    let error_line = stderr(&reference)
        .lines()
        .find(|l| l.starts_with("ERROR "))
        .expect("mysql printed an error")
        .to_string();
    assert_eq!(
        stdout(&ours),
        format!("{}{error_line}\n", stdout(&reference))
    );
    assert_eq!(
        after_ours, after_reference,
        "statements after the error must not run"
    );
    assert_eq!(after_ours.trim(), "1");
}

#[test]
fn mysql_csv_quotes_fields_with_separators() {
    if !mariadb_up() {
        return;
    }
    let env = mysql_env();
    let out = runops_task(
        &env,
        "my-csv",
        "select 1 as id, 'a,b' as `c,d`, 'say \"hi\"' as q, 'two\\nlines' as nl, null as n, 'tab\\there' as t;\n\
         select 1 from dual where false;",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "id,\"c,d\",q,nl,n,t\n1,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,tab\there\n1\n"
    );
}

#[test]
fn docs_walkthrough_mysql_select_1_and_secret_mapping() {
    if !mariadb_up() {
        return;
    }
    let user = unique("rt_myuser");
    let pass = format!("Pw<{}", unique("x"));
    mysql_admin(&format!(
        "create user '{user}'@'127.0.0.1' identified by '{pass}'; grant all on test.* to '{user}'@'127.0.0.1'; \
         create user '{user}'@'localhost' identified by '{pass}'; grant all on test.* to '{user}'@'localhost'"
    ));
    let docs_secret = format!(
        "\"MYSQL_HOST\": \"127.0.0.1\",\n\"MYSQL_DB\": \"test\",\n\"MYSQL_USER\": \"{user}\",\n\"MYSQL_PASS\": \"{pass}\",\n"
    );
    let mapped_secret = docs_secret.replace("MYSQL_HOST", "MYSQL_HOSTNAME");
    let wrong = docs_secret.replace(&pass, "Not-The-Password-42");
    let env = start(
        &[
            ("MY_TARGET", docs_secret),
            ("MAPPED", mapped_secret),
            ("WRONG", wrong),
        ],
        &[
            &[
                "--name",
                "demo-db",
                "--type",
                "mysql",
                "--secret_path",
                "MY_TARGET",
            ],
            &[
                "--name",
                "mapped",
                "--type",
                "mysql",
                "--secret_path",
                "MAPPED",
                "--secret_mapping",
                r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#,
            ],
            &[
                "--name",
                "wrong",
                "--type",
                "mysql",
                "--secret_path",
                "WRONG",
            ],
        ],
    );
    let out = env
        .server
        .cli(&["tasks", "create", "-t", "demo-db", "-s", "select 1"]);
    let mapped = env
        .server
        .cli(&["tasks", "create", "-t", "mapped", "-s", "select 1"]);
    let current = env.server.cli(&[
        "tasks",
        "create",
        "-t",
        "demo-db",
        "-s",
        "select current_user() like 'rt_myuser%' as me",
    ]);
    let wrong_out = env
        .server
        .cli(&["tasks", "create", "-t", "wrong", "-s", "select 1"]);
    mysql_admin(&format!(
        "drop user '{user}'@'127.0.0.1'; drop user '{user}'@'localhost'"
    ));

    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "1\n1\n");
    assert_eq!(stdout(&mapped), "1\n1\n", "{}", stderr(&mapped));
    assert_eq!(stdout(&current), "me\n1\n", "{}", stderr(&current));

    // Wrong password: a clear message; no password of any kind in it.
    assert_eq!(wrong_out.status.code(), Some(1));
    let text = stdout(&wrong_out);
    assert!(text.contains("cannot connect to MySQL"), "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(
        !text.contains(&pass) && !text.contains("Not-The-Password-42"),
        "{text}"
    );
    let log = env.server.logs(last_id(&env));
    assert!(!log.contains(&pass), "{log}");
}

fn last_id(env: &Env) -> i64 {
    let tasks: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["tasks", "list", "--json"])).unwrap();
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .max()
        .unwrap()
}

#[test]
fn mysql_failures_are_clear_and_fast() {
    if !mariadb_up() {
        return;
    }
    let closed_port = free_port();
    let env = start(
        &[
            (
                "CLOSED",
                mysql_secret().replace("}", &format!(r#", "MYSQL_PORT": "{closed_port}"}}"#)),
            ),
            (
                "TLS",
                mysql_secret().replace("}", r#", "MYSQL_SSL_MODE": "REQUIRED"}"#),
            ),
            (
                "NODB",
                mysql_secret().replace(r#""MYSQL_DB": "test""#, r#""MYSQL_DB": "rt_no_such_db""#),
            ),
        ],
        &[
            &[
                "--name",
                "closed",
                "--type",
                "mysql",
                "--secret_path",
                "CLOSED",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "tls",
                "--type",
                "mysql",
                "--secret_path",
                "TLS",
                "--redact",
                "none",
            ],
            &[
                "--name",
                "nodb",
                "--type",
                "mysql",
                "--secret_path",
                "NODB",
                "--redact",
                "none",
            ],
        ],
    );
    let out = runops_task(&env, "closed", "select 1");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    // Host and user are secret values: the redactor hides them; the port stays.
    assert!(text.contains("cannot connect to MySQL at "), "{text}");
    assert!(
        text.contains(&format!(":{closed_port} as user `")),
        "{text}"
    );
    assert!(text.contains("database `test`"), "{text}");

    let have_ssl = mysql_admin("select @@have_ssl");
    if have_ssl.trim() != "YES" {
        let out = runops_task(&env, "tls", "select 1");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).contains("does not offer TLS"),
            "{}",
            stdout(&out)
        );
    }

    let out = runops_task(&env, "nodb", "select 1");
    assert_eq!(out.status.code(), Some(1));
    // MariaDB answers a user without rights on it "access denied", root "unknown database".
    let text = stdout(&out);
    assert!(text.contains("cannot connect to MySQL at "), "{text}");
    assert!(
        text.contains("ERROR 1044 (42000): Access denied") || text.contains("Unknown database"),
        "{text}"
    );
}

fn mysql_query_running(marker: &str) -> bool {
    let n = mysql_admin(&format!(
        "select count(*) from information_schema.processlist where info like '%{marker}%' and id <> connection_id()"
    ));
    n.trim() != "0"
}

#[test]
fn mysql_kill_cancels_the_query_on_the_server() {
    if !mariadb_up() {
        return;
    }
    let env = mysql_env();
    let marker = unique("rt_mkill");
    let id = env
        .server
        .submit("my", &format!("select sleep(600) as {marker}"));
    wait_for("the query to run on the server", || {
        mysql_query_running(&marker).then_some(())
    });
    env.server.cli_ok(&["tasks", "kill", &id.to_string()]);
    let t = env.server.wait_final(id);
    assert_eq!(t["failure_reason"], "cancelled", "{t}");
    wait_for("the server to stop running the killed query", || {
        (!mysql_query_running(&marker)).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// MongoDB: the real `mongosh` against nx-27017, a MongoDB wire-protocol *stand-in*
// (SQLite underneath), not a MongoDB server.

/// `(mongosh bin dir, nx-27017 executable)` from RUNOPS_TEST_MONGOSH_DIR /
/// RUNOPS_TEST_NX27017 (scripts/test.sh sets both) or their default cache locations.
fn mongo_tools() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let home = std::env::var("HOME").unwrap_or_default();
    let bin = std::env::var("RUNOPS_TEST_MONGOSH_DIR")
        .unwrap_or_else(|_| format!("{home}/.cache/runops/npm/node_modules/.bin"));
    let nx = std::env::var("RUNOPS_TEST_NX27017")
        .unwrap_or_else(|_| format!("{home}/.cache/runops/venv-nx/bin/nx-27017"));
    let bin = std::path::PathBuf::from(bin);
    let nx = std::path::PathBuf::from(nx);
    let up = bin.join("mongosh").exists() && nx.exists();
    require(
        "mongosh and nx-27017 (RUNOPS_TEST_MONGOSH_DIR, RUNOPS_TEST_NX27017)",
        up,
    )
    .then_some((bin, nx))
}

struct StandIn(std::process::Child);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mongodb_runs_the_script_in_mongosh_with_the_uri_off_the_command_line() {
    let Some((bin, nx)) = mongo_tools() else {
        return;
    };
    let sb = Sandbox::new();
    let port = free_port();
    let _stand_in = StandIn(
        Command::new(&nx)
            .args([
                "--db",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg("--log-file")
            .arg(sb.path("nx.log"))
            .arg("--pid-file")
            .arg(sb.path("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nx-27017"),
    );
    wait_for("nx-27017 to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let uri = format!("mongodb://127.0.0.1:{port}/rt_demo?serverSelectionTimeoutMS=5000");
    let secret = format!(r#"{{"MONGO_CONNECTION_URI": "{uri}"}}"#);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _agent = Agent::start(
        &sb,
        "m",
        &token,
        None,
        &[("MONGO_T", &secret), ("PATH", &path)],
    );
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "mongo",
        "--type",
        "mongodb",
        "--secret_path",
        "MONGO_T",
        "--redact",
        "none",
    ]);

    let script = "db.items.insertOne({n: 1, name: 'ada'}).acknowledged\n\
                  db.items.insertOne({n: 2, name: 'grace'}).acknowledged\n\
                  db.items.countDocuments()\n\
                  print(db.items.find({n: 2}).toArray()[0].name)\n\
                  // argv must not hold the URI\n\
                  print(process.argv.join(' ').includes('mongodb://') ? 'URI ON ARGV' : 'argv clean')\n";
    let out = server.cli(&["tasks", "create", "-t", "mongo", "-s", script]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // mongosh's non-interactive shell prints a blank line for lines without a value.
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        ["true", "true", "2", "grace", "argv clean"],
        "{printed:?}"
    );

    // An unreachable server: mongosh's error, non-zero.
    let closed = free_port();
    let sb2 = Sandbox::new();
    let server2 = Server::start(&sb2, 10);
    let token2 = server2.create_agent_token();
    let secret2 = format!(
        r#"{{"MONGO_CONNECTION_URI": "mongodb://127.0.0.1:{closed}/x?serverSelectionTimeoutMS=2000"}}"#
    );
    let _agent2 = Agent::start(
        &sb2,
        "m",
        &token2,
        None,
        &[("MONGO_T", &secret2), ("PATH", &path)],
    );
    server2.cli_ok(&[
        "targets",
        "create",
        "--name",
        "mongo",
        "--type",
        "mongodb",
        "--secret_path",
        "MONGO_T",
        "--redact",
        "none",
    ]);
    let out = server2.cli(&[
        "tasks",
        "create",
        "-t",
        "mongo",
        "-s",
        "db.x.countDocuments()",
    ]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("ECONNREFUSED"), "{}", stdout(&out));
}

#[test]
fn mongodb_without_mongosh_is_a_clear_error() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let _agent = Agent::start(
        &sb,
        "m",
        &token,
        None,
        &[
            (
                "MONGO_T",
                r#"{"MONGO_CONNECTION_URI": "mongodb://127.0.0.1:1/x"}"#,
            ),
            ("PATH", "/nonexistent"),
        ],
    );
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "mongo",
        "--type",
        "mongodb",
        "--secret_path",
        "MONGO_T",
    ]);
    let id = server.submit("mongo", "db.x.countDocuments()");
    let t = server.wait_final(id);
    assert_eq!(t["failure_reason"], "agent-error", "{t}");
    assert!(
        t["failure_message"].as_str().unwrap().contains(
            "`mongosh` was not found on the agent's PATH; install it with `npm install -g mongosh`"
        ),
        "{t}"
    );
}

/// Connection settings (`PG_HOST`, `PG_DB`, `PG_USER`) show in errors and results; the
/// password stays redacted; `--redact_keys` makes a setting secret again and
/// `--public_keys` shows any key; a key in both lists is refused.
#[test]
fn postgres_connection_settings_show_and_redact_keys_hides_them_again() {
    if !postgres_up() {
        return;
    }
    let nodb = pg_secret().replace(r#""PG_DB": "test""#, r#""PG_DB": "rt_no_such_db""#);
    let env = start(
        &[("PG_T", pg_secret()), ("PG_NODB", nodb)],
        &[
            &[
                "--name",
                "pg",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
            ],
            &[
                "--name",
                "nodb",
                "--type",
                "postgres",
                "--secret_path",
                "PG_NODB",
            ],
            &[
                "--name",
                "pg-hidden",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
                "--redact_keys",
                "PG_HOST,PG_USER",
            ],
            &[
                "--name",
                "nodb-hidden",
                "--type",
                "postgres",
                "--secret_path",
                "PG_NODB",
                "--redact_keys",
                "PG_HOST, PG_DB",
            ],
            &[
                "--name",
                "pg-open",
                "--type",
                "postgres",
                "--secret_path",
                "PG_T",
                "--public_keys",
                "PG_PASS",
            ],
        ],
    );
    let query = "select current_user as u, 'trust-auth-ignores-it' as p;";
    let out = runops_task(&env, "pg", query);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "u\tp\npostgres\t[REDACTED:PG_PASS]\n(1 row)\n"
    );

    let out = runops_task(&env, "nodb", "select 1");
    let text = stdout(&out);
    assert!(
        text.contains("cannot connect to PostgreSQL at 127.0.0.1:5432"),
        "{text}"
    );
    assert!(
        text.contains("database \"rt_no_such_db\" does not exist"),
        "{text}"
    );
    assert!(!text.contains("REDACTED"), "{text}");

    // Listed in redact_keys: redacted again, whatever their length.
    let out = runops_task(&env, "pg-hidden", query);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "u\tp\n[REDACTED:PG_USER]\t[REDACTED:PG_PASS]\n(1 row)\n"
    );
    let out = runops_task(&env, "nodb-hidden", "select 1");
    let text = stdout(&out);
    assert!(
        text.contains("cannot connect to PostgreSQL at [REDACTED:PG_HOST]:5432"),
        "{text}"
    );
    assert!(text.contains("database \"[REDACTED:PG_DB]\""), "{text}");
    assert!(
        !text.contains("rt_no_such_db") && !text.contains("127.0.0.1"),
        "{text}"
    );

    // Listed in public_keys: shown even though it is a password.
    let out = runops_task(&env, "pg-open", query);
    assert_eq!(
        stdout(&out),
        "u\tp\npostgres\ttrust-auth-ignores-it\n(1 row)\n"
    );

    let shown = env.server.cli_ok(&["targets", "show", "pg-hidden"]);
    assert!(shown.contains("PG_HOST, PG_USER"), "{shown}");

    // Bad lists are refused with the reason.
    let both = env.server.cli(&[
        "targets",
        "create",
        "--name",
        "both",
        "--type",
        "postgres",
        "--secret_path",
        "PG_T",
        "--redact_keys",
        "PG_HOST",
        "--public_keys",
        "PG_HOST",
    ]);
    assert!(!both.status.success());
    assert!(
        stderr(&both).contains("`PG_HOST` is in both redact_keys and public_keys"),
        "{}",
        stderr(&both)
    );
    let bad = env
        .server
        .cli(&["targets", "update", "pg", "--redact_keys", "PG-HOST"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("`PG-HOST` is not a key name"),
        "{}",
        stderr(&bad)
    );
    // An update that clears the list shows the setting again.
    env.server
        .cli_ok(&["targets", "update", "pg-hidden", "--redact_keys", ""]);
    let out = runops_task(&env, "pg-hidden", query);
    assert_eq!(
        stdout(&out),
        "u\tp\npostgres\t[REDACTED:PG_PASS]\n(1 row)\n"
    );
}
