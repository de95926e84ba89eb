//! The request path's reads, run on the calling thread on connections of their own.
//!
//! sqlx's SQLite driver runs each statement on a worker thread of its connection: every
//! statement is a round trip between two threads (two wake-ups, two context switches).
//! A trivial task cost the server about 40 of them, and half of its CPU time went to
//! switching threads (BENCHMARKS.md, issue 20). The reads every request makes — its
//! token, its agent session, the task, the log — are single indexed lookups that take
//! microseconds, so they run here, directly on the async thread that needs them, on a
//! few read-only connections. In WAL mode a reader waits neither for the writer nor for
//! a checkpoint. Writes stay on sqlx's single writer connection.

use super::{BUSY_TIMEOUT, StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use sqlx::Sqlite;
use sqlx::sqlite::SqliteRow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A row of either driver, read by column name: the row mappings (`task_from_row`...)
/// are written once for both.
pub(super) trait Cols {
    fn col<T: ColValue>(&self, name: &str) -> StoreResult<T>;
}

/// A Rust type both drivers read from an SQLite column.
pub(super) trait ColValue:
    for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + rusqlite::types::FromSql
{
}

impl<T> ColValue for T where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + rusqlite::types::FromSql
{
}

impl Cols for SqliteRow {
    fn col<T: ColValue>(&self, name: &str) -> StoreResult<T> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

/// Read-only connections used in turn; a call waits only when all are busy (more calls
/// at once than the runtime has threads).
pub(super) struct InlineReaders {
    conns: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl InlineReaders {
    /// `count` read-only connections to the database at `path` (which exists, in WAL
    /// mode).
    pub(super) fn open(path: &Path, count: usize) -> anyhow::Result<InlineReaders> {
        let conns = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn.pragma_update(None, "temp_store", "MEMORY")?;
                Ok(Mutex::new(conn))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(InlineReaders {
            conns: conns.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a free connection (or the next one in turn when none is free).
    pub(super) fn read<R>(&self, f: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        let conn = self.take();
        f(&conn)
    }

    fn take(&self) -> MutexGuard<'_, Connection> {
        for c in self.conns.iter() {
            if let Ok(conn) = c.try_lock() {
                return conn;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        // A panic in a read leaves nothing half-done on a read-only connection (its
        // statement is reset when dropped): a poisoned lock is reused.
        self.conns[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One row of `sql` with `params` through `map`, or `None`.
pub(super) fn read_optional<R>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&NamedRow<'_, '_>) -> StoreResult<R>,
) -> StoreResult<Option<R>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let names = column_names(sql, &stmt);
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => map(&NamedRow::new(row, &names)).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql` with `params` through `map`.
pub(super) fn read_all<R>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut map: impl FnMut(&NamedRow<'_, '_>) -> StoreResult<R>,
) -> StoreResult<Vec<R>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let names = column_names(sql, &stmt);
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(&NamedRow::new(row, &names))?);
    }
    Ok(out)
}

/// A statement's column names, in order.
type ColumnNames = Rc<[Box<str>]>;

/// The column names of `stmt`, prepared from `sql`: asked of SQLite once per statement
/// text and thread, then kept (the schema does not change while the server runs).
fn column_names(sql: &str, stmt: &rusqlite::Statement<'_>) -> ColumnNames {
    thread_local! {
        static NAMES: RefCell<HashMap<Box<str>, ColumnNames>> = RefCell::default();
    }
    NAMES.with_borrow_mut(|known| {
        if let Some(names) = known.get(sql) {
            return names.clone();
        }
        let names: ColumnNames = stmt.column_names().into_iter().map(Box::from).collect();
        known.insert(sql.into(), names.clone());
        names
    })
}

/// A row whose columns are found by name in its statement's names, read once per query.
/// rusqlite's own lookup asks SQLite for every column's name again at every call, and a
/// task's row maps some forty columns by name: a few percent of the server's time per
/// task (BENCHMARKS.md, issue 20).
pub(super) struct NamedRow<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    names: &'a [Box<str>],
    /// Where the next lookup starts: rows are mostly read in the statement's order.
    next: std::cell::Cell<usize>,
}

impl<'a, 'r> NamedRow<'a, 'r> {
    fn new(row: &'a rusqlite::Row<'r>, names: &'a [Box<str>]) -> NamedRow<'a, 'r> {
        NamedRow {
            row,
            names,
            next: std::cell::Cell::new(0),
        }
    }

    /// Exactly as written in the statement first (from where the last one was found),
    /// then as SQLite matches names (ignoring ASCII case).
    fn index(&self, name: &str) -> Option<usize> {
        let start = self.next.get().min(self.names.len());
        let mut order = (start..self.names.len()).chain(0..start);
        let i = order
            .find(|&i| *self.names[i] == *name)
            .or_else(|| self.names.iter().position(|n| n.eq_ignore_ascii_case(name)))?;
        self.next.set(i + 1);
        Some(i)
    }
}

impl Cols for NamedRow<'_, '_> {
    fn col<T: ColValue>(&self, name: &str) -> StoreResult<T> {
        match self.index(name) {
            Some(i) => Ok(self.row.get(i)?),
            None => Err(rusqlite::Error::InvalidColumnName(name.to_string()).into()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(e)
    }
}
