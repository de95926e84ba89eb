//! The PostgreSQL server the PostgreSQL measurements (8 and 9) run on (`--database-url`):
//! each run gets a fresh database of its own, created with `psql` and dropped when the
//! run ends, so figures never depend on what an earlier run left behind.

use anyhow::{Context, bail};

/// Where the PostgreSQL measurements run unless told otherwise: the machine's server,
/// user `postgres` with trust authentication.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL server reachable with `url` (a database the user may connect to and
/// create databases from).
#[derive(Debug, Clone)]
pub struct PgServer {
    url: String,
}

impl PgServer {
    pub fn new(url: &str) -> anyhow::Result<PgServer> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("--database-url {url:?} is not a postgres:// URL");
        }
        Ok(PgServer {
            url: url.to_string(),
        })
    }

    /// Runs `sql` on the server's maintenance database.
    fn psql(&self, sql: &str) -> anyhow::Result<()> {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &self.url, "-c", sql])
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run psql (the PostgreSQL measurements need it)")?;
        if !out.status.success() {
            bail!(
                "psql on {} failed: {}",
                redact(&self.url),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A new, empty database named `runops_bench_<pid>_<tag>`, dropped with the value.
    pub fn fresh_database(&self, tag: &str) -> anyhow::Result<FreshDatabase> {
        let name = format!("runops_bench_{}_{tag}", std::process::id());
        self.psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(FreshDatabase {
            url: with_database(&self.url, &name),
            name,
            server: self.clone(),
        })
    }

    /// The server's address without credentials, for the report.
    pub fn describe(&self) -> String {
        redact(&self.url)
    }
}

/// A database of one run; dropped (with its connections) when this is.
pub struct FreshDatabase {
    pub url: String,
    name: String,
    server: PgServer,
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = self.server.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// `url` with its database (the path) replaced by `name`, its query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn passwords_stay_out_of_the_report() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
