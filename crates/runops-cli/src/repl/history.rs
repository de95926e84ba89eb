//! The REPL's history, one file per server context and target, beside the config file:
//! `~/.config/runops/history/<context>-<target>` (0600 in a 0700 directory, as the
//! config: statements may hold data worth keeping private).
//!
//! One statement per line, with `\` and newlines escaped (`\\`, `\n`), so a multi-line
//! statement comes back whole. Each statement is appended as it is run, so two REPLs on
//! the same target both keep theirs; the file is cut to its newest [`MAX_ENTRIES`] when
//! it grows to twice that.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Statements kept per target: weeks of work, read in a blink at start-up.
pub(crate) const MAX_ENTRIES: usize = 1000;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The history file of `target` in `context`, in the directory of `config_file`.
pub(crate) fn history_path(config_file: &Path, context: &str, target: &str) -> PathBuf {
    let dir = config_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("history");
    dir.join(format!("{}-{}", file_word(context), file_word(target)))
}

/// `name` as a safe file-name part: letters, digits and `._-` kept, anything else `_`.
fn file_word(name: &str) -> String {
    let word: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match word.trim_start_matches('.') {
        "" => "_".to_string(),
        w => w.to_string(),
    }
}

/// A statement as one line of the file.
fn encode(entry: &str) -> String {
    let mut out = String::with_capacity(entry.len());
    for c in entry.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// One line of the file as the statement it holds.
fn decode(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The statements in `path`, oldest first (none when it does not exist yet); the
/// newest [`MAX_ENTRIES`]. A file grown to twice that is rewritten with those.
pub(crate) fn load(path: &Path) -> std::io::Result<Vec<String>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(decode).collect();
    if entries.len() > MAX_ENTRIES {
        let grown = entries.len() >= 2 * MAX_ENTRIES;
        entries.drain(..entries.len() - MAX_ENTRIES);
        if grown {
            rewrite(path, &entries)?;
        }
    }
    Ok(entries)
}

/// Appends `entry` to the file, creating it (0600, its directory 0700) when missing.
pub(crate) fn append(path: &Path, entry: &str) -> std::io::Result<()> {
    let mut f = open(path, false)?;
    let mut line = encode(entry);
    line.push('\n');
    // One write: lines of two REPLs appending at once do not interleave.
    f.write_all(line.as_bytes())
}

fn rewrite(path: &Path, entries: &[String]) -> std::io::Result<()> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&encode(e));
        text.push('\n');
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = open(&tmp, true)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// Opens `path` for appending (or, with `new`, creates it), 0600 in a 0700 directory
/// created when missing.
fn open(path: &Path, new: bool) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    if new {
        options.write(true).create_new(true);
    } else {
        options.append(true).create(true);
    }
    let f = options.mode(FILE_MODE).open(path)?;
    // The mode above is filtered by the umask, and an older file may be looser.
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_for_context_and_target_beside_the_config() {
        let p = history_path(
            Path::new("/h/.config/runops/config.json"),
            "prod",
            "demo-db",
        );
        assert_eq!(p, Path::new("/h/.config/runops/history/prod-demo-db"));
        let odd = history_path(Path::new("/c/config.json"), "127.0.0.1:8080", "../x y");
        assert_eq!(odd, Path::new("/c/history/127.0.0.1_8080-_x_y"));
    }

    #[test]
    fn multi_line_statements_and_backslashes_come_back_whole() {
        for entry in [
            "select 1;",
            "select\n  'a\\nb'\n;",
            "ls \\\n  -l",
            "trailing \\",
        ] {
            assert_eq!(decode(&encode(entry)), entry);
            assert!(!encode(entry).contains('\n'));
        }
    }

    #[test]
    fn history_is_appended_0600_in_a_0700_directory_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history").join("default-db");
        assert!(load(&path).unwrap().is_empty());
        append(&path, "select 1;").unwrap();
        append(&path, "select\n2;").unwrap();
        assert_eq!(load(&path).unwrap(), ["select 1;", "select\n2;"]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_long_history_keeps_the_newest_entries_and_is_cut_when_twice_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        for i in 0..2 * MAX_ENTRIES {
            append(&path, &format!("select {i};")).unwrap();
        }
        let entries = load(&path).unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[0], format!("select {};", MAX_ENTRIES));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, MAX_ENTRIES);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
